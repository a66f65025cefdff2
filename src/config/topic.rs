//! Per-topic settings (`/config/topics/<topic>` in ZooKeeper): Kafka's topic-level names, each
//! defaulting to its broker-level `log.*` counterpart.

use std::collections::BTreeMap;

use super::TopicDefaults;

/// Topic-level names and the broker-level setting each one defaults to.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("min.insync.replicas", "min.insync.replicas"),
];

/// A topic's effective settings: broker defaults with the topic's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub values: TopicDefaults,
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// Applies `overrides` on `defaults`; an unknown name or a bad value is an error naming it.
    pub fn resolve(
        defaults: &TopicDefaults,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, String> {
        let mut values = defaults.clone();
        for (name, text) in overrides {
            let int = |min: i64| -> Result<i64, String> {
                let n = text.trim().parse::<i64>().map_err(|_| {
                    format!("topic config '{name}': expected an integer, got '{text}'")
                })?;
                if n < min {
                    return Err(format!(
                        "topic config '{name}': must be at least {min}, got {n}"
                    ));
                }
                Ok(n)
            };
            match name.as_str() {
                "cleanup.policy" => {
                    if text != "delete" {
                        return Err(format!(
                            "topic config 'cleanup.policy': only \"delete\" is supported, got '{text}'"
                        ));
                    }
                    values.cleanup_policy = text.clone();
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
                _ => return Err(format!("unknown topic config '{name}'")),
            }
        }
        Ok(TopicConfig {
            values,
            overrides: overrides.clone(),
        })
    }

    /// Every topic-level setting as `(name, value, is_default)`, for DescribeConfigs.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        let v = &self.values;
        TOPIC_CONFIGS
            .iter()
            .map(|(name, _)| {
                let value = match *name {
                    "cleanup.policy" => v.cleanup_policy.clone(),
                    "segment.bytes" => v.segment_bytes.to_string(),
                    "segment.ms" => v.segment_ms.to_string(),
                    "retention.ms" => v.retention_ms.to_string(),
                    "retention.bytes" => v.retention_bytes.to_string(),
                    "index.interval.bytes" => v.index_interval_bytes.to_string(),
                    "segment.index.bytes" => v.segment_index_bytes.to_string(),
                    "flush.messages" => v.flush_messages.to_string(),
                    "flush.ms" => v.flush_ms.to_string(),
                    "max.message.bytes" => v.max_message_bytes.to_string(),
                    "min.insync.replicas" => v.min_insync_replicas.to_string(),
                    _ => unreachable!("TOPIC_CONFIGS and this match list the same names"),
                };
                (*name, value, !self.overrides.contains_key(*name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_unknown_names_are_errors() {
        let defaults = TopicDefaults::default();
        let overrides = BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]);
        let config = TopicConfig::resolve(&defaults, &overrides).unwrap();
        assert_eq!(config.values.retention_ms, 1000);
        let described = config.describe();
        assert!(described.contains(&("retention.ms", "1000".to_owned(), false)));
        assert!(described.contains(&("segment.bytes", (1i64 << 30).to_string(), true)));

        let bad = BTreeMap::from([("retention.msx".to_owned(), "1".to_owned())]);
        assert!(TopicConfig::resolve(&defaults, &bad)
            .unwrap_err()
            .contains("retention.msx"));
        let bad = BTreeMap::from([("segment.bytes".to_owned(), "x".to_owned())]);
        assert!(TopicConfig::resolve(&defaults, &bad)
            .unwrap_err()
            .contains("segment.bytes"));
    }
}
