//! A three-broker cluster for replication tests: one ZooKeeper, brokers 1..=3 (real processes,
//! two shards each), and what the controller wrote about them in ZooKeeper (`/controller`,
//! `/brokers/topics/<t>/partitions/<p>/state`), read with kazoo through `zk_dump.py`.
//!
//! [`Cluster`] kills its brokers by pid when dropped (their log tails are printed when the test
//! failed); [`Frozen`] pauses brokers with SIGSTOP and always continues them.

use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{python_json, wait_until, Broker, BrokerOpts, ZooKeeper};

pub const BROKERS: i64 = 3;
const SHARDS: usize = 2;
/// Broker settings for quick failover: ZooKeeper notices a dead broker after 4 s (the harness's
/// ZooKeeper accepts sessions of 1-60 s), a silent follower leaves the ISR after 5 s.
pub const FAST_FAILOVER: &[(&str, &str)] = &[
    ("zookeeper.session.timeout.ms", "4000"),
    ("replica.lag.time.max.ms", "5000"),
    ("min.insync.replicas", "2"),
    ("unclean.leader.election.enable", "false"),
];
/// How long a healed cluster may take to bring every replica back into every ISR.
pub const ISR_TIMEOUT: Duration = Duration::from_secs(60);

/// A partition's `/brokers/topics/<t>/partitions/<p>/state`, as the controller wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionState {
    pub leader: i64,
    pub leader_epoch: i64,
    pub controller_epoch: i64,
    pub isr: Vec<i64>,
}

impl PartitionState {
    pub fn parse(data: &serde_json::Value) -> Option<PartitionState> {
        Some(PartitionState {
            leader: data["leader"].as_i64()?,
            leader_epoch: data["leader_epoch"].as_i64()?,
            controller_epoch: data["controller_epoch"].as_i64()?,
            isr: data["isr"]
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_i64)
                .collect(),
        })
    }

    /// Every broker in the ISR, and a leader from it.
    pub fn whole(&self) -> bool {
        let mut isr = self.isr.clone();
        isr.sort_unstable();
        isr == (1..=BROKERS).collect::<Vec<_>>() && isr.contains(&self.leader)
    }
}

pub fn state_path(topic: &str, partition: u32) -> String {
    format!("/brokers/topics/{topic}/partitions/{partition}/state")
}

/// One ZooKeeper, brokers 1..=3.
pub struct Cluster {
    // Before `zk`: fields drop in order, so the brokers go before their ZooKeeper.
    brokers: Vec<Broker>,
    pub zk: ZooKeeper,
}

impl Cluster {
    /// Starts ZooKeeper and three brokers with `settings` (raw TOML values), and waits until all
    /// three are registered.
    pub fn start(settings: &[(&str, &str)]) -> Cluster {
        let zk = ZooKeeper::start(1);
        let brokers = (1..=BROKERS)
            .map(|id| {
                let mut opts = BrokerOpts::id(id as u32).shards(SHARDS);
                for (key, value) in settings {
                    opts = opts.set(key, value);
                }
                Broker::start(&zk, opts)
            })
            .collect();
        let cluster = Cluster { brokers, zk };
        wait_until(
            "all three brokers registered in ZooKeeper",
            Duration::from_secs(30),
            || (cluster.registered().len() == BROKERS as usize).then_some(()),
        );
        cluster
    }

    pub fn bootstrap(&self) -> String {
        super::bootstrap_all(&self.brokers)
    }

    pub fn broker(&mut self, id: i64) -> &mut Broker {
        &mut self.brokers[(id - 1) as usize]
    }

    /// The znodes at `paths`, read with kazoo (zk_dump.py's `znodes` object).
    pub fn znodes(&self, paths: &[String]) -> serde_json::Value {
        let connect = self.zk.connect_string();
        let mut args = vec!["--zk", connect.as_str()];
        args.extend(paths.iter().map(String::as_str));
        python_json("zk_dump.py", &args)["znodes"].clone()
    }

    pub fn registered(&self) -> Vec<i64> {
        let path = "/brokers/ids".to_string();
        let nodes = self.znodes(std::slice::from_ref(&path));
        nodes[path.as_str()]["children"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The broker `/controller` names, if any.
    pub fn controller(&self) -> Option<i64> {
        let path = "/controller".to_string();
        self.znodes(std::slice::from_ref(&path))[path.as_str()]["data"]["brokerid"].as_i64()
    }

    /// Partitions 0..partitions of the topic.
    pub fn states(&self, topic: &str, partitions: u32) -> Vec<Option<PartitionState>> {
        self.states_of(topic, &(0..partitions).collect::<Vec<_>>())
    }

    pub fn state(&self, topic: &str, partition: u32) -> Option<PartitionState> {
        self.states_of(topic, &[partition]).pop().flatten()
    }

    /// One kazoo session for all of them.
    pub fn states_of(&self, topic: &str, partitions: &[u32]) -> Vec<Option<PartitionState>> {
        let paths: Vec<String> = partitions.iter().map(|&p| state_path(topic, p)).collect();
        let nodes = self.znodes(&paths);
        paths
            .iter()
            .map(|path| PartitionState::parse(&nodes[path.as_str()]["data"]))
            .collect()
    }

    /// The leader ZooKeeper names for the partition (waits, bounded, while it names none).
    pub fn leader(&self, topic: &str, partition: u32) -> i64 {
        wait_until(
            &format!("a leader for {topic}-{partition} in ZooKeeper"),
            Duration::from_secs(30),
            || {
                self.state(topic, partition)
                    .map(|s| s.leader)
                    .filter(|&l| l >= 0)
            },
        )
    }

    /// Creates a topic of replication factor 3 and min.insync.replicas=2 with confluent-kafka's
    /// AdminClient (which waits until metadata shows a leader for every partition).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let (bootstrap, partitions) = (self.bootstrap(), partitions.to_string());
        let created = python_json(
            "admin.py",
            &[
                "create",
                "--bootstrap",
                &bootstrap,
                "--topic",
                topic,
                "--partitions",
                &partitions,
                "--replication-factor",
                "3",
                "--config",
                "min.insync.replicas=2",
            ],
        );
        assert_eq!(created["ok"], true, "{created}");
    }

    /// Waits until every partition of the topic has all three brokers in its ISR and a leader
    /// among them; returns the states. Panics (after checking no broker crashed) on timeout.
    pub fn wait_isr_whole(
        &mut self,
        topic: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Vec<PartitionState> {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_all_running();
            let states = self.states(topic, partitions);
            if states
                .iter()
                .all(|s| s.as_ref().is_some_and(PartitionState::whole))
            {
                return states.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for every partition of '{topic}' to have all \
                 {BROKERS} brokers in its ISR; the states in ZooKeeper: {states:#?}"
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Panics with its log tail if a broker exited by itself (only call it while the test has
    /// every broker running).
    pub fn assert_all_running(&mut self) {
        for broker in &mut self.brokers {
            assert!(
                broker.is_running(),
                "broker {} exited by itself (crashed?); log tail:\n{}",
                broker.broker_id(),
                broker.log_tail()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL: the test is over, and three clean shutdowns in a row (each moving leadership
        // to brokers about to stop too) would only add seconds. Each Broker's own drop still
        // prints its log tail when the test failed.
        for broker in &mut self.brokers {
            broker.kill();
        }
    }
}

/// Brokers paused with SIGSTOP (alive, registered, silent, like a long GC pause), continued
/// with SIGCONT on drop, so a failing test never leaves a stopped process behind.
pub struct Frozen(Vec<u32>);

impl Frozen {
    pub fn pause(pids: Vec<u32>) -> Frozen {
        for &pid in &pids {
            // SAFETY: plain syscall on a child process this test started and has not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    }
}
