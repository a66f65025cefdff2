//! The owner of the log directory's `recovery-point-offset-checkpoint` and
//! `replication-offset-checkpoint` (high watermarks, written alongside): a thread of its own
//! (`skein-checkpoint`), because writing the file is blocking I/O (fsync, rename, fsync the
//! directory) and its content comes from every shard.
//!
//! Every `log.flush.offset.checkpoint.interval.ms` (Kafka's setting), and right after a shard
//! opened or closed partitions, the thread sends each shard a job that copies its partitions'
//! recovery points, waits for all of them (bounded), and replaces the file atomically. At shutdown
//! the main thread hands it the recovery points of the partitions the shards just closed, for one
//! last write. The file read at start stays the source for partitions not opened in this process
//! (their directories are untouched, so their recovery points still hold); a partition once seen
//! open is only what its shard reports.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::{Job, ShardSenders};
use crate::metadata::TopicPartition;
use crate::storage::recovery_point_checkpoint::{self, PartitionKey};

/// Commands the checkpoint thread's queue holds: write requests coalesce, so a few suffice.
const COMMAND_QUEUE_DEPTH: usize = 16;

/// How long a gather waits for every shard's answer before skipping this write.
const GATHER_TIMEOUT: Duration = Duration::from_secs(10);

enum Command {
    WriteNow,
    /// Write once more with the recovery points of the partitions closed at shutdown, then end.
    Stop {
        closed: Vec<Reported>,
        done: flume::Sender<()>,
    },
}

/// What a shard reports of an open partition: its recovery point and high watermark.
pub type Reported = (TopicPartition, i64, i64);

fn key(tp: &TopicPartition) -> PartitionKey {
    (tp.topic.clone(), tp.partition)
}

/// What every shard holds: the recovery points read at start (to open partitions with) and the
/// way to ask for a write. Cheap to clone.
#[derive(Clone)]
pub struct RecoveryPoints {
    at_start: Arc<BTreeMap<PartitionKey, i64>>,
    high_watermarks_at_start: Arc<BTreeMap<PartitionKey, i64>>,
    commands: flume::Sender<Command>,
}

impl RecoveryPoints {
    /// No checkpoint and no checkpoint thread (a shard run on its own, as in tests): every log
    /// recovers from its first segment after a crash, and requests for a write are dropped.
    pub fn none() -> RecoveryPoints {
        RecoveryPoints {
            at_start: Arc::new(BTreeMap::new()),
            high_watermarks_at_start: Arc::new(BTreeMap::new()),
            commands: flume::bounded(COMMAND_QUEUE_DEPTH).0,
        }
    }

    /// The partition's recovery point as the checkpoint had it when the broker started. Only
    /// good for the first open of the partition in this process: a partition closed since has a
    /// clean-shutdown marker (so its recovery point does not matter) or was deleted.
    pub fn at_start(&self, tp: &TopicPartition) -> Option<i64> {
        self.at_start.get(&key(tp)).copied()
    }

    /// The partition's high watermark as the replication checkpoint had it at start.
    pub fn high_watermark_at_start(&self, tp: &TopicPartition) -> Option<i64> {
        self.high_watermarks_at_start.get(&key(tp)).copied()
    }

    /// Asks the checkpoint thread for a write soon (requests coalesce).
    pub fn request_write(&self) {
        // A full queue already holds a request for a write; this one adds nothing.
        let _ = self.commands.try_send(Command::WriteNow);
    }
}

/// The checkpoint thread's handle, held by the broker's main thread.
pub struct Checkpointer {
    commands: flume::Sender<Command>,
    thread: std::thread::JoinHandle<()>,
}

/// Reads the log directory's checkpoint and starts the thread that keeps it. A file that cannot
/// be read is reported and ignored: every log then recovers from its first segment after an
/// unclean stop, as Kafka resets its recovery points to 0.
pub fn start(
    log_dir: PathBuf,
    interval: Duration,
    senders: ShardSenders,
) -> std::io::Result<(Checkpointer, RecoveryPoints)> {
    let at_start = match recovery_point_checkpoint::read(&log_dir) {
        Ok(entries) => entries,
        Err(e) => {
            error!("{e}; every log recovers from its first segment if it was not stopped cleanly");
            BTreeMap::new()
        }
    };
    let at_start = Arc::new(at_start);
    let high_watermarks_at_start = match recovery_point_checkpoint::read_high_watermarks(&log_dir) {
        Ok(entries) => entries,
        Err(e) => {
            error!("{e}; high watermarks start at each log's start");
            BTreeMap::new()
        }
    };
    let high_watermarks_at_start = Arc::new(high_watermarks_at_start);
    let (commands, queue) = flume::bounded(COMMAND_QUEUE_DEPTH);
    let mut keeper = Keeper {
        log_dir,
        senders,
        at_start: Arc::clone(&at_start),
        high_watermarks_at_start: Arc::clone(&high_watermarks_at_start),
        seen_open: HashSet::new(),
    };
    let thread = std::thread::Builder::new()
        .name("skein-checkpoint".to_string())
        .spawn(move || keeper.run(&queue, interval))?;
    Ok((
        Checkpointer {
            commands: commands.clone(),
            thread,
        },
        RecoveryPoints {
            at_start,
            high_watermarks_at_start,
            commands,
        },
    ))
}

impl Checkpointer {
    /// Writes the last checkpoint, with the recovery points of the partitions closed at
    /// shutdown, and ends the thread (waiting up to `timeout`).
    pub fn stop(self, closed: Vec<Reported>, timeout: Duration) {
        let (done, finished) = flume::bounded(1);
        if self
            .commands
            .send_timeout(Command::Stop { closed, done }, timeout)
            .is_err()
            || finished.recv_timeout(timeout).is_err()
        {
            warn!("the checkpoint thread did not write the final recovery-point checkpoint");
            return;
        }
        let _ = self.thread.join();
    }
}

struct Keeper {
    log_dir: PathBuf,
    senders: ShardSenders,
    at_start: Arc<BTreeMap<PartitionKey, i64>>,
    high_watermarks_at_start: Arc<BTreeMap<PartitionKey, i64>>,
    /// Partitions a gather found open: from then on only their shard speaks for them.
    seen_open: HashSet<PartitionKey>,
}

impl Keeper {
    fn run(&mut self, queue: &flume::Receiver<Command>, interval: Duration) {
        loop {
            match queue.recv_timeout(interval) {
                Ok(Command::WriteNow) | Err(flume::RecvTimeoutError::Timeout) => {
                    // Requests that came meanwhile are answered by this one write.
                    while let Ok(Command::WriteNow) = queue.try_recv() {}
                    if let Some(open) = self.gather() {
                        self.write(open);
                    }
                }
                Ok(Command::Stop { closed, done }) => {
                    self.write(closed);
                    let _ = done.send(());
                    return;
                }
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Every open partition's recovery point, or `None` if a shard did not answer in time (a
    /// checkpoint missing partitions would only cost recovery time, but one missing a whole
    /// shard is not worth writing).
    fn gather(&self) -> Option<Vec<Reported>> {
        let (reply, answers) = flume::bounded(self.senders.len());
        let mut asked = 0;
        for shard in 0..self.senders.len() {
            let reply = reply.clone();
            let job: Job = Box::new(move |shard| {
                let _ = reply.send(shard.recovery_points());
            });
            asked += usize::from(
                self.senders
                    .send_blocking(shard, job, GATHER_TIMEOUT)
                    .is_ok(),
            );
        }
        if asked < self.senders.len() {
            return None;
        }
        let deadline = Instant::now() + GATHER_TIMEOUT;
        let mut open = Vec::new();
        for _ in 0..asked {
            match answers.recv_deadline(deadline) {
                Ok(points) => open.extend(points),
                Err(_) => {
                    warn!("a shard did not report its recovery points within {GATHER_TIMEOUT:?}; checkpoint not written");
                    return None;
                }
            }
        }
        Some(open)
    }

    fn write(&mut self, open: Vec<Reported>) {
        let reported: BTreeMap<PartitionKey, i64> = open
            .iter()
            .map(|(tp, point, _)| (key(tp), *point))
            .collect();
        let high_watermarks: BTreeMap<PartitionKey, i64> =
            open.iter().map(|(tp, _, hw)| (key(tp), *hw)).collect();
        let not_seen = |at_start: &BTreeMap<PartitionKey, i64>| -> BTreeMap<PartitionKey, i64> {
            at_start
                .iter()
                .filter(|(k, _)| !self.seen_open.contains(*k) && !reported.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let mut entries = not_seen(&self.at_start);
        let mut hw_entries = not_seen(&self.high_watermarks_at_start);
        self.seen_open.extend(reported.keys().cloned());
        entries.extend(reported);
        hw_entries.extend(high_watermarks);
        if let Err(e) = recovery_point_checkpoint::write(&self.log_dir, &entries) {
            error!("cannot write the recovery-point checkpoint: {e}");
        }
        if let Err(e) = recovery_point_checkpoint::write_high_watermarks(&self.log_dir, &hw_entries)
        {
            error!("cannot write the high-watermark checkpoint: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }

    #[test]
    fn entries_read_at_start_last_until_their_partition_is_seen_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at_start: BTreeMap<PartitionKey, i64> =
            [(("a".to_string(), 0), 5), (("b".to_string(), 0), 7)]
                .into_iter()
                .collect();
        let mut keeper = Keeper {
            log_dir: dir.path().to_path_buf(),
            senders: crate::mesh::job_queues(0).0,
            at_start: Arc::new(at_start),
            high_watermarks_at_start: Arc::new(BTreeMap::new()),
            seen_open: HashSet::new(),
        };
        let written = || recovery_point_checkpoint::read(dir.path()).expect("read");
        keeper.write(vec![(tp("a", 0), 9, 8), (tp("c", 1), 3, 3)]);
        let expected: BTreeMap<PartitionKey, i64> = [
            (("a".to_string(), 0), 9),
            (("b".to_string(), 0), 7),
            (("c".to_string(), 1), 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(written(), expected);
        // a and c were closed since: their directories hold a clean-shutdown marker (or are
        // gone), so their entries go; b was never opened here, so its entry still holds.
        keeper.write(Vec::new());
        let expected: BTreeMap<PartitionKey, i64> =
            [(("b".to_string(), 0), 7)].into_iter().collect();
        assert_eq!(written(), expected);
    }
}
