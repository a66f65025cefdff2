//! Per-shard tuning: `tuning/<profile>/defaults.toml` plus optional `shard-<N>.toml` overrides.
//!
//! These are the knobs of the thread-per-core runtime that Kafka has no name for: which core a shard
//! is pinned to, how much memory its io_uring ring may lock, its tail-cache budget, and how much CPU
//! background work may take. A profile is chosen by `tuning.dir` in the broker config.

use std::path::Path;

use super::{flatten, read_toml, ConfigError, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ShardTuning {
    /// CPU the shard's executor is pinned to; `None` = `first_core` + the shard's index.
    pub core: Option<usize>,
    /// First CPU shards use (cores below it are left to the OS); also lowers the default shard
    /// count to the cores from here on.
    pub first_core: usize,
    /// Bytes of the tail batch cache each partition keeps for fetches at the log end.
    pub partition_cache_bytes: usize,
    /// Bytes glommio registers (locks) for its io_uring buffers.
    pub io_memory_bytes: usize,
    /// io_uring submission queue depth.
    pub ring_depth: usize,
    /// Shares of the background task queue (retention, flush) against 1000 for request handling.
    pub background_shares: usize,
    /// How long an idle executor spins before parking, trading CPU for wake-up latency.
    pub spin_before_park_us: u64,
    /// Connections a shard accepts before refusing more.
    pub max_connections: usize,
    /// Threads in the shard's blocking pool, pinned to the shard's core: fetches of data beyond the
    /// tail cache are sent with sendfile there, and partitions are opened and closed there, so the
    /// executor never waits on them. (Segment writes have their own thread per shard.)
    pub blocking_threads: usize,
}

impl Default for ShardTuning {
    fn default() -> Self {
        ShardTuning {
            core: None,
            first_core: 0,
            partition_cache_bytes: 8 << 20,
            io_memory_bytes: 4 << 20,
            ring_depth: 128,
            background_shares: 100,
            spin_before_park_us: 0,
            max_connections: 10_000,
            blocking_threads: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tuning {
    pub defaults: ShardTuning,
    /// Per-shard overrides, by shard index (`shard-0.toml` is index 0).
    pub shards: Vec<Option<ShardTuning>>,
}

impl Tuning {
    pub fn load(dir: &Path) -> Result<Tuning, ConfigError> {
        let defaults_path = dir.join("defaults.toml");
        let defaults = apply(ShardTuning::default(), &defaults_path)?;
        let mut shards = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
            path: dir.to_owned(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ConfigError::Read {
                path: dir.to_owned(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(index) = name
                .strip_prefix("shard-")
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            let index: usize = index.parse().map_err(|_| ConfigError::BadValue {
                path: entry.path(),
                key: "(file name)".to_owned(),
                message: "expected shard-<N>.toml".to_owned(),
            })?;
            if shards.len() <= index {
                shards.resize(index + 1, None);
            }
            shards[index] = Some(apply(defaults.clone(), &entry.path())?);
        }
        Ok(Tuning { defaults, shards })
    }

    pub fn shard(&self, index: usize) -> ShardTuning {
        let mut tuning = self
            .shards
            .get(index)
            .cloned()
            .flatten()
            .unwrap_or_else(|| self.defaults.clone());
        tuning.core.get_or_insert(tuning.first_core + index);
        tuning
    }
}

fn apply(mut tuning: ShardTuning, path: &Path) -> Result<ShardTuning, ConfigError> {
    let table = read_toml(path)?;
    for (key, value) in flatten(&table) {
        let v = Value {
            path,
            key: &key,
            value: &value,
        };
        match key.as_str() {
            "core" => tuning.core = Some(v.i64_at_least(0)? as usize),
            "first_core" => tuning.first_core = v.i64_at_least(0)? as usize,
            "partition_cache_bytes" => tuning.partition_cache_bytes = v.i64_at_least(0)? as usize,
            "io_memory_bytes" => tuning.io_memory_bytes = v.i64_at_least(64 << 10)? as usize,
            "ring_depth" => tuning.ring_depth = v.i64_at_least(8)? as usize,
            "background_shares" => tuning.background_shares = v.i64_at_least(1)? as usize,
            "spin_before_park_us" => tuning.spin_before_park_us = v.i64_at_least(0)? as u64,
            "max_connections" => tuning.max_connections = v.i64_at_least(1)? as usize,
            "blocking_threads" => tuning.blocking_threads = v.i64_at_least(1)? as usize,
            _ => {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key,
                })
            }
        }
    }
    Ok(tuning)
}
