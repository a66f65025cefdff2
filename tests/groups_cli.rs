//! `skein groups` against a real broker and a real consumer group: confluent-kafka consumers
//! (tests/clients/groups_cli_consumer.py) join the group and commit, then the CLI lists, describes,
//! resets and deletes it, and what it reports is checked against what was produced and read.

mod harness;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use harness::{
    kcat_with_input, python_json, skein_cli, try_skein_cli, Broker, BrokerOpts, ZooKeeper,
};
use serde_json::Value;

const TOPIC: &str = "orders";
/// How long a group may take to settle (a consumer joining waits out the coordinator's initial
/// rebalance delay, Kafka's is 3 s).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Produces `count` records to one partition.
fn produce(bootstrap: &str, partition: i32, count: usize) {
    let input: String = (0..count).map(|i| format!("p{partition}-{i}\n")).collect();
    kcat_with_input(
        &[
            "-b",
            bootstrap,
            "-t",
            TOPIC,
            "-P",
            "-p",
            &partition.to_string(),
        ],
        input.as_bytes(),
    );
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn parse_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "skein groups printed no JSON ({e})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// `skein groups ARGS --bootstrap B --json`, which must succeed; its JSON.
fn groups_json(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = vec!["groups"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--bootstrap", bootstrap, "--json"]);
    parse_json(&skein_cli(&all))
}

/// `skein groups describe --group G --json`: the group's report, or `None` if the command
/// failed (the group does not exist, the coordinator is not ready, ...).
fn try_describe(bootstrap: &str, group: &str) -> Option<Value> {
    let output = try_skein_cli(&[
        "groups",
        "describe",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--json",
    ]);
    output
        .status
        .success()
        .then(|| parse_json(&output)["groups"][0].clone())
}

fn describe(bootstrap: &str, group: &str) -> Value {
    groups_json(bootstrap, &["describe", "--group", group])["groups"][0].clone()
}

/// Waits until the group is in `state` (and has `members` members).
fn wait_for_state(bootstrap: &str, group: &str, state: &str, members: usize) -> Value {
    harness::wait_until(
        &format!("group '{group}' to be {state} with {members} member(s)"),
        SETTLE_TIMEOUT,
        || {
            try_describe(bootstrap, group).filter(|g| {
                g["state"] == state && g["members"].as_array().is_some_and(|m| m.len() == members)
            })
        },
    )
}

/// One partition's line of a describe report: (partition, committed, log end, lag).
type OffsetLine = (i64, Option<i64>, Option<i64>, Option<i64>);

/// Per partition of [`TOPIC`], from a describe report.
fn offsets(report: &Value) -> Vec<OffsetLine> {
    report["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("no offsets in {report}"))
        .iter()
        .map(|row| {
            assert_eq!(row["topic"], TOPIC, "{report}");
            (
                row["partition"].as_i64().expect("partition"),
                row["current_offset"].as_i64(),
                row["log_end_offset"].as_i64(),
                row["lag"].as_i64(),
            )
        })
        .collect()
}

/// `reset-offsets ... --json`: the plan as (partition, new offset), and whether it was executed.
fn reset(bootstrap: &str, group: &str, args: &[&str]) -> (Vec<(i64, i64)>, bool) {
    let mut all = vec!["reset-offsets", "--group", group];
    all.extend_from_slice(args);
    let plan = groups_json(bootstrap, &all);
    assert_eq!(plan["group"], group, "{plan}");
    let partitions = plan["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions in {plan}"))
        .iter()
        .map(|p| {
            (
                p["partition"].as_i64().expect("partition"),
                p["new_offset"].as_i64().expect("new_offset"),
            )
        })
        .collect();
    (partitions, plan["executed"] == true)
}

fn listed_groups(bootstrap: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    groups_json(bootstrap, &all)["groups"]
        .as_array()
        .expect("groups")
        .clone()
}

/// Creates the stop file on drop, so a consumer holding the group leaves even if the test
/// panics while it waits (it would otherwise stay until its own --timeout).
struct StopFile(PathBuf);

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"stop");
    }
}

#[test]
fn describe_list_reset_and_delete_a_consumer_group() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();
    broker.create_topic(TOPIC, 3, &[]);

    // 30 records, 10 a partition, all read and committed by a consumer in group g1, which then
    // leaves.
    for p in 0..3 {
        produce(&b, p, 10);
    }
    let consumed = python_json(
        "groups_cli_consumer.py",
        &[
            "--bootstrap",
            &b,
            "--topic",
            TOPIC,
            "--group",
            "g1",
            "--count",
            "30",
        ],
    );
    assert_eq!(consumed["ok"], true, "{consumed}");
    assert_eq!(
        consumed["committed"],
        serde_json::json!({"0": 10, "1": 10, "2": 10}),
        "{consumed}"
    );
    // 7 more: the group lags by 3, 2 and 2.
    produce(&b, 0, 3);
    produce(&b, 1, 2);
    produce(&b, 2, 2);

    let report = wait_for_state(&b, "g1", "Empty", 0);
    assert_eq!(report["total_lag"], 7, "{report}");
    assert_eq!(report["protocol_type"], "consumer", "{report}");
    assert_eq!(report["coordinator"]["id"], 1, "{report}");
    assert_eq!(
        offsets(&report),
        vec![
            (0, Some(10), Some(13), Some(3)),
            (1, Some(10), Some(12), Some(2)),
            (2, Some(10), Some(12), Some(2)),
        ],
        "{report}"
    );
    let text = stdout(&skein_cli(&[
        "groups",
        "describe",
        "--bootstrap",
        &b,
        "--group",
        "g1",
    ]));
    assert!(
        text.contains("Consumer group 'g1' has no active members.")
            && text.contains("GROUP  TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG")
            && text
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == ["g1", TOPIC, "0", "10", "13", "3", "-", "-", "-"]),
        "{text}"
    );

    // list: on every broker, with state and protocol type; filtered by state.
    let listed = listed_groups(&b, &[]);
    assert!(
        listed.iter().any(|g| g["group"] == "g1"
            && g["state"] == "Empty"
            && g["protocol_type"] == "consumer"),
        "{listed:?}"
    );
    assert!(listed_groups(&b, &["--state", "empty"])
        .iter()
        .any(|g| g["group"] == "g1"));
    assert!(!listed_groups(&b, &["--state", "Stable"])
        .iter()
        .any(|g| g["group"] == "g1"));
    let text = stdout(&skein_cli(&["groups", "list", "--bootstrap", &b]));
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["g1", "Empty", "consumer"]),
        "{text}"
    );

    // Dry runs change nothing: --to-offset is clamped into the log, --to-datetime finds the
    // first record at or after the time (or the log end).
    let topic = ["--topic", TOPIC];
    let (plan, executed) = reset(&b, "g1", &[&topic[..], &["--to-offset", "5"]].concat());
    assert_eq!((plan, executed), (vec![(0, 5), (1, 5), (2, 5)], false));
    let (plan, _) = reset(&b, "g1", &["--topic", "orders:0,2", "--to-offset", "100"]);
    assert_eq!(plan, vec![(0, 13), (2, 12)]);
    let (plan, _) = reset(&b, "g1", &[&topic[..], &["--to-latest"]].concat());
    assert_eq!(plan, vec![(0, 13), (1, 12), (2, 12)]);
    let (plan, _) = reset(
        &b,
        "g1",
        &[&topic[..], &["--to-datetime", "2000-01-01T00:00:00Z"]].concat(),
    );
    assert_eq!(plan, vec![(0, 0), (1, 0), (2, 0)]);
    let (plan, _) = reset(
        &b,
        "g1",
        &[
            "--all-topics",
            "--to-datetime",
            "2100-01-01T00:00:00.000+01:00",
        ],
    );
    assert_eq!(plan, vec![(0, 13), (1, 12), (2, 12)]);
    assert_eq!(describe(&b, "g1")["total_lag"], 7);

    // --execute commits: back to the start, the lag is everything.
    let (plan, executed) = reset(
        &b,
        "g1",
        &[&topic[..], &["--to-earliest", "--execute"]].concat(),
    );
    assert_eq!((plan, executed), (vec![(0, 0), (1, 0), (2, 0)], true));
    let report = describe(&b, "g1");
    assert_eq!(report["total_lag"], 37, "{report}");
    assert_eq!(
        offsets(&report),
        vec![
            (0, Some(0), Some(13), Some(13)),
            (1, Some(0), Some(12), Some(12)),
            (2, Some(0), Some(12), Some(12)),
        ],
        "{report}"
    );

    // A member in the group: describe shows it and what it owns; reset and delete refuse.
    let work = tempfile::tempdir().expect("temp dir");
    let stop = StopFile(work.path().join("stop"));
    let holder = {
        let (b, stop) = (b.clone(), stop.0.to_string_lossy().into_owned());
        std::thread::spawn(move || {
            python_json(
                "groups_cli_consumer.py",
                &[
                    "--bootstrap",
                    &b,
                    "--topic",
                    TOPIC,
                    "--group",
                    "g1",
                    "--client-id",
                    "skein-test-holder",
                    "--stop-file",
                    &stop,
                    "--timeout",
                    "100",
                ],
            )
        })
    };
    let report = wait_for_state(&b, "g1", "Stable", 1);
    let member = &report["members"][0];
    assert_eq!(member["client_id"], "skein-test-holder", "{report}");
    assert_eq!(
        member["assignment"],
        serde_json::json!([
            {"topic": TOPIC, "partition": 0},
            {"topic": TOPIC, "partition": 1},
            {"topic": TOPIC, "partition": 2},
        ]),
        "{report}"
    );
    assert!(
        report["offsets"]
            .as_array()
            .expect("offsets")
            .iter()
            .all(|row| row["consumer_id"] == member["member_id"]
                && row["client_id"] == "skein-test-holder"),
        "{report}"
    );
    let refused = try_skein_cli(&[
        "groups",
        "reset-offsets",
        "--bootstrap",
        &b,
        "--group",
        "g1",
        "--topic",
        TOPIC,
        "--to-latest",
        "--execute",
    ]);
    assert!(
        !refused.status.success()
            && stderr(&refused).contains("inactive")
            && stderr(&refused).contains("Stable"),
        "{}",
        stderr(&refused)
    );
    let refused = try_skein_cli(&["groups", "delete", "--bootstrap", &b, "--group", "g1"]);
    assert!(
        !refused.status.success() && stdout(&refused).contains("NON_EMPTY_GROUP"),
        "{}{}",
        stdout(&refused),
        stderr(&refused)
    );
    drop(stop);
    let held = holder.join().expect("the holding consumer's thread");
    assert_eq!(held["ok"], true, "{held}");
    assert_eq!(held["assignment"], serde_json::json!([0, 1, 2]), "{held}");
    let report = wait_for_state(&b, "g1", "Empty", 0);
    assert_eq!(
        report["total_lag"], 37,
        "the holder committed nothing: {report}"
    );

    // An administrator may commit for a group that does not exist yet: it appears, Empty.
    let (plan, _) = reset(
        &b,
        "fresh",
        &["--topic", "orders:1", "--to-offset", "4", "--execute"],
    );
    assert_eq!(plan, vec![(1, 4)]);
    let report = describe(&b, "fresh");
    assert_eq!(report["state"], "Empty", "{report}");
    assert_eq!(offsets(&report), vec![(1, Some(4), Some(12), Some(8))]);

    // delete: gone from the list and from describe; a second delete names the error.
    let deleted = groups_json(&b, &["delete", "--group", "g1,fresh"]);
    assert_eq!(
        deleted["groups"],
        serde_json::json!([{"group": "g1", "error": null}, {"group": "fresh", "error": null}]),
        "{deleted}"
    );
    assert!(
        !listed_groups(&b, &[])
            .iter()
            .any(|g| g["group"] == "g1" || g["group"] == "fresh"),
        "deleted groups are not listed"
    );
    let missing = try_skein_cli(&["groups", "describe", "--bootstrap", &b, "--group", "g1"]);
    assert!(
        !missing.status.success() && stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
    let again = try_skein_cli(&["groups", "delete", "--bootstrap", &b, "--group", "g1"]);
    assert!(
        !again.status.success()
            && stdout(&again)
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["g1", "GROUP_ID_NOT_FOUND"]),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
}

/// Bad arguments fail before anything is asked of a cluster (no broker listens here).
#[test]
fn bad_arguments_fail_before_any_request() {
    let nowhere = "127.0.0.1:1";
    let fails = |args: &[&str], expected: &str| {
        let mut all = vec!["groups"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--bootstrap", nowhere]);
        let output = try_skein_cli(&all);
        assert!(
            !output.status.success() && stderr(&output).contains(expected),
            "skein {all:?}: expected a failure saying {expected:?}\n{}",
            stderr(&output)
        );
    };
    let reset = ["reset-offsets", "--group", "g", "--topic", "t"];
    fails(
        &[&reset[..], &["--to-datetime", "2026-02-30T10:00:00Z"]].concat(),
        "no such day",
    );
    fails(
        &[&reset[..], &["--to-datetime", "yesterday"]].concat(),
        "expected YYYY-MM-DDTHH:MM:SS",
    );
    fails(
        &[
            "reset-offsets",
            "--group",
            "g",
            "--topic",
            "t:x",
            "--to-latest",
        ],
        "'x' is not a partition number",
    );
    fails(&reset, "--to-earliest");
    fails(
        &[&reset[..], &["--to-earliest", "--to-latest"]].concat(),
        "cannot be used with",
    );
    fails(
        &[&reset[..], &["--to-latest", "--execute", "--dry-run"]].concat(),
        "cannot be used with",
    );
    fails(&["describe"], "--group");
    fails(&["list", "--state", "Rebalancing"], "not one of");
    // Well-formed, but nothing answers.
    fails(
        &["describe", "--group", "g"],
        "cannot connect to 127.0.0.1:1",
    );
}

/// On a new cluster the CLI is the first to ask for a group coordinator (which makes the
/// broker create `__consumer_offsets`): it waits for it, then works as usual.
#[test]
fn the_first_group_request_waits_for_the_coordinator() {
    let zk = ZooKeeper::start(1);
    let broker = Broker::start(&zk, BrokerOpts::id(1).shards(2));
    let b = broker.bootstrap();
    broker.create_topic(TOPIC, 3, &[]);

    let missing = try_skein_cli(&["groups", "describe", "--bootstrap", &b, "--group", "nobody"]);
    assert!(
        !missing.status.success()
            && stderr(&missing).contains("consumer group 'nobody' does not exist"),
        "{}",
        stderr(&missing)
    );
    let (plan, executed) = reset(
        &b,
        "fresh",
        &["--topic", TOPIC, "--to-earliest", "--execute"],
    );
    assert_eq!((plan, executed), (vec![(0, 0), (1, 0), (2, 0)], true));
    let listed = listed_groups(&b, &[]);
    assert_eq!(
        listed,
        vec![serde_json::json!({"group": "fresh", "state": "Empty", "protocol_type": ""})]
    );
    let deleted = groups_json(&b, &["delete", "--all-groups"]);
    assert_eq!(
        deleted["groups"],
        serde_json::json!([{"group": "fresh", "error": null}])
    );
    assert!(listed_groups(&b, &[]).is_empty());
}
