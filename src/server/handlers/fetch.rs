//! Fetch: reads from the owning shards, long-polls (max_wait_ms, min_bytes) on their append
//! notifications, and answers with a gather list so record data is never copied into the response.
//!
//! `kafka-protocol` encodes a FetchResponse's `records` by copying them, so each partition's records
//! field is encoded holding a 16-byte marker instead; the marker (and its length prefix) is then
//! found in the small encoded buffer and replaced, in the gather list, by the real length prefix
//! and the record data: cached `Bytes` or a segment-file range that goes out by sendfile.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::HandleError;
use crate::metadata::TopicPartition;
use crate::server::{Response, ResponsePiece};
use crate::shard::Shard;
use crate::storage::{ReadChunk, ReadSlice};

/// What a partition's owner shard answers.
struct PartitionRead {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start_offset: i64,
    slice: Option<ReadSlice>,
    /// Where what this fetcher may see ended when it was read (the high watermark for a
    /// consumer, the log end for a follower): a long poll waits for it to move past this.
    upto: i64,
}

impl PartitionRead {
    fn error(error: ResponseError) -> Self {
        PartitionRead {
            error: Some(error),
            high_watermark: -1,
            log_start_offset: -1,
            slice: None,
            upto: -1,
        }
    }

    fn bytes(&self) -> usize {
        self.slice.as_ref().map_or(0, |s| s.bytes)
    }
}

struct Wanted {
    /// The request's topic entry it came from.
    topic_index: usize,
    tp: TopicPartition,
    /// The shard that leads the partition here, or the error a client should see.
    owner: Result<usize, ResponseError>,
    offset: i64,
    max_bytes: usize,
    /// The leader epoch the fetcher believes current (-1: not checked).
    current_leader_epoch: i32,
}

/// The longest a fetch waits for data (`max_wait_ms` beyond it is cut short, and an empty answer
/// is always allowed to come early): clients wait far less (Kafka's default is 500 ms), and a
/// long poll must not hold its request budget for days.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// Answers a Fetch. `release_frame` is called once nothing refers to the request's frame any
/// more, before any waiting, so that a long poll holds only what it needs.
pub async fn handle(
    shard: &Rc<Shard>,
    header: &RequestHeader,
    request: FetchRequest,
    release_frame: impl FnOnce(),
) -> Result<Response, HandleError> {
    let started = Instant::now();
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_bytes = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let metadata = shard.metadata();
    // A follower's fetch (Kafka: replica id >= 0) reads up to the log end rather than the high
    // watermark and reports the follower's progress; only brokers of the cluster may send one.
    let replica = match request.replica_id.0 {
        id if id < 0 => None,
        id if metadata.brokers.contains_key(&id) && id != shard.config.broker_id => Some(id),
        id => {
            return Err(HandleError::Malformed {
                api: ApiKey::Fetch,
                version: header.request_api_version,
                message: format!("replica id {id} is not another live broker of the cluster"),
            })
        }
    };
    // A partition named twice is fetched and answered once, as Kafka's fetch map collapses it,
    // so a request cannot multiply the work it asks for by repeating itself.
    let mut seen = HashSet::new();
    let mut wanted = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        for p in &topic.partitions {
            if !seen.insert((&topic.topic, p.partition)) {
                continue;
            }
            let tp = TopicPartition {
                topic: topic.topic.0.to_string(),
                partition: p.partition,
            };
            let owner = match metadata.leader_shard(&tp, shard.config.broker_id) {
                Some(owner) => Ok(owner),
                None if metadata.partition(&tp.topic, tp.partition).is_none() => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                None => Err(ResponseError::NotLeaderOrFollower),
            };
            wanted.push(Wanted {
                topic_index,
                tp,
                owner,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    drop(seen);
    // The topic names the answer repeats, copied: everything else decoded from the frame goes
    // now, and the frame with it.
    let names: Vec<TopicName> = request
        .topics
        .iter()
        .map(|t| TopicName(StrBytes::from_string(t.topic.0.to_string())))
        .collect();
    drop(request);
    release_frame();

    // A follower's progress (its fetch offsets) is recorded by the first read only: the
    // re-reads of a long poll ask for the same offsets.
    let mut reads = read_all(shard, &wanted, max_bytes, replica, true).await;
    loop {
        let total: usize = reads.iter().map(PartitionRead::bytes).sum();
        let any_error = reads.iter().any(|r| r.error.is_some());
        let elapsed = started.elapsed();
        if total >= min_bytes.max(1) || any_error || elapsed >= max_wait || wanted.is_empty() {
            break;
        }
        let seen: Vec<i64> = reads.iter().map(|r| r.upto).collect();
        wait_for_any_append(shard, &wanted, &seen, max_wait - elapsed, replica.is_some()).await;
        reads = read_all(shard, &wanted, max_bytes, replica, false).await;
    }
    // Counted here, on the connection's shard, because only here is it known which of the reads
    // go out: long polling reads again, and the response's max_bytes drops data already read.
    for (w, read) in wanted.iter().zip(&reads) {
        // Only partitions that exist are counted: made-up ones must not grow the metrics.
        if w.owner == Err(ResponseError::UnknownTopicOrPartition) {
            continue;
        }
        if let Some(topic) = metadata.topic(&w.tp.topic) {
            shard
                .metrics
                .record_partition(&w.tp.topic, topic.topic_id, w.tp.partition, |t| {
                    t.fetch_requests += 1;
                    t.fetch_errors += u64::from(read.error.is_some());
                    t.bytes_out += read.bytes() as u64;
                });
        }
    }
    encode(header, &names, wanted, reads)
}

async fn read_all(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    max_bytes: usize,
    replica: Option<i32>,
    record_progress: bool,
) -> Vec<PartitionRead> {
    let reads = wanted.iter().map(|w| {
        let (tp, offset, limit) = (w.tp.clone(), w.offset, w.max_bytes.min(max_bytes));
        let current_leader_epoch = w.current_leader_epoch;
        async move {
            let owner = match w.owner {
                Ok(owner) => owner,
                Err(error) => return PartitionRead::error(error),
            };
            shard
                .invoke_on(owner, move |owner_shard| async move {
                    let Some(partition) = owner_shard.partition(&tp) else {
                        return PartitionRead::error(ResponseError::NotLeaderOrFollower);
                    };
                    // KIP-320: a fetcher behind or ahead of this leader's epoch is told so.
                    if current_leader_epoch >= 0 {
                        let epoch = partition.leader_epoch();
                        if current_leader_epoch < epoch {
                            return PartitionRead::error(ResponseError::FencedLeaderEpoch);
                        }
                        if current_leader_epoch > epoch {
                            return PartitionRead::error(ResponseError::UnknownLeaderEpoch);
                        }
                    }
                    let (log_start, log_end) =
                        (partition.log_start_offset(), partition.log_end_offset());
                    if let Some(replica) = replica.filter(|_| record_progress) {
                        if offset <= log_end {
                            if let Err(error) = partition.follower_fetched(replica, offset) {
                                return PartitionRead::error(error);
                            }
                        }
                    }
                    let high_watermark = partition.high_watermark();
                    let upto = if replica.is_some() {
                        log_end
                    } else {
                        high_watermark
                    };
                    if offset < log_start || offset > log_end {
                        return PartitionRead {
                            high_watermark,
                            log_start_offset: log_start,
                            ..PartitionRead::error(ResponseError::OffsetOutOfRange)
                        };
                    }
                    // Kafka returns at least one whole batch even if larger than the limit, so a
                    // consumer can never get stuck behind a big batch.
                    match partition.read_upto(offset, limit, true, upto).await {
                        Ok(slice) => PartitionRead {
                            error: None,
                            high_watermark,
                            log_start_offset: log_start,
                            slice: Some(slice),
                            upto,
                        },
                        Err(e) => {
                            tracing::warn!("{tp}: fetch at {offset} failed: {e}");
                            PartitionRead {
                                high_watermark,
                                log_start_offset: log_start,
                                ..PartitionRead::error(ResponseError::KafkaStorageError)
                            }
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| PartitionRead::error(ResponseError::NotLeaderOrFollower))
        }
    });
    let mut reads = futures::future::join_all(reads).await;
    // The response's max_bytes: keep partitions in request order until it is reached (the first
    // non-empty one always stays), and drop the data of the rest; they are fetched next time.
    let mut total = 0usize;
    for read in &mut reads {
        let bytes = read.bytes();
        if bytes == 0 {
            continue;
        }
        if total > 0 && total + bytes > max_bytes {
            read.slice = None;
        } else {
            total += bytes;
        }
    }
    reads
}

/// Waits until any wanted partition's log end (for a follower) or high watermark (for a
/// consumer) is past what its last read saw (`seen`), or `timeout`. Checked when the wait is
/// registered, so an append landing between the read and the wait is not missed (Kafka's
/// DelayedFetch tries to complete once more after it is watched, for the same reason).
async fn wait_for_any_append(
    shard: &Rc<Shard>,
    wanted: &[Wanted],
    seen: &[i64],
    timeout: Duration,
    replica: bool,
) {
    let waits = wanted.iter().zip(seen).filter_map(|(w, &seen)| {
        let owner = w.owner.ok()?;
        let tp = w.tp.clone();
        Some(
            shard
                .invoke_on(owner, move |owner_shard| async move {
                    // Bounded here too, so an abandoned wait ends by itself on the owner shard.
                    if let Some(partition) = owner_shard.partition(&tp) {
                        let wait = if replica {
                            partition.wait_for_log_growth(seen)
                        } else {
                            partition.wait_for_append(seen)
                        };
                        futures::select! {
                            _ = wait.fuse() => {},
                            _ = glommio::timer::sleep(timeout).fuse() => {},
                        }
                    }
                })
                .boxed_local(),
        )
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        glommio::timer::sleep(timeout).await;
        return;
    }
    futures::select! {
        _ = futures::future::select_all(waits).fuse() => {},
        _ = glommio::timer::sleep(timeout).fuse() => {},
    }
}

/// A marker no encoded FetchResponse can otherwise contain (topic names are at most 249 bytes of
/// `[a-zA-Z0-9._-]`; error messages are absent).
fn marker(index: usize) -> Bytes {
    let mut m = BytesMut::with_capacity(16);
    m.put_slice(b"\x00\xffSKEIN\xff");
    m.put_u64(index as u64);
    Bytes::from(m)
}

fn encode(
    header: &RequestHeader,
    names: &[TopicName],
    wanted: Vec<Wanted>,
    reads: Vec<PartitionRead>,
) -> Result<Response, HandleError> {
    let version = header.request_api_version;
    let mut data: Vec<(Bytes, ReadSlice)> = Vec::new();
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut current: Option<usize> = None;
    for (w, read) in wanted.into_iter().zip(reads) {
        if current != Some(w.topic_index) {
            current = Some(w.topic_index);
            responses
                .push(FetchableTopicResponse::default().with_topic(names[w.topic_index].clone()));
        }
        let records = match read.slice {
            Some(slice) if slice.bytes > 0 => {
                let m = marker(data.len());
                data.push((m.clone(), slice));
                Some(m)
            }
            _ => Some(Bytes::new()),
        };
        responses
            .last_mut()
            .expect("a topic entry was pushed above")
            .partitions
            .push(
                PartitionData::default()
                    .with_partition_index(w.tp.partition)
                    .with_error_code(super::code(read.error))
                    .with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.high_watermark)
                    .with_log_start_offset(read.log_start_offset)
                    .with_records(records),
            );
    }
    let response = FetchResponse::default()
        .with_responses(responses)
        .with_session_id(0);
    let encoded =
        crate::protocol::encode_response(header, ApiKey::Fetch, &ResponseKind::Fetch(response))
            .map_err(|e| HandleError::Encode {
                api: ApiKey::Fetch,
                version,
                message: e.to_string(),
            })?;
    splice_records(encoded, version >= 12, data).map_err(|message| HandleError::Encode {
        api: ApiKey::Fetch,
        version,
        message,
    })
}

/// Replaces each marker (with its encoded length prefix) by the real length prefix and the record
/// data, and fixes the frame length.
fn splice_records(
    encoded: Bytes,
    flexible: bool,
    data: Vec<(Bytes, ReadSlice)>,
) -> Result<Response, String> {
    let marker_len = 16usize;
    // Length prefix of a 16-byte records field: INT32 16, or unsigned varint 17 when flexible.
    let prefix_len = if flexible { 1 } else { 4 };
    let mut pieces = Vec::with_capacity(data.len() * 3 + 1);
    let mut cursor = 4; // after the frame length
    let mut frame_len = encoded.len() - 4;
    for (m, slice) in data {
        let at = find(&encoded[cursor..], &m)
            .ok_or("record marker missing from encoded FetchResponse")?
            + cursor;
        let prefix_start = at - prefix_len;
        pieces.push(ResponsePiece::Bytes(encoded.slice(cursor..prefix_start)));
        let mut prefix = BytesMut::with_capacity(5);
        if flexible {
            put_unsigned_varint(&mut prefix, slice.bytes as u32 + 1);
        } else {
            prefix.put_i32(slice.bytes as i32);
        }
        frame_len = frame_len - prefix_len - marker_len + prefix.len() + slice.bytes;
        pieces.push(ResponsePiece::Bytes(prefix.freeze()));
        for chunk in slice.chunks {
            match chunk {
                ReadChunk::Cached(parts) => {
                    pieces.extend(parts.into_iter().map(ResponsePiece::Bytes))
                }
                ReadChunk::File {
                    file,
                    position,
                    len,
                } => pieces.push(ResponsePiece::File {
                    file,
                    position,
                    len,
                }),
            }
        }
        cursor = at + marker_len;
    }
    pieces.push(ResponsePiece::Bytes(encoded.slice(cursor..)));
    let frame_len = i32::try_from(frame_len).map_err(|_| "fetch response larger than 2 GiB")?;
    pieces.insert(
        0,
        ResponsePiece::Bytes(Bytes::copy_from_slice(&frame_len.to_be_bytes())),
    );
    Ok(Response { pieces })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}
