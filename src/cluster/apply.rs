//! How a broker folds the controller's requests into its [`Metadata`]: a partition state newer
//! than the broker's replaces it (an older one is refused as stale), a deleted topic's marker
//! drops the topic, and a topic seen under a new id replaces the old one (in the metadata only). Pure, so it is tested
//! without a cluster.

use std::sync::Arc;

use kafka_protocol::messages::leader_and_isr_request::LeaderAndIsrPartitionState;
use kafka_protocol::messages::update_metadata_request::UpdateMetadataPartitionState;
use kafka_protocol::messages::{LeaderAndIsrRequest, UpdateMetadataRequest};

use super::propagate::LEADER_DURING_DELETE;
use crate::config::TopicConfig;
use crate::metadata::{
    BrokerInfo, Metadata, PartitionState, TopicMetadata, MAX_PARTITIONS_PER_TOPIC,
};

/// One partition's state as a request carries it.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub state: PartitionState,
}

#[derive(Debug, Default, PartialEq)]
pub struct Folded {
    /// Partitions whose state in the request was older than the broker's: refused.
    pub stale: Vec<(String, i32)>,
    /// Topics dropped by the controller's deletion marker, with the id they had: their data goes.
    pub dropped: Vec<(String, uuid::Uuid)>,
    /// Topics replaced by a topic of their name under a new id, with the old id. Their data is
    /// not touched (no request said they were deleted); a partition of the new id does not open
    /// over it and says so.
    pub replaced: Vec<(String, uuid::Uuid)>,
}

fn ids(brokers: &[kafka_protocol::messages::BrokerId]) -> Vec<i32> {
    brokers.iter().map(|b| b.0).collect()
}

fn from_leader_and_isr(p: &LeaderAndIsrPartitionState) -> PartitionState {
    PartitionState {
        replicas: ids(&p.replicas),
        leader: p.leader.0,
        leader_epoch: p.leader_epoch,
        isr: ids(&p.isr),
        version: p.partition_epoch,
    }
}

fn from_update_metadata(p: &UpdateMetadataPartitionState) -> PartitionState {
    PartitionState {
        replicas: ids(&p.replicas),
        leader: p.leader.0,
        leader_epoch: p.leader_epoch,
        isr: ids(&p.isr),
        version: p.zk_version,
    }
}

pub fn leader_and_isr_updates(request: &LeaderAndIsrRequest) -> Vec<StateUpdate> {
    request
        .topic_states
        .iter()
        .flat_map(|t| {
            t.partition_states.iter().map(|p| StateUpdate {
                topic: t.topic_name.0.to_string(),
                topic_id: t.topic_id,
                partition: p.partition_index,
                state: from_leader_and_isr(p),
            })
        })
        .collect()
}

pub fn update_metadata_updates(request: &UpdateMetadataRequest) -> Vec<StateUpdate> {
    request
        .topic_states
        .iter()
        .flat_map(|t| {
            t.partition_states.iter().map(|p| StateUpdate {
                topic: t.topic_name.0.to_string(),
                topic_id: t.topic_id,
                partition: p.partition_index,
                state: from_update_metadata(p),
            })
        })
        .collect()
}

/// The live brokers an UpdateMetadata names (their first endpoint). Entries with a port outside
/// 1..=65535 are left out.
pub fn live_brokers(request: &UpdateMetadataRequest) -> Vec<BrokerInfo> {
    request
        .live_brokers
        .iter()
        .filter_map(|b| {
            let endpoint = b.endpoints.first()?;
            let port = u16::try_from(endpoint.port).ok().filter(|&p| p > 0)?;
            Some(BrokerInfo {
                id: b.id.0,
                host: endpoint.host.to_string(),
                port,
                // Only the controller needs other brokers' epochs.
                epoch: -1,
            })
        })
        .collect()
}

/// How much of the truth a controller request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// Only changes: topics it does not name stay as they are.
    No,
    /// A full LeaderAndIsr: every partition this broker hosts.
    Hosted,
    /// The UpdateMetadata behind a full LeaderAndIsr: every topic this broker does not host
    /// (hosted ones are the full LeaderAndIsr's to judge: the one request whose word deletes
    /// data).
    Everything,
}

/// Drops from `metadata` the topics `updates` do not name that `whole` covers, for broker `me`.
/// Returns the dropped topics this broker hosted, with their ids: their data goes (deleted while
/// this broker's requests were lost, or while it was down).
pub fn drop_unnamed(
    metadata: &mut Metadata,
    updates: &[StateUpdate],
    me: i32,
    whole: Whole,
) -> Vec<(String, uuid::Uuid)> {
    if whole == Whole::No {
        return Vec::new();
    }
    let named: std::collections::BTreeSet<&str> =
        updates.iter().map(|u| u.topic.as_str()).collect();
    let mut gone = Vec::new();
    metadata.topics.retain(|name, topic| {
        if named.contains(name.as_str()) {
            return true;
        }
        let hosted = topic.partitions.iter().any(|p| p.replicas.contains(&me));
        match (whole, hosted) {
            (Whole::Hosted, true) => {
                gone.push((name.clone(), topic.topic_id));
                false
            }
            (Whole::Everything, false) => false,
            _ => true,
        }
    });
    gone
}

/// Partition slots (unknown until a state arrives) one request may add beyond the partitions it
/// names: a LeaderAndIsr names only the partitions a broker holds, so the others of their topics
/// become holes, but a request cannot make the broker allocate much more than it sent.
const HOLES_PER_REQUEST: usize = 100_000;
const HOLES_PER_ENTRY: usize = 64;

/// Folds `updates` into `metadata`. A topic new to the broker gets `config_of(name)`. Partition
/// indexes are bounded by [`MAX_PARTITIONS_PER_TOPIC`] and the slots they add by
/// [`HOLES_PER_REQUEST`] plus [`HOLES_PER_ENTRY`] per update; beyond, updates are refused.
pub fn fold(
    metadata: &mut Metadata,
    updates: Vec<StateUpdate>,
    config_of: &mut dyn FnMut(&str) -> TopicConfig,
) -> Folded {
    let mut folded = Folded::default();
    let mut slots_left = HOLES_PER_REQUEST + updates.len() * HOLES_PER_ENTRY;
    for update in updates {
        let known = metadata.topics.get(&update.topic);
        if update.state.leader == LEADER_DURING_DELETE {
            if known.is_some_and(|t| t.topic_id == update.topic_id) {
                metadata.topics.remove(&update.topic);
                folded.dropped.push((update.topic, update.topic_id));
            }
            continue;
        }
        if known.is_none() && super::controller::validate_topic_name(&update.topic).is_err() {
            // Names become directory names: one a controller could never have created
            // ("../x") is refused.
            folded.stale.push((update.topic, update.partition));
            continue;
        }
        let known_len = known.map_or(0, |t| t.partitions.len());
        let index = match usize::try_from(update.partition) {
            Ok(index)
                if update.partition < MAX_PARTITIONS_PER_TOPIC
                    && (index < known_len || index + 1 - known_len <= slots_left) =>
            {
                slots_left -= (index + 1).saturating_sub(known_len);
                index
            }
            _ => {
                folded.stale.push((update.topic, update.partition));
                continue;
            }
        };
        match known {
            Some(t) if t.topic_id == update.topic_id => {}
            other => {
                if let Some(old) = other {
                    folded.replaced.push((update.topic.clone(), old.topic_id));
                }
                let topic = TopicMetadata {
                    name: update.topic.clone(),
                    topic_id: update.topic_id,
                    partitions: Vec::new(),
                    config: config_of(&update.topic),
                };
                metadata
                    .topics
                    .insert(update.topic.clone(), Arc::new(topic));
            }
        }
        let topic = Arc::make_mut(
            metadata
                .topics
                .get_mut(&update.topic)
                .expect("inserted above"),
        );
        if topic.partitions.len() <= index {
            topic
                .partitions
                .resize_with(index + 1, PartitionState::unknown);
        }
        let current = &topic.partitions[index];
        if update.state.newer_than(current) {
            topic.partitions[index] = update.state;
        } else if current.newer_than(&update.state) {
            folded.stale.push((update.topic, update.partition));
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicDefaults;

    fn state(leader: i32, leader_epoch: i32, version: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            leader,
            leader_epoch,
            isr: isr.to_vec(),
            version,
        }
    }

    fn update(topic: &str, id: u128, partition: i32, state: PartitionState) -> StateUpdate {
        StateUpdate {
            topic: topic.to_owned(),
            topic_id: uuid::Uuid::from_u128(id),
            partition,
            state,
        }
    }

    fn config(_: &str) -> TopicConfig {
        TopicConfig::resolve(&TopicDefaults::default(), &Default::default()).0
    }

    #[test]
    fn newer_states_replace_older_ones_and_older_ones_are_refused() {
        let mut metadata = Metadata::default();
        let folded = fold(
            &mut metadata,
            vec![update("t", 1, 0, state(1, 3, 7, &[1, 2, 3]))],
            &mut config,
        );
        assert_eq!(folded, Folded::default());
        // An ISR change in the same leader epoch (a later znode version) is taken.
        fold(
            &mut metadata,
            vec![update("t", 1, 0, state(1, 3, 8, &[1, 2]))],
            &mut config,
        );
        assert_eq!(metadata.partition("t", 0).unwrap().isr, vec![1, 2]);
        // A delayed request from before it is refused and changes nothing.
        let folded = fold(
            &mut metadata,
            vec![update("t", 1, 0, state(1, 3, 7, &[1, 2, 3]))],
            &mut config,
        );
        assert_eq!(folded.stale, vec![("t".to_owned(), 0)]);
        assert_eq!(metadata.partition("t", 0).unwrap().isr, vec![1, 2]);
        // A new leader epoch wins whatever the version.
        fold(
            &mut metadata,
            vec![update("t", 1, 0, state(2, 4, 1, &[2]))],
            &mut config,
        );
        assert_eq!(metadata.partition("t", 0).unwrap().leader, 2);
    }

    #[test]
    fn partitions_named_out_of_order_leave_unknown_holes() {
        let mut metadata = Metadata::default();
        fold(
            &mut metadata,
            vec![update("t", 1, 1, state(1, 0, 0, &[1]))],
            &mut config,
        );
        let topic = metadata.topic("t").unwrap();
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(topic.partitions[0], PartitionState::unknown());
    }

    #[test]
    fn a_request_cannot_add_unbounded_holes() {
        let mut metadata = Metadata::default();
        let updates = (0..20)
            .map(|t| {
                update(
                    &format!("t{t}"),
                    t,
                    MAX_PARTITIONS_PER_TOPIC - 1,
                    state(1, 0, 0, &[1]),
                )
            })
            .collect();
        let folded = fold(&mut metadata, updates, &mut config);
        let slots: usize = metadata.topics.values().map(|t| t.partitions.len()).sum();
        assert!(slots <= HOLES_PER_REQUEST + 20 * HOLES_PER_ENTRY, "{slots}");
        assert!(!folded.stale.is_empty());
    }

    #[test]
    fn full_requests_drop_what_they_do_not_name_and_only_hosted_data_goes() {
        let mut metadata = Metadata::default();
        let elsewhere = PartitionState {
            replicas: vec![2, 3],
            ..state(2, 0, 0, &[2, 3])
        };
        fold(
            &mut metadata,
            vec![
                update("kept", 1, 0, state(1, 0, 0, &[1])),
                update("deleted", 2, 0, state(1, 0, 0, &[1])),
                update("theirs", 3, 0, elsewhere),
            ],
            &mut config,
        );
        let named = vec![update("kept", 1, 0, state(1, 0, 0, &[1]))];
        // An incremental request drops nothing.
        assert!(drop_unnamed(&mut metadata, &named, 1, Whole::No).is_empty());
        assert_eq!(metadata.topics.len(), 3);
        // A full LeaderAndIsr: the hosted topic it does not name goes, data included; a topic
        // this broker does not host is not its to judge.
        let gone = drop_unnamed(&mut metadata, &named, 1, Whole::Hosted);
        assert_eq!(gone, vec![("deleted".to_owned(), uuid::Uuid::from_u128(2))]);
        assert!(metadata.topic("theirs").is_some());
        // The UpdateMetadata behind it drops the others from the metadata, deleting nothing.
        assert!(drop_unnamed(&mut metadata, &named, 1, Whole::Everything).is_empty());
        assert_eq!(metadata.topics.keys().collect::<Vec<_>>(), vec!["kept"]);
    }

    #[test]
    fn topic_names_no_controller_could_create_are_refused() {
        let mut metadata = Metadata::default();
        let folded = fold(
            &mut metadata,
            vec![
                update("../escape", 1, 0, state(1, 0, 0, &[1])),
                update("", 2, 0, state(1, 0, 0, &[1])),
            ],
            &mut config,
        );
        assert_eq!(folded.stale.len(), 2);
        assert!(metadata.topics.is_empty());
    }

    #[test]
    fn a_hostile_partition_index_allocates_nothing() {
        let mut metadata = Metadata::default();
        let folded = fold(
            &mut metadata,
            vec![
                update("t", 1, i32::MAX, state(1, 0, 0, &[1])),
                update("t", 1, -1, state(1, 0, 0, &[1])),
            ],
            &mut config,
        );
        assert_eq!(folded.stale.len(), 2);
        assert!(metadata.topic("t").is_none());
    }

    #[test]
    fn deletion_markers_and_new_ids_drop_the_old_topic() {
        let mut metadata = Metadata::default();
        fold(
            &mut metadata,
            vec![update("t", 1, 0, state(1, 0, 0, &[1]))],
            &mut config,
        );
        let folded = fold(
            &mut metadata,
            vec![update("t", 2, 0, state(1, 0, 0, &[1]))],
            &mut config,
        );
        assert!(folded.dropped.is_empty());
        assert_eq!(
            folded.replaced,
            vec![("t".to_owned(), uuid::Uuid::from_u128(1))]
        );
        assert_eq!(
            metadata.topic("t").unwrap().topic_id,
            uuid::Uuid::from_u128(2)
        );
        // A marker for an id the broker does not have is ignored; its own id's drops the topic.
        let marker = |id| update("t", id, 0, state(LEADER_DURING_DELETE, 0, 0, &[]));
        assert!(fold(&mut metadata, vec![marker(1)], &mut config)
            .dropped
            .is_empty());
        let folded = fold(&mut metadata, vec![marker(2)], &mut config);
        assert_eq!(folded.dropped.len(), 1);
        assert!(metadata.topic("t").is_none());
    }
}
