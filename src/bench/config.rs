//! What one bench run does: the parsed flags, in one serializable struct so the JSON report can
//! carry the exact configuration it ran with.

use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Produce,
    Consume,
    E2e,
    /// OffsetCommit throughput.
    Commit,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::E2e => "e2e",
            Mode::Commit => "commit",
        }
    }
    pub fn produces(self) -> bool {
        matches!(self, Mode::Produce | Mode::E2e)
    }
    pub fn consumes(self) -> bool {
        matches!(self, Mode::Consume | Mode::E2e)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    pub mode: Mode,
    pub bootstrap: String,
    pub topic: String,
    /// Records to produce (produce, e2e) or to consume (consume); None: run by duration, or
    /// (consume) up to the log end offsets seen at the start.
    pub records: Option<u64>,
    pub duration_s: Option<f64>,
    /// Value bytes per record (the bench header included).
    pub record_size: usize,
    /// Keys spread over this many distinct keys; None: records have no key.
    pub key_space: Option<u64>,
    /// Records per second over all producers; None: as fast as possible.
    pub rate: Option<f64>,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub batch_bytes: usize,
    pub linger_ms: u64,
    pub compression: String,
    pub producers: usize,
    pub consumers: usize,
    pub max_in_flight: usize,
    /// CPUs to pin the bench's threads to (one thread per CPU); None: unpinned threads.
    pub cores: Option<Vec<usize>>,
    /// (partitions, replication factor) of a topic to create first.
    pub create_topic: Option<(i32, i16)>,
    pub fetch_max_bytes: i32,
    /// A consumer gives up after this long without a new record.
    pub idle_timeout_s: f64,
    pub quiet: bool,
    pub report: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// consume: read as members of this consumer group (JoinGroup, SyncGroup, committed
    /// offsets) instead of assigning partitions; commit: the group to commit for.
    pub group: Option<String>,
    /// Group members heartbeat this often.
    pub heartbeat_ms: u64,
    pub session_timeout_ms: i32,
    /// Group members commit their positions this often (and when they give partitions up).
    pub commit_interval_ms: u64,
    /// Member i sends its first JoinGroup i times this long after the start.
    pub join_stagger_ms: u64,
    /// commit: partitions named in each OffsetCommit.
    pub partitions_per_commit: usize,
    /// commit: connections to the coordinator.
    pub connections: usize,
    /// commit: OffsetCommit requests to send in all; None: run by duration.
    pub commits: Option<u64>,
    /// Test-only: producers skip this sequence number in every partition, so that a consumer
    /// has a gap to find.
    pub debug_skip_sequence_at: Option<u64>,
}
