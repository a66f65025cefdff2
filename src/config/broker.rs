//! `skein broker --config FILE`: the broker-wide settings, by Kafka's names and with Kafka's defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{flatten, read_toml, ConfigError, Value};
use crate::config::{CompressionType, Tuning};

/// One `PLAINTEXT://host:port` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    pub fn parse(text: &str) -> Result<Listener, String> {
        let (name, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("'{text}' is not of the form PLAINTEXT://host:port"))?;
        if name != "PLAINTEXT" {
            return Err(format!("listener '{text}': only PLAINTEXT is supported"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("listener '{text}' has no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("listener '{text}': bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // Kafka's empty host means "all interfaces"; skein's tests and users on loopback say so explicitly.
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(Listener {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
        })
    }

    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        format!("{}:{}", self.host, self.port)
            .parse()
            .map_err(|_| format!("listener host '{}' must be an IP address", self.host))
    }
}

/// Broker-level defaults for per-topic settings (`log.segment.bytes` is the default of a topic's
/// `segment.bytes`, and so on).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicDefaults {
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: i64,
    pub segment_index_bytes: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub max_message_bytes: i64,
    pub min_insync_replicas: i64,
    pub cleanup_policy: String,
    pub compression_type: CompressionType,
    /// `message.timestamp.type = LogAppendTime` (else CreateTime).
    pub log_append_time: bool,
    pub message_timestamp_difference_max_ms: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            min_insync_replicas: 1,
            cleanup_policy: "delete".to_owned(),
            compression_type: CompressionType::Producer,
            log_append_time: false,
            message_timestamp_difference_max_ms: i64::MAX,
        }
    }
}

/// What clients may hold of the broker: Kafka's settings where Kafka has them (README, "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `socket.request.max.bytes`: a longer request frame closes its connection.
    pub socket_request_max_bytes: u64,
    /// `queued.max.request.bytes`: request bytes the whole broker holds at once (read, being
    /// handled, answer not yet written), shared evenly by the shards. `None` (Kafka's -1) means
    /// [`DEFAULT_REQUEST_BUDGET_PER_SHARD`] per shard: skein always bounds it.
    pub queued_max_request_bytes: Option<u64>,
    /// `max.connections`: client connections the broker keeps open at once.
    pub max_connections: u64,
    /// `max.connections.per.ip`.
    pub max_connections_per_ip: u64,
    /// `connections.max.idle.ms`: a connection with no request in flight and no bytes received for
    /// this long is closed.
    pub connections_max_idle_ms: u64,
    /// `connections.max.stall.ms` (skein's): a request frame whose body has not all arrived, or a
    /// response not all written, this long after it began closes its connection.
    pub connections_max_stall_ms: u64,
}

/// Request-memory budget of each shard when `queued.max.request.bytes` is -1.
pub const DEFAULT_REQUEST_BUDGET_PER_SHARD: u64 = 256 << 20;

/// The least request-memory budget a shard gets, whatever `queued.max.request.bytes` says: room
/// for a few ordinary requests, and for the last quarter kept for small ones to mean something.
pub const MIN_REQUEST_BUDGET_PER_SHARD: u64 = 4 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            socket_request_max_bytes: 104_857_600,
            queued_max_request_bytes: None,
            max_connections: i32::MAX as u64,
            max_connections_per_ip: i32::MAX as u64,
            connections_max_idle_ms: 600_000,
            connections_max_stall_ms: 30_000,
        }
    }
}

impl Limits {
    /// Each of `shards` shards' request-memory budget: an equal share, and at least
    /// [`MIN_REQUEST_BUDGET_PER_SHARD`].
    pub fn request_budget_per_shard(&self, shards: usize) -> u64 {
        match self.queued_max_request_bytes {
            Some(total) => (total / shards.max(1) as u64).max(MIN_REQUEST_BUDGET_PER_SHARD),
            None => DEFAULT_REQUEST_BUDGET_PER_SHARD,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_id: i32,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub log_dir: PathBuf,
    pub zookeeper_connect: String,
    pub zookeeper_session_timeout_ms: i64,
    pub zookeeper_connection_timeout_ms: i64,
    pub num_partitions: i32,
    pub default_replication_factor: i32,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub log_retention_check_interval_ms: i64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often the recovery-point checkpoint is
    /// written.
    pub log_flush_offset_checkpoint_interval_ms: u64,
    pub topic_defaults: TopicDefaults,
    pub limits: Limits,
    /// Consumer groups: `offsets.*` and `group.*`.
    pub groups: super::GroupConfig,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader for data.
    pub replica_fetch_wait_max_ms: i64,
    /// `replica.fetch.max.bytes`: per partition, per follower fetch.
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per follower fetch.
    pub replica_fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: a follower's pause after a failed fetch.
    pub replica_fetch_backoff_ms: i64,
    /// `replica.high.watermark.checkpoint.interval.ms`: how often the high watermarks are
    /// written to `replication-offset-checkpoint`.
    pub replica_high_watermark_checkpoint_interval_ms: u64,
    /// `unclean.leader.election.enable`: elect a replica outside the ISR when none in it is
    /// alive (losing what only the ISR had).
    pub unclean_leader_election_enable: bool,
    /// `auto.leader.rebalance.enable`: the controller moves leadership back to each partition's
    /// preferred (first) replica once it is in sync.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub leader_imbalance_check_interval_seconds: i64,
    /// `controlled.shutdown.enable`: on SIGTERM, ask the controller to move this broker's
    /// leaderships (and take it out of ISRs) before closing.
    pub controlled_shutdown_enable: bool,
    /// `controlled.shutdown.max.retries`: attempts while partitions are left to move.
    pub controlled_shutdown_max_retries: i64,
    /// `controlled.shutdown.retry.backoff.ms`.
    pub controlled_shutdown_retry_backoff_ms: i64,
    /// How many shards (one pinned glommio executor each); defaults to every core.
    pub num_shards: Option<usize>,
    /// `metrics.listener`: where the control thread serves Prometheus text at `/metrics`; `None`
    /// (the key absent) = no metrics server.
    pub metrics_listener: Option<SocketAddr>,
    pub tuning: Tuning,
    /// Where the file came from, for error messages.
    pub path: PathBuf,
}

impl BrokerConfig {
    pub fn load(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let table = read_toml(path)?;
        Self::from_table(path, &table)
    }

    pub fn from_table(path: &Path, table: &toml::Table) -> Result<BrokerConfig, ConfigError> {
        let entries: BTreeMap<String, toml::Value> = flatten(table).into_iter().collect();
        let missing = |key: &str| ConfigError::Missing {
            path: path.to_owned(),
            key: key.to_owned(),
        };
        let mut defaults = TopicDefaults::default();
        let mut broker_id = None;
        let mut listeners =
            vec![Listener::parse("PLAINTEXT://127.0.0.1:9092").expect("valid default")];
        let mut advertised = None;
        let mut log_dir = None;
        let mut zookeeper_connect = None;
        let mut config = BrokerConfig {
            broker_id: -1,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            log_dir: PathBuf::new(),
            zookeeper_connect: String::new(),
            zookeeper_session_timeout_ms: 18_000,
            zookeeper_connection_timeout_ms: 18_000,
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            delete_topic_enable: true,
            log_retention_check_interval_ms: 300_000,
            log_flush_offset_checkpoint_interval_ms: 60_000,
            topic_defaults: TopicDefaults::default(),
            limits: Limits::default(),
            groups: super::GroupConfig::default(),
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_backoff_ms: 1_000,
            replica_high_watermark_checkpoint_interval_ms: 5_000,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            controlled_shutdown_enable: true,
            controlled_shutdown_max_retries: 3,
            controlled_shutdown_retry_backoff_ms: 5_000,
            num_shards: None,
            metrics_listener: None,
            tuning: Tuning::default(),
            path: path.to_owned(),
        };
        // Kafka lets hours/minutes/ms spell the same setting; the finest unit given wins, as in Kafka.
        let (mut roll_hours, mut roll_ms) = (None, None);
        let (mut retention_hours, mut retention_minutes, mut retention_ms) = (None, None, None);
        let mut tuning_dir = None;

        for (key, value) in &entries {
            let v = Value { path, key, value };
            match key.as_str() {
                "broker.id" => broker_id = Some(v.i32_at_least(0)?),
                "listeners" => listeners = parse_listeners(&v)?,
                "advertised.listeners" => advertised = Some(parse_listeners(&v)?),
                "log.dirs" | "log.dir" => {
                    let dirs = v.string()?;
                    let dirs: Vec<&str> = dirs
                        .split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .collect();
                    match dirs.as_slice() {
                        [one] => log_dir = Some(PathBuf::from(one)),
                        [] => return Err(v.error("names no directory")),
                        _ => return Err(v.error("skein supports one log directory per broker")),
                    }
                }
                "zookeeper.connect" => {
                    let connect = v.string()?;
                    if connect.trim().is_empty() {
                        return Err(v.error("is empty"));
                    }
                    zookeeper_connect = Some(connect);
                }
                "zookeeper.session.timeout.ms" => {
                    config.zookeeper_session_timeout_ms = v.i64_at_least(1000)?
                }
                "zookeeper.connection.timeout.ms" => {
                    config.zookeeper_connection_timeout_ms = v.i64_at_least(100)?
                }
                "num.partitions" => config.num_partitions = v.i32_at_least(1)?,
                "default.replication.factor" => {
                    config.default_replication_factor = v.i32_at_least(1)?
                }
                "auto.create.topics.enable" => config.auto_create_topics_enable = v.bool()?,
                "replica.lag.time.max.ms" => config.replica_lag_time_max_ms = v.i64_at_least(1)?,
                "replica.fetch.wait.max.ms" => {
                    config.replica_fetch_wait_max_ms = v.i64_at_least(0)?
                }
                "replica.fetch.max.bytes" => config.replica_fetch_max_bytes = v.i32_at_least(1)?,
                "replica.fetch.response.max.bytes" => {
                    config.replica_fetch_response_max_bytes = v.i32_at_least(1)?
                }
                "replica.fetch.backoff.ms" => {
                    config.replica_fetch_backoff_ms = v.i64_at_least(0)?
                }
                "replica.high.watermark.checkpoint.interval.ms" => {
                    config.replica_high_watermark_checkpoint_interval_ms = v.i64_at_least(1)? as u64
                }
                "unclean.leader.election.enable" => {
                    config.unclean_leader_election_enable = v.bool()?
                }
                "auto.leader.rebalance.enable" => config.auto_leader_rebalance_enable = v.bool()?,
                "leader.imbalance.check.interval.seconds" => {
                    config.leader_imbalance_check_interval_seconds = v.i64_at_least(1)?
                }
                "controlled.shutdown.enable" => config.controlled_shutdown_enable = v.bool()?,
                "controlled.shutdown.max.retries" => {
                    config.controlled_shutdown_max_retries = v.i64_at_least(1)?
                }
                "controlled.shutdown.retry.backoff.ms" => {
                    config.controlled_shutdown_retry_backoff_ms = v.i64_at_least(0)?
                }
                "delete.topic.enable" => config.delete_topic_enable = v.bool()?,
                "log.retention.check.interval.ms" => {
                    config.log_retention_check_interval_ms = v.i64_at_least(1)?
                }
                "log.flush.offset.checkpoint.interval.ms" => {
                    config.log_flush_offset_checkpoint_interval_ms = v.i64_at_least(1)? as u64
                }
                "log.segment.bytes" => defaults.segment_bytes = v.i64_at_least(14)?,
                "log.roll.ms" => roll_ms = Some(v.i64_at_least(1)?),
                "log.roll.hours" => roll_hours = Some(v.i64_at_least(1)?),
                "log.retention.ms" => retention_ms = Some(v.i64_at_least(-1)?),
                "log.retention.minutes" => retention_minutes = Some(v.i64_at_least(-1)?),
                "log.retention.hours" => retention_hours = Some(v.i64_at_least(-1)?),
                "log.retention.bytes" => defaults.retention_bytes = v.i64_at_least(-1)?,
                "log.index.interval.bytes" => defaults.index_interval_bytes = v.i64_at_least(0)?,
                "log.index.size.max.bytes" => defaults.segment_index_bytes = v.i64_at_least(4)?,
                "log.flush.interval.messages" => defaults.flush_messages = v.i64_at_least(1)?,
                "log.flush.interval.ms" => defaults.flush_ms = v.i64_at_least(0)?,
                "log.cleanup.policy" => defaults.cleanup_policy = parse_cleanup_policy(&v)?,
                "message.max.bytes" => defaults.max_message_bytes = v.i64_at_least(0)?,
                "compression.type" => {
                    let text = v.string()?;
                    defaults.compression_type = CompressionType::parse(&text).ok_or_else(|| {
                        v.error(format!(
                            "expected one of producer, uncompressed, gzip, snappy, lz4, zstd, got \"{text}\""
                        ))
                    })?
                }
                "log.message.timestamp.type" => {
                    defaults.log_append_time = match v.string()?.as_str() {
                        "CreateTime" => false,
                        "LogAppendTime" => true,
                        other => {
                            return Err(v.error(format!(
                                "expected CreateTime or LogAppendTime, got \"{other}\""
                            )))
                        }
                    }
                }
                "log.message.timestamp.difference.max.ms" => {
                    defaults.message_timestamp_difference_max_ms = v.i64_at_least(0)?
                }
                "min.insync.replicas" => defaults.min_insync_replicas = v.i64_at_least(1)?,
                "socket.request.max.bytes" => {
                    config.limits.socket_request_max_bytes = v.i64_at_least(8)? as u64
                }
                "queued.max.request.bytes" => {
                    config.limits.queued_max_request_bytes = match v.i64_at_least(-1)? {
                        -1 => None,
                        0 => return Err(v.error("must be -1 (skein's default) or positive")),
                        n => Some(n as u64),
                    }
                }
                "max.connections" => config.limits.max_connections = v.i64_at_least(1)? as u64,
                "max.connections.per.ip" => {
                    config.limits.max_connections_per_ip = v.i64_at_least(1)? as u64
                }
                "connections.max.idle.ms" => {
                    config.limits.connections_max_idle_ms = v.i64_at_least(1)? as u64
                }
                "connections.max.stall.ms" => {
                    config.limits.connections_max_stall_ms = v.i64_at_least(1)? as u64
                }
                "num.shards" => config.num_shards = Some(v.i64_at_least(1)? as usize),
                "tuning.dir" => tuning_dir = Some(PathBuf::from(v.string()?)),
                "metrics.listener" => config.metrics_listener = Some(parse_metrics_listener(&v)?),
                _ if config.groups.set(&v)? => {}
                _ => {
                    return Err(ConfigError::UnknownKey {
                        path: path.to_owned(),
                        key: key.clone(),
                    })
                }
            }
        }

        if config.groups.group_min_session_timeout_ms > config.groups.group_max_session_timeout_ms {
            return Err(ConfigError::BadValue {
                path: path.to_owned(),
                key: "group.min.session.timeout.ms".to_owned(),
                message: format!(
                    "{} is above group.max.session.timeout.ms ({})",
                    config.groups.group_min_session_timeout_ms,
                    config.groups.group_max_session_timeout_ms
                ),
            });
        }
        defaults.segment_ms = roll_ms
            .or(roll_hours.map(|h| h * 3_600_000))
            .unwrap_or(defaults.segment_ms);
        defaults.retention_ms = match (retention_ms, retention_minutes, retention_hours) {
            (Some(ms), _, _) => ms,
            (None, Some(m), _) => {
                if m < 0 {
                    -1
                } else {
                    m * 60_000
                }
            }
            (None, None, Some(h)) => {
                if h < 0 {
                    -1
                } else {
                    h * 3_600_000
                }
            }
            (None, None, None) => defaults.retention_ms,
        };
        config.broker_id = broker_id.ok_or_else(|| missing("broker.id"))?;
        config.log_dir = log_dir.ok_or_else(|| missing("log.dirs"))?;
        config.zookeeper_connect = zookeeper_connect.ok_or_else(|| missing("zookeeper.connect"))?;
        if let Some(metrics) = config.metrics_listener {
            let kafka = listeners[0].socket_addr().ok();
            if kafka
                .is_some_and(|kafka| kafka.port() == metrics.port() && same_host(kafka, metrics))
            {
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key: "metrics.listener".to_owned(),
                    message: format!("{metrics} is also the Kafka listener (listeners)"),
                });
            }
        }
        config.advertised_listeners = advertised.unwrap_or_else(|| listeners.clone());
        config.listeners = listeners;
        config.topic_defaults = defaults;
        if let Some(dir) = tuning_dir {
            // A relative tuning.dir is relative to the config file, so configs/ can point at tuning/.
            let dir = if dir.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(dir)
            } else {
                dir
            };
            config.tuning = Tuning::load(&dir)?;
        }
        Ok(config)
    }

    /// The listener clients connect to and the one written to ZooKeeper.
    pub fn advertised(&self) -> &Listener {
        &self.advertised_listeners[0]
    }
}

fn parse_listeners(v: &Value<'_>) -> Result<Vec<Listener>, ConfigError> {
    let text = v.string()?;
    let listeners = text
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(Listener::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| v.error(e))?;
    match listeners.len() {
        0 => Err(v.error("names no listener")),
        1 => Ok(listeners),
        _ => Err(v.error("skein supports one PLAINTEXT listener per broker")),
    }
}

/// `metrics.listener = "127.0.0.1:9644"`: an IP address and a port, no scheme (it is always HTTP).
fn parse_metrics_listener(v: &Value<'_>) -> Result<SocketAddr, ConfigError> {
    let text = v.string()?;
    text.trim().parse::<SocketAddr>().map_err(|_| {
        v.error(format!(
            "expected an IP address and port such as \"127.0.0.1:9644\", got \"{text}\""
        ))
    })
}

/// Whether two listeners would collide on one port: the same address, or either on all interfaces.
fn same_host(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

pub(crate) fn parse_cleanup_policy(v: &Value<'_>) -> Result<String, ConfigError> {
    let policy = v.string()?;
    match policy.as_str() {
        "delete" => Ok(policy),
        "compact" | "compact,delete" | "delete,compact" => {
            Err(v.error("log compaction is not implemented yet; use \"delete\""))
        }
        other => Err(v.error(format!("expected \"delete\", got \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_table(
            Path::new("test.toml"),
            &text.parse::<toml::Table>().unwrap(),
        )
    }

    const MINIMAL: &str = r#"
        broker.id = 1
        listeners = "PLAINTEXT://127.0.0.1:9092"
        log.dirs = "/tmp/skein"
        zookeeper.connect = "127.0.0.1:2181"
    "#;

    #[test]
    fn minimal_config_gets_kafka_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.broker_id, 1);
        assert_eq!(config.listeners[0].port, 9092);
        assert_eq!(config.advertised().host, "127.0.0.1");
        assert_eq!(config.topic_defaults.segment_bytes, 1 << 30);
        assert_eq!(config.topic_defaults.max_message_bytes, 1_048_588);
        assert_eq!(config.num_partitions, 1);
        assert!(config.auto_create_topics_enable);
    }

    #[test]
    fn table_and_dotted_spellings_are_the_same_key() {
        let config = parse(&format!("{MINIMAL}\n[log.segment]\nbytes = 1048576\n")).unwrap();
        assert_eq!(config.topic_defaults.segment_bytes, 1_048_576);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{MINIMAL}\nlog.segmnet.bytes = 5\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown config key 'log.segmnet.bytes'"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = parse(&format!("{MINIMAL}\nnum.partitions = \"many\"\n")).unwrap_err();
        assert!(err.to_string().contains("'num.partitions'"), "{err}");
        let err = parse(&MINIMAL.replace("1\n", "-3\n")).unwrap_err();
        assert!(err.to_string().contains("'broker.id'"), "{err}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = parse(&MINIMAL.replace("zookeeper.connect", "#")).unwrap_err();
        assert!(err.to_string().contains("'zookeeper.connect'"), "{err}");
    }

    #[test]
    fn metrics_listener_is_optional_and_validated() {
        assert_eq!(parse(MINIMAL).unwrap().metrics_listener, None);
        let config = parse(&format!(
            "{MINIMAL}\nmetrics.listener = \"127.0.0.1:9644\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.metrics_listener,
            Some("127.0.0.1:9644".parse().unwrap())
        );
        for bad in [
            "\"localhost:9644\"",
            "\"127.0.0.1\"",
            "\"http://127.0.0.1:9644\"",
            "9644",
            "\"127.0.0.1:9092\"",
            "\"0.0.0.0:9092\"",
        ] {
            let err = parse(&format!("{MINIMAL}\nmetrics.listener = {bad}\n")).unwrap_err();
            assert!(
                err.to_string().contains("'metrics.listener'"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn retention_units_follow_kafka_precedence() {
        let config = parse(&format!(
            "{MINIMAL}\nlog.retention.hours = 1\nlog.retention.minutes = 2\n"
        ))
        .unwrap();
        assert_eq!(config.topic_defaults.retention_ms, 120_000);
    }
}
