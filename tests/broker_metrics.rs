//! `/metrics` of a real broker process, scraped over real HTTP after real clients (kcat) produced
//! and consumed.

mod harness;

use std::collections::{BTreeMap, HashMap};

use harness::{http_get, kcat, kcat_with_input, Broker, BrokerOpts, ZooKeeper};

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses Prometheus text (label values here need no unescaping).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').unwrap();
                    let labels = rest
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap();
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// Values of `name` whose labels include all of `want`.
fn values(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Vec<f64> {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect()
}

fn one(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    match values(samples, name, want).as_slice() {
        [v] => *v,
        other => panic!("expected one {name}{want:?}, found {other:?}"),
    }
}

#[test]
fn metrics_show_traffic_offsets_latency_and_forwards() {
    let zk = ZooKeeper::start(1);
    let metrics_port = harness::free_port();
    let broker = Broker::start(
        &zk,
        BrokerOpts::id(1)
            .shards(2)
            .set("metrics.listener", &format!("\"127.0.0.1:{metrics_port}\"")),
    );
    let b = broker.bootstrap();
    let topic = "metered";
    broker.create_topic(topic, 4, &[]);

    // One kcat process, one producer connection, 200 distinct keys: every partition gets some
    // (librdkafka hashes keys), and with 2 shards some partitions are owned by the shard that did
    // not accept the connection, so their batches are forwarded.
    let input: String = (0..200).map(|i| format!("key-{i}:value-{i}\n")).collect();
    kcat_with_input(
        &["-b", &b, "-t", topic, "-P", "-K:", "-X", "acks=all"],
        input.as_bytes(),
    );
    let consumed = kcat(&["-b", &b, "-t", topic, "-C", "-e", "-q", "-f", "%p\n"]);
    let mut produced: HashMap<String, i64> = HashMap::new();
    for partition in String::from_utf8_lossy(&consumed.stdout).lines() {
        *produced.entry(partition.to_owned()).or_default() += 1;
    }
    assert_eq!(produced.values().sum::<i64>(), 200, "{produced:?}");
    assert_eq!(
        produced.len(),
        4,
        "every partition got messages: {produced:?}"
    );

    let (status, text) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text);
    eprintln!("SCRAPE>>>\n{text}<<<SCRAPE");

    assert_eq!(
        one(&samples, "skein_broker_info", &[("broker_id", "1")]),
        1.0
    );
    assert_eq!(one(&samples, "skein_shards", &[]), 2.0);
    // A lone broker: the controller, leader of every partition, each its own whole ISR.
    assert_eq!(one(&samples, "skein_controller_active", &[]), 1.0);
    assert_eq!(one(&samples, "skein_under_replicated_partitions", &[]), 0.0);
    for (partition, count) in &produced {
        let p: &[(&str, &str)] = &[("topic", topic), ("partition", partition)];
        assert!(
            one(&samples, "skein_partition_bytes_in_total", p) > 0.0,
            "{text}"
        );
        assert!(one(&samples, "skein_partition_produce_requests_total", p) >= 1.0);
        assert_eq!(
            one(&samples, "skein_partition_log_end_offset", p),
            *count as f64,
            "partition {partition}"
        );
        assert_eq!(
            one(&samples, "skein_partition_high_watermark", p),
            *count as f64
        );
        assert_eq!(one(&samples, "skein_partition_log_start_offset", p), 0.0);
        assert_eq!(one(&samples, "skein_partition_in_sync_replicas", p), 1.0);
        assert_eq!(one(&samples, "skein_partition_under_replicated", p), 0.0);
        assert_eq!(one(&samples, "skein_partition_segments", p), 1.0);
        assert!(one(&samples, "skein_partition_size_bytes", p) > 0.0);
        // Every acknowledged append was written by a group write; none is waiting any more.
        let writes = one(&samples, "skein_partition_segment_writes_total", p);
        assert!(writes >= 1.0 && writes <= *count as f64, "{writes} writes");
        assert!(one(&samples, "skein_partition_segment_write_seconds_total", p) > 0.0);
        assert_eq!(one(&samples, "skein_partition_appends_waiting", p), 0.0);
        assert!(one(&samples, "skein_partition_bytes_out_total", p) > 0.0);
        assert!(one(&samples, "skein_partition_fetch_requests_total", p) >= 1.0);
    }
    let owners: Vec<f64> = values(&samples, "skein_partition_owner_shard", &[("topic", topic)]);
    assert!(
        owners.contains(&0.0) && owners.contains(&1.0),
        "4 partitions spread over both shards: {owners:?}"
    );

    for shard in ["0", "1"] {
        let s: &[(&str, &str)] = &[("shard", shard)];
        // Present for both shards; the clients have disconnected, so nothing is left open but
        // whatever the harness holds.
        assert!(one(&samples, "skein_connections_active", s) >= 0.0);
        assert!(one(&samples, "skein_connections_accepted_total", s) >= 0.0);
        assert!(one(&samples, "skein_cross_core_forwards_total", s) >= 0.0);
        assert!(one(&samples, "skein_shard_jobs_received_total", s) >= 1.0);
    }
    let accepted: f64 = values(&samples, "skein_connections_accepted_total", &[])
        .iter()
        .sum();
    assert!(accepted >= 2.0, "producer and consumer connected: {text}");
    let forwards: f64 = values(&samples, "skein_cross_core_forwards_total", &[])
        .iter()
        .sum();
    assert!(
        forwards > 0.0,
        "produce to partitions on both shards: {text}"
    );
    let produce_requests: f64 = values(&samples, "skein_requests_total", &[("api", "Produce")])
        .iter()
        .sum();
    assert!(produce_requests >= 1.0, "{text}");
    assert!(
        values(&samples, "skein_requests_total", &[("api", "Fetch")])
            .iter()
            .sum::<f64>()
            >= 1.0
    );

    // Latency histograms: per shard, cumulative buckets ending in +Inf == _count.
    let mut produce_count = 0.0;
    for shard in ["0", "1"] {
        for family in [
            "skein_produce_latency_seconds",
            "skein_fetch_latency_seconds",
        ] {
            let buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|(n, l, _)| {
                    *n == format!("{family}_bucket")
                        && l.get("shard").map(String::as_str) == Some(shard)
                })
                .map(|(_, l, v)| {
                    let le = match l["le"].as_str() {
                        "+Inf" => f64::INFINITY,
                        le => le.parse().unwrap(),
                    };
                    (le, *v)
                })
                .collect();
            assert!(buckets.len() > 10, "{family} shard {shard}: {buckets:?}");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} shard {shard}: buckets not cumulative: {buckets:?}"
            );
            let count = one(&samples, &format!("{family}_count"), &[("shard", shard)]);
            assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
            assert!(one(&samples, &format!("{family}_sum"), &[("shard", shard)]) >= 0.0);
            if family == "skein_produce_latency_seconds" {
                produce_count += count;
            }
        }
    }
    assert!(produce_count >= 1.0, "{text}");

    let (status, _) = http_get(metrics_port, "/");
    assert_eq!(status, 404);
    let (status, _) = http_get(metrics_port, "/metrics/extra");
    assert_eq!(status, 404);

    // Counters only grow between scrapes.
    let (status, again) = http_get(metrics_port, "/metrics");
    assert_eq!(status, 200);
    let again = parse(&again);
    let p: &[(&str, &str)] = &[("topic", topic), ("partition", "0")];
    assert_eq!(
        one(&again, "skein_partition_bytes_in_total", p),
        one(&samples, "skein_partition_bytes_in_total", p)
    );
}

#[test]
fn metrics_port_in_use_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The port is checked before ZooKeeper is contacted, so none is needed.
    let (status, stderr) = Broker::start_expect_failure_with_config(&format!(
        "broker.id = 1\n\
         listeners = \"PLAINTEXT://127.0.0.1:{}\"\n\
         log.dirs = \"data\"\n\
         zookeeper.connect = \"127.0.0.1:1\"\n\
         metrics.listener = \"127.0.0.1:{port}\"\n",
        harness::free_port()
    ));
    assert!(!status.success());
    assert!(
        stderr.contains("metrics.listener") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
}
