//! The controller's work, done by whichever broker holds `/controller`: give new topics their ids
//! and partition states (leader and ISR chosen from live replicas), carry out topic deletions queued
//! under `/admin/delete_topics`, and hand out producer-id blocks. Runs on the control thread.
//!
//! Leader election picks only from the ISR: a partition whose ISR has no live broker stays
//! leaderless rather than lose acknowledged records (no unclean election).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::control::CreateFailure;
use super::zookeeper::*;
use crate::clock::now_ms;
use crate::config::{BrokerConfig, TopicConfig};
use crate::metadata::{encode_topic_id, Metadata, TopicPartition, MAX_PARTITIONS_PER_TOPIC};
use crate::shard::{AdminError, CreateTopicSpec};

/// Kafka's limit, so a topic's folder name (`<topic>-<partition>`) fits in 255 bytes.
const MAX_TOPIC_NAME_BYTES: usize = 249;
/// Producer ids are handed to brokers in blocks, as Kafka's ZK-mode ProducerIdManager does.
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Tries to create `/controller`; on success bumps `/controller_epoch` and returns the fence every
/// later partition-state write of this controllership checks.
pub async fn try_become_controller(zk: &Zk, broker_id: i32) -> Result<Option<Fence>, ZkError> {
    let znode = ControllerZnode {
        version: 1,
        brokerid: broker_id,
        timestamp: now_ms().to_string(),
    };
    if !zk.create_json(CONTROLLER, &znode, &ephemeral()).await? {
        // Held by this very session (a controllership interrupted by an error the session
        // survived): take office again, with a new epoch, rather than wait for ourselves.
        let session = zk.client.session_id().0;
        let ours = zk
            .client
            .check_stat(CONTROLLER)
            .await
            .map_err(|source| ZkError::Op {
                op: "stat",
                path: CONTROLLER.to_owned(),
                source,
            })?
            .is_some_and(|stat| stat.ephemeral_owner == session);
        if !ours {
            return Ok(None);
        }
    }
    let fence = match zk.read_json::<i32>(CONTROLLER_EPOCH).await? {
        Some((epoch, stat)) => {
            let stat = zk
                .set_json(CONTROLLER_EPOCH, &(epoch + 1), Some(stat.version))
                .await?;
            Fence {
                epoch: epoch + 1,
                epoch_zk_version: stat.version,
            }
        }
        None => {
            zk.create_json(CONTROLLER_EPOCH, &1, &persistent()).await?;
            Fence {
                epoch: 1,
                epoch_zk_version: 0,
            }
        }
    };
    info!(
        "broker {broker_id} is the controller (controller epoch {})",
        fence.epoch
    );
    Ok(Some(fence))
}

pub async fn still_controller(zk: &Zk, broker_id: i32) -> Result<bool, ZkError> {
    Ok(zk
        .read_json::<ControllerZnode>(CONTROLLER)
        .await?
        .is_some_and(|(c, _)| c.brokerid == broker_id))
}

/// What one pass of controller duties did.
#[derive(Debug, Default)]
pub struct StepOutcome {
    /// Topics whose deletion it completed.
    pub deleted: Vec<String>,
    /// Topics whose znodes it wrote (an id given, partition states created, leaders elected).
    pub changed: Vec<String>,
}

/// One pass of controller duties: pending deletions, then topic ids, partition states and leaders
/// of the topics in `only` (every topic if `None`: at start, and when brokers or the controller
/// changed, since any leader may need electing).
/// `known_ids`: the ids the controller last read, by topic name.
/// Brokers in `shutting_down` (controlled shutdown) are not elected; brokers in `bounced`
/// (registered anew since the last pass: restarted before their session expired) count as
/// failed for this pass, as Kafka's controller treats them, so their leaderships and ISR places
/// are taken away and they rejoin as followers.
#[allow(clippy::too_many_arguments)]
pub async fn step(
    zk: &Zk,
    config: &BrokerConfig,
    fence: Fence,
    only: Option<&BTreeSet<String>>,
    rebalance: bool,
    shutting_down: &BTreeSet<i32>,
    bounced: &BTreeSet<i32>,
    known_ids: &BTreeMap<String, uuid::Uuid>,
) -> Result<StepOutcome, ZkError> {
    let mut outcome = StepOutcome::default();
    let deleted = &mut outcome.deleted;
    for topic in zk.children(DELETE_TOPICS).await? {
        if config.delete_topic_enable {
            zk.delete_recursive(&topic_path(&topic)).await?;
            zk.delete_recursive(&topic_config_path(&topic)).await?;
            info!("deleted topic '{topic}'");
            deleted.push(topic.clone());
        }
        zk.delete_recursive(&delete_topic_path(&topic)).await?;
    }
    // The controller watches partition states itself (and sends brokers what changed), so the
    // notifications only need clearing (Kafka's controller reads them, then deletes them).
    for change in zk.children(ISR_CHANGE_NOTIFICATION).await? {
        zk.delete_recursive(&format!("{ISR_CHANGE_NOTIFICATION}/{change}"))
            .await?;
    }

    let live: Vec<i32> = zk
        .children(BROKER_IDS)
        .await?
        .iter()
        .filter_map(|id| id.parse().ok())
        .filter(|id| !bounced.contains(id))
        .collect();
    let epoch = fence.epoch;
    let eligible: Vec<i32> = live
        .iter()
        .copied()
        .filter(|b| !shutting_down.contains(b))
        .collect();
    let names = match only {
        None => zk.children(BROKER_TOPICS).await?,
        Some(names) => names.iter().cloned().collect(),
    };
    for name in names {
        let path = topic_path(&name);
        let Some((mut topic, stat)) = zk.read_json::<TopicZnode>(&path).await? else {
            continue;
        };
        let mut wrote = false;
        let mut changed_meanwhile = false;
        if topic.topic_id.is_none() {
            // Topics created by tools that predate topic ids get one, as Kafka's controller does;
            // a topic such a tool rewrote keeps the one it had (a new id would make brokers take
            // it for another topic).
            let id = known_ids
                .get(&name)
                .copied()
                .unwrap_or_else(uuid::Uuid::new_v4);
            topic.topic_id = Some(encode_topic_id(id));
            topic.version = topic.version.max(3);
            zk.set_json(&path, &topic, Some(stat.version)).await?;
            wrote = true;
        }
        for (partition, replicas) in &topic.partitions {
            let Ok(partition) = partition.parse::<i32>() else {
                continue;
            };
            let state_path = partition_state_path(&name, partition);
            match zk.read_json::<PartitionStateZnode>(&state_path).await? {
                None => {
                    let isr: Vec<i32> = replicas
                        .iter()
                        .copied()
                        .filter(|r| live.contains(r))
                        .collect();
                    let leader = isr
                        .iter()
                        .copied()
                        .find(|r| eligible.contains(r))
                        .unwrap_or(-1);
                    let state = PartitionStateZnode {
                        controller_epoch: epoch,
                        leader,
                        version: 1,
                        leader_epoch: 0,
                        isr,
                    };
                    zk.ensure_path(&partition_path(&name, partition)).await?;
                    match zk.write_json_fenced(fence, &state_path, &state, None).await {
                        Ok(_) => wrote = true,
                        Err(ZkError::Op {
                            source: zookeeper_client::Error::NodeExists,
                            ..
                        }) => changed_meanwhile = true,
                        Err(e) => return Err(e),
                    }
                }
                Some((state, stat)) => {
                    let Some(new_state) = next_state(
                        zk, &name, replicas, &state, &live, &eligible, epoch, config, rebalance,
                    )
                    .await?
                    else {
                        continue;
                    };
                    if new_state.leader != state.leader {
                        info!(
                            "{name}-{partition}: leader {} -> {} (epoch {}, ISR {:?})",
                            state.leader, new_state.leader, new_state.leader_epoch, new_state.isr
                        );
                    } else {
                        info!(
                            "{name}-{partition}: ISR {:?} -> {:?} (offline replicas removed, epoch {})",
                            state.isr, new_state.isr, new_state.leader_epoch
                        );
                    }
                    match zk
                        .write_json_fenced(fence, &state_path, &new_state, Some(stat.version))
                        .await
                    {
                        Ok(_) => wrote = true,
                        // A leader changed the ISR meanwhile: the next step sees its write.
                        Err(ZkError::Op {
                            source: zookeeper_client::Error::BadVersion,
                            ..
                        }) => changed_meanwhile = true,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if wrote || changed_meanwhile {
            outcome.changed.push(name);
        }
    }
    Ok(outcome)
}

/// What a partition's state should become, or `None` if it is right as it is:
/// - its leader is offline: a new one from the live ISR (Kafka's OfflinePartitionLeaderElection),
///   or with none, a live replica outside it if unclean election is on, else no leader (the ISR
///   keeps its last members, so one of them can lead again when it returns);
/// - its leader is live but the ISR names offline brokers: they leave it (Kafka's controller
///   removes a failed broker's replicas from every ISR at once, not after the lag time);
/// - `rebalance` and the preferred (first) replica is live, in the ISR, and not leading: it
///   leads again (Kafka's preferred leader election).
///
/// Every change bumps the leader epoch, as Kafka's controller does.
#[allow(clippy::too_many_arguments)]
async fn next_state(
    zk: &Zk,
    topic: &str,
    replicas: &[i32],
    state: &PartitionStateZnode,
    live: &[i32],
    eligible: &[i32],
    controller_epoch: i32,
    config: &BrokerConfig,
    rebalance: bool,
) -> Result<Option<PartitionStateZnode>, ZkError> {
    let live_isr: Vec<i32> = state
        .isr
        .iter()
        .copied()
        .filter(|r| live.contains(r))
        .collect();
    let changed = |leader: i32, isr: Vec<i32>| {
        Some(PartitionStateZnode {
            controller_epoch,
            leader,
            version: 1,
            leader_epoch: state.leader_epoch + 1,
            isr,
        })
    };
    let leader_live = state.leader != -1 && live.contains(&state.leader);
    if !leader_live {
        // The assignment's order decides among the ISR, as Kafka's election does.
        if let Some(&leader) = replicas
            .iter()
            .find(|r| live_isr.contains(r) && eligible.contains(r))
        {
            return Ok(changed(leader, live_isr));
        }
        if let Some(&leader) = replicas.iter().find(|r| eligible.contains(r)) {
            if unclean_election_enabled(zk, topic, config).await? {
                warn!(
                    "{topic}: no in-sync replica is alive; electing {leader} UNCLEANLY (unclean.leader.election.enable), records only the old ISR had are lost"
                );
                return Ok(changed(leader, vec![leader]));
            }
        }
        if state.leader == -1 {
            return Ok(None);
        }
        return Ok(Some(PartitionStateZnode {
            leader: -1,
            controller_epoch,
            ..state.clone()
        }));
    }
    if live_isr.len() != state.isr.len() {
        return Ok(changed(state.leader, live_isr));
    }
    if rebalance {
        if let Some(&preferred) = replicas.first() {
            if preferred != state.leader
                && live_isr.contains(&preferred)
                && eligible.contains(&preferred)
            {
                return Ok(changed(preferred, live_isr));
            }
        }
    }
    Ok(None)
}

async fn unclean_election_enabled(
    zk: &Zk,
    topic: &str,
    config: &BrokerConfig,
) -> Result<bool, ZkError> {
    let overrides = zk
        .read_json::<TopicConfigZnode>(&topic_config_path(topic))
        .await?
        .map(|(c, _)| c.config)
        .unwrap_or_default();
    Ok(match overrides.get("unclean.leader.election.enable") {
        Some(value) => value == "true",
        None => config.unclean_leader_election_enable,
    })
}

/// A leader's ISR change (Kafka's ZooKeeper-mode `updateIsr`): written only if the partition's
/// state still names `broker_id` leader in `leader_epoch`, with a conditional write, so a leader
/// that was replaced cannot overwrite its successor's state. Leaves an
/// `/isr_change_notification` for the controller, as Kafka does.
pub async fn write_isr(
    zk: &Zk,
    broker_id: i32,
    topic: &str,
    partition: i32,
    leader_epoch: i32,
    isr: &[i32],
) -> Result<(PartitionStateZnode, i32), AdminError> {
    let zk_error = |e: ZkError| AdminError::new(ResponseError::UnknownServerError, e.to_string());
    let path = partition_state_path(topic, partition);
    let Some((state, stat)) = zk
        .read_json::<PartitionStateZnode>(&path)
        .await
        .map_err(zk_error)?
    else {
        return Err(AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("{path} does not exist"),
        ));
    };
    if state.leader != broker_id || state.leader_epoch != leader_epoch {
        return Err(AdminError::new(
            ResponseError::FencedLeaderEpoch,
            format!(
                "{path} names leader {} in epoch {}, not {broker_id} in {leader_epoch}",
                state.leader, state.leader_epoch
            ),
        ));
    }
    if !isr.contains(&broker_id) {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            format!("an ISR {isr:?} without its leader {broker_id}"),
        ));
    }
    let new_state = PartitionStateZnode {
        isr: isr.to_vec(),
        ..state
    };
    let version = match zk.set_json(&path, &new_state, Some(stat.version)).await {
        Ok(stat) => stat.version,
        Err(ZkError::Op {
            source: zookeeper_client::Error::BadVersion,
            ..
        }) => {
            return Err(AdminError::new(
                ResponseError::FencedLeaderEpoch,
                format!("{path} changed while the ISR was written"),
            ))
        }
        Err(e) => return Err(zk_error(e)),
    };
    let notification = IsrChangeNotification {
        version: 1,
        partitions: vec![IsrChangePartition {
            topic: topic.to_owned(),
            partition,
        }],
    };
    zk.create_json(
        &format!("{ISR_CHANGE_NOTIFICATION}/isr_change_"),
        &notification,
        &persistent_sequential(),
    )
    .await
    .map_err(zk_error)?;
    Ok((new_state, version))
}

/// Kafka's controlled shutdown of `broker`, done by the controller from its `view`: every
/// partition `broker` leads gets a new leader from the rest of its live ISR (Kafka's
/// ControlledShutdownLeaderElection), and every ISR it follows in loses it, each with an epoch
/// bump so leaders and followers act at once. Returns the partitions it still leads (no other
/// in-sync replica: replication factor 1, or an ISR of one; they move only when it stops) and the
/// topics whose states were written.
pub async fn controlled_shutdown(
    zk: &Zk,
    fence: Fence,
    view: &Metadata,
    broker: i32,
    shutting_down: &BTreeSet<i32>,
) -> Result<(Vec<TopicPartition>, BTreeSet<String>), ZkError> {
    let mut remaining = Vec::new();
    let mut changed = BTreeSet::new();
    for (name, topic) in &view.topics {
        for (index, state) in topic.partitions.iter().enumerate() {
            let tp = TopicPartition {
                topic: name.clone(),
                partition: index as i32,
            };
            if !state.isr.contains(&broker) {
                continue;
            }
            let isr: Vec<i32> = state.isr.iter().copied().filter(|&r| r != broker).collect();
            let leader = if state.leader == broker {
                let successor = state.replicas.iter().copied().find(|r| {
                    isr.contains(r) && view.brokers.contains_key(r) && !shutting_down.contains(r)
                });
                match successor {
                    Some(successor) => successor,
                    None => {
                        remaining.push(tp);
                        continue;
                    }
                }
            } else if isr.is_empty() {
                continue;
            } else {
                state.leader
            };
            let new_state = PartitionStateZnode {
                controller_epoch: fence.epoch,
                leader,
                version: 1,
                leader_epoch: state.leader_epoch + 1,
                isr,
            };
            let path = partition_state_path(name, tp.partition);
            match zk
                .write_json_fenced(fence, &path, &new_state, Some(state.version))
                .await
            {
                Ok(_) => {
                    info!(
                        "{tp}: controlled shutdown of broker {broker}: leader {} -> {leader}, ISR {:?} (epoch {})",
                        state.leader, new_state.isr, new_state.leader_epoch
                    );
                    changed.insert(name.clone());
                }
                // Changed meanwhile (an ISR update): the broker asks again and the next pass
                // starts from the new state.
                Err(ZkError::Op {
                    source: zookeeper_client::Error::BadVersion,
                    ..
                }) => {
                    changed.insert(name.clone());
                    if state.leader == broker {
                        remaining.push(tp);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((remaining, changed))
}

pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name '{name}' is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(format!(
            "topic name is {} bytes, more than {MAX_TOPIC_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("topic name '{name}' contains '{c}'; legal characters are ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Validates a CreateTopics entry and writes `/config/topics/<t>` then `/brokers/topics/<t>`, in
/// Kafka's order, so a topic never appears without its config.
pub async fn create_topic(
    zk: &Zk,
    config: &BrokerConfig,
    spec: &CreateTopicSpec,
) -> Result<(), CreateFailure> {
    let fail = |code, message: String| Err(CreateFailure::Admin(AdminError::new(code, message)));
    if let Err(message) = validate_topic_name(&spec.name) {
        return fail(ResponseError::InvalidTopicException, message);
    }
    if zk
        .read_json::<serde_json::Value>(&topic_path(&spec.name))
        .await?
        .is_some()
    {
        return fail(
            ResponseError::TopicAlreadyExists,
            format!("topic '{}' already exists", spec.name),
        );
    }
    let mut configs = spec.configs.clone();
    if spec.internal {
        // Checked as any other, but for the compaction only an internal topic may ask for.
        configs.remove("cleanup.policy");
    }
    if let Err(message) = TopicConfig::validate(&config.topic_defaults, &configs) {
        return fail(ResponseError::InvalidConfig, message);
    }
    // Live brokers as ZooKeeper has them: this broker's metadata may not have heard of them yet.
    let mut live: Vec<i32> = zk
        .children(BROKER_IDS)
        .await?
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    live.sort_unstable();
    let assignment: BTreeMap<i32, Vec<i32>> = if spec.assignments.is_empty() {
        let partitions = if spec.num_partitions == -1 {
            config.num_partitions
        } else {
            spec.num_partitions
        };
        let replication = if spec.replication_factor == -1 {
            config.default_replication_factor
        } else {
            spec.replication_factor as i32
        };
        if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
            return fail(
                ResponseError::InvalidPartitions,
                format!("{partitions} partitions: must be 1 to {MAX_PARTITIONS_PER_TOPIC}"),
            );
        }
        if replication < 1 || replication as usize > live.len() {
            return fail(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {replication} but {} live broker(s)",
                    live.len()
                ),
            );
        }
        assign_replicas(&live, partitions, replication as usize)
    } else {
        if let Some((p, replicas)) = spec.assignments.iter().find(|(_, r)| {
            let mut unique = r.to_vec();
            unique.sort_unstable();
            unique.dedup();
            unique.len() != r.len()
        }) {
            return fail(
                ResponseError::InvalidReplicaAssignment,
                format!("partition {p}: replicas {replicas:?} name a broker twice"),
            );
        }
        if let Some((p, replicas)) = spec
            .assignments
            .iter()
            .find(|(_, r)| r.is_empty() || r.iter().any(|b| !live.contains(b)))
        {
            return fail(
                ResponseError::InvalidReplicaAssignment,
                format!("partition {p}: replicas {replicas:?} are not all live brokers"),
            );
        }
        let expected: Vec<i32> = (0..spec.assignments.len() as i32).collect();
        if spec.assignments.keys().copied().collect::<Vec<_>>() != expected {
            return fail(
                ResponseError::InvalidReplicaAssignment,
                "partitions must be numbered 0..n-1".to_owned(),
            );
        }
        spec.assignments.clone()
    };
    if spec.validate_only {
        return Ok(());
    }
    let topic_config = TopicConfigZnode {
        version: 1,
        config: spec.configs.clone(),
    };
    let config_path = topic_config_path(&spec.name);
    if !zk
        .create_json(&config_path, &topic_config, &persistent())
        .await?
    {
        zk.set_json(&config_path, &topic_config, None).await?;
    }
    let znode = TopicZnode {
        version: 3,
        partitions: assignment
            .iter()
            .map(|(p, r)| (p.to_string(), r.clone()))
            .collect(),
        topic_id: Some(encode_topic_id(uuid::Uuid::new_v4())),
        adding_replicas: BTreeMap::new(),
        removing_replicas: BTreeMap::new(),
    };
    if !zk
        .create_json(&topic_path(&spec.name), &znode, &persistent())
        .await?
    {
        return fail(
            ResponseError::TopicAlreadyExists,
            format!("topic '{}' already exists", spec.name),
        );
    }
    info!(
        "created topic '{}' with {} partition(s)",
        spec.name,
        assignment.len()
    );
    Ok(())
}

/// Round-robin replica assignment over the live brokers, starting at a different broker per
/// topic so leaders spread, as Kafka's AdminUtils does (without rack awareness).
fn assign_replicas(live: &[i32], partitions: i32, replication: usize) -> BTreeMap<i32, Vec<i32>> {
    let start = (now_ms() as usize) % live.len();
    (0..partitions)
        .map(|p| {
            let first = (start + p as usize) % live.len();
            (
                p,
                (0..replication)
                    .map(|r| live[(first + r) % live.len()])
                    .collect(),
            )
        })
        .collect()
}

/// Claims the next block of producer ids with a conditional write, retrying on a lost race.
pub async fn claim_producer_id_block(
    zk: &Zk,
    broker_id: i32,
) -> Result<std::ops::Range<i64>, ZkError> {
    for _ in 0..100 {
        let current = zk.read_json::<ProducerIdBlock>(PRODUCER_ID_BLOCK).await?;
        let start = match &current {
            Some((block, _)) => block.block_end.parse::<i64>().unwrap_or(-1) + 1,
            None => 0,
        };
        let end = start + PRODUCER_ID_BLOCK_SIZE - 1;
        let block = ProducerIdBlock {
            version: 1,
            broker: broker_id,
            block_start: start.to_string(),
            block_end: end.to_string(),
        };
        let won = match current {
            Some((_, stat)) => match zk
                .set_json(PRODUCER_ID_BLOCK, &block, Some(stat.version))
                .await
            {
                Ok(_) => true,
                Err(ZkError::Op {
                    source: zookeeper_client::Error::BadVersion,
                    ..
                }) => false,
                Err(e) => return Err(e),
            },
            None => {
                zk.create_json(PRODUCER_ID_BLOCK, &block, &persistent())
                    .await?
            }
        };
        if won {
            return Ok(start..end + 1);
        }
    }
    warn!("could not claim a producer id block after 100 attempts");
    Err(ZkError::Op {
        op: "claim",
        path: PRODUCER_ID_BLOCK.to_owned(),
        source: zookeeper_client::Error::BadVersion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").unwrap_err().contains("'/'"));
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn replicas_are_spread_over_live_brokers() {
        let assignment = assign_replicas(&[1, 2, 3], 6, 2);
        assert_eq!(assignment.len(), 6);
        for replicas in assignment.values() {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
        }
        let leaders: std::collections::BTreeSet<i32> = assignment.values().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3);
    }
}
