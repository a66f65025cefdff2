//! Producing with `tests/clients/acked_producer.py` (every acknowledged record written down) and
//! reading a topic back with `read_all.py`, and the check between the two: every acknowledged
//! record exactly once, at its acknowledged offset, in produce order.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{python_json, BackgroundClient};

/// How long acked_producer.py waits for outstanding deliveries once it stops producing.
pub const FLUSH_SECS: u64 = 30;

/// A temp dir for a test's acked and read-back files ([`assert_no_problems`] keeps it on failure).
pub fn work_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("skein-replication-{name}-"))
        .tempdir()
        .expect("create a temp dir")
}

/// Seconds since the epoch, as acked_producer.py stamps each acknowledgement.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// acked_producer.py's arguments: the common ones, then `extra` (which add or override).
fn producer_args(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    acked: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--partitions",
        &partitions.to_string(),
        "--acked",
        &acked.display().to_string(),
        "--flush-seconds",
        &FLUSH_SECS.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts acked_producer.py in the background; `extra` adds or overrides its options.
pub fn start_producer(
    name: &str,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    acked: &Path,
    extra: &[&str],
) -> BackgroundClient {
    let args = producer_args(bootstrap, topic, partitions, acked, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BackgroundClient::python(name, "acked_producer.py", &args)
}

/// Runs acked_producer.py to the end in the foreground and returns its summary.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    acked: &Path,
    extra: &[&str],
) -> Value {
    // Bounded by the harness's client time limit (120 s): keep --seconds + --flush-seconds below.
    let args = producer_args(bootstrap, topic, partitions, acked, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python_json("acked_producer.py", &args)
}

/// Waits (bounded) for a background acked_producer.py to exit and returns its JSON summary.
pub fn producer_summary(client: &mut BackgroundClient, timeout: Duration) -> Value {
    client.wait(timeout);
    let stdout = client.stdout();
    super::last_json_line(&stdout).unwrap_or_else(|e| {
        panic!(
            "acked_producer.py printed no JSON summary ({e}); stdout:\n{stdout}\nstderr tail:\n{}",
            client.stderr_tail()
        )
    })
}

/// Problems a producer's summary shows: a fatal error, deliveries that failed, messages that
/// never got a report.
pub fn producer_problems(summary: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !summary["fatal"].is_null() {
        problems.push(format!(
            "the idempotent producer hit a fatal error: {}",
            summary["fatal"]
        ));
    }
    if summary["failed"].as_object().is_some_and(|f| !f.is_empty()) {
        problems.push(format!(
            "deliveries failed (every one should have been retried to success): {} first ones: {}",
            summary["failed"], summary["failures"]
        ));
    }
    if summary["outstanding"].as_i64() != Some(0) {
        problems.push(format!(
            "{} messages had no delivery report {FLUSH_SECS} s after the producer stopped",
            summary["outstanding"]
        ));
    }
    problems
}

/// One line of acked_producer.py's --acked file.
#[derive(Clone, Debug)]
pub struct Acked {
    pub partition: i64,
    pub offset: i64,
    pub value: String,
    pub unix_s: f64,
}

/// Every acknowledgement in the file so far (a torn last line is left out).
pub fn read_acked(path: &Path) -> Vec<Acked> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            Some(Acked {
                partition: fields.next()?.parse().ok()?,
                offset: fields.next()?.parse().ok()?,
                value: fields.next()?.to_owned(),
                unix_s: fields.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// (prefix, partition, seq) of a value acked_producer.py produced: `<prefix>:<partition>:<seq>`.
pub fn parse_value(value: &str) -> Option<(&str, i64, i64)> {
    let mut fields = value.split(':');
    let parsed = (
        fields.next()?,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    );
    fields.next().is_none().then_some(parsed)
}

/// A topic as read_all.py read it: records up to each partition's high watermark.
#[derive(Debug, Default)]
pub struct TopicLog {
    pub records: BTreeMap<i64, Vec<(i64, String)>>,
    pub high_watermarks: BTreeMap<i64, i64>,
    pub beyond_high_watermark: BTreeMap<i64, Vec<(i64, String)>>,
}

fn partition_map<T>(value: &Value, item: impl Fn(&Value) -> T) -> BTreeMap<i64, T> {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(p, v)| (p.parse().expect("partition id"), item(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn records(value: &Value) -> Vec<(i64, String)> {
    value
        .as_array()
        .map(|records| {
            records
                .iter()
                .map(|r| {
                    let offset = r[0].as_i64().expect("offset");
                    (offset, r[1].as_str().unwrap_or("<null>").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Reads every partition up to its high watermark with read_all.py (and `linger` seconds past).
pub fn read_topic(bootstrap: &str, topic: &str, dir: &Path, linger: f64) -> TopicLog {
    let out = dir.join(format!("read-{topic}.json"));
    let (out_arg, linger) = (out.display().to_string(), linger.to_string());
    let summary = python_json(
        "read_all.py",
        &[
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--out",
            &out_arg,
            "--timeout",
            "90",
            "--linger",
            &linger,
        ],
    );
    assert_eq!(summary["ok"], true, "{summary}");
    let text = std::fs::read_to_string(&out).expect("read_all.py --out file");
    let read: Value = serde_json::from_str(&text).expect("read_all.py --out is JSON");
    TopicLog {
        records: partition_map(&read["partitions"], records),
        high_watermarks: partition_map(&read["high_watermarks"], |v| {
            v.as_i64().expect("a watermark")
        }),
        beyond_high_watermark: partition_map(&read["beyond_high_watermark"], records),
    }
}

/// What is wrong between the acknowledged records and the log read back; empty when every
/// acknowledged record is there exactly once, at its acknowledged offset, and each producer's
/// records stand in produce order in their partition with none written twice.
pub fn read_back_problems(acked: &[Acked], log: &TopicLog) -> Vec<String> {
    let mut problems = Vec::new();
    let mut at: HashMap<(i64, i64), &str> = HashMap::new();
    let mut seen: HashMap<&str, (i64, i64)> = HashMap::new();
    for (&partition, records) in &log.records {
        // Per producer run (value prefix): the last sequence number and its offset.
        let mut last: HashMap<&str, (i64, i64)> = HashMap::new();
        for (offset, value) in records {
            at.insert((partition, *offset), value);
            if let Some((p, o)) = seen.insert(value, (partition, *offset)) {
                problems.push(format!(
                    "'{value}' is in the log twice: partition {p} offset {o}, and partition \
                     {partition} offset {offset}"
                ));
            }
            let Some((prefix, produced_to, seq)) = parse_value(value) else {
                problems.push(format!(
                    "partition {partition} offset {offset}: '{value}' was never produced"
                ));
                continue;
            };
            if produced_to != partition {
                problems.push(format!(
                    "'{value}' (produced to partition {produced_to}) is in partition {partition}"
                ));
            }
            if let Some((last_seq, last_offset)) = last.insert(prefix, (seq, *offset)) {
                if seq <= last_seq {
                    problems.push(format!(
                        "partition {partition}: '{value}' at offset {offset} comes after \
                         '{prefix}:{partition}:{last_seq}' at offset {last_offset}: out of \
                         produce order"
                    ));
                }
            }
        }
    }
    for a in acked {
        match at.get(&(a.partition, a.offset)) {
            Some(&value) if value == a.value => {}
            Some(&value) => problems.push(format!(
                "'{}' was acknowledged at partition {} offset {}, but the log has '{value}' there",
                a.value, a.partition, a.offset
            )),
            None => problems.push(format!(
                "'{}' acknowledged at partition {} offset {} is not in the log (high watermark \
                 {:?})",
                a.value,
                a.partition,
                a.offset,
                log.high_watermarks.get(&a.partition)
            )),
        }
    }
    problems
}

/// Panics listing `problems` (keeping the work dir with the acked and read-back files), if any.
pub fn assert_no_problems(what: &str, problems: &[String], dir: tempfile::TempDir) {
    let keep = std::env::var("SKEIN_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    if problems.is_empty() {
        if keep {
            eprintln!("keeping {}", dir.keep().display());
        }
        return;
    }
    let kept = dir.keep();
    let shown: Vec<&str> = problems.iter().take(40).map(String::as_str).collect();
    panic!(
        "{what}: {} problems (acknowledged and read-back records kept in {}):\n{}",
        problems.len(),
        kept.display(),
        shown.join("\n")
    );
}

/// The partition with the longest pause between two acknowledgements, and that pause in seconds.
pub fn longest_gap(summary: &Value) -> (String, f64) {
    summary["longest_ack_gap_s"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(p, g)| Some((p.clone(), g.as_f64()?)))
        .fold((String::from("-"), 0.0), |best, (p, g)| {
            if g > best.1 {
                (p, g)
            } else {
                best
            }
        })
}
