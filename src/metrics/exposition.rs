//! Renders shard snapshots as Prometheus text exposition format (version 0.0.4). Runs on the
//! control thread, once per scrape.
//!
//! Per-partition traffic counters are summed over the shards that handled the requests, and carry
//! only `topic` and `partition` labels, so a partition's series stay the same whichever shard a
//! client's connection landed on; `skein_partition_owner_shard` says which shard owns it.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use kafka_protocol::messages::ApiKey;

use super::{
    ClosedBy, LatencySnapshot, Leading, PartitionGauges, PartitionTraffic, ShardSnapshot,
    LATENCY_BUCKETS_US,
};

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole page for one scrape.
pub fn render(broker_id: i32, snapshots: &[ShardSnapshot]) -> String {
    let mut shards: Vec<&ShardSnapshot> = snapshots.iter().collect();
    shards.sort_by_key(|s| s.shard);
    let mut out = Text::default();

    out.family("skein_broker_info", "gauge", "This broker; always 1.");
    out.sample(
        "skein_broker_info",
        &[("broker_id", &broker_id.to_string())],
        1,
    );
    out.family(
        "skein_shards",
        "gauge",
        "Shards (pinned executors) this broker runs.",
    );
    out.sample("skein_shards", &[] as &[(&str, &str)], shards.len());

    out.family(
        "skein_controller_active",
        "gauge",
        "1 while this broker's metadata (the controller's last UpdateMetadata) names it the controller (Kafka's ActiveControllerCount).",
    );
    let active = shards.first().is_some_and(|s| s.controller_id == broker_id);
    out.sample(
        "skein_controller_active",
        &[] as &[(&str, &str)],
        u64::from(active),
    );

    shard_metrics(&mut out, &shards);
    partition_metrics(&mut out, &shards);
    replication_metrics(&mut out, &shards);
    group_metrics(&mut out, &shards);
    out.0
}

/// Consumer groups: members, committed offsets and lag. Lag is the high watermark minus the
/// committed offset, for the partitions this broker hosts (their owner shards' gauges in the same
/// scrape: nothing is read from the logs); a group's total is the sum over those partitions.
fn group_metrics(out: &mut Text, shards: &[&ShardSnapshot]) {
    let high_watermarks: std::collections::HashMap<(&str, i32), i64> = shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let mut groups: Vec<&crate::metrics::GroupGauges> =
        shards.iter().flat_map(|s| s.groups.iter()).collect();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    out.family(
        "skein_group_members",
        "gauge",
        "Members of a consumer group this broker coordinates.",
    );
    for g in &groups {
        out.sample("skein_group_members", &[("group", &g.group)], g.members);
    }
    out.family(
        "skein_group_committed_offset",
        "gauge",
        "A consumer group's committed offset (the next record it will read) of a partition.",
    );
    for g in &groups {
        for (topic, partition, offset) in &g.committed {
            out.sample(
                "skein_group_committed_offset",
                &group_labels(&g.group, topic, *partition),
                offset,
            );
        }
    }
    out.family(
        "skein_group_lag",
        "gauge",
        "Records of a partition a consumer group has not committed yet: high watermark minus committed offset (partitions hosted on this broker).",
    );
    let mut totals = Vec::with_capacity(groups.len());
    for g in &groups {
        let mut total = 0i64;
        for (topic, partition, offset) in &g.committed {
            let Some(hw) = high_watermarks.get(&(topic.as_str(), *partition)) else {
                continue;
            };
            let lag = (hw - offset).max(0);
            total += lag;
            out.sample(
                "skein_group_lag",
                &group_labels(&g.group, topic, *partition),
                lag,
            );
        }
        totals.push((&g.group, total));
    }
    out.family(
        "skein_group_lag_total",
        "gauge",
        "A consumer group's lag summed over its committed partitions hosted on this broker.",
    );
    for (group, total) in totals {
        out.sample("skein_group_lag_total", &[("group", group)], total);
    }
}

fn group_labels(group: &str, topic: &str, partition: i32) -> [(&'static str, String); 3] {
    [
        ("group", group.to_owned()),
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

fn shard_metrics(out: &mut Text, shards: &[&ShardSnapshot]) {
    let per_shard =
        |out: &mut Text, name: &str, kind: &str, help: &str, value: fn(&ShardSnapshot) -> u64| {
            out.family(name, kind, help);
            for s in shards {
                out.sample(name, &[("shard", &s.shard.to_string())], value(s));
            }
        };
    out.family(
        "skein_requests_total",
        "counter",
        "Kafka requests handled, by the shard whose connection received them and by API.",
    );
    for s in shards {
        for r in &s.counters.requests {
            let labels = [
                ("shard", &*s.shard.to_string()),
                ("api", &api_name(r.api_key)),
            ];
            out.sample("skein_requests_total", &labels, r.requests);
        }
    }
    out.family(
        "skein_request_errors_total",
        "counter",
        "Kafka requests that could not be answered (malformed, unsupported); the connection was closed.",
    );
    for s in shards {
        for r in &s.counters.requests {
            let labels = [
                ("shard", &*s.shard.to_string()),
                ("api", &api_name(r.api_key)),
            ];
            out.sample("skein_request_errors_total", &labels, r.errors);
        }
    }
    per_shard(
        out,
        "skein_connections_active",
        "gauge",
        "Client connections open on the shard.",
        |s| s.counters.connections_active,
    );
    per_shard(
        out,
        "skein_connections_accepted_total",
        "counter",
        "Client connections the shard accepted.",
        |s| s.counters.connections_accepted,
    );
    per_shard(
        out,
        "skein_connections_refused_total",
        "counter",
        "Client connections the shard closed at once: max.connections, max.connections.per.ip or the shard's max_connections reached.",
        |s| s.counters.connections_refused,
    );
    out.family(
        "skein_connections_closed_total",
        "counter",
        "Client connections the shard closed because of a limit: idle (connections.max.idle.ms), stalled (connections.max.stall.ms), frame_size (socket.request.max.bytes), malformed (a request that does not decode or is not served), busy (a request naming more partitions than the request budget could hold), acks0_error (an acks=0 produce that failed).",
    );
    for s in shards {
        for why in ClosedBy::ALL {
            let labels = [("shard", &*s.shard.to_string()), ("reason", why.label())];
            out.sample(
                "skein_connections_closed_total",
                &labels,
                s.counters.connections_closed[why as usize],
            );
        }
    }
    per_shard(
        out,
        "skein_request_budget_waits_total",
        "counter",
        "Request frames that waited for the shard's request-memory budget (queued.max.request.bytes).",
        |s| s.counters.request_budget_waits,
    );
    per_shard(
        out,
        "skein_cross_core_forwards_total",
        "counter",
        "Partition work this shard sent to the shard that owns the partition.",
        |s| s.counters.forwards_sent,
    );
    per_shard(
        out,
        "skein_shard_jobs_received_total",
        "counter",
        "Jobs this shard ran from its queue: forwards from other shards, metadata updates, scrapes.",
        |s| s.counters.jobs_received,
    );
    out.histogram(
        "skein_produce_latency_seconds",
        "Produce request time on the shard that received it, from decoding to the response being ready.",
        shards.iter().map(|s| (s.shard, &s.counters.produce_latency)),
    );
    out.histogram(
        "skein_fetch_latency_seconds",
        "Fetch request time on the shard that received it, including long-poll waiting (max.wait.ms).",
        shards.iter().map(|s| (s.shard, &s.counters.fetch_latency)),
    );
}

/// Name, help, and the value of one per-partition counter family.
type TrafficFamily = (&'static str, &'static str, fn(&PartitionTraffic) -> u64);
/// Name, help, and the value (from the owner shard and the partition) of one gauge family; i128
/// holds both the i64 offsets and the u64 sizes.
type GaugeFamily = (
    &'static str,
    &'static str,
    fn(usize, &PartitionGauges) -> i128,
);

/// Name, help, and the value of one per-partition counter family the owner shard reports.
type CounterFamily = (&'static str, &'static str, fn(&PartitionGauges) -> f64);

fn partition_metrics(out: &mut Text, shards: &[&ShardSnapshot]) {
    let mut traffic: BTreeMap<(&str, i32), PartitionTraffic> = BTreeMap::new();
    for s in shards {
        for (topic, partition, t) in &s.counters.traffic {
            traffic.entry((topic, *partition)).or_default().add(t);
        }
    }
    let counters: [TrafficFamily; 6] = [
        (
            "skein_partition_produce_requests_total",
            "Produce requests for the partition (one per partition in a request).",
            |t| t.produce_requests,
        ),
        (
            "skein_partition_produce_errors_total",
            "Produce requests for the partition answered with an error code.",
            |t| t.produce_errors,
        ),
        (
            "skein_partition_bytes_in_total",
            "Record batch bytes of produce requests the partition accepted.",
            |t| t.bytes_in,
        ),
        (
            "skein_partition_fetch_requests_total",
            "Fetch requests for the partition (one per partition in a request).",
            |t| t.fetch_requests,
        ),
        (
            "skein_partition_fetch_errors_total",
            "Fetch requests for the partition answered with an error code.",
            |t| t.fetch_errors,
        ),
        (
            "skein_partition_bytes_out_total",
            "Record batch bytes sent to clients in fetch responses for the partition.",
            |t| t.bytes_out,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        for ((topic, partition), t) in &traffic {
            out.sample(name, &partition_labels(topic, *partition), value(t));
        }
    }

    let mut owned: Vec<(usize, &PartitionGauges)> = shards
        .iter()
        .flat_map(|s| s.partitions.iter().map(move |p| (s.shard, p)))
        .collect();
    owned.sort_by(|a, b| (&a.1.topic, a.1.partition).cmp(&(&b.1.topic, b.1.partition)));
    let gauges: [GaugeFamily; 7] = [
        (
            "skein_partition_owner_shard",
            "The shard of this broker that owns the partition.",
            |shard, _| shard as i128,
        ),
        (
            "skein_partition_log_start_offset",
            "First offset still in the partition's log.",
            |_, p| p.log_start_offset.into(),
        ),
        (
            "skein_partition_log_end_offset",
            "Offset the partition's next appended record will get.",
            |_, p| p.log_end_offset.into(),
        ),
        (
            "skein_partition_high_watermark",
            "Offset up to which the partition's records are visible to consumers.",
            |_, p| p.high_watermark.into(),
        ),
        (
            "skein_partition_size_bytes",
            "Bytes of the partition's segment files.",
            |_, p| p.size_bytes.into(),
        ),
        (
            "skein_partition_segments",
            "Segments in the partition's log.",
            |_, p| p.segments.into(),
        ),
        (
            "skein_partition_appends_waiting",
            "Produce appends to the partition not yet acknowledged: queued or being written. Grows when the disk cannot keep up.",
            |_, p| p.appends_waiting.into(),
        ),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        for (shard, p) in &owned {
            out.sample(
                name,
                &partition_labels(&p.topic, p.partition),
                value(*shard, p),
            );
        }
    }
    let write_counters: [CounterFamily; 2] = [
        (
            "skein_partition_segment_writes_total",
            "Group writes of the partition's appended data (one pwritev each, on the shard's writer thread).",
            |p| p.segment_writes as f64,
        ),
        (
            "skein_partition_segment_write_seconds_total",
            "Time the partition's group writes took, from hand-off to the writer thread to done (waiting for other partitions' writes and the kernel's throttling included).",
            |p| p.segment_write_us as f64 / 1e6,
        ),
    ];
    for (name, help, value) in write_counters {
        out.family(name, "counter", help);
        for (_, p) in &owned {
            out.sample(name, &partition_labels(&p.topic, p.partition), value(p));
        }
    }
}

/// Kafka's replication health, for the partitions this broker leads: ISR size, whether the ISR
/// is short of the assignment (UnderReplicated, and the broker-wide count), each follower's lag.
fn replication_metrics(out: &mut Text, shards: &[&ShardSnapshot]) {
    let mut led: Vec<(&PartitionGauges, &Leading)> = shards
        .iter()
        .flat_map(|s| s.partitions.iter())
        .filter_map(|p| p.leading.as_ref().map(|l| (p, l)))
        .collect();
    led.sort_by(|a, b| (&a.0.topic, a.0.partition).cmp(&(&b.0.topic, b.0.partition)));
    let under = |p: &PartitionGauges, l: &Leading| l.isr < p.replicas;
    out.family(
        "skein_under_replicated_partitions",
        "gauge",
        "Partitions this broker leads whose ISR is smaller than their replica set.",
    );
    out.sample(
        "skein_under_replicated_partitions",
        &[] as &[(&str, &str)],
        led.iter().filter(|(p, l)| under(p, l)).count(),
    );
    out.family(
        "skein_partition_in_sync_replicas",
        "gauge",
        "Size of the ISR of a partition this broker leads.",
    );
    for (p, l) in &led {
        out.sample(
            "skein_partition_in_sync_replicas",
            &partition_labels(&p.topic, p.partition),
            l.isr,
        );
    }
    out.family(
        "skein_partition_under_replicated",
        "gauge",
        "1 if a partition this broker leads has fewer in-sync replicas than replicas.",
    );
    for (p, l) in &led {
        out.sample(
            "skein_partition_under_replicated",
            &partition_labels(&p.topic, p.partition),
            u64::from(under(p, l)),
        );
    }
    out.family(
        "skein_partition_follower_lag_offsets",
        "gauge",
        "Records a follower of a partition this broker leads is behind the leader's log end.",
    );
    for (p, l) in &led {
        for (replica, lag) in &l.follower_lag {
            let [topic, partition] = partition_labels(&p.topic, p.partition);
            out.sample(
                "skein_partition_follower_lag_offsets",
                &[topic, partition, ("replica", replica.to_string())],
                *lag,
            );
        }
    }
}

fn partition_labels(topic: &str, partition: i32) -> [(&'static str, String); 2] {
    [
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ]
}

fn api_name(key: Option<i16>) -> String {
    match key.map(ApiKey::try_from) {
        Some(Ok(api)) => format!("{api:?}"),
        Some(Err(_)) | None => "unknown".to_owned(),
    }
}

/// `le` of a bucket bound given in microseconds, in seconds: `0.00005`, `1`, `2.5`.
fn le_seconds(us: u64) -> String {
    (us as f64 / 1e6).to_string()
}

/// The page being built.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        labels: &[(K, V)],
        value: impl Display,
    ) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(
                    self.0,
                    "{}=\"{}\"",
                    key.as_ref(),
                    escape_label(value.as_ref())
                );
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One histogram family with a series per shard: cumulative `_bucket`s ending in `+Inf`, then
    /// `_sum` and `_count`.
    fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl Iterator<Item = (usize, &'a LatencySnapshot)>,
    ) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (shard, h) in series {
            let shard = shard.to_string();
            for (i, &le) in LATENCY_BUCKETS_US.iter().enumerate() {
                let count = h.buckets.get(i).copied().unwrap_or(0);
                self.sample(
                    &bucket,
                    &[("shard", &*shard), ("le", &le_seconds(le))],
                    count,
                );
            }
            self.sample(&bucket, &[("shard", &*shard), ("le", "+Inf")], h.count);
            self.sample(
                &format!("{name}_sum"),
                &[("shard", &*shard)],
                h.sum_us as f64 / 1e6,
            );
            self.sample(&format!("{name}_count"), &[("shard", &*shard)], h.count);
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and newline (not quotes).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ApiRequests, ShardCounters};

    fn snapshot(shard: usize) -> ShardSnapshot {
        ShardSnapshot {
            controller_id: 2,
            shard,
            counters: ShardCounters {
                requests: vec![
                    ApiRequests {
                        api_key: Some(0),
                        requests: 7,
                        errors: 1,
                    },
                    ApiRequests {
                        api_key: None,
                        requests: 2,
                        errors: 2,
                    },
                ],
                produce_latency: LatencySnapshot {
                    buckets: (0..LATENCY_BUCKETS_US.len() as u64)
                        .map(|i| i.min(4))
                        .collect(),
                    count: 5,
                    sum_us: 1_500_000,
                },
                connections_active: 3,
                forwards_sent: 9,
                traffic: vec![(
                    "orders".to_owned(),
                    1,
                    PartitionTraffic {
                        bytes_in: 100,
                        ..Default::default()
                    },
                )],
                ..Default::default()
            },
            partitions: vec![PartitionGauges {
                topic: format!("t{shard}"),
                partition: 0,
                log_start_offset: 0,
                log_end_offset: 42,
                high_watermark: 42,
                size_bytes: 4096,
                segments: 1,
                appends_waiting: 3,
                segment_writes: 7,
                segment_write_us: 1_500_000,
                replicas: 3,
                // Shard 0 leads t0-0 with replica 3 out of the ISR; shard 1 follows t1-0.
                leading: (shard == 0).then(|| Leading {
                    isr: 2,
                    follower_lag: vec![(2, 0), (3, 40)],
                }),
            }],
            // A group on shard 0 that committed t0-0 (owned by shard 0) and t1-0 (shard 1).
            groups: if shard == 0 {
                vec![crate::metrics::GroupGauges {
                    group: "g".to_owned(),
                    state: crate::group::GroupState::Stable,
                    members: 2,
                    committed: vec![("t0".to_owned(), 0, 40), ("t1".to_owned(), 0, 12)],
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn group_lag_joins_commits_with_the_owner_shards_high_watermarks() {
        let text = render(1, &[snapshot(0), snapshot(1)]);
        assert!(
            text.contains("skein_group_members{group=\"g\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("skein_group_lag{group=\"g\",topic=\"t0\",partition=\"0\"} 2\n"));
        assert!(text.contains("skein_group_lag{group=\"g\",topic=\"t1\",partition=\"0\"} 30\n"));
        assert!(text.contains("skein_group_lag_total{group=\"g\"} 32\n"));
    }

    fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        text.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels, value.parse().unwrap()))
        })
    }

    #[test]
    fn replication_health_is_reported_for_led_partitions_only() {
        let text = render(1, &[snapshot(0), snapshot(1)]);
        let value = |name: &str| samples(&text, name).map(|(_, v)| v).collect::<Vec<_>>();
        assert_eq!(value("skein_under_replicated_partitions"), vec![1.0]);
        assert_eq!(value("skein_partition_in_sync_replicas"), vec![2.0]);
        assert_eq!(value("skein_partition_under_replicated"), vec![1.0]);
        assert!(text.contains(
            "skein_partition_follower_lag_offsets{topic=\"t0\",partition=\"0\",replica=\"3\"} 40\n"
        ));
        assert_eq!(value("skein_controller_active"), vec![0.0]);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        let mut text = Text::default();
        text.sample("m", &[("topic", "we\"ird\\")], 1);
        assert_eq!(text.0, "m{topic=\"we\\\"ird\\\\\"} 1\n");
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let text = render(1, &[snapshot(1), snapshot(0)]);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{name} has no TYPE line: {line}");
            assert!(name.starts_with("skein_"), "{line}");
        }
        assert!(
            text.contains("skein_broker_info{broker_id=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("skein_shards 2\n"));
        assert!(text.contains("skein_requests_total{shard=\"0\",api=\"Produce\"} 7\n"));
        assert!(text.contains("skein_request_errors_total{shard=\"1\",api=\"unknown\"} 2\n"));
        // Traffic of one partition seen by two shards is summed.
        assert!(
            text.contains("skein_partition_bytes_in_total{topic=\"orders\",partition=\"1\"} 200\n")
        );
        assert!(text.contains("skein_partition_owner_shard{topic=\"t1\",partition=\"0\"} 1\n"));
        assert!(text.contains("skein_partition_log_end_offset{topic=\"t0\",partition=\"0\"} 42\n"));
        assert!(text.contains("skein_partition_appends_waiting{topic=\"t0\",partition=\"0\"} 3\n"));
        assert!(
            text.contains("skein_partition_segment_writes_total{topic=\"t0\",partition=\"0\"} 7\n")
        );
        assert!(text.contains(
            "skein_partition_segment_write_seconds_total{topic=\"t0\",partition=\"0\"} 1.5\n"
        ));
        // Shards in order, whatever order they answered in.
        let first = text.find("skein_connections_active{shard=\"0\"}").unwrap();
        assert!(first < text.find("skein_connections_active{shard=\"1\"}").unwrap());
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let text = render(1, &[snapshot(0)]);
        let buckets: Vec<(&str, f64)> =
            samples(&text, "skein_produce_latency_seconds_bucket").collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(buckets[0].0, "{shard=\"0\",le=\"0.00005\"}");
        assert!(buckets.iter().any(|(l, _)| *l == "{shard=\"0\",le=\"1\"}"));
        assert_eq!(buckets.last().unwrap(), &("{shard=\"0\",le=\"+Inf\"}", 5.0));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        let sum: Vec<_> = samples(&text, "skein_produce_latency_seconds_sum").collect();
        assert_eq!(sum, vec![("{shard=\"0\"}", 1.5)]);
        let count: Vec<_> = samples(&text, "skein_produce_latency_seconds_count").collect();
        assert_eq!(count, vec![("{shard=\"0\"}", 5.0)]);
    }
}
