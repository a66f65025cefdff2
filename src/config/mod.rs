//! Broker configuration: Kafka's setting names, meanings and defaults, read from TOML.
//!
//! A config file is TOML whose keys, flattened with dots, are Kafka's setting names: `broker.id = 1`
//! and `[log]\nsegment.bytes = 1048576` both name `log.segment.bytes`. Every key is checked against
//! the table below, so a typo is an error that names the key instead of a silently ignored setting.
//! Parsed once on the main thread, then shared read-only by the control thread and every shard.

mod broker;
mod group;
mod topic;
mod tuning;

pub use broker::{BrokerConfig, Limits, Listener, TopicDefaults};
pub use group::GroupConfig;
pub use topic::{topic_key, CompressionType, Ignored, Support, TopicConfig, TOPIC_CONFIGS};
pub use tuning::{ShardTuning, Tuning};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: unknown config key '{key}'")]
    UnknownKey { path: PathBuf, key: String },
    #[error("{path}: config key '{key}': {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: required config key '{key}' is missing")]
    Missing { path: PathBuf, key: String },
}

/// Flattens a TOML table into `(dotted.key, value)` pairs, in file order.
pub(crate) fn flatten(table: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (key, value) in table {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) => walk(&full, inner, out),
                other => out.push((full, other.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// Reads `path` and parses it as TOML.
pub(crate) fn read_toml(path: &std::path::Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Toml {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Typed access to one flattened value, with errors that name the key.
pub(crate) struct Value<'a> {
    pub path: &'a std::path::Path,
    pub key: &'a str,
    pub value: &'a toml::Value,
}

impl Value<'_> {
    fn bad(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            path: self.path.to_owned(),
            key: self.key.to_owned(),
            message: message.into(),
        }
    }

    pub fn i64(&self) -> Result<i64, ConfigError> {
        match self.value {
            toml::Value::Integer(n) => Ok(*n),
            // Kafka users often quote numbers ("1073741824"); accept that spelling too.
            toml::Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| self.bad(format!("expected an integer, got \"{s}\""))),
            other => Err(self.bad(format!("expected an integer, got {}", other.type_str()))),
        }
    }

    pub fn i64_at_least(&self, min: i64) -> Result<i64, ConfigError> {
        let n = self.i64()?;
        if n < min {
            return Err(self.bad(format!("must be at least {min}, got {n}")));
        }
        Ok(n)
    }

    pub fn i32_at_least(&self, min: i32) -> Result<i32, ConfigError> {
        let n = self.i64_at_least(min as i64)?;
        i32::try_from(n).map_err(|_| self.bad(format!("must fit in 32 bits, got {n}")))
    }

    pub fn bool(&self) -> Result<bool, ConfigError> {
        match self.value {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::String(s) if s == "true" => Ok(true),
            toml::Value::String(s) if s == "false" => Ok(false),
            other => Err(self.bad(format!("expected true or false, got {other}"))),
        }
    }

    pub fn string(&self) -> Result<String, ConfigError> {
        match self.value {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(self.bad(format!("expected a string, got {}", other.type_str()))),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.bad(message)
    }
}
