//! Every config and tuning profile the project ships is parsed here, so none can rot.

use std::path::Path;

use skein::config::{BrokerConfig, Tuning};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_broker_config_in_configs_parses() {
    let mut parsed = 0;
    let mut metrics_ports = std::collections::HashSet::new();
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config =
                BrokerConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(config.broker_id >= 0);
            // The cluster configs run side by side on loopback: each needs its own metrics port.
            if let Some(metrics) = config.metrics_listener {
                assert!(
                    metrics_ports.insert(metrics.port()),
                    "{}: metrics.listener port {} is used by another shipped config",
                    path.display(),
                    metrics.port()
                );
            }
            parsed += 1;
        }
    }
    assert!(
        parsed >= 4,
        "expected the single-broker and 3 cluster configs, parsed {parsed}"
    );
}

#[test]
fn every_tuning_profile_parses() {
    let mut parsed = 0;
    for entry in std::fs::read_dir(repo().join("tuning")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            let tuning = Tuning::load(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            // Shard files must not pin two shards to one core.
            let cores: Vec<usize> = (0..tuning.shards.len().max(2))
                .map(|i| tuning.shard(i).core.unwrap())
                .collect();
            let mut unique = cores.clone();
            unique.dedup();
            assert_eq!(unique, cores, "{}: shards share a core", dir.display());
            parsed += 1;
        }
    }
    assert!(
        parsed >= 2,
        "expected the 2-core and bare-metal profiles, parsed {parsed}"
    );
}

#[test]
fn every_zookeeper_config_listens_on_loopback_only() {
    let dir = repo().join("configs/zookeeper");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("{} is missing", dir.display())
    };
    let mut parsed = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cfg") {
            let text = std::fs::read_to_string(&path).unwrap();
            for key in [
                "clientPortAddress=127.0.0.1",
                "admin.enableServer=false",
                "4lw.commands.whitelist=*",
            ] {
                assert!(
                    text.lines().any(|l| l.trim() == key),
                    "{}: missing '{key}'",
                    path.display()
                );
            }
            parsed += 1;
        }
    }
    assert!(
        parsed >= 3,
        "expected a 3-node ensemble, found {parsed} configs"
    );
}
