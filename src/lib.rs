//! skein: a Kafka-compatible message broker built thread-per-core on glommio and io_uring, with
//! brokers coordinated through ZooKeeper. See DESIGN.md (in `shared/`) and the README for the map.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod group;
pub mod mesh;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod server;
pub mod shard;
pub mod storage;
