//! `skein groups describe`: a group's state and members, and per partition its committed
//! offset, log end offset and lag, as `kafka-consumer-groups.sh --describe` prints them.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Serialize;

use super::{dash_if_empty, format_table, print_json};
use crate::client::cluster::LATEST;
use crate::client::groups::{
    Assignment, GroupAdmin, GroupDescription, MemberDescription, TopicPartition,
};

/// One partition of a group, as `kafka-consumer-groups.sh --describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct OffsetRow {
    topic: String,
    partition: i32,
    /// The committed offset; `None` for a partition assigned but never committed.
    current_offset: Option<i64>,
    /// `None` when the partition's leader could not tell.
    log_end_offset: Option<i64>,
    /// Log end minus committed, when both are known.
    lag: Option<i64>,
    consumer_id: Option<String>,
    host: Option<String>,
    client_id: Option<String>,
}

/// The rows of the lag table: every partition with a committed offset or an owner, sorted,
/// each with its owner (if any) and its lag.
fn offset_rows(
    committed: &BTreeMap<TopicPartition, i64>,
    log_ends: &BTreeMap<TopicPartition, i64>,
    members: &[MemberDescription],
) -> Vec<OffsetRow> {
    let mut owners: BTreeMap<TopicPartition, &MemberDescription> = BTreeMap::new();
    for m in members {
        if let Assignment::Partitions(partitions) = &m.assignment {
            for tp in partitions {
                owners.insert(tp.clone(), m);
            }
        }
    }
    let mut partitions: Vec<&TopicPartition> = committed.keys().chain(owners.keys()).collect();
    partitions.sort();
    partitions.dedup();
    partitions
        .into_iter()
        .map(|tp| {
            let current_offset = committed.get(tp).copied();
            let log_end_offset = log_ends.get(tp).copied();
            let owner = owners.get(tp);
            OffsetRow {
                topic: tp.0.clone(),
                partition: tp.1,
                current_offset,
                log_end_offset,
                lag: current_offset.zip(log_end_offset).map(|(c, e)| e - c),
                consumer_id: owner.map(|m| m.member_id.clone()),
                host: owner.map(|m| m.client_host.clone()),
                client_id: owner.map(|m| m.client_id.clone()),
            }
        })
        .collect()
}

/// Kafka's lag table (`--describe`), one row per partition.
fn lag_table(group: &str, rows: &[OffsetRow]) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let number = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                group.to_owned(),
                r.topic.clone(),
                r.partition.to_string(),
                number(r.current_offset),
                number(r.log_end_offset),
                number(r.lag),
                or_dash(&r.consumer_id),
                or_dash(&r.host),
                or_dash(&r.client_id),
            ]
        })
        .collect();
    format_table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &rows,
    )
}

#[derive(Serialize)]
struct CoordinatorJson {
    id: i32,
    host: String,
    port: i32,
}

#[derive(Serialize)]
struct PartitionJson {
    topic: String,
    partition: i32,
}

#[derive(Serialize)]
struct MemberJson {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    host: String,
    /// `None` when the assignment is not a consumer group's or does not decode.
    assignment: Option<Vec<PartitionJson>>,
    /// The assignment as the table shows it.
    #[serde(skip)]
    assignment_text: String,
}

/// What `describe --json` prints for one group.
#[derive(Serialize)]
struct GroupReport {
    group: String,
    coordinator: Option<CoordinatorJson>,
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberJson>,
    offsets: Vec<OffsetRow>,
    /// The sum of the known lags.
    total_lag: i64,
}

/// A member's assignment as Kafka's `--members --verbose` prints it: `t(0,1),u(2)`.
fn assignment_text(assignment: &Assignment) -> String {
    match assignment {
        Assignment::Partitions(partitions) if partitions.is_empty() => "-".to_owned(),
        Assignment::Partitions(partitions) => {
            let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (topic, partition) in partitions {
                by_topic
                    .entry(topic.as_str())
                    .or_default()
                    .push(partition.to_string());
            }
            by_topic
                .iter()
                .map(|(topic, ps)| format!("{topic}({})", ps.join(",")))
                .collect::<Vec<_>>()
                .join(",")
        }
        Assignment::Opaque { bytes } => format!("<{bytes} bytes, not a consumer assignment>"),
        Assignment::Malformed(why) => format!("<undecodable: {why}>"),
    }
}

/// Describes one group: its state and members, and the lag of each of its partitions.
async fn describe_group(admin: &mut GroupAdmin, group: &str) -> anyhow::Result<GroupReport> {
    let description: GroupDescription = admin.describe_group(group).await?;
    if !description.exists() {
        bail!("consumer group '{group}' does not exist");
    }
    let committed = admin.committed_offsets(group).await?;
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let owned = description
        .members
        .iter()
        .flat_map(|m| match &m.assignment {
            Assignment::Partitions(partitions) => partitions.as_slice(),
            _ => &[],
        });
    for (topic, partition) in committed.keys().chain(owned) {
        let partitions = wanted.entry(topic.clone()).or_default();
        if !partitions.contains(partition) {
            partitions.push(*partition);
        }
    }
    // A topic deleted since, or a leader that cannot answer, leaves its log ends unknown ("-")
    // rather than hiding the rest of the group.
    let mut log_ends = BTreeMap::new();
    for (topic, partitions) in &wanted {
        let layout = match admin.topic_layout(topic).await {
            Ok(layout) => layout,
            Err(e) => {
                eprintln!("warning: group '{group}': log end offsets of '{topic}' unknown: {e:#}");
                continue;
            }
        };
        let known: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| layout.partitions.iter().any(|l| l.partition == *p))
            .collect();
        match admin.list_offsets(&layout, &known, LATEST).await {
            Ok(offsets) => {
                log_ends.extend(offsets.into_iter().map(|(p, o)| ((topic.clone(), p), o)))
            }
            Err(e) => {
                eprintln!("warning: group '{group}': log end offsets of '{topic}' unknown: {e:#}")
            }
        }
    }
    let offsets = offset_rows(&committed, &log_ends, &description.members);
    Ok(GroupReport {
        group: group.to_owned(),
        coordinator: admin.coordinator_of(group).map(|c| CoordinatorJson {
            id: c.node_id,
            host: c.host.clone(),
            port: c.port,
        }),
        total_lag: offsets.iter().filter_map(|r| r.lag).sum(),
        state: description.state,
        protocol_type: description.protocol_type,
        protocol: description.protocol,
        members: description
            .members
            .into_iter()
            .map(|m| MemberJson {
                assignment: match &m.assignment {
                    Assignment::Partitions(partitions) => Some(
                        partitions
                            .iter()
                            .map(|(topic, partition)| PartitionJson {
                                topic: topic.clone(),
                                partition: *partition,
                            })
                            .collect(),
                    ),
                    _ => None,
                },
                assignment_text: assignment_text(&m.assignment),
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                client_id: m.client_id,
                host: m.client_host,
            })
            .collect(),
        offsets,
    })
}

fn print_report(report: &GroupReport) {
    let coordinator = report.coordinator.as_ref().map_or_else(
        || "-".to_owned(),
        |c| format!("{}:{} ({})", c.host, c.port, c.id),
    );
    print!(
        "{}",
        format_table(
            &[
                "GROUP",
                "COORDINATOR (ID)",
                "STATE",
                "PROTOCOL-TYPE",
                "PROTOCOL",
                "#MEMBERS"
            ],
            &[vec![
                report.group.clone(),
                coordinator,
                report.state.clone(),
                dash_if_empty(&report.protocol_type),
                dash_if_empty(&report.protocol),
                report.members.len().to_string(),
            ]],
        )
    );
    println!();
    if report.members.is_empty() {
        println!("Consumer group '{}' has no active members.", report.group);
    } else {
        let rows: Vec<Vec<String>> = report
            .members
            .iter()
            .map(|m| {
                vec![
                    report.group.clone(),
                    m.member_id.clone(),
                    m.group_instance_id
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    m.host.clone(),
                    m.client_id.clone(),
                    m.assignment.as_ref().map_or(0, Vec::len).to_string(),
                    m.assignment_text.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            format_table(
                &[
                    "GROUP",
                    "CONSUMER-ID",
                    "GROUP-INSTANCE-ID",
                    "HOST",
                    "CLIENT-ID",
                    "#PARTITIONS",
                    "ASSIGNMENT"
                ],
                &rows
            )
        );
    }
    println!();
    if report.offsets.is_empty() {
        println!(
            "Consumer group '{}' has no committed offsets.",
            report.group
        );
    } else {
        print!("{}", lag_table(&report.group, &report.offsets));
    }
}

pub(super) async fn describe(
    admin: &mut GroupAdmin,
    groups: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut failures = 0;
    for group in groups {
        match describe_group(admin, group).await {
            Ok(report) => {
                if !json {
                    if !reports.is_empty() || failures > 0 {
                        println!();
                    }
                    print_report(&report);
                }
                reports.push(serde_json::to_value(&report)?);
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
                reports.push(serde_json::json!({ "group": group, "error": format!("{e:#}") }));
            }
        }
    }
    if json {
        print_json(&serde_json::json!({ "groups": reports }))?;
    }
    if failures > 0 {
        bail!(
            "{failures} of {} group(s) could not be described",
            groups.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, partitions: &[(&str, i32)]) -> MemberDescription {
        MemberDescription {
            member_id: id.to_owned(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".to_owned(),
            assignment: Assignment::Partitions(
                partitions
                    .iter()
                    .map(|(t, p)| ((*t).to_owned(), *p))
                    .collect(),
            ),
        }
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    #[test]
    fn lag_rows_join_commits_log_ends_and_owners() {
        let committed = BTreeMap::from([(tp("t", 0), 10), (tp("t", 1), 4), (tp("u", 0), 3)]);
        // t:2 is owned but never committed; u:0's leader did not answer.
        let log_ends = BTreeMap::from([(tp("t", 0), 13), (tp("t", 1), 4), (tp("t", 2), 9)]);
        let members = [member("m1", &[("t", 0), ("t", 2)])];
        let rows = offset_rows(&committed, &log_ends, &members);
        let row = |(topic, partition): (&str, i32), current, log_end, lag, owner: Option<&str>| {
            OffsetRow {
                topic: topic.to_owned(),
                partition,
                current_offset: current,
                log_end_offset: log_end,
                lag,
                consumer_id: owner.map(str::to_owned),
                host: owner.map(|_| "/127.0.0.1".to_owned()),
                client_id: owner.map(|m| format!("client-{m}")),
            }
        };
        assert_eq!(
            rows,
            vec![
                row(("t", 0), Some(10), Some(13), Some(3), Some("m1")),
                row(("t", 1), Some(4), Some(4), Some(0), None),
                row(("t", 2), None, Some(9), None, Some("m1")),
                row(("u", 0), Some(3), None, None, None),
            ]
        );
        assert_eq!(
            lag_table("g1", &rows),
            "\
GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST        CLIENT-ID
g1     t      0          10              13              3    m1           /127.0.0.1  client-m1
g1     t      1          4               4               0    -            -           -
g1     t      2          -               9               -    m1           /127.0.0.1  client-m1
g1     u      0          3               -               -    -            -           -
"
        );
    }

    #[test]
    fn assignments_print_as_kafka_prints_them() {
        let a = Assignment::Partitions(vec![tp("t", 0), tp("t", 1), tp("u", 2)]);
        assert_eq!(assignment_text(&a), "t(0,1),u(2)");
        assert_eq!(assignment_text(&Assignment::Partitions(Vec::new())), "-");
    }
}
