//! Per-topic settings (`/config/topics/<topic>` in ZooKeeper): Kafka's topic-level names, each
//! defaulting to its broker-level counterpart.
//!
//! Every name Kafka 2.8 knows is accepted. Those skein implements are honoured; the rest are
//! kept (ZooKeeper, DescribeConfigs) and logged as not honoured yet. Two ways in:
//! [`TopicConfig::validate`] for CreateTopics, which refuses what it cannot take, and
//! [`TopicConfig::resolve`] for configs already in ZooKeeper (any tool may have written them),
//! which applies every key it understands and reports the rest, never dropping the whole config
//! for one bad key.

use std::collections::BTreeMap;

use super::TopicDefaults;

/// Kafka's `compression.type`: what the broker stores batches as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Keep each batch as the producer compressed it (Kafka's default).
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionType {
    pub fn parse(text: &str) -> Option<CompressionType> {
        Some(match text {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => return None,
        })
    }

    /// The codec batches are stored with; `None` keeps the producer's.
    pub fn codec(self) -> Option<kafka_protocol::records::Compression> {
        use kafka_protocol::records::Compression;
        Some(match self {
            CompressionType::Producer => return None,
            CompressionType::Uncompressed => Compression::None,
            CompressionType::Gzip => Compression::Gzip,
            CompressionType::Snappy => Compression::Snappy,
            CompressionType::Lz4 => Compression::Lz4,
            CompressionType::Zstd => Compression::Zstd,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::Uncompressed => "uncompressed",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// Whether skein acts on a topic-level setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Honoured,
    /// Kept and shown, not acted on yet.
    Stored,
}

/// One topic-level setting: its name, the broker-level setting it defaults to, and whether
/// skein honours it.
#[derive(Debug, Clone, Copy)]
pub struct TopicKey {
    pub name: &'static str,
    pub broker_key: &'static str,
    pub support: Support,
}

const fn honoured(name: &'static str, broker_key: &'static str) -> TopicKey {
    TopicKey {
        name,
        broker_key,
        support: Support::Honoured,
    }
}

const fn stored(name: &'static str, broker_key: &'static str) -> TopicKey {
    TopicKey {
        name,
        broker_key,
        support: Support::Stored,
    }
}

/// Every topic-level setting of Kafka 2.8, in Kafka's documentation order.
pub const TOPIC_CONFIGS: &[TopicKey] = &[
    honoured("cleanup.policy", "log.cleanup.policy"),
    honoured("compression.type", "compression.type"),
    stored("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    stored("file.delete.delay.ms", "log.segment.delete.delay.ms"),
    honoured("flush.messages", "log.flush.interval.messages"),
    honoured("flush.ms", "log.flush.interval.ms"),
    stored("follower.replication.throttled.replicas", ""),
    honoured("index.interval.bytes", "log.index.interval.bytes"),
    stored("leader.replication.throttled.replicas", ""),
    stored("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    honoured("max.message.bytes", "message.max.bytes"),
    stored(
        "message.downconversion.enable",
        "log.message.downconversion.enable",
    ),
    stored("message.format.version", "log.message.format.version"),
    honoured(
        "message.timestamp.difference.max.ms",
        "log.message.timestamp.difference.max.ms",
    ),
    honoured("message.timestamp.type", "log.message.timestamp.type"),
    stored(
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    stored("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    honoured("min.insync.replicas", "min.insync.replicas"),
    stored("preallocate", "log.preallocate"),
    honoured("retention.bytes", "log.retention.bytes"),
    honoured("retention.ms", "log.retention.ms"),
    honoured("segment.bytes", "log.segment.bytes"),
    honoured("segment.index.bytes", "log.index.size.max.bytes"),
    stored("segment.jitter.ms", "log.roll.jitter.ms"),
    honoured("segment.ms", "log.roll.ms"),
    stored(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

pub fn topic_key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_CONFIGS.iter().find(|k| k.name == name)
}

/// A topic's effective settings: broker defaults with the topic's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub values: TopicDefaults,
    /// Every override as stored, honoured or not.
    pub overrides: BTreeMap<String, String>,
}

/// Why an override is not applied, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub name: String,
    pub reason: String,
}

/// Kafka's `cleanup.policy` spellings that ask for compaction.
fn is_compact(policy: &str) -> bool {
    policy.split(',').any(|p| p.trim() == "compact")
}

impl TopicConfig {
    /// For CreateTopics: a name Kafka does not know, a bad value, or `cleanup.policy=compact`
    /// (compaction is not built, and a compacted topic silently treated as delete would lose
    /// data) is an error naming it. Names skein only stores are accepted.
    pub fn validate(
        defaults: &TopicDefaults,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, String> {
        let mut values = defaults.clone();
        for (name, text) in overrides {
            apply(&mut values, name, text)?;
            if name == "cleanup.policy" && is_compact(text) {
                return Err(format!(
                    "topic config 'cleanup.policy': log compaction is not implemented yet, got \
                     '{text}'; use \"delete\""
                ));
            }
        }
        Ok(TopicConfig {
            values,
            overrides: overrides.clone(),
        })
    }

    /// For configs already stored: applies every override it can and returns the others with the
    /// reason. Never falls back to the broker defaults for keys it did understand. A stored
    /// `cleanup.policy=compact` is kept (a compacted topic's data is never deleted by time or
    /// size: see [`TopicConfig::deletes_old_segments`]).
    pub fn resolve(
        defaults: &TopicDefaults,
        overrides: &BTreeMap<String, String>,
    ) -> (TopicConfig, Vec<Ignored>) {
        let mut values = defaults.clone();
        let mut ignored = Vec::new();
        for (name, text) in overrides {
            if let Err(reason) = apply(&mut values, name, text) {
                ignored.push(Ignored {
                    name: name.clone(),
                    reason,
                });
            }
        }
        let config = TopicConfig {
            values,
            overrides: overrides.clone(),
        };
        (config, ignored)
    }

    /// Stored overrides skein keeps but does not act on.
    pub fn not_honoured(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .overrides
            .keys()
            .filter(|name| topic_key(name).is_some_and(|k| k.support == Support::Stored))
            .map(String::as_str)
            .collect();
        if is_compact(&self.values.cleanup_policy) {
            names.push("cleanup.policy");
        }
        names
    }

    /// Whether retention may delete old segments: not for a topic whose policy asks for
    /// compaction, until compaction exists (deleting by time would lose its latest values).
    pub fn deletes_old_segments(&self) -> bool {
        !is_compact(&self.values.cleanup_policy)
    }

    /// Every topic-level setting as `(name, value, is_default)`, for DescribeConfigs. Settings
    /// skein only stores show the stored value, or Kafka's default.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        let v = &self.values;
        TOPIC_CONFIGS
            .iter()
            .map(|key| {
                let stored = self.overrides.get(key.name);
                let value = match key.name {
                    "cleanup.policy" => v.cleanup_policy.clone(),
                    "compression.type" => v.compression_type.name().to_owned(),
                    "flush.messages" => v.flush_messages.to_string(),
                    "flush.ms" => v.flush_ms.to_string(),
                    "index.interval.bytes" => v.index_interval_bytes.to_string(),
                    "max.message.bytes" => v.max_message_bytes.to_string(),
                    "message.timestamp.difference.max.ms" => {
                        v.message_timestamp_difference_max_ms.to_string()
                    }
                    "message.timestamp.type" => if v.log_append_time {
                        "LogAppendTime"
                    } else {
                        "CreateTime"
                    }
                    .to_owned(),
                    "min.insync.replicas" => v.min_insync_replicas.to_string(),
                    "retention.bytes" => v.retention_bytes.to_string(),
                    "retention.ms" => v.retention_ms.to_string(),
                    "segment.bytes" => v.segment_bytes.to_string(),
                    "segment.index.bytes" => v.segment_index_bytes.to_string(),
                    "segment.ms" => v.segment_ms.to_string(),
                    other => stored
                        .cloned()
                        .unwrap_or_else(|| kafka_default(other).to_owned()),
                };
                (key.name, value, stored.is_none())
            })
            .collect()
    }
}

/// Kafka 2.8's defaults of the settings skein stores without acting on them.
fn kafka_default(name: &str) -> &'static str {
    match name {
        "delete.retention.ms" => "86400000",
        "file.delete.delay.ms" => "60000",
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => "",
        "max.compaction.lag.ms" => "9223372036854775807",
        "message.downconversion.enable" => "true",
        "message.format.version" => "2.8-IV1",
        "min.cleanable.dirty.ratio" => "0.5",
        "min.compaction.lag.ms" => "0",
        "preallocate" => "false",
        "segment.jitter.ms" => "0",
        "unclean.leader.election.enable" => "false",
        _ => "",
    }
}

/// Applies one override to `values`; an unknown name or a bad value is an error naming it.
fn apply(values: &mut TopicDefaults, name: &str, text: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<i64, String> {
        let n = text
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("topic config '{name}': expected an integer, got '{text}'"))?;
        if n < min {
            return Err(format!(
                "topic config '{name}': must be at least {min}, got {n}"
            ));
        }
        Ok(n)
    };
    match name {
        "cleanup.policy" => {
            let valid = text
                .split(',')
                .all(|p| matches!(p.trim(), "delete" | "compact"));
            if !valid || text.trim().is_empty() {
                return Err(format!(
                    "topic config 'cleanup.policy': expected \"delete\" or \"compact\", got '{text}'"
                ));
            }
            values.cleanup_policy = text.to_owned();
        }
        "compression.type" => {
            values.compression_type = CompressionType::parse(text.trim()).ok_or_else(|| {
                format!(
                    "topic config 'compression.type': expected one of producer, uncompressed, \
                     gzip, snappy, lz4, zstd, got '{text}'"
                )
            })?
        }
        "message.timestamp.type" => {
            values.log_append_time = match text.trim() {
                "CreateTime" => false,
                "LogAppendTime" => true,
                _ => {
                    return Err(format!(
                        "topic config 'message.timestamp.type': expected CreateTime or \
                         LogAppendTime, got '{text}'"
                    ))
                }
            }
        }
        "message.timestamp.difference.max.ms" => {
            values.message_timestamp_difference_max_ms = int(0)?
        }
        "segment.bytes" => values.segment_bytes = int(14)?,
        "segment.ms" => values.segment_ms = int(1)?,
        "retention.ms" => values.retention_ms = int(-1)?,
        "retention.bytes" => values.retention_bytes = int(-1)?,
        "index.interval.bytes" => values.index_interval_bytes = int(0)?,
        "segment.index.bytes" => values.segment_index_bytes = int(4)?,
        "flush.messages" => values.flush_messages = int(1)?,
        "flush.ms" => values.flush_ms = int(0)?,
        "max.message.bytes" => values.max_message_bytes = int(0)?,
        "min.insync.replicas" => values.min_insync_replicas = int(1)?,
        other if topic_key(other).is_some() => {}
        other => return Err(format!("unknown topic config '{other}'")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_apply_and_unknown_names_are_errors() {
        let defaults = TopicDefaults::default();
        let config = TopicConfig::validate(&defaults, &map(&[("retention.ms", "1000")])).unwrap();
        assert_eq!(config.values.retention_ms, 1000);
        let described = config.describe();
        assert!(described.contains(&("retention.ms", "1000".to_owned(), false)));
        assert!(described.contains(&("segment.bytes", (1i64 << 30).to_string(), true)));

        let bad = map(&[("retention.msx", "1")]);
        assert!(TopicConfig::validate(&defaults, &bad)
            .unwrap_err()
            .contains("retention.msx"));
        let bad = map(&[("segment.bytes", "x")]);
        assert!(TopicConfig::validate(&defaults, &bad)
            .unwrap_err()
            .contains("segment.bytes"));
    }

    #[test]
    fn every_kafka_topic_config_is_accepted_and_described() {
        let defaults = TopicDefaults::default();
        let all = map(&[
            ("compression.type", "zstd"),
            ("delete.retention.ms", "1000"),
            ("message.timestamp.type", "CreateTime"),
            ("message.downconversion.enable", "false"),
            ("preallocate", "true"),
            ("unclean.leader.election.enable", "true"),
        ]);
        let config = TopicConfig::validate(&defaults, &all).expect("Kafka knows them all");
        assert_eq!(config.values.compression_type, CompressionType::Zstd);
        let described = config.describe();
        assert_eq!(described.len(), TOPIC_CONFIGS.len());
        assert!(described.contains(&("delete.retention.ms", "1000".to_owned(), false)));
        assert!(described.contains(&("min.compaction.lag.ms", "0".to_owned(), true)));
        assert_eq!(
            config.not_honoured(),
            vec![
                "delete.retention.ms",
                "message.downconversion.enable",
                "preallocate",
                "unclean.leader.election.enable"
            ]
        );
        let append_time = map(&[("message.timestamp.type", "LogAppendTime")]);
        assert!(
            TopicConfig::validate(&defaults, &append_time)
                .unwrap()
                .values
                .log_append_time
        );
    }

    #[test]
    fn compaction_is_refused_at_creation_but_kept_safe_when_stored() {
        let defaults = TopicDefaults::default();
        let compact = map(&[("cleanup.policy", "compact"), ("retention.ms", "-1")]);
        let err = TopicConfig::validate(&defaults, &compact).unwrap_err();
        assert!(err.contains("compaction"), "{err}");
        let (config, ignored) = TopicConfig::resolve(&defaults, &compact);
        assert!(ignored.is_empty());
        assert!(!config.deletes_old_segments());
        assert_eq!(config.not_honoured(), vec!["cleanup.policy"]);
    }

    #[test]
    fn a_stored_config_keeps_every_key_it_understands() {
        // One unknown key and one bad value must not turn retention.ms=-1 into the default.
        let defaults = TopicDefaults::default();
        let stored = map(&[
            ("retention.ms", "-1"),
            ("confluent.placement.constraints", "{}"),
            ("segment.bytes", "huge"),
            ("max.message.bytes", "2000000"),
        ]);
        let (config, ignored) = TopicConfig::resolve(&defaults, &stored);
        assert_eq!(config.values.retention_ms, -1);
        assert_eq!(config.values.max_message_bytes, 2_000_000);
        assert_eq!(config.values.segment_bytes, defaults.segment_bytes);
        let names: Vec<&str> = ignored.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["confluent.placement.constraints", "segment.bytes"]
        );
    }
}
