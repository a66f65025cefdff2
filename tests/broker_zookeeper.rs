//! The broker in ZooKeeper: Kafka's znode layout, controller election, start-up without an
//! ensemble, re-registration after a lost session, a fast restart after SIGKILL, and refusing bad
//! configs, busy ports and a second broker with the same id.

mod harness;

use std::time::{Duration, Instant};

use harness::{
    kcat, kcat_with_input, python_json, skein_cli, wait_until, Broker, BrokerOpts, ZooKeeper,
};

/// The parsed JSON a znode holds (`Null` if it does not exist), read with kazoo.
fn znode(zk: &ZooKeeper, path: &str) -> serde_json::Value {
    let dump = python_json("zk_dump.py", &["--zk", &zk.connect_string(), path]);
    let node = &dump["znodes"][path];
    if node["exists"] == true {
        node["data"].clone()
    } else {
        serde_json::Value::Null
    }
}

/// `skein topics describe` output for `topic`.
fn describe(broker: &Broker, topic: &str) -> String {
    let bootstrap = broker.bootstrap();
    let args = [
        "topics",
        "describe",
        "--bootstrap",
        &bootstrap,
        "--topic",
        topic,
    ];
    String::from_utf8_lossy(&skein_cli(&args).stdout).into_owned()
}

fn is_ephemeral(zk: &ZooKeeper, path: &str) -> bool {
    let dump = python_json("zk_dump.py", &["--zk", &zk.connect_string(), path]);
    dump["znodes"][path]["ephemeral"] == true
}

#[test]
fn broker_registers_and_topics_live_where_kafka_keeps_them() {
    let zk = ZooKeeper::start(3);
    let mut broker = Broker::start(&zk, BrokerOpts::id(7));
    broker.create_topic("laid-out", 2, &["retention.ms=123456"]);

    let registration = znode(&zk, "/brokers/ids/7");
    assert_eq!(
        registration["endpoints"][0],
        format!("PLAINTEXT://127.0.0.1:{}", broker.port()),
        "{registration}"
    );
    assert_eq!(registration["port"], broker.port());
    assert!(is_ephemeral(&zk, "/brokers/ids/7") && is_ephemeral(&zk, "/controller"));
    assert_eq!(znode(&zk, "/controller")["brokerid"], 7);
    let topic = znode(&zk, "/brokers/topics/laid-out");
    assert_eq!(topic["partitions"]["0"], serde_json::json!([7]), "{topic}");
    assert!(
        topic["topic_id"].as_str().is_some_and(|id| id.len() == 22),
        "{topic}"
    );
    let state = znode(&zk, "/brokers/topics/laid-out/partitions/1/state");
    assert_eq!(
        (state["leader"].clone(), state["isr"].clone()),
        (serde_json::json!(7), serde_json::json!([7])),
        "{state}"
    );
    assert_eq!(
        znode(&zk, "/config/topics/laid-out")["config"]["retention.ms"],
        "123456"
    );

    // Settings changed in ZooKeeper reach the running broker and its open logs.
    let changed = python_json(
        "zk_set.py",
        &[
            "--zk",
            &zk.connect_string(),
            "/config/topics/laid-out",
            r#"{"version":1,"config":{"retention.ms":"654321"}}"#,
        ],
    );
    assert_eq!(changed["ok"], true, "{changed}");
    wait_until(
        "the broker to apply the changed setting",
        Duration::from_secs(20),
        || {
            let described = describe(&broker, "laid-out");
            (described.contains("retention.ms = 654321")
                && broker
                    .log_text()
                    .contains("applying changed topic settings"))
            .then_some(())
        },
    );

    // A clean stop gives up the registration at once; a restart rebuilds the view from ZooKeeper.
    broker.stop();
    assert!(
        znode(&zk, "/brokers/ids/7").is_null(),
        "deregistered on SIGTERM"
    );
    broker.restart();
    let described = describe(&broker, "laid-out");
    assert!(described.contains("retention.ms = 654321"), "{described}");

    // A config another tool wrote, with a key skein does not know and a bad value beside
    // retention.ms=-1: every key it understands still applies (before, one unknown key turned
    // "keep forever" into the 7-day default), now and after a restart.
    let foreign = python_json(
        "zk_set.py",
        &[
            "--zk",
            &zk.connect_string(),
            "/config/topics/laid-out",
            r#"{"version":1,"config":{"retention.ms":"-1","confluent.placement.constraints":"{}","segment.bytes":"huge"}}"#,
        ],
    );
    assert_eq!(foreign["ok"], true, "{foreign}");
    wait_until(
        "the foreign config to apply",
        Duration::from_secs(20),
        || {
            describe(&broker, "laid-out")
                .contains("retention.ms = -1")
                .then_some(())
        },
    );
    let log = broker.log_text();
    assert!(
        log.contains("ignoring config 'confluent.placement.constraints'")
            && log.contains("ignoring config 'segment.bytes'"),
        "the keys left aside are named"
    );
    broker.restart();
    assert!(describe(&broker, "laid-out").contains("retention.ms = -1"));

    skein_cli(&[
        "topics",
        "delete",
        "--bootstrap",
        &broker.bootstrap(),
        "--topic",
        "laid-out",
    ]);
    assert!(znode(&zk, "/brokers/topics/laid-out").is_null());
    assert!(znode(&zk, "/config/topics/laid-out").is_null());
}

#[test]
fn broker_waits_for_zookeeper_and_registers_again_after_losing_its_session() {
    let mut zk = ZooKeeper::start(1);
    zk.stop_node(0);
    let mut broker = Broker::start_unready(
        &zk,
        BrokerOpts::id(1).set("zookeeper.session.timeout.ms", "4000"),
    );
    wait_until(
        "the broker to say ZooKeeper is unreachable",
        Duration::from_secs(20),
        || {
            broker
                .log_text()
                .contains("cannot reach ZooKeeper")
                .then_some(())
        },
    );
    assert!(broker.is_running(), "it keeps retrying instead of exiting");
    zk.start_node(0);
    broker.wait_ready();
    wait_until("registration", Duration::from_secs(20), || {
        (!znode(&zk, "/brokers/ids/1").is_null()).then_some(())
    });

    // Frozen for longer than the session timeout (a long GC-like pause): ZooKeeper expires the
    // session and removes the registration; once thawed, the broker registers again.
    let pid = broker.pid().expect("running") as i32;
    // SAFETY: signalling a child process this test started and still owns.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let expired = std::panic::catch_unwind(|| {
        wait_until("the session to expire", Duration::from_secs(30), || {
            znode(&zk, "/brokers/ids/1").is_null().then_some(())
        })
    });
    // SAFETY: as above; the broker is resumed even if the wait failed.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    expired.expect("ZooKeeper expires a frozen broker's session");
    wait_until(
        "re-registration after session loss",
        Duration::from_secs(40),
        || (!znode(&zk, "/brokers/ids/1").is_null()).then_some(()),
    );
    assert!(
        broker.log_text().contains("registering again"),
        "the broker says it re-registered"
    );
    broker.create_topic("after-expiry", 1, &[]);
}

#[test]
fn bad_configs_and_busy_ports_are_refused_with_a_clear_error() {
    let zk = ZooKeeper::start(1);
    let (status, stderr) =
        Broker::start_expect_failure(&zk, BrokerOpts::id(1).set("log.segmnet.bytes", "5"));
    assert!(!status.success());
    assert!(
        stderr.contains("unknown config key 'log.segmnet.bytes'"),
        "{stderr}"
    );
    let (status, stderr) =
        Broker::start_expect_failure(&zk, BrokerOpts::id(1).set("num.partitions", "\"many\""));
    assert!(!status.success());
    assert!(stderr.contains("'num.partitions'"), "{stderr}");

    let running = Broker::start(&zk, BrokerOpts::id(1));
    let config = std::fs::read_to_string(running.config_path())
        .unwrap()
        .replace("broker.id = 1", "broker.id = 2");
    let (status, stderr) = Broker::start_expect_failure_with_config(&config);
    assert!(!status.success());
    assert!(
        stderr.contains("is another broker running there?"),
        "{stderr}"
    );
}

#[test]
fn a_sigkilled_broker_serves_again_within_seconds_and_a_twin_is_refused() {
    let zk = ZooKeeper::start(1);
    // A session timeout far longer than the restart may take: the old registration must be
    // replaced, not waited out.
    let mut broker = Broker::start(
        &zk,
        BrokerOpts::id(1).set("zookeeper.session.timeout.ms", "30000"),
    );
    broker.create_topic("kept", 1, &[]);
    let session_before = znode_owner(&zk, "/brokers/ids/1");
    assert_eq!(znode_owner(&zk, "/controller"), session_before);

    broker.kill();
    let killed = Instant::now();
    broker.restart();
    let serving_after = killed.elapsed();
    eprintln!("serving again {serving_after:?} after SIGKILL");
    assert!(
        serving_after < Duration::from_secs(5),
        "serving {serving_after:?} after SIGKILL"
    );
    let session_after = znode_owner(&zk, "/brokers/ids/1");
    assert_ne!(
        session_after, session_before,
        "registered by the new session"
    );
    wait_until(
        "the restarted broker to be controller",
        Duration::from_secs(10),
        || (znode_owner(&zk, "/controller") == session_after).then_some(()),
    );
    assert!(describe(&broker, "kept").contains("kept"));
    assert!(broker
        .log_text()
        .contains("left from this broker's previous run"));

    // Another broker with the same id (its own log dir, so it cannot know the session) must
    // not take the live broker's registration.
    let (status, stderr) = Broker::start_expect_failure(
        &zk,
        BrokerOpts::id(1).set("zookeeper.session.timeout.ms", "4000"),
    );
    assert!(!status.success());
    assert!(stderr.contains("held by another live session"), "{stderr}");
    assert_eq!(znode_owner(&zk, "/brokers/ids/1"), session_after);
    assert!(describe(&broker, "kept").contains("kept"));
}

/// The session that owns the ephemeral znode at `path` (0 if it does not exist).
fn znode_owner(zk: &ZooKeeper, path: &str) -> i64 {
    let dump = python_json("zk_dump.py", &["--zk", &zk.connect_string(), path]);
    dump["znodes"][path]["ephemeral_owner"]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn deleting_a_topic_removes_its_data_from_every_broker() {
    let zk = ZooKeeper::start(1);
    let mut brokers = [
        Broker::start(&zk, BrokerOpts::id(1)),
        Broker::start(&zk, BrokerOpts::id(2)),
    ];
    let bootstrap = harness::bootstrap_all(&brokers);
    wait_until("both brokers to register", Duration::from_secs(20), || {
        let dump = python_json(
            "zk_dump.py",
            &["--zk", &zk.connect_string(), "/brokers/ids"],
        );
        (dump["znodes"]["/brokers/ids"]["children"]
            .as_array()
            .is_some_and(|c| c.len() == 2))
        .then_some(())
    });
    let partitions_on = |broker: &Broker| {
        std::fs::read_dir(broker.log_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("gone-"))
            .count()
    };
    let first = brokers[0].bootstrap();
    let create = || {
        skein_cli(&[
            "topics",
            "create",
            "--bootstrap",
            &first,
            "--topic",
            "gone",
            "--partitions",
            "4",
        ])
    };
    create();
    wait_until(
        "both brokers to hold partitions",
        Duration::from_secs(20),
        || brokers.iter().all(|b| partitions_on(b) > 0).then_some(()),
    );
    let produce_to_every_partition = || {
        for partition in 0..4 {
            let p = partition.to_string();
            let args = [
                "-b", &bootstrap, "-t", "gone", "-P", "-p", &p, "-X", "acks=all",
            ];
            kcat_with_input(&args, b"a record\n");
        }
    };
    produce_to_every_partition();

    // Only the controller runs the deletion, but every broker removes its own data of the
    // topic (before, the other broker kept it, and a topic created again under the same name
    // found the old data in its way).
    skein_cli(&["topics", "delete", "--bootstrap", &first, "--topic", "gone"]);
    wait_until(
        "the data to go from every broker",
        Duration::from_secs(20),
        || brokers.iter().all(|b| partitions_on(b) == 0).then_some(()),
    );
    create();
    produce_to_every_partition();
    let consumed = kcat(&["-b", &bootstrap, "-t", "gone", "-C", "-e", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout).lines().count(),
        4,
        "one record per partition of the new topic, none of the old"
    );
    for broker in &brokers {
        assert!(!broker
            .log_text()
            .contains("left untouched, the partition is not opened"));
    }

    // A broker down while the topic is deleted removes its data when it returns: the
    // controller's first (full) LeaderAndIsr no longer names those partitions. (Another topic
    // lives on: with no topic at all a broker removes nothing, as after a wiped ZooKeeper.)
    skein_cli(&[
        "topics",
        "create",
        "--bootstrap",
        &first,
        "--topic",
        "kept",
        "--partitions",
        "2",
    ]);
    let down = &mut brokers[1];
    down.stop();
    assert!(
        partitions_on(down) > 0,
        "broker 2 holds partitions of 'gone'"
    );
    skein_cli(&["topics", "delete", "--bootstrap", &first, "--topic", "gone"]);
    let down = &mut brokers[1];
    down.restart();
    wait_until(
        "the returning broker to remove the deleted topic's data",
        Duration::from_secs(20),
        || (partitions_on(&brokers[1]) == 0).then_some(()),
    );
    assert!(
        brokers[1]
            .log_text()
            .contains("is not this broker's any more"),
        "the removal is logged"
    );
}
