//! Kafka's ZooKeeper layout (ZK mode, Kafka <= 3.x): the paths and the JSON each znode holds, and
//! the reads and writes skein makes on them. Only the control thread calls this.
//!
//! Znodes are written exactly as Kafka writes them so that Kafka's own tooling (and `kazoo` in the
//! tests) reads them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zookeeper_client as zk;

pub const BROKER_IDS: &str = "/brokers/ids";
pub const BROKER_TOPICS: &str = "/brokers/topics";
pub const CONFIG_TOPICS: &str = "/config/topics";
pub const DELETE_TOPICS: &str = "/admin/delete_topics";
pub const CONTROLLER: &str = "/controller";
pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
pub const CLUSTER_ID: &str = "/cluster/id";
pub const PRODUCER_ID_BLOCK: &str = "/latest_producer_id_block";
pub const ISR_CHANGE_NOTIFICATION: &str = "/isr_change_notification";

/// Persistent paths Kafka creates at start-up.
pub const PERSISTENT_PATHS: &[&str] = &[
    "/brokers/ids",
    "/brokers/topics",
    "/brokers/seqid",
    "/config/topics",
    "/config/changes",
    "/config/brokers",
    "/admin/delete_topics",
    "/isr_change_notification",
    "/cluster",
];

pub fn broker_path(id: i32) -> String {
    format!("{BROKER_IDS}/{id}")
}
pub fn topic_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}")
}
pub fn partitions_path(topic: &str) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions")
}
pub fn partition_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}")
}
pub fn partition_state_path(topic: &str, partition: i32) -> String {
    format!("{BROKER_TOPICS}/{topic}/partitions/{partition}/state")
}
pub fn topic_config_path(topic: &str) -> String {
    format!("{CONFIG_TOPICS}/{topic}")
}
pub fn delete_topic_path(topic: &str) -> String {
    format!("{DELETE_TOPICS}/{topic}")
}

/// `/brokers/ids/<id>`, version 5 of Kafka's broker registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub listener_security_protocol_map: BTreeMap<String, String>,
    pub endpoints: Vec<String>,
    pub jmx_port: i32,
    pub features: BTreeMap<String, serde_json::Value>,
    pub host: String,
    pub port: u16,
    pub timestamp: String,
    pub version: i32,
}

impl BrokerRegistration {
    pub fn new(host: &str, port: u16, now_ms: i64) -> Self {
        BrokerRegistration {
            listener_security_protocol_map: BTreeMap::from([(
                "PLAINTEXT".to_owned(),
                "PLAINTEXT".to_owned(),
            )]),
            endpoints: vec![format!("PLAINTEXT://{host}:{port}")],
            jmx_port: -1,
            features: BTreeMap::new(),
            host: host.to_owned(),
            port,
            timestamp: now_ms.to_string(),
            version: 5,
        }
    }
}

/// `/controller`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerZnode {
    pub version: i32,
    pub brokerid: i32,
    pub timestamp: String,
}

/// `/brokers/topics/<topic>`: the replica assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicZnode {
    pub version: i32,
    pub partitions: BTreeMap<String, Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    #[serde(default)]
    pub adding_replicas: BTreeMap<String, Vec<i32>>,
    #[serde(default)]
    pub removing_replicas: BTreeMap<String, Vec<i32>>,
}

/// `/brokers/topics/<topic>/partitions/<p>/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStateZnode {
    pub controller_epoch: i32,
    pub leader: i32,
    pub version: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
}

/// `/config/topics/<topic>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopicConfigZnode {
    pub version: i32,
    pub config: BTreeMap<String, String>,
}

/// `/cluster/id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterIdZnode {
    pub version: String,
    pub id: String,
}

/// `/latest_producer_id_block`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub version: i32,
    pub broker: i32,
    pub block_start: String,
    pub block_end: String,
}

/// Kafka prints topic ids as unpadded URL-safe base64 of the 16 UUID bytes.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    #[error("ZooKeeper {op} {path}: {source}")]
    Op {
        op: &'static str,
        path: String,
        source: zk::Error,
    },
    #[error("znode {path} holds invalid JSON: {message}")]
    Json { path: String, message: String },
    /// A fenced write found `/controller_epoch` moved on: another broker is controller now.
    #[error("controller epoch {epoch} is over: another broker is the controller")]
    Fenced { epoch: i32 },
}

impl ZkError {
    pub fn is_session_lost(&self) -> bool {
        matches!(
            self,
            ZkError::Op {
                source: zk::Error::SessionExpired | zk::Error::ClientClosed,
                ..
            }
        )
    }
}

/// A controller's proof of office: the epoch it took and the version of `/controller_epoch` it
/// wrote. Every partition state the controller writes checks that version in the same multi-op
/// (Kafka's controller-epoch zkVersion check), so a controller that was replaced while it worked
/// cannot overwrite its successor's decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub epoch: i32,
    pub epoch_zk_version: i32,
}

/// The ZooKeeper session and the operations skein makes on Kafka's layout.
pub struct Zk {
    pub client: zk::Client,
}

pub fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

pub fn persistent_sequential() -> zk::CreateOptions<'static> {
    zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())
}

pub fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

fn op<'a>(op: &'static str, path: &'a str) -> impl FnOnce(zk::Error) -> ZkError + 'a {
    move |source| ZkError::Op {
        op,
        path: path.to_owned(),
        source,
    }
}

impl Zk {
    /// Reads and parses a JSON znode; `None` if it does not exist.
    pub async fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
    ) -> Result<Option<(T, zk::Stat)>, ZkError> {
        match self.client.get_data(path).await {
            Ok((data, stat)) => {
                let value = serde_json::from_slice(&data).map_err(|e| ZkError::Json {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
                Ok(Some((value, stat)))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(op("get", path)(e)),
        }
    }

    pub async fn children(&self, path: &str) -> Result<Vec<String>, ZkError> {
        match self.client.list_children(path).await {
            Ok(children) => Ok(children),
            Err(zk::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(op("list", path)(e)),
        }
    }

    /// Creates a znode; `Ok(false)` if it already exists.
    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: &zk::CreateOptions<'_>,
    ) -> Result<bool, ZkError> {
        match self.client.create(path, data, options).await {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(op("create", path)(e)),
        }
    }

    pub async fn create_json<T: Serialize>(
        &self,
        path: &str,
        value: &T,
        options: &zk::CreateOptions<'_>,
    ) -> Result<bool, ZkError> {
        let data = serde_json::to_vec(value).expect("znode types serialize");
        self.create(path, &data, options).await
    }

    /// Creates `path` and its missing parents as persistent znodes.
    pub async fn ensure_path(&self, path: &str) -> Result<(), ZkError> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.create(&prefix, b"", &persistent()).await?;
        }
        Ok(())
    }

    /// Deletes a znode and everything below it; a znode already gone is fine.
    pub async fn delete_recursive(&self, path: &str) -> Result<(), ZkError> {
        let mut stack = vec![(path.to_owned(), false)];
        while let Some((node, expanded)) = stack.pop() {
            if !expanded {
                let children = self.children(&node).await?;
                stack.push((node.clone(), true));
                stack.extend(children.into_iter().map(|c| (format!("{node}/{c}"), false)));
                continue;
            }
            match self.client.delete(&node, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(op("delete", &node)(e)),
            }
        }
        Ok(())
    }

    /// Sets (with `expected_version`) or creates (`None`) `path` only while `fence` holds.
    /// Returns the znode's new version.
    pub async fn write_json_fenced<T: Serialize>(
        &self,
        fence: Fence,
        path: &str,
        value: &T,
        expected_version: Option<i32>,
    ) -> Result<i32, ZkError> {
        let data = serde_json::to_vec(value).expect("znode types serialize");
        let mut multi = self.client.new_multi_writer();
        let built = multi
            .add_check_version(CONTROLLER_EPOCH, fence.epoch_zk_version)
            .and_then(|()| match expected_version {
                Some(version) => multi.add_set_data(path, &data, Some(version)),
                None => multi.add_create(path, &data, &persistent()),
            });
        built.map_err(op("multi", path))?;
        match multi.commit().await {
            Ok(results) => Ok(match results.last() {
                Some(zk::MultiWriteResult::SetData { stat }) => stat.version,
                _ => 0,
            }),
            Err(zk::MultiWriteError::OperationFailed { index: 0, .. }) => {
                Err(ZkError::Fenced { epoch: fence.epoch })
            }
            Err(zk::MultiWriteError::OperationFailed { source, .. }) => {
                Err(op("multi", path)(source))
            }
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(op("multi", path)(source)),
        }
    }

    pub async fn set_json<T: Serialize>(
        &self,
        path: &str,
        value: &T,
        expected_version: Option<i32>,
    ) -> Result<zk::Stat, ZkError> {
        let data = serde_json::to_vec(value).expect("znode types serialize");
        self.client
            .set_data(path, &data, expected_version)
            .await
            .map_err(op("set", path))
    }
}

/// `/isr_change_notification/isr_change_<seq>`: partitions whose ISR a leader changed, for the
/// controller (Kafka's IsrChangeNotification, version 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsrChangeNotification {
    pub version: i32,
    pub partitions: Vec<IsrChangePartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsrChangePartition {
    pub topic: String,
    pub partition: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn znodes_serialize_as_kafka_writes_them() {
        let state = PartitionStateZnode {
            controller_epoch: 1,
            leader: 1,
            version: 1,
            leader_epoch: 0,
            isr: vec![1],
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            json,
            r#"{"controller_epoch":1,"leader":1,"version":1,"leader_epoch":0,"isr":[1]}"#
        );
        let registration = BrokerRegistration::new("127.0.0.1", 9092, 5);
        let json = serde_json::to_value(&registration).unwrap();
        assert_eq!(json["endpoints"][0], "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(json["version"], 5);
    }
}
