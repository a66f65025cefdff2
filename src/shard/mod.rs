//! Shards: one glommio executor per configured core, pinned, each with its own io_uring ring, its own
//! SO_REUSEPORT listener, and the partitions placed on it. Shards share nothing; they reach each
//! other (and the control thread reaches them) only by sending [`Job`]s over flume channels.
//!
//! A [`Job`] is a closure run on the target shard's thread. [`Shard::invoke_on`] wraps that into
//! "run this future over there and give me its result", like Seastar's `invoke_on`, and is how a
//! connection's shard hands a partition's work (with its batches moved, not copied) to the owner.

pub mod checkpoint;
pub mod control_handle;
pub mod coordinator;
mod fetcher;
pub mod metrics;
mod partition;
pub mod replica;
mod writer;

pub use checkpoint::RecoveryPoints;
pub use control_handle::{AdminError, ControlHandle, ControlRequest, CreateTopicSpec};
pub use partition::{Partition, RoleChange};

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;
use tracing::{error, info, warn};

use crate::config::{BrokerConfig, ShardTuning};
use crate::mesh;
use crate::metadata::{Metadata, TopicPartition};
use metrics::ShardMetrics;

/// Work sent to a shard (see [`crate::mesh`]).
pub type Job = mesh::Job<Shard>;

/// The senders to every shard's job queue (see [`crate::mesh`]).
pub type ShardSenders = mesh::ShardSenders<Shard>;

pub use crate::mesh::ShardStopped;

/// One shard's state. Lives on its executor's thread only (hence `Rc`/`RefCell`: no locks).
pub struct Shard {
    pub id: usize,
    pub config: Arc<BrokerConfig>,
    pub tuning: ShardTuning,
    pub senders: ShardSenders,
    pub control: ControlHandle,
    /// This shard's counters and latency histograms; the control thread copies them per scrape.
    pub metrics: ShardMetrics,
    /// The consumer groups this shard coordinates.
    pub coordinator: coordinator::Coordinator,
    /// The replica fetchers of the partitions this shard follows.
    fetchers: fetcher::Fetchers,
    metadata: RefCell<Arc<Metadata>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Set when the first metadata snapshot arrives; requests wait for it.
    ready: RefCell<Option<Vec<oneshot::Sender<()>>>>,
    /// Runs every partition's segment writes off the executor.
    writer: writer::SegmentWriter,
    /// Held while a metadata snapshot is applied, so snapshots apply one at a time.
    applying: futures::lock::Mutex<()>,
    /// Set by [`Shard::shut_down`]: later snapshots open nothing.
    stopped: std::cell::Cell<bool>,
    /// Recovery points from the log directory's checkpoint at start, for opening partitions, and
    /// the way to ask the checkpoint thread for a new checkpoint.
    recovery_points: RecoveryPoints,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<BrokerConfig>,
        tuning: ShardTuning,
        senders: ShardSenders,
        control: ControlHandle,
        recovery_points: RecoveryPoints,
    ) -> std::io::Result<Self> {
        let coordinator = coordinator::Coordinator::new(&config.groups);
        Ok(Shard {
            writer: writer::SegmentWriter::start(id)?,
            id,
            config,
            tuning,
            senders,
            control,
            metrics: ShardMetrics::default(),
            coordinator,
            fetchers: fetcher::Fetchers::default(),
            metadata: RefCell::new(Arc::new(Metadata::default())),
            partitions: RefCell::new(HashMap::new()),
            ready: RefCell::new(Some(Vec::new())),
            applying: futures::lock::Mutex::new(()),
            stopped: std::cell::Cell::new(false),
            recovery_points,
        })
    }

    /// The current metadata snapshot (a cheap `Arc` clone; never borrow across an await).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// Waits until the control thread has sent the first snapshot of the cluster.
    pub async fn wait_ready(&self) {
        let waiter = match self.ready.borrow_mut().as_mut() {
            None => return,
            Some(waiters) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                rx
            }
        };
        let _ = waiter.await;
    }

    /// The partition if this shard owns it.
    pub fn partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Every open partition's recovery point and high watermark, for the log directory's
    /// checkpoints.
    pub fn recovery_points(&self) -> Vec<(TopicPartition, i64, i64)> {
        self.partitions
            .borrow()
            .iter()
            .filter_map(|(tp, p)| Some((tp.clone(), p.recovery_point()?, p.high_watermark())))
            .collect()
    }

    /// Runs `work` on shard `target` and returns its result. On this shard it runs inline.
    pub async fn invoke_on<F, Fut, R>(
        self: &Rc<Self>,
        target: usize,
        work: F,
    ) -> Result<R, ShardStopped>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        if target != self.id {
            self.metrics.forward_sent();
        }
        mesh::invoke_on(&self.senders, (self.id, self), target, work).await
    }

    /// Applies a metadata snapshot: closes the partitions no longer placed on this shard, then opens
    /// the ones newly placed here. Opening (which may scan a crashed segment) and closing (which
    /// fsyncs) run on the shard's blocking pool, several partitions at once, so the executor keeps
    /// serving the other partitions meanwhile; the new snapshot takes effect once all are done.
    /// Snapshots are applied one at a time, in the order they arrive.
    pub async fn apply_metadata(self: &Rc<Self>, metadata: Arc<Metadata>) {
        let _one_at_a_time = self.applying.lock().await;
        if self.stopped.get() {
            return;
        }
        let me = self.config.broker_id;
        let gone: Vec<(Rc<Partition>, bool)> = {
            let mut partitions = self.partitions.borrow_mut();
            let gone: Vec<TopicPartition> = partitions
                .iter()
                .filter(|(tp, partition)| {
                    let still_here = metadata.shard_of(tp) == Some(self.id);
                    let same_topic = metadata
                        .topic(&tp.topic)
                        .is_some_and(|t| t.topic_id == partition.topic_id);
                    !(still_here && same_topic)
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            gone.into_iter()
                .filter_map(|tp| partitions.remove(&tp))
                .map(|partition| {
                    // A deleted topic's data is removed by the controller's deletion step once
                    // the log is closed, never merely because a topic is missing from a snapshot
                    // (a ZooKeeper that lost its data must not make brokers erase theirs). A
                    // replica moved off this broker is deleted here, as Kafka's
                    // StopReplica(delete) does.
                    let tp = &partition.tp;
                    let moved_away = metadata
                        .topic(&tp.topic)
                        .filter(|t| t.topic_id == partition.topic_id)
                        .and_then(|_| metadata.partition(&tp.topic, tp.partition))
                        .is_some_and(|p| !p.replicas.contains(&me));
                    (partition, moved_away)
                })
                .collect()
        };
        // Closed before anything opens: a recreated topic reuses the directory name.
        for (partition, _) in &gone {
            if partition.tp.topic == crate::group::OFFSETS_TOPIC {
                self.coordinator.unload(partition.tp.partition);
            }
        }
        futures::future::join_all(
            gone.iter()
                .map(|(partition, delete)| partition.shut_down(*delete)),
        )
        .await;

        let mut opening = Vec::new();
        for (tp, &shard) in &metadata.placement {
            if shard != self.id {
                continue;
            }
            let (Some(topic), Some(state)) = (
                metadata.topic(&tp.topic),
                metadata.partition(&tp.topic, tp.partition),
            ) else {
                continue;
            };
            if let Some(partition) = self.partition(tp) {
                let change = partition.update_state(state, &topic.config, &self.tuning);
                if tp.topic == crate::group::OFFSETS_TOPIC {
                    // Groups are served where their offsets partition is led.
                    match change {
                        RoleChange::BecameLeader => {
                            glommio::spawn_local(coordinator::load(self.clone(), partition))
                                .detach();
                        }
                        RoleChange::LostLeadership => self.coordinator.unload(tp.partition),
                        RoleChange::Unchanged | RoleChange::NewLeader => {}
                    }
                }
                continue;
            }
            let (config, tuning, writer, control) = (
                self.config.clone(),
                self.tuning.clone(),
                self.writer.clone(),
                self.control.clone(),
            );
            let recovery_point = self.recovery_points.at_start(tp);
            let high_watermark = self.recovery_points.high_watermark_at_start(tp);
            let (tp, topic, state) = (tp.clone(), topic.clone(), state.clone());
            opening.push(glommio::executor().spawn_blocking(move || {
                let opened = Partition::open(
                    &config,
                    &tuning,
                    writer,
                    control,
                    tp.clone(),
                    &topic,
                    &state,
                    recovery_point,
                    high_watermark,
                );
                (tp, opened)
            }));
        }
        let changed = !gone.is_empty() || !opening.is_empty();
        for (tp, opened) in futures::future::join_all(opening).await {
            match opened {
                Ok(partition) => {
                    let partition = Rc::new(partition);
                    self.partitions
                        .borrow_mut()
                        .insert(tp.clone(), partition.clone());
                    if tp.topic == crate::group::OFFSETS_TOPIC && partition.is_leader() {
                        glommio::spawn_local(coordinator::load(self.clone(), partition)).detach();
                    }
                }
                // Nothing serves the partition then: clients get NOT_LEADER_OR_FOLLOWER, and
                // this line says why.
                Err(e) => error!("shard {}: cannot open partition {tp}: {e}", self.id),
            }
        }
        if changed {
            // The checkpoint then covers the partitions opened and drops the ones closed right
            // away rather than at the next interval: a stale entry must not outlive its log.
            self.recovery_points.request_write();
        }
        self.fetchers.reconcile(self, &metadata);
        *self.metadata.borrow_mut() = metadata;
        if let Some(waiters) = self.ready.borrow_mut().take() {
            info!("shard {} has its first cluster metadata", self.id);
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
    }

    /// Closes every partition cleanly (producer snapshots, flush) before the process exits. New
    /// produce requests find no partition from the start; writes already under way get up to
    /// `grace` to land first. Returns the recovery points of the partitions closed, for the log
    /// directory's final checkpoint.
    pub async fn shut_down(&self, grace: std::time::Duration) -> Vec<(TopicPartition, i64, i64)> {
        // A snapshot being applied finishes first, so the partitions it opens are closed too, and
        // none applied later reopens anything.
        let _last_snapshot = self.applying.lock().await;
        self.stopped.set(true);
        self.fetchers.stop_all();
        let partitions: Vec<Rc<Partition>> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        let deadline = std::time::Instant::now() + grace;
        while partitions.iter().any(|p| p.is_writing()) {
            if std::time::Instant::now() >= deadline {
                warn!(
                    "shard {}: writes still under way after {grace:?}; closing anyway",
                    self.id
                );
                break;
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        let closed = futures::future::join_all(partitions.iter().map(|p| p.shut_down(false))).await;
        partitions
            .iter()
            .zip(closed)
            .filter_map(|(p, point)| Some((p.tp.clone(), point?, p.high_watermark())))
            .collect()
    }
}
