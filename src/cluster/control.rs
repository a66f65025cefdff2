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
use crate::metadata::{
    decode_topic_id, encode_topic_id, place_partitions, BrokerInfo, Metadata, PartitionState,
    TopicMetadata, TopicPartition,
};
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
    /// Topics whose deletion was asked for.
    deletions: BTreeSet<String>,
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
        } else if let Some(name) = topic_under("/admin/delete_topics/") {
            self.deletions.insert(name);
        } else if !path.starts_with("/admin") {
            // Deletion requests under /admin are the controller step's; anything else unknown
            // is read in full.
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
    metadata: Arc<Metadata>,
    producer_ids: std::ops::Range<i64>,
    /// Topics whose deletion was asked for (`/admin/delete_topics/<t>`), with the id they had:
    /// once a topic is gone from the metadata, this broker removes its data of that topic id.
    pending_deletions: BTreeMap<String, uuid::Uuid>,
    /// Acknowledgements of the last snapshot a shard had not sent within 30 s: until they come,
    /// a partition of a deleted topic may still be open, and its data is not touched.
    unapplied: Vec<oneshot::Receiver<()>>,
}

/// Deletions a broker remembers at once; more (a flood of requests for topics whose deletion
/// never completes) are dropped with a warning, leaving their data on disk.
const MAX_PENDING_DELETIONS: usize = 10_000;

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
            let mut control = Control {
                config,
                shards,
                requests,
                metadata: Arc::new(Metadata::default()),
                producer_ids: 0..0,
                pending_deletions: BTreeMap::new(),
                unapplied: Vec::new(),
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
        self.register(zk).await?;
        let mut state_watcher = zk.client.state_watcher();
        // One persistent recursive watch per subtree skein reads; every event just means "read again".
        let mut watches = Vec::new();
        for path in ["/brokers", "/admin", "/config/topics", CONTROLLER] {
            let mode = if path == CONTROLLER {
                zk::AddWatchMode::Persistent
            } else {
                zk::AddWatchMode::PersistentRecursive
            };
            watches.push(
                zk.client
                    .watch(path, mode)
                    .await
                    .map_err(|source| ZkError::Op {
                        op: "watch",
                        path: path.to_owned(),
                        source,
                    })?,
            );
        }
        let mut is_controller = false;
        let mut changed = Changed::everything();
        let mut next_full_read = tokio::time::Instant::now();
        let rebalance_every =
            Duration::from_secs(self.config.leader_imbalance_check_interval_seconds as u64);
        let mut next_rebalance = tokio::time::Instant::now() + rebalance_every;
        loop {
            if !is_controller {
                is_controller =
                    controller::try_become_controller(zk, self.config.broker_id).await?;
                if is_controller {
                    // A new controller looks at every topic once.
                    changed.everything = true;
                }
            } else if !controller::still_controller(zk, self.config.broker_id).await? {
                warn!(
                    "broker {} is no longer the controller",
                    self.config.broker_id
                );
                is_controller = false;
            }
            if tokio::time::Instant::now() >= next_full_read {
                changed.everything = true;
            }
            if changed.everything {
                next_full_read = tokio::time::Instant::now() + FULL_READ_EVERY;
            }
            self.note_deletions(changed.deletions.iter());
            if is_controller {
                let rebalance = self.config.auto_leader_rebalance_enable
                    && tokio::time::Instant::now() >= next_rebalance;
                if rebalance {
                    next_rebalance = tokio::time::Instant::now() + rebalance_every;
                }
                let scope = if rebalance {
                    None
                } else {
                    changed.step_scope()
                };
                let step = controller::step(zk, &self.config, scope, rebalance).await?;
                changed.topics.extend(step.changed);
                changed.topics.extend(step.deleted.iter().cloned());
                self.note_deletions(step.deleted.iter());
            }
            self.refresh_changed(zk, &changed).await?;
            changed = Changed::default();
            self.finish_deletions();

            let mut coalesce = false;
            let watch_fired =
                futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                (event, _, _) = watch_fired => {
                    // A session event may be the last one: the watchers close after it, and
                    // polling a closed watcher panics, so only node events are gathered.
                    if event.event_type == zk::EventType::Session {
                        changed.everything = true;
                    } else {
                        changed.note(&event.path);
                        coalesce = true;
                    }
                }
                request = self.requests.recv_async() => match request {
                    Ok(ControlRequest::Shutdown { reply }) => {
                        self.deregister(zk, is_controller).await;
                        let _ = reply.send(());
                        return Ok(());
                    }
                    Ok(request) => self.serve(zk, request, is_controller).await?,
                    Err(_) => return Ok(()),
                },
                state = state_watcher.changed() => {
                    if state.is_terminated() {
                        return Err(ZkError::Op { op: "session", path: "/".to_owned(), source: zk::Error::SessionExpired });
                    }
                    // Reconnected (or about to): events of the time between may be lost.
                    changed.everything = true;
                }
                // Watches report every change; this re-read only bounds the damage of a missed one.
                _ = tokio::time::sleep_until(next_full_read) => {}
            }
            if coalesce {
                // One change fires several events within milliseconds (a new topic: its znode,
                // each partition's state, its config): let them arrive and read once for all.
                tokio::time::sleep(COALESCE_EVENTS).await;
                'drain: for watch in &mut watches {
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

    /// Writes `/brokers/ids/<id>`. A registration left by this broker's previous (killed) process
    /// lingers until ZooKeeper expires that session, so wait for it rather than fail, as long as
    /// one session timeout (plus slack) allows.
    async fn register(&self, zk: &Zk) -> Result<(), ZkError> {
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
                break;
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
                Some(stat) if stat.ephemeral_owner == session => break, // registered earlier
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

    async fn deregister(&self, zk: &Zk, is_controller: bool) {
        let id = self.config.broker_id;
        if is_controller {
            if let Err(e) = zk.client.delete(CONTROLLER, None).await {
                warn!("cannot resign as controller: {e}");
            }
        }
        match zk.client.delete(&broker_path(id), None).await {
            Ok(()) => info!("deregistered broker {id}"),
            Err(e) => warn!("cannot remove {}: {e}", broker_path(id)),
        }
    }

    /// Reads ZooKeeper into a new snapshot and hands it to every shard if anything changed.
    /// Re-reads what `changed` names (everything, or the cluster's brokers and controller and
    /// some topics) and sends the shards a new snapshot if anything differs.
    async fn refresh_changed(&mut self, zk: &Zk, changed: &Changed) -> Result<(), ZkError> {
        let mut ignored = BTreeMap::new();
        let mut metadata = if changed.everything {
            read_metadata(zk, &self.config, &mut ignored).await?
        } else {
            let mut metadata = Metadata::clone(&self.metadata);
            if changed.cluster {
                read_cluster(zk, &mut metadata).await?;
            }
            let names = changed.topics.iter().cloned().collect();
            for (name, topic) in read_topics(zk, &self.config, names).await? {
                match topic {
                    Some((topic, topic_ignored)) => {
                        ignored.insert(name.clone(), topic_ignored);
                        metadata.topics.insert(name, Arc::new(topic))
                    }
                    None => metadata.topics.remove(&name),
                };
            }
            metadata
        };
        self.log_topic_configs(&metadata, &ignored);
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
            return Ok(());
        }
        metadata.version = self.metadata.version + 1;
        let metadata = Arc::new(metadata);
        self.metadata = metadata.clone();
        self.unapplied = broadcast_metadata(&self.shards, metadata).await;
        Ok(())
    }

    /// Says, once per change of a topic's stored config, which of its overrides skein leaves
    /// aside: unknown or invalid ones (each other key still applies), and ones it only stores.
    fn log_topic_configs(&self, metadata: &Metadata, ignored: &BTreeMap<String, Vec<Ignored>>) {
        for (name, topic) in &metadata.topics {
            let before = self.metadata.topic(name);
            if before.is_some_and(|b| b.config.overrides == topic.config.overrides) {
                continue;
            }
            for i in ignored.get(name).into_iter().flatten() {
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

    /// Remembers the ids of topics whose deletion was asked for, as the metadata has them now.
    fn note_deletions<'a>(&mut self, names: impl Iterator<Item = &'a String>) {
        for name in names {
            let Some(topic) = self.metadata.topic(name) else {
                continue;
            };
            if self.pending_deletions.len() >= MAX_PENDING_DELETIONS {
                warn!("too many topic deletions pending; the data of '{name}' stays on disk");
                continue;
            }
            self.pending_deletions.insert(name.clone(), topic.topic_id);
        }
    }

    /// Removes this broker's data of every pending deletion whose topic is gone from the
    /// metadata (or lives on under a new id). Every broker does this for itself, the controller
    /// included: the deletion request in ZooKeeper is what tells a deleted topic from one that
    /// is merely missing (a ZooKeeper that lost its data must not make brokers erase theirs).
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
    }

    async fn serve(
        &mut self,
        zk: &Zk,
        request: ControlRequest,
        is_controller: bool,
    ) -> Result<(), ZkError> {
        match request {
            ControlRequest::CreateTopic { spec, reply } => {
                let result =
                    controller::create_topic(zk, &self.config, &self.metadata, &spec).await;
                let result = match result {
                    Ok(()) if !spec.validate_only => {
                        // Give the new topic its partition states and leaders now, so the reply
                        // means "ready to use" on this broker.
                        let changed = Changed::topic(&spec.name);
                        if is_controller {
                            controller::step(zk, &self.config, Some(&changed.topics), false)
                                .await?;
                        }
                        self.refresh_changed(zk, &changed).await?;
                        Ok(())
                    }
                    other => other,
                };
                let _ = reply.send(result.map_err(|e| match e {
                    CreateFailure::Admin(e) => e,
                    CreateFailure::Zk(e) => {
                        AdminError::new(ResponseError::UnknownServerError, e.to_string())
                    }
                }));
            }
            ControlRequest::DeleteTopic { name, reply } => {
                let result = self.delete_topic(zk, &name, is_controller).await;
                let _ = reply.send(result);
            }
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
                if result.is_ok() {
                    // This broker's shards see the new ISR now, not after the watch fires.
                    self.refresh_changed(zk, &Changed::topic(&tp.topic)).await?;
                }
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
        }
        Ok(())
    }

    async fn delete_topic(
        &mut self,
        zk: &Zk,
        name: &str,
        is_controller: bool,
    ) -> Result<(), AdminError> {
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
        if is_controller {
            let mut changed = Changed::topic(name);
            let step = controller::step(zk, &self.config, Some(&changed.topics), false)
                .await
                .map_err(zk_error)?;
            changed.topics.extend(step.deleted.iter().cloned());
            self.note_deletions(step.deleted.iter());
            self.refresh_changed(zk, &changed).await.map_err(zk_error)?;
            self.finish_deletions();
        }
        Ok(())
    }
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
        if let Some((registration, _)) =
            zk.read_json::<BrokerRegistration>(&broker_path(id)).await?
        {
            metadata.brokers.insert(
                id,
                BrokerInfo {
                    id,
                    host: registration.host,
                    port: registration.port,
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
    let overrides = zk
        .read_json::<TopicConfigZnode>(&topic_config_path(&name))
        .await?
        .map(|(c, _)| c.config)
        .unwrap_or_default();
    let (topic_config, ignored) = TopicConfig::resolve(&config.topic_defaults, &overrides);
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
            let (leader, leader_epoch, isr) = match state {
                Some((s, _)) => (s.leader, s.leader_epoch, s.isr),
                None => (-1, -1, Vec::new()),
            };
            PartitionState {
                replicas,
                leader,
                leader_epoch,
                isr,
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
