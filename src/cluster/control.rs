//! The control thread: one pinned OS thread running a tokio runtime, the only place that talks to
//! ZooKeeper. It registers the broker, competes for `/controller`, does the controller's work when it
//! wins, turns ZooKeeper's state into [`Metadata`] snapshots for the shards, and serves the admin
//! requests shards forward to it (create and delete topics, producer id blocks). It also serves
//! `/metrics` (see [`crate::metrics`]) when `metrics.listener` is set.
//!
//! Shards never wait on ZooKeeper directly: they send a [`ControlRequest`] over a flume channel and
//! await the reply on a oneshot, so a slow or absent ensemble never blocks an executor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kafka_protocol::ResponseError;
use tracing::{error, info, warn};
use zookeeper_client as zk;

use super::broker_dir;
use super::controller;
use super::zookeeper::*;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, Ignored, TopicConfig};
use kafka_protocol::messages::controlled_shutdown_response::RemainingPartition;
use kafka_protocol::messages::leader_and_isr_response::{
    LeaderAndIsrPartitionError, LeaderAndIsrTopicError,
};
use kafka_protocol::messages::stop_replica_response::StopReplicaPartitionError;
use kafka_protocol::messages::{
    BrokerId, ControlledShutdownRequest, ControlledShutdownResponse, LeaderAndIsrResponse,
    StopReplicaResponse, TopicName, UpdateMetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::apply::{self, StateUpdate, Whole};
use super::propagate::{self, Propagator};
use crate::metadata::{
    decode_topic_id, encode_topic_id, place_partitions, BrokerInfo, Metadata, PartitionState,
    TopicMetadata, TopicPartition,
};
use crate::shard::control_handle::{InterBroker, InterBrokerAnswer};
use crate::shard::{AdminError, ControlRequest, Job, ShardSenders};

/// How long the control thread lets ZooKeeper events gather after the first before it re-reads:
/// short against the time a re-read takes, long enough for the burst one change causes.
const COALESCE_EVENTS: Duration = Duration::from_millis(20);

/// How often the control thread reads everything regardless of events: watches report every
/// change, so this only bounds the damage of a missed one.
const FULL_READ_EVERY: Duration = Duration::from_secs(10);

/// Topics whose znodes the control thread reads concurrently.
const TOPICS_READ_AT_ONCE: usize = 32;

/// What ZooKeeper events said changed since the last re-read, so that only that is read again.
#[derive(Debug, Default)]
struct Changed {
    /// Read everything (at start, after a session event, on the periodic re-read).
    everything: bool,
    /// Brokers, cluster id or controller.
    cluster: bool,
    topics: BTreeSet<String>,
}

impl Changed {
    fn everything() -> Changed {
        Changed {
            everything: true,
            ..Changed::default()
        }
    }

    fn topic(name: &str) -> Changed {
        Changed {
            topics: BTreeSet::from([name.to_owned()]),
            ..Changed::default()
        }
    }

    /// Notes a changed znode (an event's path).
    fn note(&mut self, path: &str) {
        let topic_under = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.split('/').next())
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
        };
        if let Some(name) =
            topic_under("/brokers/topics/").or_else(|| topic_under("/config/topics/"))
        {
            self.topics.insert(name);
        } else if path.starts_with("/brokers/ids") || path == CONTROLLER || path == CLUSTER_ID {
            self.cluster = true;
        } else if !path.starts_with("/admin") {
            // Deletion requests under /admin are the controller step's (it reads them all on
            // every pass); anything else unknown is read in full.
            self.everything = true;
        }
    }

    /// Topics the controller step must look at: `None` = all of them, since a broker or the
    /// controller changed (any partition may need a leader).
    fn step_scope(&self) -> Option<&BTreeSet<String>> {
        (!self.everything && !self.cluster).then_some(&self.topics)
    }
}

/// State the control thread keeps across ZooKeeper sessions.
struct Control {
    config: Arc<BrokerConfig>,
    shards: ShardSenders,
    requests: flume::Receiver<ControlRequest>,
    /// This broker's view of the cluster: built from the controller's requests (and its own ISR
    /// writes as a leader), never from ZooKeeper's partition states directly.
    metadata: Arc<Metadata>,
    /// The same, for answers that wait for a change to arrive (a new topic's leaders).
    published: tokio::sync::watch::Sender<Arc<Metadata>>,
    producer_ids: std::ops::Range<i64>,
    /// Topics dropped from this broker (StopReplica with delete, or replaced under a new id) with
    /// the id they had: their data is removed once no shard holds them open.
    pending_deletions: BTreeMap<String, uuid::Uuid>,
    /// Acknowledgements of the last snapshot a shard had not sent within 30 s: until they come,
    /// a partition of a deleted topic may still be open, and its data is not touched.
    unapplied: Vec<oneshot::Receiver<()>>,
    /// The highest controller epoch a request carried; requests of older ones are refused
    /// (STALE_CONTROLLER_EPOCH), so a deposed controller cannot undo its successor's decisions.
    controller_epoch: i32,
    /// This run's broker epoch: the creation zxid of its registration.
    broker_epoch: i64,
    /// A full LeaderAndIsr named every partition this broker should hold: once the shards have
    /// applied it, local partitions it did not name (a topic deleted while this broker was down)
    /// are removed.
    check_strays: bool,
    /// A full LeaderAndIsr came: the UpdateMetadata behind it is the controller's whole view.
    full_update_expected: bool,
    /// Controller duties, while this broker holds `/controller`.
    controller: Option<ControllerDuties>,
}

/// What the controller keeps for one controllership.
struct ControllerDuties {
    fence: Fence,
    /// The cluster as ZooKeeper has it (brokers, assignments, partition states), which only the
    /// controller reads.
    view: Arc<Metadata>,
    propagator: Propagator,
    /// Brokers in controlled shutdown, with the broker epoch they asked in: never elected.
    shutting_down: BTreeMap<i32, i64>,
    /// Watches only the controller keeps: brokers, topics and partition states, admin requests.
    watches: Vec<zk::PersistentWatcher>,
}

impl ControllerDuties {
    fn shutting_down(&self) -> BTreeSet<i32> {
        self.shutting_down.keys().copied().collect()
    }
}

/// Deletions a broker remembers at once; more are dropped with a warning, leaving their data
/// on disk.
const MAX_PENDING_DELETIONS: usize = 10_000;

/// What woke the control loop.
enum Woke {
    Event(zk::WatchedEvent),
    /// `None`: every sender is gone (the broker is stopping).
    Request(Option<ControlRequest>),
    Session(zk::SessionState),
    Timer,
}

/// How long a CreateTopics or DeleteTopics waits for the controller's word to reach this broker
/// before answering anyway.
const PROPAGATION_WAIT: Duration = Duration::from_secs(10);

/// Starts the control thread. It runs until the process exits, and serves `/metrics` on
/// `metrics_listener` alongside its ZooKeeper work.
pub fn spawn(
    config: Arc<BrokerConfig>,
    shards: ShardSenders,
    requests: flume::Receiver<ControlRequest>,
    metrics_listener: Option<std::net::TcpListener>,
    core: Option<core_affinity::CoreId>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("skein-control".to_owned())
        .spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    error!("control thread: cannot start its tokio runtime: {e}");
                    std::process::exit(1);
                }
            };
            if let Some(listener) = metrics_listener {
                runtime.spawn(crate::metrics::http::serve(
                    listener,
                    config.broker_id,
                    shards.clone(),
                ));
            }
            let metadata = Arc::new(Metadata {
                controller_id: -1,
                ..Metadata::default()
            });
            let mut control = Control {
                config,
                shards,
                requests,
                published: tokio::sync::watch::Sender::new(metadata.clone()),
                metadata,
                producer_ids: 0..0,
                pending_deletions: BTreeMap::new(),
                unapplied: Vec::new(),
                controller_epoch: 0,
                broker_epoch: -1,
                check_strays: false,
                full_update_expected: false,
                controller: None,
            };
            let run = std::panic::AssertUnwindSafe(|| runtime.block_on(control.run()));
            if std::panic::catch_unwind(run).is_err() {
                // A broker without its control thread no longer follows the cluster or keeps its
                // registration: stop, so that a supervisor restarts it, rather than linger.
                error!("control thread panicked (see above); stopping the broker");
                std::process::exit(1);
            }
        })
}

fn watch_error(path: &str) -> impl FnOnce(zk::Error) -> ZkError + '_ {
    move |source| ZkError::Op {
        op: "watch",
        path: path.to_owned(),
        source,
    }
}

impl Control {
    async fn run(&mut self) {
        loop {
            let zk = self.connect().await;
            // A session survives connection losses (the client reconnects by itself), so errors
            // are retried on the same session; only an expired session means starting over, with
            // a new registration.
            loop {
                match self.session(&zk).await {
                    Ok(()) => return,
                    Err(e) if e.is_session_lost() => {
                        warn!("ZooKeeper session lost ({e}); reconnecting and registering again");
                        break;
                    }
                    Err(e) => {
                        warn!("ZooKeeper: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Connects, retrying until ZooKeeper answers; says clearly that the broker is waiting.
    async fn connect(&self) -> Zk {
        let connect = &self.config.zookeeper_connect;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let connector = zk::Client::connector()
                .with_session_timeout(Duration::from_millis(
                    self.config.zookeeper_session_timeout_ms as u64,
                ))
                .with_connection_timeout(Duration::from_millis(
                    self.config.zookeeper_connection_timeout_ms as u64,
                ))
                .clone();
            match tokio::time::timeout(
                Duration::from_millis(self.config.zookeeper_connection_timeout_ms as u64 + 1000),
                connector.connect(connect),
            )
            .await
            {
                Ok(Ok(client)) => {
                    info!("connected to ZooKeeper at {connect} (session {:?})", client.session_id());
                    return Zk { client };
                }
                Ok(Err(e)) => error!(
                    "cannot reach ZooKeeper at {connect} (zookeeper.connect): {e}; retrying (attempt {attempt})"
                ),
                Err(_) => error!(
                    "ZooKeeper at {connect} (zookeeper.connect) did not answer in time; retrying (attempt {attempt})"
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn session(&mut self, zk: &Zk) -> Result<(), ZkError> {
        for path in PERSISTENT_PATHS {
            zk.ensure_path(path).await?;
        }
        let cluster_id = ClusterIdZnode {
            version: "1".to_owned(),
            id: encode_topic_id(uuid::Uuid::new_v4()),
        };
        zk.create_json(CLUSTER_ID, &cluster_id, &persistent())
            .await?;
        // A controllership ends here: a retried error (the session survived it) or a new session.
        // If `/controller` is still this session's, the loop below takes office again with a
        // new epoch (`try_become_controller`).
        self.controller = None;
        self.register(zk).await?;
        if let Some((cluster, _)) = zk.read_json::<ClusterIdZnode>(CLUSTER_ID).await? {
            if cluster.id != self.metadata.cluster_id {
                let mut metadata = Metadata::clone(&self.metadata);
                metadata.cluster_id = cluster.id;
                self.publish(metadata).await;
            }
        }
        let mut state_watcher = zk.client.state_watcher();
        // Every broker watches topic configs and the controller; the controller alone watches
        // brokers and topics (see `take_office`). Every event just means "read again".
        let mut watches = [
            zk.client
                .watch(CONFIG_TOPICS, zk::AddWatchMode::PersistentRecursive)
                .await
                .map_err(watch_error(CONFIG_TOPICS))?,
            zk.client
                .watch(CONTROLLER, zk::AddWatchMode::Persistent)
                .await
                .map_err(watch_error(CONTROLLER))?,
        ];
        let mut changed = Changed::everything();
        let mut next_full_read = tokio::time::Instant::now();
        let rebalance_every =
            Duration::from_secs(self.config.leader_imbalance_check_interval_seconds as u64);
        let mut next_rebalance = tokio::time::Instant::now() + rebalance_every;
        loop {
            if self.controller.is_none() {
                if let Some(fence) =
                    controller::try_become_controller(zk, self.config.broker_id).await?
                {
                    self.take_office(zk, fence).await?;
                    // A new controller looks at every topic once.
                    changed.everything = true;
                }
            } else if !controller::still_controller(zk, self.config.broker_id).await? {
                warn!(
                    "broker {} is no longer the controller",
                    self.config.broker_id
                );
                self.controller = None;
            }
            if tokio::time::Instant::now() >= next_full_read {
                changed.everything = true;
            }
            if changed.everything {
                next_full_read = tokio::time::Instant::now() + FULL_READ_EVERY;
            }
            if self.controller.is_some() {
                let rebalance = self.config.auto_leader_rebalance_enable
                    && tokio::time::Instant::now() >= next_rebalance;
                if rebalance {
                    next_rebalance = tokio::time::Instant::now() + rebalance_every;
                }
                self.controller_pass(zk, &changed, rebalance).await?;
            }
            self.refresh_configs(zk, &changed).await?;
            changed = Changed::default();
            self.finish_deletions();

            let mut coalesce = false;
            let all_watches = watches.iter_mut().chain(
                self.controller
                    .iter_mut()
                    .flat_map(|duties| duties.watches.iter_mut()),
            );
            let watch_fired =
                futures::future::select_all(all_watches.map(|w| Box::pin(w.changed())));
            // The select only says what woke the loop; acting on it needs `self` whole again.
            let woke = tokio::select! {
                (event, _, _) = watch_fired => Woke::Event(event),
                request = self.requests.recv_async() => Woke::Request(request.ok()),
                state = state_watcher.changed() => Woke::Session(state),
                // Watches report every change; this re-read only bounds the damage of a missed one.
                _ = tokio::time::sleep_until(next_full_read) => Woke::Timer,
            };
            match woke {
                // A session event may be the last one: the watchers close after it, and polling
                // a closed watcher panics, so only node events are gathered.
                Woke::Event(event) if event.event_type == zk::EventType::Session => {
                    changed.everything = true;
                }
                Woke::Event(event) => {
                    changed.note(&event.path);
                    coalesce = true;
                }
                Woke::Request(Some(ControlRequest::Shutdown { reply })) => {
                    self.deregister(zk).await;
                    let _ = reply.send(());
                    return Ok(());
                }
                Woke::Request(Some(request)) => self.serve(zk, request).await?,
                Woke::Request(None) => return Ok(()),
                Woke::Session(state) if state.is_terminated() => {
                    return Err(ZkError::Op {
                        op: "session",
                        path: "/".to_owned(),
                        source: zk::Error::SessionExpired,
                    });
                }
                // Reconnected (or about to): events of the time between may be lost.
                Woke::Session(_) => changed.everything = true,
                Woke::Timer => {}
            }
            if coalesce {
                // One change fires several events within milliseconds (a new topic: its znode,
                // each partition's state, its config): let them arrive and read once for all.
                tokio::time::sleep(COALESCE_EVENTS).await;
                let all_watches = watches.iter_mut().chain(
                    self.controller
                        .iter_mut()
                        .flat_map(|duties| duties.watches.iter_mut()),
                );
                'drain: for watch in all_watches {
                    for _ in 0..10_000 {
                        match watch.changed().now_or_never() {
                            None => break,
                            Some(event) if event.event_type == zk::EventType::Session => {
                                changed.everything = true;
                                break 'drain;
                            }
                            Some(event) => changed.note(&event.path),
                        }
                    }
                }
            }
        }
    }

    /// Starts a controllership: the controller's watches, a first read of everything, and a
    /// propagator that will send every live broker its full state.
    async fn take_office(&mut self, zk: &Zk, fence: Fence) -> Result<(), ZkError> {
        let mut watches = Vec::new();
        for path in ["/brokers", "/admin"] {
            watches.push(
                zk.client
                    .watch(path, zk::AddWatchMode::PersistentRecursive)
                    .await
                    .map_err(watch_error(path))?,
            );
        }
        self.controller = Some(ControllerDuties {
            fence,
            view: Arc::new(Metadata::default()),
            propagator: Propagator::new(self.config.broker_id, fence),
            shutting_down: BTreeMap::new(),
            watches,
        });
        Ok(())
    }

    /// The controller's work for what `changed` names: a controller step (deletions, new topics'
    /// states, elections), a fresh read of the view, and the requests that carry the difference
    /// to every broker.
    async fn controller_pass(
        &mut self,
        zk: &Zk,
        changed: &Changed,
        rebalance: bool,
    ) -> Result<(), ZkError> {
        let Some(duties) = self.controller.as_mut() else {
            return Ok(());
        };
        let scope = if rebalance {
            None
        } else {
            changed.step_scope()
        };
        let shutting_down = duties.shutting_down();
        let mut bounced = BTreeSet::new();
        if changed.cluster || changed.everything {
            let mut now = Metadata::default();
            read_cluster(zk, &mut now).await?;
            bounced = now
                .brokers
                .values()
                .filter(|b| {
                    duties
                        .view
                        .brokers
                        .get(&b.id)
                        .is_some_and(|before| before.epoch != b.epoch)
                })
                .map(|b| b.id)
                .collect();
            if !bounced.is_empty() {
                info!("broker(s) {bounced:?} registered anew: handled as failed, then as started");
            }
        }
        let scope = if bounced.is_empty() { scope } else { None };
        let known_ids: BTreeMap<String, uuid::Uuid> = duties
            .view
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), t.topic_id))
            .collect();
        let step = controller::step(
            zk,
            &self.config,
            duties.fence,
            scope,
            rebalance,
            &shutting_down,
            &bounced,
            &known_ids,
        )
        .await;
        let step = match step {
            Ok(step) => step,
            Err(ZkError::Fenced { epoch }) => {
                warn!("controller epoch {epoch} was fenced off: another broker is the controller");
                self.controller = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut reread = Changed {
            everything: changed.everything,
            cluster: changed.cluster,
            topics: changed.topics.clone(),
        };
        reread.topics.extend(step.changed);
        reread.topics.extend(step.deleted);
        let mut ignored = BTreeMap::new();
        let view = if reread.everything {
            read_metadata(zk, &self.config, &mut ignored).await?
        } else {
            let mut view = Metadata::clone(&duties.view);
            if reread.cluster {
                read_cluster(zk, &mut view).await?;
            }
            let names = reread.topics.iter().cloned().collect();
            for (name, topic) in read_topics(zk, &self.config, names).await? {
                match topic {
                    Some((topic, _)) => view.topics.insert(name, Arc::new(topic)),
                    None => view.topics.remove(&name),
                };
            }
            view
        };
        // A broker that left (or registered anew) is no longer shutting down.
        duties
            .shutting_down
            .retain(|id, epoch| view.brokers.get(id).is_some_and(|b| b.epoch == *epoch));
        let view = Arc::new(view);
        duties.propagator.propagate(&view);
        duties.view = view;
        Ok(())
    }

    /// Writes `/brokers/ids/<id>`. A registration left by this broker's previous (killed) process
    /// lingers until ZooKeeper expires that session, so wait for it rather than fail, as long as
    /// one session timeout (plus slack) allows.
    async fn register(&mut self, zk: &Zk) -> Result<(), ZkError> {
        let id = self.config.broker_id;
        let listener = self.config.advertised();
        let path = broker_path(id);
        let session = zk.client.session_id().0;
        // The session of this broker's previous run, if it was killed: its ephemeral znodes are
        // ours to replace (see broker_dir).
        let previous = broker_dir::previous_session(&self.config.log_dir).filter(|&s| s != session);
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.zookeeper_session_timeout_ms as u64 * 2 + 5000);
        let mut warned = false;
        loop {
            let registration = BrokerRegistration::new(&listener.host, listener.port, now_ms());
            if zk.create_json(&path, &registration, &ephemeral()).await? {
                info!(
                    "registered broker {id} at {path} ({}:{})",
                    listener.host, listener.port
                );
            }
            let owner = zk
                .client
                .check_stat(&path)
                .await
                .map_err(|source| ZkError::Op {
                    op: "stat",
                    path: path.clone(),
                    source,
                })?;
            match owner {
                Some(stat) if stat.ephemeral_owner == session => {
                    self.broker_epoch = stat.czxid;
                    break;
                }
                Some(stat) if Some(stat.ephemeral_owner) == previous => {
                    warn!(
                        "{path} is left from this broker's previous run (session {:#x}); replacing it",
                        stat.ephemeral_owner
                    );
                    remove_if_unchanged(zk, &path, stat.version).await?;
                    continue;
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                error!("{path} is held by another live session: is another broker running with broker.id = {id}?");
                std::process::exit(1);
            }
            if !warned {
                warn!("{path} is held by another session (another broker with broker.id = {id}, or a previous run whose session was not recorded); waiting for it to go");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Some(previous) = previous {
            // A killed controller's /controller would otherwise keep the cluster without one
            // until its session expires.
            if let Ok(Some(stat)) = zk.client.check_stat(CONTROLLER).await {
                if stat.ephemeral_owner == previous {
                    warn!("/controller is left from this broker's previous run; removing it");
                    remove_if_unchanged(zk, CONTROLLER, stat.version).await?;
                }
            }
        }
        let dir = self.config.log_dir.clone();
        match tokio::task::spawn_blocking(move || broker_dir::record_session(&dir, session)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(
                "cannot record the ZooKeeper session in {}: {e}; after a crash the next start waits for it to expire",
                self.config.log_dir.display()
            ),
            Err(e) => warn!("recording the ZooKeeper session failed: {e}"),
        }
        Ok(())
    }

    async fn deregister(&mut self, zk: &Zk) {
        let id = self.config.broker_id;
        if self.controller.take().is_some() {
            if let Err(e) = zk.client.delete(CONTROLLER, None).await {
                warn!("cannot resign as controller: {e}");
            }
        }
        match zk.client.delete(&broker_path(id), None).await {
            Ok(()) => info!("deregistered broker {id}"),
            Err(e) => warn!("cannot remove {}: {e}", broker_path(id)),
        }
    }

    /// Hands `metadata` (with placement worked out) to every shard if it differs from what they
    /// have, and waits (bounded) until each has applied it.
    async fn publish(&mut self, mut metadata: Metadata) {
        let me = self.config.broker_id;
        let hosted = metadata.topics.values().flat_map(|topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.contains(&me))
                .map(|(i, _)| TopicPartition {
                    topic: topic.name.clone(),
                    partition: i as i32,
                })
        });
        metadata.placement = place_partitions(&self.metadata.placement, hosted, self.shards.len());
        let unchanged = metadata.cluster_id == self.metadata.cluster_id
            && metadata.controller_id == self.metadata.controller_id
            && metadata.brokers == self.metadata.brokers
            && metadata.topics == self.metadata.topics
            && metadata.placement == self.metadata.placement;
        if unchanged {
            return;
        }
        metadata.version = self.metadata.version + 1;
        self.log_topic_configs(&metadata);
        let metadata = Arc::new(metadata);
        self.metadata = metadata.clone();
        self.unapplied = broadcast_metadata(&self.shards, metadata.clone()).await;
        // After the shards: whoever waits for a change may use it once this says so.
        self.published.send_replace(metadata);
    }

    /// Re-reads the stored configs of the topics `changed` names (all this broker knows, if it
    /// says everything) and publishes them.
    async fn refresh_configs(&mut self, zk: &Zk, changed: &Changed) -> Result<(), ZkError> {
        let names: Vec<String> = if changed.everything {
            self.metadata.topics.keys().cloned().collect()
        } else {
            changed
                .topics
                .iter()
                .filter(|name| self.metadata.topics.contains_key(*name))
                .cloned()
                .collect()
        };
        if names.is_empty() {
            return Ok(());
        }
        let configs = read_configs(zk, &self.config, names).await?;
        let mut metadata = Metadata::clone(&self.metadata);
        for (name, (config, _)) in configs {
            if let Some(topic) = metadata.topics.get_mut(&name) {
                if topic.config != config {
                    Arc::make_mut(topic).config = config;
                }
            }
        }
        self.publish(metadata).await;
        Ok(())
    }

    /// Says, once per change of a topic's config, which of its stored overrides skein leaves
    /// aside: unknown or invalid ones (each other key still applies), and ones it only stores.
    fn log_topic_configs(&self, metadata: &Metadata) {
        for (name, topic) in &metadata.topics {
            let before = self.metadata.topic(name);
            if before.is_some_and(|b| b.config.overrides == topic.config.overrides) {
                continue;
            }
            let (_, ignored) =
                TopicConfig::resolve(&self.config.topic_defaults, &topic.config.overrides);
            for i in ignored {
                warn!(
                    "topic '{name}': ignoring config '{}' ({})",
                    i.name, i.reason
                );
            }
            let stored = topic.config.not_honoured();
            if !stored.is_empty() {
                warn!(
                    "topic '{name}': config {} kept but not honoured by skein yet",
                    stored.join(", ")
                );
            }
        }
    }

    /// Remembers topics dropped from this broker, with their ids, for `finish_deletions`.
    fn note_deletions(&mut self, dropped: impl IntoIterator<Item = (String, uuid::Uuid)>) {
        for (name, id) in dropped {
            if self.pending_deletions.len() >= MAX_PENDING_DELETIONS {
                warn!("too many topic deletions pending; the data of '{name}' stays on disk");
                continue;
            }
            self.pending_deletions.insert(name, id);
        }
    }

    /// Once every shard has applied the latest snapshot (closed the partitions it dropped):
    /// removes this broker's data of every dropped topic still gone, and, after a full
    /// LeaderAndIsr, of every local partition it did not name.
    fn finish_deletions(&mut self) {
        // Still pending (Ok(None)) means a shard may still hold the partitions open.
        self.unapplied
            .retain_mut(|ack| matches!(ack.try_recv(), Ok(None)));
        if !self.unapplied.is_empty() {
            return;
        }
        let metadata = self.metadata.clone();
        self.pending_deletions.retain(|name, id| {
            let gone = metadata.topic(name).is_none_or(|t| t.topic_id != *id);
            if gone {
                remove_local_data(&self.config.log_dir, name, *id);
            }
            !gone
        });
        if std::mem::take(&mut self.check_strays) {
            remove_strays(&self.config.log_dir, &metadata);
        }
    }

    async fn serve(&mut self, zk: &Zk, request: ControlRequest) -> Result<(), ZkError> {
        match request {
            ControlRequest::CreateTopic { spec, reply } => {
                let result = controller::create_topic(zk, &self.config, &spec).await;
                match result {
                    Ok(()) if !spec.validate_only => {
                        // Give the new topic its partition states and leaders now, and answer
                        // once they reached this broker, so the reply means "ready to use".
                        self.controller_pass(zk, &Changed::topic(&spec.name), false)
                            .await?;
                        let name = spec.name.clone();
                        let expected = if spec.assignments.is_empty() {
                            match spec.num_partitions {
                                -1 => self.config.num_partitions.max(0) as usize,
                                n => n.max(0) as usize,
                            }
                        } else {
                            spec.assignments.len()
                        };
                        // Every partition known here (a LeaderAndIsr may come before the
                        // UpdateMetadata that names the others), each with a leader.
                        self.answer_when(reply, move |m| {
                            m.topic(&name).is_some_and(|t| {
                                t.partitions.len() >= expected
                                    && t.partitions.iter().all(|p| p.leader >= 0)
                            })
                        });
                    }
                    other => {
                        let _ = reply.send(other.map_err(|e| match e {
                            CreateFailure::Admin(e) => e,
                            CreateFailure::Zk(e) => {
                                AdminError::new(ResponseError::UnknownServerError, e.to_string())
                            }
                        }));
                    }
                }
            }
            ControlRequest::DeleteTopic { name, reply } => match self.delete_topic(zk, &name).await
            {
                Ok(()) => self.answer_when(reply, move |m| m.topic(&name).is_none()),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            ControlRequest::Shutdown { .. } => unreachable!("session() handles Shutdown itself"),
            ControlRequest::AlterIsr {
                tp,
                leader_epoch,
                isr,
                reply,
            } => {
                let result = controller::write_isr(
                    zk,
                    self.config.broker_id,
                    &tp.topic,
                    tp.partition,
                    leader_epoch,
                    &isr,
                )
                .await;
                let result = match result {
                    Ok((state, version)) => {
                        // This broker's shards see the new ISR now, not after the controller
                        // has passed it round.
                        self.apply_own_write(&tp, state, version).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            ControlRequest::AllocateProducerId { reply } => {
                if self.producer_ids.is_empty() {
                    match controller::claim_producer_id_block(zk, self.config.broker_id).await {
                        Ok(block) => self.producer_ids = block,
                        Err(e) => {
                            let _ = reply.send(Err(AdminError::new(
                                ResponseError::UnknownServerError,
                                e.to_string(),
                            )));
                            return Ok(());
                        }
                    }
                }
                let id = self.producer_ids.start;
                self.producer_ids.start += 1;
                let _ = reply.send(Ok(id));
            }
            ControlRequest::InterBroker { request, reply } => {
                match self.inter_broker(zk, request).await {
                    Ok(answer) => {
                        let _ = reply.send(Ok(answer));
                    }
                    Err(e) => {
                        // Answered (the controller sends it again), then handled as any ZooKeeper
                        // error of the loop.
                        let _ = reply.send(Err(AdminError::new(
                            ResponseError::UnknownServerError,
                            e.to_string(),
                        )));
                        return Err(e);
                    }
                }
            }
            ControlRequest::ControlledShutdown { reply } => {
                self.begin_controlled_shutdown(zk, reply).await?;
            }
        }
        Ok(())
    }

    /// Answers `reply` with Ok once this broker's metadata satisfies `ready`, or after
    /// [`PROPAGATION_WAIT`] regardless (the change is in ZooKeeper; it reaches this broker when
    /// the controller gets to it). Waits on its own task, so the control loop goes on applying
    /// the requests that bring the change.
    fn answer_when(
        &self,
        reply: oneshot::Sender<Result<(), AdminError>>,
        ready: impl Fn(&Metadata) -> bool + Send + Sync + 'static,
    ) {
        let mut published = self.published.subscribe();
        tokio::spawn(async move {
            let waited = tokio::time::timeout(PROPAGATION_WAIT, published.wait_for(|m| ready(m)));
            if waited.await.is_err() {
                warn!(
                    "the controller's update did not reach this broker within {PROPAGATION_WAIT:?}; answering anyway"
                );
            }
            let _ = reply.send(Ok(()));
        });
    }

    async fn delete_topic(&mut self, zk: &Zk, name: &str) -> Result<(), AdminError> {
        let zk_error =
            |e: ZkError| AdminError::new(ResponseError::UnknownServerError, e.to_string());
        if !self.config.delete_topic_enable {
            return Err(AdminError::new(
                ResponseError::TopicDeletionDisabled,
                "delete.topic.enable is false",
            ));
        }
        if self.metadata.topic(name).is_none() {
            return Err(AdminError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        }
        zk.create(&delete_topic_path(name), b"", &persistent())
            .await
            .map_err(zk_error)?;
        self.controller_pass(zk, &Changed::topic(name), false)
            .await
            .map_err(zk_error)?;
        Ok(())
    }

    /// A leader's own ISR write, applied to this broker's metadata at once.
    async fn apply_own_write(
        &mut self,
        tp: &TopicPartition,
        state: PartitionStateZnode,
        version: i32,
    ) {
        let Some(topic) = self.metadata.topic(&tp.topic) else {
            return;
        };
        let Some(current) = topic.partitions.get(tp.partition as usize) else {
            return;
        };
        let update = StateUpdate {
            topic: tp.topic.clone(),
            topic_id: topic.topic_id,
            partition: tp.partition,
            state: PartitionState {
                replicas: current.replicas.clone(),
                leader: state.leader,
                leader_epoch: state.leader_epoch,
                isr: state.isr,
                version,
            },
        };
        // The topic is known under this id, so its config is never asked for; it would be the
        // one it has.
        let config = topic.config.clone();
        let mut metadata = Metadata::clone(&self.metadata);
        apply::fold(&mut metadata, vec![update], &mut |_| config.clone());
        self.publish(metadata).await;
    }

    /// Serves a controller's request (or, at the controller, a broker's ControlledShutdown).
    async fn inter_broker(
        &mut self,
        zk: &Zk,
        request: InterBroker,
    ) -> Result<InterBrokerAnswer, ZkError> {
        let stale_epoch = ResponseError::StaleControllerEpoch.code();
        let stale_broker = ResponseError::StaleBrokerEpoch.code();
        match request {
            InterBroker::LeaderAndIsr(request) => {
                let refused = self
                    .refuse(zk, request.controller_epoch, request.broker_epoch)
                    .await?;
                if let Some(code) = refused {
                    return Ok(InterBrokerAnswer::LeaderAndIsr(
                        LeaderAndIsrResponse::default().with_error_code(code),
                    ));
                }
                self.follow_controller(request.controller_id.0, request.controller_epoch);
                let updates = apply::leader_and_isr_updates(&request);
                let full = request._type == propagate::LEADER_AND_ISR_FULL;
                let whole = if full { Whole::Hosted } else { Whole::No };
                let folded = self.fold_and_publish(zk, updates, None, whole).await?;
                if full {
                    // The UpdateMetadata queued right behind it is the controller's whole view.
                    self.full_update_expected = true;
                    // Refused states leave hosted partitions unknown here: no stray judgement
                    // on an incomplete picture.
                    self.check_strays = folded.stale.is_empty();
                }
                let topics = request
                    .topic_states
                    .iter()
                    .map(|t| {
                        LeaderAndIsrTopicError::default()
                            .with_topic_id(t.topic_id)
                            .with_partition_errors(
                                t.partition_states
                                    .iter()
                                    .map(|p| {
                                        let stale = folded.stale.iter().any(|(name, index)| {
                                            *index == p.partition_index
                                                && name.as_str() == t.topic_name.0.as_str()
                                        });
                                        LeaderAndIsrPartitionError::default()
                                            .with_topic_name(t.topic_name.clone())
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(if stale { stale_epoch } else { 0 })
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Ok(InterBrokerAnswer::LeaderAndIsr(
                    LeaderAndIsrResponse::default().with_topics(topics),
                ))
            }
            InterBroker::UpdateMetadata(request) => {
                if let Some(code) = self
                    .refuse(zk, request.controller_epoch, request.broker_epoch)
                    .await?
                {
                    return Ok(InterBrokerAnswer::UpdateMetadata(
                        UpdateMetadataResponse::default().with_error_code(code),
                    ));
                }
                self.follow_controller(request.controller_id.0, request.controller_epoch);
                let updates = apply::update_metadata_updates(&request);
                let brokers = apply::live_brokers(&request);
                let whole = if std::mem::take(&mut self.full_update_expected) {
                    Whole::Everything
                } else {
                    Whole::No
                };
                self.fold_and_publish(zk, updates, Some((request.controller_id.0, brokers)), whole)
                    .await?;
                Ok(InterBrokerAnswer::UpdateMetadata(
                    UpdateMetadataResponse::default(),
                ))
            }
            InterBroker::StopReplica(request) => {
                if let Some(code) = self
                    .refuse(zk, request.controller_epoch, request.broker_epoch)
                    .await?
                {
                    return Ok(InterBrokerAnswer::StopReplica(
                        StopReplicaResponse::default().with_error_code(code),
                    ));
                }
                self.follow_controller(request.controller_id.0, request.controller_epoch);
                // skein stops replicas only to delete them: whole topics, so a topic any of
                // whose partitions is named for deletion goes.
                let mut metadata = Metadata::clone(&self.metadata);
                let mut dropped = Vec::new();
                let mut errors = Vec::new();
                for t in &request.topic_states {
                    let name = t.topic_name.0.to_string();
                    let deleting = t.partition_states.iter().any(|p| p.delete_partition);
                    if deleting {
                        if let Some(topic) = metadata.topics.remove(&name) {
                            dropped.push((name, topic.topic_id));
                        }
                    }
                    errors.extend(t.partition_states.iter().map(|p| {
                        StopReplicaPartitionError::default()
                            .with_topic_name(t.topic_name.clone())
                            .with_partition_index(p.partition_index)
                    }));
                }
                for (name, _) in &dropped {
                    info!("topic '{name}' deleted by the controller; removing its partitions here");
                }
                self.note_deletions(dropped);
                self.publish(metadata).await;
                self.finish_deletions();
                Ok(InterBrokerAnswer::StopReplica(
                    StopReplicaResponse::default().with_partition_errors(errors),
                ))
            }
            InterBroker::ControlledShutdown(request) => {
                let broker = request.broker_id.0;
                let answer = |code: i16, remaining: Vec<TopicPartition>| {
                    InterBrokerAnswer::ControlledShutdown(
                        ControlledShutdownResponse::default()
                            .with_error_code(code)
                            .with_remaining_partitions(
                                remaining
                                    .into_iter()
                                    .map(|tp| {
                                        RemainingPartition::default()
                                            .with_topic_name(TopicName(StrBytes::from_string(
                                                tp.topic,
                                            )))
                                            .with_partition_index(tp.partition)
                                    })
                                    .collect(),
                            ),
                    )
                };
                let Some(duties) = self.controller.as_ref() else {
                    return Ok(answer(ResponseError::NotController.code(), Vec::new()));
                };
                let registered = duties.view.brokers.get(&broker).map(|b| b.epoch);
                if registered != Some(request.broker_epoch) {
                    warn!(
                        "controlled shutdown of broker {broker} (epoch {}) refused: it is registered with {registered:?}",
                        request.broker_epoch
                    );
                    return Ok(answer(stale_broker, Vec::new()));
                }
                let remaining = self
                    .controlled_shutdown_of(zk, broker, request.broker_epoch)
                    .await?;
                Ok(answer(0, remaining))
            }
        }
    }

    /// The error code for a request from controller epoch `epoch` addressed to broker epoch
    /// `broker_epoch`, if it must be refused: an older controller's, one meant for an earlier run
    /// of this broker, or one claiming an epoch no controller has taken yet (`/controller_epoch`
    /// is read whenever a request claims a newer epoch than this broker knows: a client
    /// pretending to be a future controller would otherwise make it refuse the real one).
    async fn refuse(&self, zk: &Zk, epoch: i32, broker_epoch: i64) -> Result<Option<i16>, ZkError> {
        if epoch < self.controller_epoch {
            warn!(
                "refusing a request of controller epoch {epoch}: epoch {} is current",
                self.controller_epoch
            );
            return Ok(Some(ResponseError::StaleControllerEpoch.code()));
        }
        if broker_epoch != -1 && broker_epoch < self.broker_epoch {
            warn!(
                "refusing a controller request for broker epoch {broker_epoch}: this run is {}",
                self.broker_epoch
            );
            return Ok(Some(ResponseError::StaleBrokerEpoch.code()));
        }
        if epoch > self.controller_epoch {
            // Caught up with the leader of the ensemble first: the server this session talks to
            // may not have seen the new controller's epoch yet.
            zk.client
                .sync(CONTROLLER_EPOCH)
                .await
                .map_err(|source| ZkError::Op {
                    op: "sync",
                    path: CONTROLLER_EPOCH.to_owned(),
                    source,
                })?;
            let taken = zk
                .read_json::<i32>(CONTROLLER_EPOCH)
                .await?
                .map_or(0, |(e, _)| e);
            if epoch > taken {
                warn!(
                    "refusing a controller request claiming epoch {epoch}: /controller_epoch is {taken}"
                );
                return Ok(Some(ResponseError::InvalidRequest.code()));
            }
        }
        Ok(None)
    }

    fn follow_controller(&mut self, controller_id: i32, epoch: i32) {
        if epoch > self.controller_epoch {
            info!("following controller {controller_id} (epoch {epoch})");
            self.controller_epoch = epoch;
        }
    }

    /// Folds partition states (and, from an UpdateMetadata, the controller and live brokers)
    /// into this broker's metadata and publishes it. Topics new here get their stored config.
    /// With `whole`, the request is the whole truth about what it covers: topics it does not
    /// name go (and, after a full LeaderAndIsr, the data of hosted ones: deleted while this
    /// broker's requests were lost, or while it was down).
    async fn fold_and_publish(
        &mut self,
        zk: &Zk,
        updates: Vec<StateUpdate>,
        cluster: Option<(i32, Vec<BrokerInfo>)>,
        whole: Whole,
    ) -> Result<apply::Folded, ZkError> {
        let new_topics: BTreeSet<String> = updates
            .iter()
            .filter(|u| {
                self.metadata
                    .topic(&u.topic)
                    .is_none_or(|t| t.topic_id != u.topic_id)
            })
            .map(|u| u.topic.clone())
            .collect();
        let mut configs = read_configs(zk, &self.config, new_topics.into_iter().collect()).await?;
        let defaults = &self.config.topic_defaults;
        let mut metadata = Metadata::clone(&self.metadata);
        if let Some((controller_id, brokers)) = cluster {
            metadata.controller_id = controller_id;
            metadata.brokers = brokers.into_iter().map(|b| (b.id, b)).collect();
        }
        let gone = apply::drop_unnamed(&mut metadata, &updates, self.config.broker_id, whole);
        for (name, _) in &gone {
            info!("topic '{name}' is no longer in the controller's view; removing its partitions here");
        }
        let folded = apply::fold(&mut metadata, updates, &mut |name| {
            configs
                .remove(name)
                .map(|(config, _)| config)
                .unwrap_or_else(|| TopicConfig::resolve(defaults, &BTreeMap::new()).0)
        });
        for (name, old) in &folded.replaced {
            warn!("topic '{name}' now has another id than {old}; its data under {old} is left on disk");
        }
        self.note_deletions(folded.dropped.iter().cloned().chain(gone));
        self.publish(metadata).await;
        Ok(folded)
    }

    /// At the controller: moves `broker`'s leaderships away and takes it out of ISRs, and sends
    /// the brokers the result. Returns the partitions it still leads.
    async fn controlled_shutdown_of(
        &mut self,
        zk: &Zk,
        broker: i32,
        broker_epoch: i64,
    ) -> Result<Vec<TopicPartition>, ZkError> {
        let Some(duties) = self.controller.as_mut() else {
            return Ok(Vec::new());
        };
        duties.shutting_down.insert(broker, broker_epoch);
        let shutting_down = duties.shutting_down();
        let moved =
            controller::controlled_shutdown(zk, duties.fence, &duties.view, broker, &shutting_down)
                .await;
        let (remaining, topics) = match moved {
            Ok(moved) => moved,
            Err(ZkError::Fenced { .. }) => {
                self.controller = None;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        info!(
            "controlled shutdown of broker {broker}: {} partition(s) it leads could not move yet",
            remaining.len()
        );
        let changed = Changed {
            topics,
            ..Changed::default()
        };
        self.controller_pass(zk, &changed, false).await?;
        Ok(remaining)
    }

    /// This broker's controlled shutdown, on a stop signal: done in place (once) when it is the
    /// controller, otherwise asked of the controller on a task of its own (the control loop must
    /// go on applying the requests that move the leaderships). `reply` is answered when the
    /// leaderships moved or the attempts ran out.
    async fn begin_controlled_shutdown(
        &mut self,
        zk: &Zk,
        reply: std::sync::mpsc::Sender<()>,
    ) -> Result<(), ZkError> {
        if !self.config.controlled_shutdown_enable {
            let _ = reply.send(());
            return Ok(());
        }
        let me = self.config.broker_id;
        if self.controller.is_some() {
            let remaining = self
                .controlled_shutdown_of(zk, me, self.broker_epoch)
                .await?;
            if !remaining.is_empty() {
                warn!(
                    "controlled shutdown: {} partition(s) have no other in-sync replica to lead them",
                    remaining.len()
                );
            }
            let _ = reply.send(());
            return Ok(());
        }
        // The latest metadata at each attempt: the controller may fail over meanwhile.
        let published = self.published.subscribe();
        let broker_epoch = self.broker_epoch;
        let attempts = self.config.controlled_shutdown_max_retries;
        let backoff =
            Duration::from_millis(self.config.controlled_shutdown_retry_backoff_ms as u64);
        tokio::spawn(async move {
            for attempt in 1..=attempts {
                let metadata = published.borrow().clone();
                let controller = metadata.brokers.get(&metadata.controller_id);
                let outcome = match controller {
                    None => Err(anyhow::anyhow!("no controller is known")),
                    Some(c) => ask_controlled_shutdown(c, me, broker_epoch).await,
                };
                match outcome {
                    Ok(0) => {
                        info!("controlled shutdown: the controller moved every leadership away");
                        break;
                    }
                    Ok(left) => warn!(
                        "controlled shutdown attempt {attempt}/{attempts}: {left} partition(s) not moved yet"
                    ),
                    Err(e) => warn!("controlled shutdown attempt {attempt}/{attempts}: {e:#}"),
                }
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                }
            }
            let _ = reply.send(());
        });
        Ok(())
    }
}

/// How long one ControlledShutdown exchange with the controller may take.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the controller to move this broker's leaderships; returns how many partitions it could
/// not move yet.
async fn ask_controlled_shutdown(
    controller: &BrokerInfo,
    me: i32,
    broker_epoch: i64,
) -> anyhow::Result<usize> {
    let addr = format!("{}:{}", controller.host, controller.port);
    let exchange = async {
        let mut conn = crate::client::Connection::connect(&addr).await?;
        let request = ControlledShutdownRequest::default()
            .with_broker_id(BrokerId(me))
            .with_broker_epoch(broker_epoch);
        conn.send_version(request, propagate::CONTROLLED_SHUTDOWN_VERSION)
            .await
    };
    let response = tokio::time::timeout(CONTROLLED_SHUTDOWN_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("the controller at {addr} did not answer in time"))??;
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        anyhow::bail!("the controller at {addr} answered {error:?}");
    }
    Ok(response.remaining_partitions.len())
}

pub enum CreateFailure {
    Admin(AdminError),
    Zk(ZkError),
}

impl From<ZkError> for CreateFailure {
    fn from(e: ZkError) -> Self {
        CreateFailure::Zk(e)
    }
}

/// Hands a new metadata snapshot to every shard and waits until each has applied it (opened the
/// partitions placed on it, closed the ones gone), so that whoever asked for the change can
/// answer only once it has taken effect.
/// Returns the acknowledgements still outstanding after 30 s (a shard slow to open or close).
async fn broadcast_metadata(
    shards: &ShardSenders,
    metadata: Arc<Metadata>,
) -> Vec<oneshot::Receiver<()>> {
    let mut acks = Vec::with_capacity(shards.len());
    for shard in 0..shards.len() {
        let (ack, done) = oneshot::channel();
        let snapshot = metadata.clone();
        let job: Job = Box::new(move |shard| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                shard.apply_metadata(snapshot).await;
                let _ = ack.send(());
            })
            .detach();
        });
        if shards.send(shard, job).await.is_ok() {
            acks.push(done);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut outstanding = Vec::new();
    for mut ack in acks {
        if tokio::time::timeout_at(deadline, &mut ack).await.is_err() {
            outstanding.push(ack);
        }
    }
    if !outstanding.is_empty() {
        warn!(
            "{} shard(s) took more than 30 s to apply metadata version {}",
            outstanding.len(),
            metadata.version
        );
    }
    outstanding
}

/// Removes what is left in `log_dir` of topic `name` with id `id`: the partition directories
/// whose `partition.metadata` names that id. A directory of another id (a newer topic of the
/// same name) or of none yet (one a shard is creating) is left alone. Runs on the control thread
/// once every shard has applied the snapshot without the topic (closed its partitions).
fn remove_local_data(log_dir: &std::path::Path, name: &str, id: uuid::Uuid) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    let id_text = encode_topic_id(id);
    for entry in entries.flatten() {
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let is_partition_of_topic = dir_name
            .rsplit_once('-')
            .is_some_and(|(t, p)| t == name && p.parse::<u32>().is_ok());
        if !is_partition_of_topic {
            continue;
        }
        let path = entry.path();
        match crate::storage::partition_metadata::read(&path) {
            Ok(Some(found)) if found == id_text => {}
            Ok(_) => continue,
            Err(e) => {
                warn!(
                    "deleting topic '{name}': {e}; leaving {} on disk",
                    path.display()
                );
                continue;
            }
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => info!("deleted {} of topic '{name}'", path.display()),
            Err(e) => warn!(
                "deleting topic '{name}': cannot remove {}: {e}",
                path.display()
            ),
        }
    }
}

/// After a full LeaderAndIsr: removes local partition directories of topics that no longer
/// exist (deleted while this broker was down: it never opened them) and of topics it no longer
/// hosts. (Partitions it had open go through `pending_deletions`.) Only directories
/// with a `partition.metadata` (a topic id) are touched; data under another id than the live
/// topic of its name is left alone; and nothing at all while the broker knows no topic (a
/// ZooKeeper that lost its data must not make brokers erase theirs).
fn remove_strays(log_dir: &std::path::Path, metadata: &Metadata) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    if metadata.topics.is_empty() {
        let local = entries
            .flatten()
            .filter(|e| e.path().join("partition.metadata").exists())
            .count();
        if local > 0 {
            warn!(
                "the cluster has no topic at all, yet {local} partition(s) are on disk here: left alone (a wiped ZooKeeper must not make brokers erase their data); remove them by hand if their topics were deleted"
            );
        }
        return;
    }
    for entry in entries.flatten() {
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, partition)) = dir_name
            .rsplit_once('-')
            .and_then(|(t, p)| Some((t.to_owned(), p.parse::<i32>().ok()?)))
        else {
            continue;
        };
        let Ok(Some(id_text)) = crate::storage::partition_metadata::read(&entry.path()) else {
            continue;
        };
        let Some(id) = decode_topic_id(&id_text) else {
            continue;
        };
        let tp = TopicPartition { topic, partition };
        let stray = match metadata.topic(&tp.topic) {
            // A topic of this name under another id: not ours to judge (a deletion and
            // re-creation while this broker was down, or data copied in by hand); the shard
            // that would open it refuses it and says so, and it stays on disk.
            Some(t) if t.topic_id != id => false,
            Some(_) => metadata.shard_of(&tp).is_none(),
            None => true,
        };
        if stray {
            warn!("{tp} (topic id {id_text}) is not this broker's any more (deleted or moved while it was down); removing it");
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

/// Deletes `path` if it still has `version`; gone already is fine.
async fn remove_if_unchanged(zk: &Zk, path: &str, version: i32) -> Result<(), ZkError> {
    match zk.client.delete(path, Some(version)).await {
        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => Ok(()),
        Err(source) => Err(ZkError::Op {
            op: "delete",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Reads brokers, controller and topics (assignment, partition states, configs) from ZooKeeper.
/// Overrides each topic's stored config holds that skein could not apply go to `ignored`.
async fn read_metadata(
    zk: &Zk,
    config: &BrokerConfig,
    ignored: &mut BTreeMap<String, Vec<Ignored>>,
) -> Result<Metadata, ZkError> {
    let mut metadata = Metadata::default();
    read_cluster(zk, &mut metadata).await?;
    let names = zk.children(BROKER_TOPICS).await?;
    for (name, topic) in read_topics(zk, config, names).await? {
        if let Some((topic, topic_ignored)) = topic {
            ignored.insert(name.clone(), topic_ignored);
            metadata.topics.insert(name, Arc::new(topic));
        }
    }
    Ok(metadata)
}

/// Brokers, cluster id and controller, into `metadata`.
async fn read_cluster(zk: &Zk, metadata: &mut Metadata) -> Result<(), ZkError> {
    metadata.brokers.clear();
    for child in zk.children(BROKER_IDS).await? {
        let Ok(id) = child.parse::<i32>() else {
            continue;
        };
        if let Some((registration, stat)) =
            zk.read_json::<BrokerRegistration>(&broker_path(id)).await?
        {
            metadata.brokers.insert(
                id,
                BrokerInfo {
                    id,
                    host: registration.host,
                    port: registration.port,
                    epoch: stat.czxid,
                },
            );
        }
    }
    if let Some((cluster, _)) = zk.read_json::<ClusterIdZnode>(CLUSTER_ID).await? {
        metadata.cluster_id = cluster.id;
    }
    metadata.controller_id = match zk.read_json::<ControllerZnode>(CONTROLLER).await? {
        Some((controller, _)) => controller.brokerid,
        None => -1,
    };
    Ok(())
}

/// The named topics, each `None` if it is gone or not ready yet. Read many at once: a few round
/// trips' latency for the lot, not one per znode, without flooding ZooKeeper when there are
/// thousands.
async fn read_topics(
    zk: &Zk,
    config: &BrokerConfig,
    names: Vec<String>,
) -> Result<Vec<(String, Option<(TopicMetadata, Vec<Ignored>)>)>, ZkError> {
    futures::stream::iter(names)
        .map(|name| async move {
            let topic = read_topic(zk, config, name.clone()).await?;
            Ok::<_, ZkError>((name, topic))
        })
        .buffered(TOPICS_READ_AT_ONCE)
        .try_collect()
        .await
}

/// A topic's stored config (`/config/topics/<t>`) over the broker's defaults, with the overrides
/// that could not be applied.
async fn read_config(
    zk: &Zk,
    config: &BrokerConfig,
    name: &str,
) -> Result<(TopicConfig, Vec<Ignored>), ZkError> {
    let overrides = zk
        .read_json::<TopicConfigZnode>(&topic_config_path(name))
        .await?
        .map(|(c, _)| c.config)
        .unwrap_or_default();
    Ok(TopicConfig::resolve(&config.topic_defaults, &overrides))
}

/// The named topics' configs, read many at once (see [`read_topics`]).
async fn read_configs(
    zk: &Zk,
    config: &BrokerConfig,
    names: Vec<String>,
) -> Result<BTreeMap<String, (TopicConfig, Vec<Ignored>)>, ZkError> {
    futures::stream::iter(names)
        .map(|name| async move {
            let read = read_config(zk, config, &name).await?;
            Ok::<_, ZkError>((name, read))
        })
        .buffered(TOPICS_READ_AT_ONCE)
        .try_collect()
        .await
}

/// One topic's metadata from its znodes, with the config overrides that could not be applied;
/// `None` while the controller has not given it an id yet.
async fn read_topic(
    zk: &Zk,
    config: &BrokerConfig,
    name: String,
) -> Result<Option<(TopicMetadata, Vec<Ignored>)>, ZkError> {
    let Some((topic, _)) = zk.read_json::<TopicZnode>(&topic_path(&name)).await? else {
        return Ok(None);
    };
    let Some(topic_id) = topic.topic_id.as_deref().and_then(decode_topic_id) else {
        // The controller gives every topic an id before its partitions get states.
        return Ok(None);
    };
    let (topic_config, ignored) = read_config(zk, config, &name).await?;
    let states = futures::future::try_join_all((0..topic.partitions.len() as i32).map(|index| {
        let path = partition_state_path(&name, index);
        async move { zk.read_json::<PartitionStateZnode>(&path).await }
    }))
    .await?;
    let partitions = states
        .into_iter()
        .enumerate()
        .map(|(index, state)| {
            let replicas = topic
                .partitions
                .get(&index.to_string())
                .cloned()
                .unwrap_or_default();
            let (leader, leader_epoch, isr, version) = match state {
                Some((s, stat)) => (s.leader, s.leader_epoch, s.isr, stat.version),
                None => (-1, -1, Vec::new(), -1),
            };
            PartitionState {
                replicas,
                leader,
                leader_epoch,
                isr,
                version,
            }
        })
        .collect();
    Ok(Some((
        TopicMetadata {
            name,
            topic_id,
            partitions,
            config: topic_config,
        },
        ignored,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noted(paths: &[&str]) -> Changed {
        let mut changed = Changed::default();
        for path in paths {
            changed.note(path);
        }
        changed
    }

    #[test]
    fn events_name_the_topics_to_read_again() {
        let changed = noted(&[
            "/brokers/topics/orders",
            "/brokers/topics/orders/partitions/0/state",
            "/brokers/topics/orders/partitions/1/state",
            "/config/topics/payments",
            "/admin/delete_topics/old",
        ]);
        assert!(!changed.everything && !changed.cluster);
        assert_eq!(
            changed.topics,
            BTreeSet::from(["orders".to_owned(), "payments".to_owned()])
        );
        assert_eq!(changed.step_scope(), Some(&changed.topics));
    }

    #[test]
    fn broker_and_controller_changes_make_the_step_look_at_every_topic() {
        for path in ["/brokers/ids/3", "/controller"] {
            let changed = noted(&["/brokers/topics/orders", path]);
            assert!(changed.cluster, "{path}");
            assert!(!changed.everything, "{path}");
            assert_eq!(changed.step_scope(), None, "{path}");
        }
    }

    #[test]
    fn unknown_paths_are_read_in_full() {
        for path in ["/brokers/topics", "/brokers/seqid", "/config/topics"] {
            assert!(noted(&[path]).everything, "{path}");
        }
    }
}
