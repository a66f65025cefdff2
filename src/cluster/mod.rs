//! Cluster membership and metadata: ZooKeeper (Kafka's ZK-mode layout), the controller, and the
//! metadata snapshots every shard routes by. Everything here but `metadata` runs on the control thread.

pub mod apply;
pub mod broker_dir;
pub mod control;
pub mod controller;
pub mod propagate;
pub mod zookeeper;
