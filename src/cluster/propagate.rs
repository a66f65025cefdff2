//! The controller's side of Kafka's controller-to-broker requests (Kafka's
//! ControllerChannelManager): after every change of its view, the controller sends each live broker
//! a LeaderAndIsr for the partitions it replicates, an UpdateMetadata for the cluster, and a
//! StopReplica (delete) for the partitions of deleted topics it held. One ordered queue and one
//! connection per broker, over the broker's own listener; a broker new to this controllership
//! (just registered, or the controller just elected) gets everything (a full LeaderAndIsr), the
//! rest only what changed.
//!
//! Brokers learn leaders, ISRs and live brokers only from these requests, so ZooKeeper carries
//! one watch per change (the controller's), not one per broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::leader_and_isr_request::{
    LeaderAndIsrLiveLeader, LeaderAndIsrPartitionState, LeaderAndIsrTopicState,
};
use kafka_protocol::messages::stop_replica_request::{
    StopReplicaPartitionState, StopReplicaTopicState,
};
use kafka_protocol::messages::update_metadata_request::{
    UpdateMetadataBroker, UpdateMetadataEndpoint, UpdateMetadataPartitionState,
    UpdateMetadataTopicState,
};
use kafka_protocol::messages::{
    BrokerId, LeaderAndIsrRequest, StopReplicaRequest, TopicName, UpdateMetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::zookeeper::Fence;
use crate::client::Connection;
use crate::metadata::{BrokerInfo, Metadata, PartitionState, TopicMetadata};

/// The versions skein's controller sends and its brokers serve (Kafka 2.8's, with topic ids).
pub const LEADER_AND_ISR_VERSION: i16 = 5;
pub const UPDATE_METADATA_VERSION: i16 = 7;
pub const STOP_REPLICA_VERSION: i16 = 3;
pub const CONTROLLED_SHUTDOWN_VERSION: i16 = 3;

/// A partition's leader in an UpdateMetadata while its topic is being deleted (Kafka's
/// `LeaderAndIsr.LeaderDuringDelete`): brokers drop the topic.
pub const LEADER_DURING_DELETE: i32 = -2;

/// LeaderAndIsr `type`: a full request names every partition the broker replicates, so the
/// broker can remove local partitions it does not name (KIP-516).
pub const LEADER_AND_ISR_FULL: i8 = 1;
const LEADER_AND_ISR_INCREMENTAL: i8 = 0;

/// Requests waiting for one broker. A broker that falls this far behind has its queue dropped
/// and is sent everything afresh: a full LeaderAndIsr and UpdateMetadata, which the broker
/// takes as the whole truth (topics they do not name are dropped there).
const QUEUE_DEPTH: usize = 64;

/// Pause before reconnecting to a broker that did not answer.
const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// How long one request may take: a broker's listener answers within its control-request bound
/// (20 s; a request not applied by then is answered with an error and sent again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

enum Outgoing {
    LeaderAndIsr(LeaderAndIsrRequest),
    UpdateMetadata(UpdateMetadataRequest),
    StopReplica(StopReplicaRequest),
}

struct BrokerChannel {
    /// The registration this channel serves; a broker that registers again gets a new one.
    epoch: i64,
    tx: mpsc::Sender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BrokerChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one controllership has sent: a channel per live broker and the view last propagated.
pub struct Propagator {
    controller_id: i32,
    fence: Fence,
    channels: BTreeMap<i32, BrokerChannel>,
    sent: Arc<Metadata>,
}

/// One partition as the requests carry it.
struct Entry<'a> {
    topic: &'a TopicMetadata,
    index: i32,
    state: &'a PartitionState,
}

impl Propagator {
    pub fn new(controller_id: i32, fence: Fence) -> Propagator {
        Propagator {
            controller_id,
            fence,
            channels: BTreeMap::new(),
            sent: Arc::new(Metadata::default()),
        }
    }

    /// Sends every live broker what changed between the last view sent and `view`.
    pub fn propagate(&mut self, view: &Arc<Metadata>) {
        // Brokers gone, or registered anew: drop their queues (a returning broker starts afresh).
        self.channels.retain(|id, channel| {
            view.brokers
                .get(id)
                .is_some_and(|b| b.epoch == channel.epoch)
        });
        let changed: Vec<Entry> = entries(view)
            .filter(|e| {
                self.sent
                    .topic(&e.topic.name)
                    .filter(|t| t.topic_id == e.topic.topic_id)
                    .and_then(|t| t.partitions.get(e.index as usize))
                    != Some(e.state)
            })
            .collect();
        let deleted: Vec<&Arc<TopicMetadata>> = self
            .sent
            .topics
            .values()
            .filter(|t| {
                view.topic(&t.name)
                    .is_none_or(|now| now.topic_id != t.topic_id)
            })
            .collect();
        let brokers_changed = self.sent.brokers != view.brokers;
        for (&id, broker) in &view.brokers {
            let mut fresh = !self.channels.contains_key(&id);
            loop {
                if fresh {
                    self.channels.insert(id, self.open_channel(broker));
                }
                let mut queue = Vec::new();
                let hosted = |e: &&Entry| e.state.replicas.contains(&id);
                let all: Vec<Entry>;
                let (partitions, kind) = if fresh {
                    all = entries(view).collect();
                    (all.iter().collect::<Vec<_>>(), LEADER_AND_ISR_FULL)
                } else {
                    (changed.iter().collect(), LEADER_AND_ISR_INCREMENTAL)
                };
                let stopped: Vec<(&TopicMetadata, Vec<i32>)> = deleted
                    .iter()
                    .map(|t| {
                        let held = (0..t.partitions.len() as i32)
                            .filter(|&p| t.partitions[p as usize].replicas.contains(&id))
                            .collect::<Vec<_>>();
                        (t.as_ref(), held)
                    })
                    .filter(|(_, held)| !held.is_empty())
                    .collect();
                // Before the LeaderAndIsr: StopReplica names topics without their ids, so a topic
                // deleted and created again in one pass must go before its successor arrives.
                if !stopped.is_empty() {
                    queue.push(Outgoing::StopReplica(self.stop_replica(broker, &stopped)));
                }
                let led: Vec<&Entry> = partitions.iter().copied().filter(hosted).collect();
                if fresh || !led.is_empty() {
                    queue.push(Outgoing::LeaderAndIsr(
                        self.leader_and_isr(view, broker, &led, kind),
                    ));
                }
                if fresh || brokers_changed || !partitions.is_empty() || !deleted.is_empty() {
                    queue.push(Outgoing::UpdateMetadata(self.update_metadata(
                        view,
                        broker,
                        &partitions,
                        if fresh { &[] } else { &deleted },
                    )));
                }
                let channel = &self.channels[&id];
                let overflowed = queue
                    .into_iter()
                    .any(|request| channel.tx.try_send(request).is_err());
                if !overflowed || fresh {
                    break;
                }
                warn!(
                    "broker {id} is more than {QUEUE_DEPTH} controller requests behind; sending it everything afresh"
                );
                fresh = true;
            }
        }
        self.sent = view.clone();
    }

    fn open_channel(&self, broker: &BrokerInfo) -> BrokerChannel {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let addr = format!("{}:{}", broker.host, broker.port);
        info!(
            "controller (epoch {}): sending broker {} its state at {addr}",
            self.fence.epoch, broker.id
        );
        BrokerChannel {
            epoch: broker.epoch,
            tx,
            task: tokio::spawn(deliver(broker.id, addr, rx)),
        }
    }

    fn leader_and_isr(
        &self,
        view: &Metadata,
        broker: &BrokerInfo,
        partitions: &[&Entry],
        kind: i8,
    ) -> LeaderAndIsrRequest {
        let mut topics: BTreeMap<&str, LeaderAndIsrTopicState> = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for e in partitions {
            let topic = topics.entry(&e.topic.name).or_insert_with(|| {
                LeaderAndIsrTopicState::default()
                    .with_topic_name(topic_name(&e.topic.name))
                    .with_topic_id(e.topic.topic_id)
            });
            topic.partition_states.push(
                LeaderAndIsrPartitionState::default()
                    .with_partition_index(e.index)
                    .with_controller_epoch(self.fence.epoch)
                    .with_leader(BrokerId(e.state.leader))
                    .with_leader_epoch(e.state.leader_epoch)
                    .with_isr(brokers(&e.state.isr))
                    .with_partition_epoch(e.state.version)
                    .with_replicas(brokers(&e.state.replicas)),
            );
            if let Some(leader) = view.brokers.get(&e.state.leader) {
                leaders.insert(
                    leader.id,
                    LeaderAndIsrLiveLeader::default()
                        .with_broker_id(BrokerId(leader.id))
                        .with_host_name(StrBytes::from_string(leader.host.clone()))
                        .with_port(i32::from(leader.port)),
                );
            }
        }
        LeaderAndIsrRequest::default()
            .with_controller_id(BrokerId(self.controller_id))
            .with_controller_epoch(self.fence.epoch)
            .with_broker_epoch(broker.epoch)
            .with_type(kind)
            .with_topic_states(topics.into_values().collect())
            .with_live_leaders(leaders.into_values().collect())
    }

    fn update_metadata(
        &self,
        view: &Metadata,
        broker: &BrokerInfo,
        partitions: &[&Entry],
        deleted: &[&Arc<TopicMetadata>],
    ) -> UpdateMetadataRequest {
        let mut states: BTreeMap<(String, uuid::Uuid), Vec<UpdateMetadataPartitionState>> =
            BTreeMap::new();
        for e in partitions {
            states
                .entry((e.topic.name.clone(), e.topic.topic_id))
                .or_default()
                .push(self.partition_state(e.index, e.state, e.state.leader));
        }
        for topic in deleted {
            let entry = states
                .entry((topic.name.clone(), topic.topic_id))
                .or_default();
            for (index, state) in topic.partitions.iter().enumerate() {
                entry.push(self.partition_state(index as i32, state, LEADER_DURING_DELETE));
            }
        }
        let topic_states = states
            .into_iter()
            .map(|((name, id), partition_states)| {
                UpdateMetadataTopicState::default()
                    .with_topic_name(topic_name(&name))
                    .with_topic_id(id)
                    .with_partition_states(partition_states)
            })
            .collect();
        let live_brokers = view
            .brokers
            .values()
            .map(|b| {
                UpdateMetadataBroker::default()
                    .with_id(BrokerId(b.id))
                    .with_endpoints(vec![UpdateMetadataEndpoint::default()
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(i32::from(b.port))
                        .with_listener(StrBytes::from_static_str("PLAINTEXT"))
                        .with_security_protocol(0)])
            })
            .collect();
        UpdateMetadataRequest::default()
            .with_controller_id(BrokerId(self.controller_id))
            .with_controller_epoch(self.fence.epoch)
            .with_broker_epoch(broker.epoch)
            .with_topic_states(topic_states)
            .with_live_brokers(live_brokers)
    }

    fn partition_state(
        &self,
        index: i32,
        state: &PartitionState,
        leader: i32,
    ) -> UpdateMetadataPartitionState {
        UpdateMetadataPartitionState::default()
            .with_partition_index(index)
            .with_controller_epoch(self.fence.epoch)
            .with_leader(BrokerId(leader))
            .with_leader_epoch(state.leader_epoch)
            .with_isr(brokers(&state.isr))
            .with_zk_version(state.version)
            .with_replicas(brokers(&state.replicas))
    }

    fn stop_replica(
        &self,
        broker: &BrokerInfo,
        stopped: &[(&TopicMetadata, Vec<i32>)],
    ) -> StopReplicaRequest {
        StopReplicaRequest::default()
            .with_controller_id(BrokerId(self.controller_id))
            .with_controller_epoch(self.fence.epoch)
            .with_broker_epoch(broker.epoch)
            .with_topic_states(
                stopped
                    .iter()
                    .map(|(topic, held)| {
                        StopReplicaTopicState::default()
                            .with_topic_name(topic_name(&topic.name))
                            .with_partition_states(
                                held.iter()
                                    .map(|&p| {
                                        StopReplicaPartitionState::default()
                                            .with_partition_index(p)
                                            .with_leader_epoch(LEADER_DURING_DELETE)
                                            .with_delete_partition(true)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }
}

fn entries(view: &Metadata) -> impl Iterator<Item = Entry<'_>> {
    view.topics.values().flat_map(|topic| {
        topic
            .partitions
            .iter()
            .enumerate()
            .map(move |(index, state)| Entry {
                topic,
                index: index as i32,
                state,
            })
    })
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn brokers(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

/// Delivers one broker's queue in order, each request until the broker has answered it, over one
/// connection (reopened after a failure). Runs until the controller drops the queue.
async fn deliver(broker: i32, addr: String, mut queue: mpsc::Receiver<Outgoing>) {
    let mut connection: Option<Connection> = None;
    let mut failures = 0u64;
    while let Some(request) = queue.recv().await {
        loop {
            let conn = match connection.as_mut() {
                Some(conn) => conn,
                None => match Connection::connect(&addr).await {
                    Ok(mut conn) => {
                        conn.timeout = REQUEST_TIMEOUT;
                        connection.insert(conn)
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 || failures.is_multiple_of(40) {
                            warn!("controller: cannot reach broker {broker} at {addr}: {e:#}; retrying");
                        }
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        continue;
                    }
                },
            };
            let answered = match &request {
                Outgoing::LeaderAndIsr(r) => conn
                    .send_version(r.clone(), LEADER_AND_ISR_VERSION)
                    .await
                    .map(|response| {
                        let refused = response
                            .topics
                            .iter()
                            .flat_map(|t| &t.partition_errors)
                            .filter(|p| p.error_code != 0)
                            .count();
                        (response.error_code, refused)
                    }),
                Outgoing::UpdateMetadata(r) => conn
                    .send_version(r.clone(), UPDATE_METADATA_VERSION)
                    .await
                    .map(|response| (response.error_code, 0)),
                Outgoing::StopReplica(r) => conn
                    .send_version(r.clone(), STOP_REPLICA_VERSION)
                    .await
                    .map(|response| {
                        let refused = response
                            .partition_errors
                            .iter()
                            .filter(|p| p.error_code != 0)
                            .count();
                        (response.error_code, refused)
                    }),
            };
            let stale = [
                ResponseError::StaleControllerEpoch.code(),
                ResponseError::StaleBrokerEpoch.code(),
            ];
            match answered {
                Ok((0, refused)) => {
                    failures = 0;
                    if refused > 0 {
                        warn!("controller: broker {broker} refused {refused} partition state(s) (stale)");
                    }
                    break;
                }
                Ok((code, _)) if stale.contains(&code) => {
                    // This controller, or the run of the broker it addressed, is over: sending it
                    // again cannot help (a new controller, or a new channel, takes over).
                    warn!(
                        "controller: broker {broker} refused a request: {:?}",
                        ResponseError::try_from_code(code)
                    );
                    break;
                }
                Ok((code, _)) => {
                    // Not applied (the broker's control thread timed out, or its ZooKeeper
                    // failed it): the same request again, after a pause.
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(40) {
                        warn!(
                            "controller: broker {broker} could not apply a request ({:?}); sending it again",
                            ResponseError::try_from_code(code)
                        );
                    }
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(e) => {
                    failures += 1;
                    warn!(
                        "controller: request to broker {broker} at {addr} failed: {e:#}; retrying"
                    );
                    connection = None;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
    }
}
