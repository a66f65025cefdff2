//! Protocol-level behaviour of a real broker process, driven with skein's own client so requests can
//! be shaped exactly (corrupt CRCs, oversized batches, retried and gapped idempotent sequences).

mod harness;

use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::batches::{build_batch, BatchSpec};
use harness::{Broker, BrokerOpts, ZooKeeper};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeAclsRequest, FetchRequest, InitProducerIdRequest,
    ListOffsetsRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skein::client::Connection;
use skein::record::ProducerIds;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn produce_request(topic: &str, partitions: &[(i32, Bytes)]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(
                partitions
                    .iter()
                    .map(|(p, records)| {
                        PartitionProduceData::default()
                            .with_index(*p)
                            .with_records(Some(records.clone()))
                    })
                    .collect(),
            )])
}

async fn produce(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    batch: Bytes,
) -> PartitionProduceResponse {
    let response = conn
        .send(produce_request(topic, &[(partition, batch)]))
        .await
        .unwrap();
    response.responses[0].partition_responses[0].clone()
}

async fn log_end_offset(conn: &mut Connection, topic: &str, partition: i32) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let response = conn.send(request).await.unwrap();
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

async fn fetch(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(10 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let response = conn.send(request).await.unwrap();
    let p = &response.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

#[test]
fn corrupt_and_oversized_batches_are_rejected_and_nothing_is_appended() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1).shards(2).set("message.max.bytes", "2000"),
    );
    broker.create_topic("guarded", 1, &[]);
    runtime().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        let good = build_batch(&BatchSpec {
            records: 3,
            ..BatchSpec::default()
        });
        assert_eq!(
            produce(&mut conn, "guarded", 0, good.clone())
                .await
                .error_code,
            0
        );
        assert_eq!(log_end_offset(&mut conn, "guarded", 0).await, 3);

        let mut corrupt = good.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff; // inside the CRC-covered records
        let response = produce(&mut conn, "guarded", 0, Bytes::from(corrupt)).await;
        assert_eq!(response.error_code, ResponseError::CorruptMessage.code());
        assert_eq!(
            log_end_offset(&mut conn, "guarded", 0).await,
            3,
            "a corrupt batch appends nothing"
        );

        let big = build_batch(&BatchSpec {
            records: 1,
            value_bytes: 5000,
            ..BatchSpec::default()
        });
        let response = produce(&mut conn, "guarded", 0, big).await;
        assert_eq!(response.error_code, ResponseError::MessageTooLarge.code());
        assert_eq!(
            log_end_offset(&mut conn, "guarded", 0).await,
            3,
            "an oversized batch appends nothing"
        );

        // The connection survives rejected batches, and the log still serves what it has.
        let (error, high_watermark, records) = fetch(&mut conn, "guarded", 0, 0, 0).await;
        assert_eq!((error, high_watermark), (0, 3));
        assert_eq!(
            records.len(),
            good.len(),
            "exactly the one good batch comes back"
        );
    });
}

#[test]
fn produce_reaches_partitions_owned_by_the_other_shard() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    // Four partitions over two shards: two of them are owned by the shard that did not accept this
    // connection, whichever that was, so their batches cross shards.
    broker.create_topic("spread", 4, &[]);
    runtime().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        let batches: Vec<(i32, Bytes)> = (0..4)
            .map(|p| {
                (
                    p,
                    build_batch(&BatchSpec {
                        records: p + 1,
                        fill: b'a' + p as u8,
                        ..BatchSpec::default()
                    }),
                )
            })
            .collect();
        for round in 0..3 {
            let response = conn
                .send(produce_request("spread", &batches))
                .await
                .unwrap();
            for p in &response.responses[0].partition_responses {
                assert_eq!(p.error_code, 0, "partition {}", p.index);
                assert_eq!(p.base_offset, round * (p.index as i64 + 1));
            }
        }
        for (p, batch) in &batches {
            let (error, high_watermark, records) = fetch(&mut conn, "spread", *p, 0, 0).await;
            assert_eq!(error, 0);
            assert_eq!(high_watermark, 3 * (*p as i64 + 1));
            assert_eq!(records.len(), 3 * batch.len());
            // Bytes after the base offset and leader epoch are exactly what was produced.
            assert_eq!(&records[16..batch.len()], &batch[16..]);
        }
    });
}

/// A client may write many requests before reading any answer (Kafka clients keep up to five in
/// flight; the broker handles them concurrently). Answers must still come back in request order,
/// and each partition's appends must land in the order the requests were sent, also for
/// partitions owned by the shard that did not accept the connection.
#[test]
fn pipelined_requests_are_answered_and_appended_in_order() {
    use skein::client::pipeline::{decode_response, encode_request};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const REQUESTS: i32 = 60;
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    broker.create_topic("ordered", 4, &[]);
    runtime().block_on(async {
        let mut stream = tokio::net::TcpStream::connect(broker.bootstrap())
            .await
            .unwrap();
        let client_id = StrBytes::from_static_str("pipeline-test");
        // Request i carries, for every partition, one batch of i + 1 records; every fifth request
        // is an ApiVersions in between.
        let mut wire = Vec::new();
        let mut buf = bytes::BytesMut::new();
        for i in 0..REQUESTS {
            if i % 5 == 4 {
                encode_request(&mut buf, &ApiVersionsRequest::default(), 3, i, &client_id).unwrap();
            } else {
                let batch = build_batch(&BatchSpec {
                    records: i + 1,
                    ..BatchSpec::default()
                });
                let partitions: Vec<(i32, Bytes)> = (0..4).map(|p| (p, batch.clone())).collect();
                let request = produce_request("ordered", &partitions).with_acks(1);
                encode_request(&mut buf, &request, 9, i, &client_id).unwrap();
            }
            wire.extend_from_slice(&buf);
        }
        // All of it in one write: the broker reads many requests before answering the first.
        stream.write_all(&wire).await.unwrap();
        let mut next_offset = 0i64;
        for i in 0..REQUESTS {
            let len = stream.read_i32().await.unwrap();
            let mut frame = vec![0u8; len as usize];
            stream.read_exact(&mut frame).await.unwrap();
            let frame = Bytes::from(frame);
            if i % 5 == 4 {
                let response = decode_response::<ApiVersionsRequest>(frame, i, 3)
                    .unwrap_or_else(|e| panic!("answer {i}: {e}"));
                assert_eq!(response.error_code, 0);
                continue;
            }
            let response = decode_response::<ProduceRequest>(frame, i, 9)
                .unwrap_or_else(|e| panic!("answer {i} out of order or broken: {e}"));
            for p in &response.responses[0].partition_responses {
                assert_eq!(p.error_code, 0, "request {i} partition {}", p.index);
                assert_eq!(
                    p.base_offset, next_offset,
                    "request {i} partition {}",
                    p.index
                );
            }
            next_offset += i64::from(i + 1);
        }
        // Read back: every partition holds the batches in request order.
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        for p in 0..4 {
            let (error, high_watermark, records) = fetch(&mut conn, "ordered", p, 0, 0).await;
            assert_eq!(error, 0);
            assert_eq!(high_watermark, next_offset);
            // Request i's batch is the one with i + 1 records.
            let order: Vec<i32> = skein::record::split_batches(&records)
                .unwrap()
                .iter()
                .map(|b| b.records_count() - 1)
                .collect();
            let expected: Vec<i32> = (0..REQUESTS).filter(|i| i % 5 != 4).collect();
            assert_eq!(order, expected, "partition {p}");
        }
    });
}

#[test]
fn idempotent_producer_retries_are_deduplicated_and_gaps_refused_across_restarts() {
    let zk = ZooKeeper::start(1);
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("zookeeper.session.timeout.ms", "6000"),
    );
    broker.create_topic("exactly-once", 1, &[]);
    let rt = runtime();
    let producer_id = rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        let init = conn
            .send(
                InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000),
            )
            .await
            .unwrap();
        assert_eq!(init.error_code, 0);
        assert!(init.producer_id.0 >= 0);
        let batch = |seq: i32| {
            build_batch(&BatchSpec {
                records: 2,
                producer: ProducerIds {
                    producer_id: init.producer_id.0,
                    producer_epoch: init.producer_epoch,
                    base_sequence: seq,
                },
                ..BatchSpec::default()
            })
        };
        let first = produce(&mut conn, "exactly-once", 0, batch(0)).await;
        assert_eq!((first.error_code, first.base_offset), (0, 0));
        let retry = produce(&mut conn, "exactly-once", 0, batch(0)).await;
        assert_eq!(
            (retry.error_code, retry.base_offset),
            (0, 0),
            "a retry is acknowledged with its first offset"
        );
        assert_eq!(
            log_end_offset(&mut conn, "exactly-once", 0).await,
            2,
            "and not appended twice"
        );
        let gap = produce(&mut conn, "exactly-once", 0, batch(5)).await;
        assert_eq!(
            gap.error_code,
            ResponseError::OutOfOrderSequenceNumber.code()
        );
        let next = produce(&mut conn, "exactly-once", 0, batch(2)).await;
        assert_eq!((next.error_code, next.base_offset), (0, 2));
        (init.producer_id.0, init.producer_epoch)
    });

    broker.kill();
    broker.restart();
    rt.block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        let batch = |seq: i32| {
            build_batch(&BatchSpec {
                records: 2,
                producer: ProducerIds {
                    producer_id: producer_id.0,
                    producer_epoch: producer_id.1,
                    base_sequence: seq,
                },
                ..BatchSpec::default()
            })
        };
        let retry = produce(&mut conn, "exactly-once", 0, batch(2)).await;
        assert_eq!(
            (retry.error_code, retry.base_offset),
            (0, 2),
            "producer state survived the restart"
        );
        assert_eq!(log_end_offset(&mut conn, "exactly-once", 0).await, 4);
        let gap = produce(&mut conn, "exactly-once", 0, batch(9)).await;
        assert_eq!(
            gap.error_code,
            ResponseError::OutOfOrderSequenceNumber.code()
        );
    });
}

#[test]
fn fetch_long_polls_until_data_arrives() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    broker.create_topic("polled", 1, &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut idle = Connection::connect(&broker.bootstrap()).await.unwrap();
        let started = Instant::now();
        let (error, _, records) = fetch(&mut idle, "polled", 0, 0, 300).await;
        assert_eq!(error, 0);
        assert!(records.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "an empty fetch waits max_wait_ms"
        );

        let bootstrap = broker.bootstrap();
        let producer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut conn = Connection::connect(&bootstrap).await.unwrap();
            produce(&mut conn, "polled", 0, build_batch(&BatchSpec::default())).await
        });
        let (error, high_watermark, records) = fetch(&mut idle, "polled", 0, 0, 20_000).await;
        assert_eq!((error, high_watermark), (0, 1));
        assert!(
            !records.is_empty(),
            "the waiting fetch returns the new batch"
        );
        assert_eq!(producer.await.unwrap().error_code, 0);

        let (error, _, _) = fetch(&mut idle, "polled", 0, 99, 0).await;
        assert_eq!(error, ResponseError::OffsetOutOfRange.code());
    });
}

#[test]
fn unsupported_versions_and_apis_are_answered_or_logged() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1));
    runtime().block_on(async {
        let mut conn = Connection::connect(&broker.bootstrap()).await.unwrap();
        // A newer ApiVersions than skein knows: UNSUPPORTED_VERSION in v0, with the table.
        let response = conn
            .send_version(ApiVersionsRequest::default(), 4)
            .await
            .unwrap();
        assert_eq!(response.error_code, 0);
        let produce = response
            .api_keys
            .iter()
            .find(|k| k.api_key == 0)
            .expect("Produce is advertised");
        assert_eq!(
            produce.min_version, 3,
            "Produce v0-v2 (message formats v0/v1) are not offered"
        );
        let raw = raw_request(&broker, 18, 9).await;
        assert_eq!(
            i16::from_be_bytes([raw[4], raw[5]]),
            ResponseError::UnsupportedVersion.code()
        );

        // An API skein does not serve: the connection is closed, and the broker says why.
        let result = conn.send_version(DescribeAclsRequest::default(), 1).await;
        assert!(result.is_err(), "the connection is closed");
    });
    harness::wait_until(
        "the broker to log the unsupported API",
        Duration::from_secs(5),
        || {
            broker
                .log_text()
                .contains("DescribeAcls is not supported")
                .then_some(())
        },
    );
}

/// Sends a header-only request frame and returns the response body after the correlation id.
async fn raw_request(broker: &Broker, api_key: i16, version: i16) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(broker.bootstrap())
        .await
        .unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    frame.push(0); // empty tagged fields
    let mut message = (frame.len() as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&frame);
    stream.write_all(&message).await.unwrap();
    let len = stream.read_i32().await.unwrap();
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), 7);
    body
}
