//! Integration-test harness: starts what a test needs as real processes.
//!
//! - [`ZooKeeper`]: a 1- or 3-node ensemble (Debian's `zookeeper` jars, run with `java`), fresh data
//!   dirs, free loopback ports.
//! - [`Broker`]: a `skein broker` from a generated TOML config, ready once a Kafka ApiVersions round
//!   trip succeeds.
//! - [`python`], [`kcat`], [`skein_cli`]: real clients, each run with a time limit.
//! - [`cluster::Cluster`]: three brokers and one ZooKeeper, with the leaders and ISRs ZooKeeper
//!   holds; [`acked`]: producing with every acknowledgement written down, and checking a topic
//!   read back against them (the replication tests).
//!
//! Every process is started by this module, remembered as a `std::process::Child`, and stopped by
//! its pid on `Drop` (SIGTERM, then SIGKILL), so a failing test (a panic unwinds through the drops)
//! leaves nothing running. The child is reaped only by us, so its pid cannot be recycled between
//! our check and our kill. Every wait here has a deadline.
//!
//! Environment:
//! - `SKEIN_BIN`: the broker binary (default: the `skein` binary cargo built for this test run,
//!   else `target/release/skein`). Relative paths are taken from the crate root.
//! - `SKEIN_ZK_CLASSPATH`: java classpath for ZooKeeper (default: Debian's jars).
//! - `SKEIN_JAVA`: the java binary (default `java`).
//! - `SKEIN_TEST_PYTHON`: the python with the clients installed (default `.venv/bin/python`).
//! - `SKEIN_KCAT`: the kcat binary (default `kcat`).
//! - `SKEIN_TEST_KEEP=1`: keep temp dirs (configs, data, logs) after the test, and print where.
//!
//! Use it from a test file as `mod harness;`.
#![allow(dead_code)]

pub mod acked;
pub mod batches;
pub mod cluster;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// How long a ZooKeeper ensemble may take to serve.
pub const ZK_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to answer ApiVersions.
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Default time limit for one client script run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

const DEFAULT_ZK_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";
const LOG_TAIL_LINES: usize = 60;

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_path(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var).filter(|v| !v.is_empty())?;
    let path = PathBuf::from(value);
    Some(if path.is_relative() && path.components().count() > 1 {
        crate_root().join(path)
    } else {
        path
    })
}

fn keep_dirs() -> bool {
    std::env::var("SKEIN_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("harness: cannot create a temp dir '{prefix}*': {e}"))
}

/// Removes the dir on drop unless `SKEIN_TEST_KEEP` is set.
struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    fn new(prefix: &str) -> Self {
        WorkDir(Some(temp_dir(prefix)))
    }
    fn path(&self) -> &Path {
        self.0.as_ref().expect("work dir is live until drop").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if keep_dirs() {
                eprintln!("harness: keeping {}", dir.keep().display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Stops a child by its pid: SIGTERM, up to `grace` to exit, then SIGKILL. Returns its status.
fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // SAFETY: plain syscall; the pid is our unreaped child, so it cannot name another process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    kill_child(child)
}

/// SIGKILL by pid, then reap.
fn kill_child(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// True while `pid` names a live (or unreaped) process.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn open_log(path: &Path) -> (File, File) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("harness: cannot open log {}: {e}", path.display()));
    let err = file
        .try_clone()
        .unwrap_or_else(|e| panic!("harness: cannot dup log {}: {e}", path.display()));
    (file, err)
}

/// The last `lines` lines of a file (reads at most the last 64 KiB).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
        return format!("<cannot read {}>", path.display());
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion with a time limit, capturing stdout and stderr. On timeout the
/// child is killed by pid and `Err` carries what it printed so far.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, Output> {
    let what = format!("{command:?}");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("harness: cannot start {what}: {e}"));

    // Feed and drain on threads so a full pipe can never stall the child or us.
    let writer = stdin.map(|input| {
        let input = input.to_vec();
        let mut pipe = child.stdin.take().expect("stdin was piped");
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout was piped");
    let mut err_pipe = child.stderr.take().expect("stderr was piped");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                timed_out = true;
                break kill_child(&mut child).expect("killed child can be reaped");
            }
            Err(e) => panic!("harness: waiting for {what}: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let output = Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    };
    if timed_out {
        Err(output)
    } else {
        Ok(output)
    }
}

fn describe_output(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Like [`run_bounded`], but panics (with everything the command printed) on timeout or non-zero exit.
fn run_checked(command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let what = format!("{command:?}");
    match run_bounded(command, stdin, timeout) {
        Ok(output) if output.status.success() => output,
        Ok(output) => panic!("{what} failed\n{}", describe_output(&output)),
        Err(output) => panic!(
            "{what} did not finish within {timeout:?}; killed\n{}",
            describe_output(&output)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Ports

/// A free loopback port that no other test in this process has been handed.
///
/// Candidates come from below Linux's ephemeral range (32768+), so outgoing client connections
/// cannot grab a port between our probe and the server's bind; the start point is random per
/// process, so concurrent test processes are unlikely to meet.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static TAKEN: Mutex<Option<(u32, HashSet<u16>)>> = Mutex::new(None);
    let mut guard = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let (cursor, taken) = guard.get_or_insert_with(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let seed = std::process::id().wrapping_mul(7919).wrapping_add(nanos);
        (seed % SPAN, HashSet::new())
    });
    for _ in 0..SPAN {
        *cursor = (*cursor + 1) % SPAN;
        let port = (LOW + *cursor) as u16;
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("harness: no free loopback port in {LOW}..{}", LOW + SPAN);
}

// ---------------------------------------------------------------------------------------------
// ZooKeeper

struct ZkNode {
    myid: usize,
    client_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A ZooKeeper ensemble of 1 or 3 nodes on loopback, stopped on drop.
pub struct ZooKeeper {
    nodes: Vec<ZkNode>,
    dir: WorkDir,
}

impl ZooKeeper {
    /// Starts `nodes` (1 or 3) ZooKeeper servers and waits until every one serves.
    pub fn start(nodes: usize) -> ZooKeeper {
        assert!(
            nodes == 1 || nodes == 3,
            "ZooKeeper::start: nodes must be 1 or 3, got {nodes}"
        );
        let dir = WorkDir::new("skein-zk-");
        let client_ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let peer_ports: Vec<(u16, u16)> = (0..nodes).map(|_| (free_port(), free_port())).collect();

        let mut zk = ZooKeeper {
            nodes: Vec::new(),
            dir,
        };
        for (i, &client_port) in client_ports.iter().enumerate() {
            let myid = i + 1;
            let node_dir = zk.dir.path().join(format!("zk-{myid}"));
            let data_dir = node_dir.join("data");
            fs::create_dir_all(&data_dir).expect("create ZooKeeper data dir");
            fs::write(data_dir.join("myid"), format!("{myid}\n")).expect("write myid");
            // Short ticks make elections fast; the session bounds stay wide enough for brokers'
            // usual zookeeper.session.timeout.ms (Kafka's default is 18 s).
            let mut config = format!(
                "tickTime=500\n\
                 initLimit=20\n\
                 syncLimit=10\n\
                 minSessionTimeout=1000\n\
                 maxSessionTimeout=60000\n\
                 dataDir={}\n\
                 clientPort={client_port}\n\
                 clientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n\
                 4lw.commands.whitelist=*\n\
                 autopurge.purgeInterval=0\n",
                data_dir.display()
            );
            if nodes > 1 {
                for (j, (peer, election)) in peer_ports.iter().enumerate() {
                    config.push_str(&format!("server.{}=127.0.0.1:{peer}:{election}\n", j + 1));
                }
            }
            let config_path = node_dir.join("zoo.cfg");
            fs::write(&config_path, config).expect("write zoo.cfg");
            zk.nodes.push(ZkNode {
                myid,
                client_port,
                config: config_path,
                log: node_dir.join("zookeeper.log"),
                child: None,
            });
        }
        // Spawn every node first (a quorum needs them all), then wait for each.
        for i in 0..nodes {
            zk.spawn_node(i);
        }
        for i in 0..nodes {
            zk.wait_serving(i, ZK_START_TIMEOUT);
        }
        zk
    }

    fn spawn_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(
            node.child.is_none(),
            "ZooKeeper node {i} is already running"
        );
        let classpath = std::env::var("SKEIN_ZK_CLASSPATH")
            .unwrap_or_else(|_| DEFAULT_ZK_CLASSPATH.to_string());
        let java = std::env::var("SKEIN_JAVA").unwrap_or_else(|_| "java".to_string());
        let (out, err) = open_log(&node.log);
        let child = Command::new(&java)
            .args([
                "-Xms32m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.net.preferIPv4Stack=true",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(&node.config)
            .current_dir(node.config.parent().expect("config has a parent"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("harness: cannot start ZooKeeper with '{java}' (is a JRE installed?): {e}")
            });
        node.child = Some(child);
    }

    fn wait_serving(&mut self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "ZooKeeper node {} (port {}) exited during start-up ({status}); log {}:\n{}",
                        node.myid,
                        node.client_port,
                        node.log.display(),
                        file_tail(&node.log, LOG_TAIL_LINES)
                    );
                }
            }
            match four_letter_word(node.client_port, "srvr") {
                Ok(answer) if answer.contains("Mode: ") => return,
                Ok(answer) => last = answer,
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "ZooKeeper node {} (port {}) not serving after {timeout:?} (last answer: {}); log {}:\n{}",
                    node.myid,
                    node.client_port,
                    last.trim(),
                    node.log.display(),
                    file_tail(&node.log, LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `host:port,host:port,...` for `zookeeper.connect`.
    pub fn connect_string(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The client port of node `i` (0-based; its ZooKeeper `myid` is `i + 1`).
    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// The pids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Sends a four-letter word (`srvr`, `ruok`, `mntr`, `cons`, ...) to node `i` (0-based).
    pub fn four_letter_word(&self, i: usize, word: &str) -> String {
        four_letter_word(self.nodes[i].client_port, word)
            .unwrap_or_else(|e| panic!("ZooKeeper node {i}: '{word}' failed: {e}"))
    }

    /// Stops node `i` (0-based): SIGTERM, then SIGKILL.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            stop_child(&mut child, STOP_GRACE);
        }
    }

    /// Kills node `i` (0-based) with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            kill_child(&mut child);
        }
    }

    /// Starts node `i` (0-based) again with its old config and data, and waits until it serves
    /// (which, for an ensemble, needs a quorum to be up).
    pub fn start_node(&mut self, i: usize) {
        self.spawn_node(i);
        self.wait_serving(i, ZK_START_TIMEOUT);
    }

    /// The last lines of node `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        file_tail(&self.nodes[i].log, LOG_TAIL_LINES)
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for i in 0..self.nodes.len() {
            if panicking {
                eprintln!(
                    "--- ZooKeeper node {} log tail ({}) ---\n{}",
                    self.nodes[i].myid,
                    self.nodes[i].log.display(),
                    // ZooKeeper logs a lot at INFO; its last lines are the ones that matter.
                    file_tail(&self.nodes[i].log, 15)
                );
            }
            self.stop_node(i);
        }
    }
}

/// Sends a ZooKeeper four-letter word to `127.0.0.1:port` and returns the answer.
pub fn four_letter_word(port: u16, word: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(word.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

// ---------------------------------------------------------------------------------------------
// Broker

/// How to configure a broker. `extra` lines are raw TOML, appended as `key = value` (quote string
/// values yourself: `("cleanup.policy".into(), "\"compact\"".into())`).
#[derive(Clone, Debug, Default)]
pub struct BrokerOpts {
    /// `broker.id`; give each broker of a cluster its own.
    pub broker_id: u32,
    /// `num.shards`, when set.
    pub shards: Option<usize>,
    /// Raw TOML `key = value` lines appended to the config.
    pub extra: Vec<(String, String)>,
    /// Extra environment for the broker process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

impl BrokerOpts {
    pub fn id(broker_id: u32) -> Self {
        BrokerOpts {
            broker_id,
            ..Default::default()
        }
    }
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }
    /// Appends a raw TOML line `key = value`.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// The skein binary under test.
pub fn skein_bin() -> PathBuf {
    let bin = env_path("SKEIN_BIN")
        .or_else(|| option_env!("CARGO_BIN_EXE_skein").map(PathBuf::from))
        .unwrap_or_else(|| crate_root().join("target/release/skein"));
    assert!(
        bin.is_file(),
        "harness: skein binary {} does not exist (build it, or set SKEIN_BIN)",
        bin.display()
    );
    bin
}

/// One `skein broker` process on a free loopback port, stopped on drop.
pub struct Broker {
    broker_id: u32,
    port: u16,
    config: PathBuf,
    log_dir: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    dir: WorkDir,
}

fn broker_config(
    broker_id: u32,
    port: u16,
    log_dir: &Path,
    zk: &ZooKeeper,
    opts: &BrokerOpts,
) -> String {
    let mut config = format!(
        "broker.id = {broker_id}\n\
         listeners = \"PLAINTEXT://127.0.0.1:{port}\"\n\
         log.dirs = \"{}\"\n\
         zookeeper.connect = \"{}\"\n",
        log_dir.display(),
        zk.connect_string()
    );
    if let Some(shards) = opts.shards {
        config.push_str(&format!("num.shards = {shards}\n"));
    }
    for (key, value) in &opts.extra {
        config.push_str(&format!("{key} = {value}\n"));
    }
    config
}

impl Broker {
    /// Writes a config, starts `skein broker --config FILE`, and waits until it answers ApiVersions.
    pub fn start(zk: &ZooKeeper, opts: BrokerOpts) -> Broker {
        let mut broker = Self::start_unready(zk, opts);
        broker.wait_ready();
        broker
    }

    /// Like [`Broker::start`], but returns as soon as the process is spawned (e.g. to test a
    /// broker that waits for an unreachable ZooKeeper). Call [`Broker::wait_ready`] later.
    pub fn start_unready(zk: &ZooKeeper, opts: BrokerOpts) -> Broker {
        let dir = WorkDir::new(&format!("skein-broker-{}-", opts.broker_id));
        let port = free_port();
        let log_dir = dir.path().join("data");
        fs::create_dir_all(&log_dir).expect("create broker log dir");
        let config = dir.path().join("broker.toml");
        fs::write(
            &config,
            broker_config(opts.broker_id, port, &log_dir, zk, &opts),
        )
        .expect("write broker config");
        let mut broker = Broker {
            broker_id: opts.broker_id,
            port,
            config,
            log_dir,
            log: dir.path().join("broker.log"),
            env: opts.env,
            child: None,
            dir,
        };
        broker.spawn();
        broker
    }

    /// Starts a broker that must refuse to run (e.g. a bad config). Returns its exit status and
    /// stderr; panics if it is still running after 30 s.
    pub fn start_expect_failure(zk: &ZooKeeper, opts: BrokerOpts) -> (ExitStatus, String) {
        let dir = WorkDir::new("skein-broker-fail-");
        let log_dir = dir.path().join("data");
        fs::create_dir_all(&log_dir).expect("create broker log dir");
        let config = broker_config(opts.broker_id, free_port(), &log_dir, zk, &opts);
        Self::run_expect_failure(&dir, &config, &opts.env)
    }

    /// Like [`Broker::start_expect_failure`], with the whole config text given.
    pub fn start_expect_failure_with_config(config_toml: &str) -> (ExitStatus, String) {
        let dir = WorkDir::new("skein-broker-fail-");
        Self::run_expect_failure(&dir, config_toml, &[])
    }

    fn run_expect_failure(
        dir: &WorkDir,
        config_toml: &str,
        env: &[(String, String)],
    ) -> (ExitStatus, String) {
        let config = dir.path().join("broker.toml");
        fs::write(&config, config_toml).expect("write broker config");
        let mut command = Command::new(skein_bin());
        command
            .arg("broker")
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path());
        command.envs(env.iter().map(|(k, v)| (k, v)));
        match run_bounded(command, None, Duration::from_secs(30)) {
            Ok(output) if !output.status.success() => {
                (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
            }
            Ok(output) => panic!(
                "skein broker was expected to fail with config:\n{config_toml}\nbut exited 0\n{}",
                describe_output(&output)
            ),
            Err(output) => panic!(
                "skein broker was expected to fail with config:\n{config_toml}\nbut was still running after 30 s\n{}",
                describe_output(&output)
            ),
        }
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "broker {} is already running",
            self.broker_id
        );
        let bin = skein_bin();
        let (out, err) = open_log(&self.log);
        let mut command = Command::new(&bin);
        command
            .arg("broker")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("harness: cannot start {}: {e}", bin.display()));
        // Held by self from here on, so a panic anywhere later still kills it in Drop.
        self.child = Some(child);
    }

    /// Waits (at most [`BROKER_START_TIMEOUT`]) until the broker answers ApiVersions; panics with
    /// its log tail if it exits or does not answer in time.
    pub fn wait_ready(&mut self) {
        assert!(
            self.child.is_some(),
            "broker {} is not running (start or restart it first)",
            self.broker_id
        );
        let deadline = Instant::now() + BROKER_START_TIMEOUT;
        let mut last_error: String;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                panic!(
                    "broker {} exited during start-up ({status}); config {}:\n{}\nlog {}:\n{}",
                    self.broker_id,
                    self.config.display(),
                    fs::read_to_string(&self.config).unwrap_or_default(),
                    self.log.display(),
                    self.log_tail()
                );
            }
            // Answering is not enough: a broker knows the cluster (itself included) only once
            // the controller's UpdateMetadata has reached it, as Kafka's test harness waits for.
            match api_versions(self.port).and_then(|()| knows_itself(self.port, self.broker_id)) {
                Ok(true) => return,
                Ok(false) => last_error = "its metadata does not list it yet".to_owned(),
                Err(e) => last_error = e,
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker {} on port {} did not answer ApiVersions within {BROKER_START_TIMEOUT:?} (last error: {last_error}); log {}:\n{}",
                    self.broker_id,
                    self.port,
                    self.log.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn broker_id(&self) -> u32 {
        self.broker_id
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL: a crash, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Clean shutdown: SIGTERM, SIGKILL after [`STOP_GRACE`]. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child
            .take()
            .and_then(|mut child| stop_child(&mut child, STOP_GRACE))
    }

    /// Starts the broker again (stopping it first if it runs) with the same config, port and
    /// data, and waits until it answers ApiVersions.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// Creates a topic through `skein topics create`; `configs` are `name=value` topic settings.
    pub fn create_topic(&self, topic: &str, partitions: u32, configs: &[&str]) {
        let (bootstrap, partitions) = (self.bootstrap(), partitions.to_string());
        let mut args = vec![
            "topics",
            "create",
            "--bootstrap",
            &bootstrap,
            "--topic",
            topic,
            "--partitions",
            &partitions,
        ];
        for config in configs {
            args.extend_from_slice(&["--config", config]);
        }
        skein_cli(&args);
    }

    /// The broker's `log.dirs`.
    pub fn log_dir(&self) -> PathBuf {
        self.log_dir.clone()
    }

    /// The broker's config file.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone()
    }

    /// The last lines of the broker's stdout/stderr (all runs, appended).
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, LOG_TAIL_LINES)
    }

    /// The broker's whole stdout/stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- broker {} log tail ({}) ---\n{}",
                self.broker_id,
                self.log.display(),
                self.log_tail()
            );
        }
        self.stop();
    }
}

/// `GET path` on 127.0.0.1:port; returns the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics.listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the server answers and closes");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    if status == 200 {
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
    }
    (status, body.to_owned())
}

/// `host:port,...` of several brokers.
pub fn bootstrap_all(brokers: &[Broker]) -> String {
    brokers
        .iter()
        .map(Broker::bootstrap)
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the broker on `port` lists broker `id` (itself) in its Metadata answer.
pub fn knows_itself(port: u16, id: u32) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut conn = skein::client::Connection::connect(&format!("127.0.0.1:{port}"))
            .await
            .map_err(|e| format!("{e:#}"))?;
        conn.timeout = Duration::from_secs(5);
        let response = conn
            .send(
                kafka_protocol::messages::MetadataRequest::default().with_topics(Some(Vec::new())),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(response.brokers.iter().any(|b| b.node_id.0 == id as i32))
    })
}

/// One raw Kafka ApiVersions v0 round trip (request header v1) to `127.0.0.1:port`.
pub fn api_versions(port: u16) -> Result<(), String> {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x5EED;
    let client_id = b"skein-harness";

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;

    let mut body = Vec::new();
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes()); // api_version
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).map_err(|e| format!("send: {e}"))?;

    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("read length: {e}"))?;
    let len = i32::from_be_bytes(len);
    if !(6..=1 << 20).contains(&len) {
        return Err(format!("bad response length {len}"));
    }
    let mut response = vec![0u8; len as usize];
    stream
        .read_exact(&mut response)
        .map_err(|e| format!("read response: {e}"))?;
    let correlation_id = i32::from_be_bytes([response[0], response[1], response[2], response[3]]);
    if correlation_id != CORRELATION_ID {
        return Err(format!(
            "correlation id {correlation_id}, sent {CORRELATION_ID}"
        ));
    }
    let error_code = i16::from_be_bytes([response[4], response[5]]);
    if error_code != 0 {
        return Err(format!("ApiVersions error_code {error_code}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clients

/// The python interpreter with the test clients installed.
pub fn python_bin() -> PathBuf {
    env_path("SKEIN_TEST_PYTHON").unwrap_or_else(|| {
        let venv = crate_root().join(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    })
}

fn python_command(script: &str, args: &[&str]) -> Command {
    let path = crate_root().join("tests/clients").join(script);
    assert!(
        path.is_file(),
        "harness: no client script {}",
        path.display()
    );
    let mut command = Command::new(python_bin());
    command.arg(path).args(args).env("PYTHONUNBUFFERED", "1");
    command
}

/// Runs `tests/clients/<script> args...` with [`CLIENT_TIMEOUT`]; panics with its output on
/// failure or timeout.
pub fn python(script: &str, args: &[&str]) -> Output {
    python_timeout(script, args, CLIENT_TIMEOUT)
}

pub fn python_timeout(script: &str, args: &[&str], timeout: Duration) -> Output {
    run_checked(python_command(script, args), None, timeout)
}

/// The JSON summary a client script prints as its last non-empty stdout line.
pub fn last_json_line(stdout: &str) -> Result<serde_json::Value, serde_json::Error> {
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
}

/// Runs a client script and parses the JSON summary it prints as its last stdout line.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let output = python(script, args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    last_json_line(&stdout).unwrap_or_else(|e| {
        panic!(
            "{script}: last stdout line is not JSON ({e})\n{}",
            describe_output(&output)
        )
    })
}

/// Runs a client script that may fail; returns its output (panics only on timeout).
pub fn try_python(script: &str, args: &[&str], timeout: Duration) -> Output {
    match run_bounded(python_command(script, args), None, timeout) {
        Ok(output) => output,
        Err(output) => panic!(
            "{script} did not finish within {timeout:?}; killed\n{}",
            describe_output(&output)
        ),
    }
}

fn kcat_command(args: &[&str]) -> Command {
    let kcat = std::env::var("SKEIN_KCAT").unwrap_or_else(|_| "kcat".to_string());
    let mut command = Command::new(kcat);
    command.args(args);
    command
}

/// Runs `kcat args...` with [`CLIENT_TIMEOUT`]; panics with its output on failure or timeout.
pub fn kcat(args: &[&str]) -> Output {
    run_checked(kcat_command(args), None, CLIENT_TIMEOUT)
}

/// Runs `kcat args...` with `input` on its stdin (e.g. `-P` producing lines).
pub fn kcat_with_input(args: &[&str], input: &[u8]) -> Output {
    run_checked(kcat_command(args), Some(input), CLIENT_TIMEOUT)
}

/// Runs the skein CLI (`topics`, `groups`, ...) with a time limit; panics on failure.
pub fn skein_cli(args: &[&str]) -> Output {
    let mut command = Command::new(skein_bin());
    command.args(args);
    run_checked(command, None, CLIENT_TIMEOUT)
}

/// Runs the skein CLI and returns its output whatever the exit status (panics only on timeout).
pub fn try_skein_cli(args: &[&str]) -> Output {
    let mut command = Command::new(skein_bin());
    command.args(args);
    match run_bounded(command, None, CLIENT_TIMEOUT) {
        Ok(output) => output,
        Err(output) => panic!(
            "skein {args:?} did not finish within {CLIENT_TIMEOUT:?}; killed\n{}",
            describe_output(&output)
        ),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Background clients

/// A client script running in the background (a consumer in a group, say), its stdout and
/// stderr going to files. Stopped by its pid on `Drop` (SIGTERM, then SIGKILL).
pub struct BackgroundClient {
    child: Child,
    name: String,
    dir: WorkDir,
}

impl BackgroundClient {
    /// Starts `tests/clients/<script> args...`.
    pub fn python(name: &str, script: &str, args: &[&str]) -> BackgroundClient {
        let dir = WorkDir::new(&format!("skein-client-{name}-"));
        let stdout = File::create(dir.path().join("stdout")).expect("client stdout file");
        let stderr = File::create(dir.path().join("stderr")).expect("client stderr file");
        let child = python_command(script, args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("harness: cannot start {script}: {e}"));
        BackgroundClient {
            child,
            name: name.to_owned(),
            dir,
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr_tail(&self) -> String {
        file_tail(&self.dir.path().join("stderr"), LOG_TAIL_LINES)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM (the client closes cleanly), SIGKILL after the grace period.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        stop_child(&mut self.child, STOP_GRACE)
    }

    /// Waits up to `timeout` for the client to exit by itself; kills it otherwise and panics.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            thread::sleep(Duration::from_millis(50));
        }
        kill_child(&mut self.child);
        panic!(
            "client {} did not finish within {timeout:?}; killed\n{}",
            self.name,
            self.stderr_tail()
        );
    }
}

impl Drop for BackgroundClient {
    fn drop(&mut self) {
        stop_child(&mut self.child, STOP_GRACE);
    }
}
