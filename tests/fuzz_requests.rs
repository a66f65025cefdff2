//! A fuzzer over the whole request path, in process: a real shard (glommio executor, its segment
//! writer, partitions on disk) is given mutated request frames, as a connection would hand them
//! over after reading their length, and must answer or refuse each without panicking.
//!
//! Seeds are the frames in `fuzz/corpus/`: every API and version skein serves, encoded by
//! `kafka-protocol` (`cargo test --test fuzz_requests -- --ignored write_seed_corpus` writes
//! them again), and frames captured from real clients. Mutations flip bits, overwrite integers
//! with boundary values (counts, lengths, indexes), insert, delete, cut and splice. A frame that
//! panics is written to `fuzz/corpus/crashes/` before the test fails, to become a seed.
//!
//! `SKEIN_FUZZ_SECS` bounds the run (default 20; `scripts/test` gives it 60) and
//! `SKEIN_FUZZ_SEED` replays a run. Deterministic for a seed, apart from timing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::records::Compression;
use skein::config::{BrokerConfig, TopicConfig};
use skein::metadata::{BrokerInfo, PartitionState, TopicMetadata};
use skein::metadata::{Metadata, TopicPartition};
use skein::record::BatchBuilder;
use skein::server::budget::RequestBudget;
use skein::server::handlers::{handle, APIS};
use skein::shard::ControlHandle;
use skein::shard::{RecoveryPoints, Shard};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// xorshift64*: small, fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break code which trusts a count, length or index.
const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    127,
    128,
    255,
    -128,
    0x7fff,
    -0x8000,
    0xffff,
    0x7fff_ffff,
    -0x8000_0000,
    0x7fff_fff0,
    0x1000_0000,
    100_000_000,
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut frame = seed.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = frame.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                frame[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                frame[at] = rng.next() as u8;
            }
            2 | 3 if len >= 4 => {
                // A big-endian integer field of 1, 2, 4 or 8 bytes.
                let width = [1, 2, 4, 8][rng.below(4)].min(len);
                let at = rng.below(len - width + 1);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = value.to_be_bytes();
                frame[at..at + width].copy_from_slice(&bytes[8 - width..]);
            }
            4 if len > 0 => {
                // An unsigned varint (compact lengths and counts of flexible versions).
                let at = rng.below(len);
                let varint: &[u8] = match rng.below(4) {
                    0 => &[0],
                    1 => &[0xff, 0xff, 0xff, 0xff, 0x07],
                    2 => &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                    _ => &[0xff, 0xff, 0x03],
                };
                frame.splice(at..(at + varint.len()).min(len), varint.iter().copied());
            }
            5 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                frame.splice(at..at, bytes);
            }
            6 if len > 8 => {
                let at = 8 + rng.below(len - 8);
                let n = 1 + rng.below((len - at).min(32));
                frame.drain(at..at + n);
            }
            7 if len > 8 => frame.truncate(8 + rng.below(len - 8)),
            8 if !other.is_empty() => {
                let at = rng.below(len + 1);
                let from = rng.below(other.len());
                let n = rng.below((other.len() - from).min(64)) + 1;
                frame.splice(at.min(frame.len()).., other[from..from + n].iter().copied());
            }
            _ => {}
        }
    }
    // The connection only hands over frames of at least 8 bytes (key, version, correlation id).
    if frame.len() < 8 {
        frame.resize(8, 0);
    }
    frame
}

fn config(log_dir: &Path) -> Arc<BrokerConfig> {
    let text = format!(
        "broker.id = 1\nlisteners = \"PLAINTEXT://127.0.0.1:1\"\nlog.dirs = \"{}\"\n\
         zookeeper.connect = \"127.0.0.1:1\"\nlog.segment.bytes = 1048576\n",
        log_dir.display()
    );
    let table: toml::Table = text.parse().expect("toml");
    Arc::new(BrokerConfig::from_table(Path::new("fuzz.toml"), &table).expect("config"))
}

/// A cluster of one broker with topic `t` (2 partitions) and `lat` (LogAppendTime, stored as
/// zstd), all placed on shard 0.
fn metadata(config: &BrokerConfig) -> Metadata {
    let mut metadata = Metadata {
        version: 1,
        cluster_id: "fuzz".to_owned(),
        controller_id: 1,
        ..Metadata::default()
    };
    metadata.brokers.insert(
        1,
        BrokerInfo {
            id: 1,
            host: "127.0.0.1".to_owned(),
            port: 1,
            epoch: 1,
        },
    );
    for (name, overrides) in [
        ("t", BTreeMap::new()),
        // Groups "g" and "h" are coordinated here.
        ("__consumer_offsets", BTreeMap::new()),
        (
            "lat",
            BTreeMap::from([
                (
                    "message.timestamp.type".to_owned(),
                    "LogAppendTime".to_owned(),
                ),
                ("compression.type".to_owned(), "zstd".to_owned()),
            ]),
        ),
    ] {
        let state = PartitionState {
            replicas: vec![1],
            leader: 1,
            leader_epoch: 0,
            isr: vec![1],
            version: 0,
        };
        metadata.topics.insert(
            name.to_owned(),
            Arc::new(TopicMetadata {
                name: name.to_owned(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: vec![state.clone(), state],
                config: TopicConfig::resolve(&config.topic_defaults, &overrides).0,
            }),
        );
        for partition in 0..2 {
            metadata.placement.insert(
                TopicPartition {
                    topic: name.to_owned(),
                    partition,
                },
                0,
            );
        }
    }
    metadata
}

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_owned()))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn batch(compression: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(compression, 256);
    for i in 0..3 {
        builder.append(1_700_000_000_000 + i, Some(b"key"), &[b"value"]);
    }
    builder.finish().expect("batch")
}

fn encode<R: Request>(request: &R, version: i16) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    skein::client::pipeline::encode_request(
        &mut buf,
        request,
        version,
        7,
        &StrBytes::from_static_str("fuzz"),
    )
    .ok()?;
    // Without the length prefix: the shard is handed the frame's body.
    Some(buf[4..].to_vec())
}

/// One frame per API and version skein serves, with realistic content.
fn seed_frames() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for api in APIS {
        for version in api.min_version..=api.max_version {
            let frame = match api.key {
                ApiKey::Produce => encode(
                    &ProduceRequest::default()
                        .with_acks(-1)
                        .with_timeout_ms(1000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(topic_name(if version % 2 == 0 { "t" } else { "lat" }))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(1)
                                .with_records(Some(batch(if version % 3 == 0 {
                                    Compression::Lz4
                                } else {
                                    Compression::None
                                })))])]),
                    version,
                ),
                ApiKey::Fetch => encode(
                    &FetchRequest::default()
                        .with_replica_id((-1).into())
                        .with_max_wait_ms(10)
                        .with_min_bytes(1)
                        .with_max_bytes(1 << 20)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(topic_name("t"))
                            .with_partitions(vec![
                                FetchPartition::default()
                                    .with_partition(0)
                                    .with_partition_max_bytes(1 << 20),
                                FetchPartition::default()
                                    .with_partition(1)
                                    .with_fetch_offset(1)
                                    .with_partition_max_bytes(100),
                            ])]),
                    version,
                ),
                ApiKey::ListOffsets => encode(
                    &ListOffsetsRequest::default()
                        .with_replica_id((-1).into())
                        .with_topics(vec![ListOffsetsTopic::default()
                            .with_name(topic_name("t"))
                            .with_partitions(vec![
                                ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(1_700_000_000_001),
                                ListOffsetsPartition::default()
                                    .with_partition_index(1)
                                    .with_timestamp(-2),
                            ])]),
                    version,
                ),
                ApiKey::Metadata => encode(
                    &MetadataRequest::default()
                        .with_topics(Some(vec![
                            MetadataRequestTopic::default().with_name(Some(topic_name("t")))
                        ]))
                        .with_include_topic_authorized_operations(version >= 8),
                    version,
                ),
                ApiKey::ApiVersions => encode(&ApiVersionsRequest::default(), version),
                ApiKey::CreateTopics => encode(
                    &CreateTopicsRequest::default()
                        .with_timeout_ms(10)
                        .with_topics(vec![CreatableTopic::default()
                            .with_name(topic_name("new"))
                            .with_num_partitions(3)
                            .with_replication_factor(1)]),
                    version,
                ),
                ApiKey::DeleteTopics => encode(
                    &DeleteTopicsRequest::default()
                        .with_timeout_ms(10)
                        .with_topic_names(vec![topic_name("gone")]),
                    version,
                ),
                ApiKey::DescribeConfigs => encode(
                    &DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("t")),
                    ]),
                    version,
                ),
                ApiKey::InitProducerId => encode(
                    &InitProducerIdRequest::default().with_transaction_timeout_ms(1000),
                    version,
                ),
                ApiKey::FindCoordinator => encode(
                    &if version >= 4 {
                        FindCoordinatorRequest::default().with_coordinator_keys(vec![
                            StrBytes::from_static_str("g"),
                            StrBytes::from_static_str("h"),
                        ])
                    } else {
                        FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
                    },
                    version,
                ),
                ApiKey::JoinGroup => encode(
                    &JoinGroupRequest::default()
                        .with_group_id(group_id("g"))
                        .with_session_timeout_ms(10_000)
                        .with_rebalance_timeout_ms(if version >= 1 { 30_000 } else { -1 })
                        .with_member_id(StrBytes::from_static_str(""))
                        .with_group_instance_id(
                            (version >= 5).then(|| StrBytes::from_static_str("instance")),
                        )
                        .with_protocol_type(StrBytes::from_static_str("consumer"))
                        .with_protocols(vec![
                            join_group_request::JoinGroupRequestProtocol::default()
                                .with_name(StrBytes::from_static_str("range"))
                                .with_metadata(Bytes::from_static(
                                    b"\0\x01\0\0\0\x01\0\x01t\0\0\0\0",
                                )),
                        ]),
                    version,
                ),
                ApiKey::SyncGroup => encode(
                    &SyncGroupRequest::default()
                        .with_group_id(group_id("g"))
                        .with_generation_id(1)
                        .with_member_id(StrBytes::from_static_str("fuzz-member"))
                        .with_assignments(vec![
                            sync_group_request::SyncGroupRequestAssignment::default()
                                .with_member_id(StrBytes::from_static_str("fuzz-member"))
                                .with_assignment(Bytes::from_static(
                                    b"\0\x01\0\0\0\x01\0\x01t\0\0\0\x01\0\0\0\0\0\0\0\0",
                                )),
                        ]),
                    version,
                ),
                ApiKey::Heartbeat => encode(
                    &HeartbeatRequest::default()
                        .with_group_id(group_id("g"))
                        .with_generation_id(1)
                        .with_member_id(StrBytes::from_static_str("fuzz-member")),
                    version,
                ),
                ApiKey::OffsetForLeaderEpoch => encode(
                    &kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
                        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                        .with_topics(vec![
                            kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                                .with_topic(topic_name("t"))
                                .with_partitions(vec![
                                    kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                        .with_partition(0)
                                        .with_current_leader_epoch(-1)
                                        .with_leader_epoch(0),
                                ]),
                        ]),
                    version,
                ),
                ApiKey::LeaveGroup => encode(
                    &if version >= 3 {
                        LeaveGroupRequest::default()
                            .with_group_id(group_id("g"))
                            .with_members(vec![leave_group_request::MemberIdentity::default()
                                .with_member_id(StrBytes::from_static_str("fuzz-member"))])
                    } else {
                        LeaveGroupRequest::default()
                            .with_group_id(group_id("g"))
                            .with_member_id(StrBytes::from_static_str("fuzz-member"))
                    },
                    version,
                ),
                ApiKey::OffsetCommit => {
                    encode(
                        &OffsetCommitRequest::default()
                            .with_group_id(group_id("g"))
                            .with_generation_id_or_member_epoch(-1)
                            .with_topics(vec![
                                offset_commit_request::OffsetCommitRequestTopic::default()
                                    .with_name(topic_name("t"))
                                    .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(3)
                                    .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(1)
                                    .with_committed_offset(1),
                            ]),
                            ]),
                        version,
                    )
                }
                ApiKey::OffsetFetch => encode(
                    &OffsetFetchRequest::default()
                        .with_group_id(group_id("g"))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(topic_name("t"))
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                    version,
                ),
                ApiKey::ListGroups => encode(&ListGroupsRequest::default(), version),
                ApiKey::DescribeGroups => encode(
                    &DescribeGroupsRequest::default()
                        .with_groups(vec![group_id("g"), group_id("missing")]),
                    version,
                ),
                ApiKey::DeleteGroups => encode(
                    &DeleteGroupsRequest::default().with_groups_names(vec![group_id("g")]),
                    version,
                ),
                ApiKey::OffsetDelete => encode(
                    &OffsetDeleteRequest::default()
                        .with_group_id(group_id("g"))
                        .with_topics(vec![
                            offset_delete_request::OffsetDeleteRequestTopic::default()
                                .with_name(topic_name("t"))
                                .with_partitions(vec![
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(0),
                                ]),
                        ]),
                    version,
                ),
                ApiKey::TxnOffsetCommit => encode(
                    &TxnOffsetCommitRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
                        .with_group_id(group_id("g"))
                        .with_producer_id(ProducerId(5))
                        .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                            .with_name(topic_name("t"))
                            .with_partitions(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(3),
                            ])]),
                    version,
                ),
                ApiKey::LeaderAndIsr => {
                    use kafka_protocol::messages::leader_and_isr_request::*;
                    encode(
                        &kafka_protocol::messages::LeaderAndIsrRequest::default()
                            .with_controller_id(kafka_protocol::messages::BrokerId(1))
                            .with_controller_epoch(1)
                            .with_broker_epoch(-1)
                            .with_type(1)
                            .with_topic_states(vec![LeaderAndIsrTopicState::default()
                                .with_topic_name(topic_name("t"))
                                .with_topic_id(uuid::Uuid::from_u128(7))
                                .with_partition_states(vec![LeaderAndIsrPartitionState::default()
                                    .with_partition_index(0)
                                    .with_controller_epoch(1)
                                    .with_leader(kafka_protocol::messages::BrokerId(1))
                                    .with_leader_epoch(1)
                                    .with_isr(vec![kafka_protocol::messages::BrokerId(1)])
                                    .with_partition_epoch(1)
                                    .with_replicas(vec![kafka_protocol::messages::BrokerId(1)])])])
                            .with_live_leaders(vec![LeaderAndIsrLiveLeader::default()
                                .with_broker_id(kafka_protocol::messages::BrokerId(1))
                                .with_host_name(StrBytes::from_static_str("127.0.0.1"))
                                .with_port(1)]),
                        version,
                    )
                }
                ApiKey::UpdateMetadata => {
                    use kafka_protocol::messages::update_metadata_request::*;
                    encode(
                        &kafka_protocol::messages::UpdateMetadataRequest::default()
                            .with_controller_id(kafka_protocol::messages::BrokerId(1))
                            .with_controller_epoch(1)
                            .with_broker_epoch(-1)
                            .with_topic_states(vec![UpdateMetadataTopicState::default()
                                .with_topic_name(topic_name("t"))
                                .with_topic_id(uuid::Uuid::from_u128(7))
                                .with_partition_states(vec![UpdateMetadataPartitionState::default()
                                    .with_partition_index(0)
                                    .with_controller_epoch(1)
                                    .with_leader(kafka_protocol::messages::BrokerId(1))
                                    .with_leader_epoch(1)
                                    .with_isr(vec![kafka_protocol::messages::BrokerId(1)])
                                    .with_zk_version(1)
                                    .with_replicas(vec![kafka_protocol::messages::BrokerId(1)])])])
                            .with_live_brokers(vec![UpdateMetadataBroker::default()
                                .with_id(kafka_protocol::messages::BrokerId(1))
                                .with_endpoints(vec![UpdateMetadataEndpoint::default()
                                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                                    .with_port(1)
                                    .with_listener(StrBytes::from_static_str("PLAINTEXT"))])]),
                        version,
                    )
                }
                ApiKey::StopReplica => {
                    use kafka_protocol::messages::stop_replica_request::*;
                    encode(
                        &kafka_protocol::messages::StopReplicaRequest::default()
                            .with_controller_id(kafka_protocol::messages::BrokerId(1))
                            .with_controller_epoch(1)
                            .with_broker_epoch(-1)
                            .with_topic_states(vec![StopReplicaTopicState::default()
                                .with_topic_name(topic_name("t"))
                                .with_partition_states(vec![StopReplicaPartitionState::default()
                                    .with_partition_index(0)
                                    .with_leader_epoch(1)
                                    .with_delete_partition(true)])]),
                        version,
                    )
                }
                ApiKey::ControlledShutdown => encode(
                    &kafka_protocol::messages::ControlledShutdownRequest::default()
                        .with_broker_id(kafka_protocol::messages::BrokerId(1))
                        .with_broker_epoch(1),
                    version,
                ),
                other => panic!("no seed for {other:?}: add one"),
            };
            let frame = frame.unwrap_or_else(|| panic!("{:?} v{version} encodes", api.key));
            seeds.push((
                format!("{:?}-v{version}.bin", api.key).to_lowercase(),
                frame,
            ));
        }
    }
    seeds
}

fn load_corpus() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut dirs = vec![corpus_dir()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "bin") {
                frames.push(std::fs::read(&path).expect("read corpus file"));
            }
        }
    }
    frames
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand when APIs or versions change"]
fn write_seed_corpus() {
    let dir = corpus_dir().join("generated");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, frame) in seed_frames() {
        std::fs::write(dir.join(name), frame).unwrap();
    }
}

#[test]
fn the_corpus_covers_every_api_and_version() {
    let corpus = load_corpus();
    for (name, frame) in seed_frames() {
        assert!(
            corpus.contains(&frame),
            "fuzz/corpus lacks {name}: run `cargo test --test fuzz_requests -- --ignored write_seed_corpus`"
        );
    }
}

#[test]
fn mutated_requests_never_panic_the_request_path() {
    let secs: u64 = std::env::var("SKEIN_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SKEIN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fuzzing for {secs} s with SKEIN_FUZZ_SEED={seed}");
    let corpus = load_corpus();
    assert!(!corpus.is_empty(), "no seeds in {}", corpus_dir().display());
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path());
    // The frame being handled, readable here if the shard's thread dies on it.
    let last = Arc::new(std::sync::Mutex::new(Vec::new()));
    let last_frame = last.clone();

    let outcome = glommio::LocalExecutorBuilder::default()
        .name("fuzz-shard")
        .spawn(move || async move {
            let (senders, _job_queues) = skein::mesh::job_queues(1);
            let (control, control_rx) = ControlHandle::channel();
            // No control thread: admin requests it would serve fail as if ZooKeeper were away.
            drop(control_rx);
            let shard = Rc::new(
                Shard::new(
                    0,
                    config.clone(),
                    config.tuning.shard(0),
                    senders,
                    control,
                    RecoveryPoints::none(),
                )
                .expect("shard"),
            );
            shard.apply_metadata(Arc::new(metadata(&config))).await;
            let budget = RequestBudget::new(256 << 20);
            let reserve = |frame: &[u8]| {
                Rc::new(
                    budget
                        .try_reserve(frame.len() as u64)
                        .expect("one request at a time always fits"),
                )
            };
            let mut rng = Rng(seed);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut runs = 0u64;
            let mut answered = 0u64;
            while Instant::now() < deadline {
                let seed_frame = &corpus[rng.below(corpus.len())];
                let other = &corpus[rng.below(corpus.len())];
                let frame = mutate(&mut rng, seed_frame, other);
                let bytes = Bytes::from(frame.clone());
                let reservation = reserve(&frame);
                *last_frame.lock().unwrap() = frame;
                // Long polls and waits on the absent control thread are cut short.
                let result = futures::select! {
                    r = handle(&shard, bytes, reservation, "/127.0.0.1".into()).fuse() => Some(r),
                    _ = glommio::timer::sleep(Duration::from_millis(20)).fuse() => None,
                };
                runs += 1;
                answered += u64::from(matches!(result, Some(Ok(_))));
            }
            // Still serving: a plain ApiVersions is answered.
            let versions = encode(&ApiVersionsRequest::default(), 3).unwrap();
            let answer = handle(
                &shard,
                Bytes::from(versions.clone()),
                reserve(&versions),
                "/127.0.0.1".into(),
            )
            .await;
            assert!(
                matches!(answer, Ok(Some(_))),
                "the shard answers afterwards"
            );
            shard.shut_down(Duration::from_secs(5)).await;
            (runs, answered)
        })
        .expect("executor")
        .join();
    match outcome {
        Ok((runs, answered)) => {
            eprintln!("{runs} mutated frames, {answered} answered, the rest refused");
            assert!(runs > 1000, "only {runs} frames in {secs} s");
        }
        Err(panic) => {
            let crashes = corpus_dir().join("crashes");
            std::fs::create_dir_all(&crashes).ok();
            let kept = crashes.join(format!("crash-{seed}.bin"));
            let frame = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            std::fs::write(&kept, frame).ok();
            panic!(
                "a mutated frame panicked the request path (SKEIN_FUZZ_SEED={seed}; frame kept in {}): {panic:?}",
                kept.display()
            );
        }
    }
}
