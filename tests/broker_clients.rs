//! Real clients nobody here wrote (kcat, confluent-kafka, kafka-python, aiokafka) against a real
//! broker process registered in a real ZooKeeper.

mod harness;

use harness::{kcat, kcat_with_input, python_json, skein_cli, Broker, BrokerOpts, ZooKeeper};

#[test]
fn kcat_lists_produces_and_consumes() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();
    broker.create_topic("kcat-topic", 3, &[]);

    let listing = String::from_utf8_lossy(&kcat(&["-b", &b, "-L"]).stdout).into_owned();
    assert!(listing.contains("broker 1 at 127.0.0.1"), "{listing}");
    assert!(
        listing.contains("topic \"kcat-topic\" with 3 partitions"),
        "{listing}"
    );

    let input: String = (0..300)
        .map(|i| format!("key{}:value-{i}\n", i % 7))
        .collect();
    kcat_with_input(
        &["-b", &b, "-t", "kcat-topic", "-P", "-K:"],
        input.as_bytes(),
    );
    let out = kcat(&[
        "-b",
        &b,
        "-t",
        "kcat-topic",
        "-C",
        "-e",
        "-q",
        "-f",
        "%p %o %k %s\n",
    ]);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 300, "consumed {} of 300", lines.len());
    // Per partition, offsets are 0..n without gaps; per key, values come back in produced order.
    let mut next_offset = std::collections::HashMap::new();
    let mut last_seq = std::collections::HashMap::new();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        let (partition, offset, key, value) = (
            parts[0],
            parts[1].parse::<i64>().unwrap(),
            parts[2],
            parts[3],
        );
        let expected = next_offset.entry(partition.to_owned()).or_insert(0);
        assert_eq!(
            offset, *expected,
            "partition {partition}: offsets must be dense and ordered"
        );
        *expected += 1;
        let seq: i64 = value.trim_start_matches("value-").parse().unwrap();
        let last = last_seq.entry(key.to_owned()).or_insert(-1);
        assert!(seq > *last, "key {key}: {seq} after {last}");
        *last = seq;
    }
}

#[test]
fn python_clients_round_trip_every_compression() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();
    for client in ["confluent", "kafka-python", "aiokafka"] {
        for compression in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let topic = format!("rt-{client}-{compression}");
            broker.create_topic(&topic, 3, &[]);
            let summary = python_json(
                "produce_consume.py",
                &[
                    "--bootstrap",
                    &b,
                    "--topic",
                    &topic,
                    "--partitions",
                    "3",
                    "--count",
                    "300",
                    "--client",
                    client,
                    "--compression",
                    compression,
                ],
            );
            assert_eq!(summary["ok"], true, "{client}/{compression}: {summary}");
            assert_eq!(
                summary["consumed"], 300,
                "{client}/{compression}: {summary}"
            );
        }
    }
}

#[test]
fn admin_client_and_cli_manage_topics() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();

    let created = python_json(
        "admin.py",
        &[
            "create",
            "--bootstrap",
            &b,
            "--topic",
            "managed",
            "--partitions",
            "4",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=60000",
        ],
    );
    assert_eq!(created["ok"], true, "{created}");
    let described = python_json(
        "admin.py",
        &[
            "describe-configs",
            "--bootstrap",
            &b,
            "--topic",
            "managed",
            "--expect",
            "retention.ms=60000",
        ],
    );
    assert_eq!(
        described["configs"]["segment.bytes"], "1073741824",
        "defaults are described too: {described}"
    );
    let again = python_json(
        "admin.py",
        &[
            "create",
            "--bootstrap",
            &b,
            "--topic",
            "managed",
            "--partitions",
            "4",
            "--expect-error",
            "TOPIC_ALREADY_EXISTS",
        ],
    );
    assert_eq!(again["ok"], true, "{again}");
    let bad = python_json(
        "admin.py",
        &[
            "create",
            "--bootstrap",
            &b,
            "--topic",
            "bad-config",
            "--partitions",
            "1",
            "--config",
            "retention.msx=1",
            "--expect-error",
            "INVALID_CONFIG",
        ],
    );
    assert_eq!(bad["ok"], true, "{bad}");

    // Replication between brokers does not exist yet, so more than one replica is refused.
    let replicated = python_json(
        "admin.py",
        &[
            "create",
            "--bootstrap",
            &b,
            "--topic",
            "replicated",
            "--partitions",
            "1",
            "--replication-factor",
            "2",
            "--expect-error",
            "INVALID_REPLICATION_FACTOR",
        ],
    );
    assert_eq!(replicated["ok"], true, "{replicated}");

    // Data is written, then the topic is deleted: its folders go with it.
    kcat_with_input(&["-b", &b, "-t", "managed", "-P"], b"a\nb\nc\n");
    assert!(broker.log_dir().join("managed-0").exists());
    let deleted = python_json(
        "admin.py",
        &["delete", "--bootstrap", &b, "--topic", "managed"],
    );
    assert_eq!(deleted["ok"], true, "{deleted}");
    harness::wait_until(
        "deleted topic's data to go",
        std::time::Duration::from_secs(10),
        || {
            (0..4)
                .all(|p| !broker.log_dir().join(format!("managed-{p}")).exists())
                .then_some(())
        },
    );

    // The same through skein's own CLI.
    broker.create_topic("cli-topic", 2, &[]);
    let list = String::from_utf8_lossy(&skein_cli(&["topics", "list", "--bootstrap", &b]).stdout)
        .into_owned();
    assert!(
        list.lines().any(|l| l == "cli-topic") && !list.contains("managed"),
        "{list}"
    );
    let describe = String::from_utf8_lossy(
        &skein_cli(&[
            "topics",
            "describe",
            "--bootstrap",
            &b,
            "--topic",
            "cli-topic",
        ])
        .stdout,
    )
    .into_owned();
    assert!(
        describe.contains("partitions 2") && describe.contains("leader   1"),
        "{describe}"
    );
    skein_cli(&[
        "topics",
        "delete",
        "--bootstrap",
        &b,
        "--topic",
        "cli-topic",
    ]);
    let list = String::from_utf8_lossy(&skein_cli(&["topics", "list", "--bootstrap", &b]).stdout)
        .into_owned();
    assert!(!list.contains("cli-topic"), "{list}");
}

#[test]
fn offsets_for_times_uses_the_time_index() {
    let zk = ZooKeeper::start(1);
    // Small segments and a dense index, so lookups cross segments and index entries.
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("log.segment.bytes", "4096")
            .set("log.index.interval.bytes", "512"),
    );
    let b = broker.bootstrap();
    broker.create_topic("times", 2, &[]);
    let summary = python_json(
        "offsets_for_times.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            "times",
            "--partitions",
            "2",
            "--batches",
            "8",
            "--per-batch",
            "20",
        ],
    );
    assert_eq!(summary["ok"], true, "{summary}");
    let segments = std::fs::read_dir(broker.log_dir().join("times-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        });
    assert!(
        segments.count() > 1,
        "the data should span several segments"
    );
}

#[test]
fn auto_create_follows_the_broker_setting() {
    let zk = ZooKeeper::start(1);
    let on = Broker::start(&zk, BrokerOpts::id(1).set("num.partitions", "2"));
    kcat_with_input(
        &["-b", &on.bootstrap(), "-t", "auto-made", "-P"],
        b"hello\n",
    );
    let out = kcat(&["-b", &on.bootstrap(), "-t", "auto-made", "-C", "-e", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
    let listing =
        String::from_utf8_lossy(&kcat(&["-b", &on.bootstrap(), "-L", "-t", "auto-made"]).stdout)
            .into_owned();
    assert!(
        listing.contains("with 2 partitions"),
        "num.partitions applies to auto-created topics: {listing}"
    );
    drop(on);

    let zk = ZooKeeper::start(1);
    let off = Broker::start(
        &zk,
        BrokerOpts::id(1).set("auto.create.topics.enable", "false"),
    );
    let summary = python_json("admin.py", &["list", "--bootstrap", &off.bootstrap()]);
    assert_eq!(summary["ok"], true, "{summary}");
    let out = harness::try_python(
        "produce_consume.py",
        &[
            "--bootstrap",
            &off.bootstrap(),
            "--topic",
            "never-made",
            "--partitions",
            "1",
            "--count",
            "1",
            "--client",
            "confluent",
            "--timeout",
            "5",
        ],
        std::time::Duration::from_secs(60),
    );
    assert!(
        !out.status.success(),
        "producing to a missing topic must fail when auto-creation is off"
    );
    let summary = python_json("admin.py", &["list", "--bootstrap", &off.bootstrap()]);
    assert!(!summary.to_string().contains("never-made"), "{summary}");
}
