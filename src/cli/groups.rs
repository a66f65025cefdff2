//! `skein groups list|describe|reset-offsets|delete --bootstrap HOST:PORT`: consumer groups as
//! Kafka's `kafka-consumer-groups.sh` shows and changes them. The protocol work is in
//! `client::groups`; this file parses arguments, computes plans and lags, and prints tables or
//! (`--json`) one JSON document on stdout. Every failure exits non-zero.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::cluster::{EARLIEST, LATEST};
use crate::client::groups::{
    error_name, Assignment, GroupAdmin, GroupDescription, MemberDescription, TopicPartition,
};

#[derive(Args)]
pub struct GroupsArgs {
    /// A broker to talk to (or a comma-separated list; the first that answers is used).
    #[arg(long, default_value = "127.0.0.1:9092", global = true)]
    bootstrap: String,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List the groups of every broker, with their state and protocol type.
    List {
        /// Only groups in these states (Stable, Empty, PreparingRebalance,
        /// CompletingRebalance, Dead); repeatable or comma-separated.
        #[arg(long = "state", value_delimiter = ',', value_name = "STATE")]
        states: Vec<String>,
    },
    /// Show groups' state and members, and per partition the committed offset, log end and lag.
    Describe(GroupSelection),
    /// Move an inactive group's committed offsets; prints the plan only, unless --execute.
    ResetOffsets(ResetArgs),
    /// Delete inactive groups and their committed offsets.
    Delete(GroupSelection),
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct GroupSelection {
    /// A group id; repeatable or comma-separated.
    #[arg(long = "group", value_delimiter = ',', value_name = "GROUP")]
    groups: Vec<String>,
    /// Every group of the cluster.
    #[arg(long)]
    all_groups: bool,
}

#[derive(Args)]
struct ResetArgs {
    /// The group whose offsets move.
    #[arg(long)]
    group: String,
    #[command(flatten)]
    scope: ResetScope,
    #[command(flatten)]
    target: ResetTarget,
    /// Commit the new offsets (without it, only the plan is printed).
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Print the plan and commit nothing (the default).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetScope {
    /// TOPIC (all its partitions) or TOPIC:P,P,...; repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    /// Every partition the group has committed an offset for.
    #[arg(long)]
    all_topics: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetTarget {
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// This offset, brought into [log start, log end] as Kafka does.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    to_offset: Option<i64>,
    /// The first offset whose record is at or after this time (the log end if there is none):
    /// YYYY-MM-DDTHH:MM:SS[.sss][Z|+hh:mm|-hh:mm]; without a zone, the local one.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
}

/// Where `reset-offsets` moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl ResetTarget {
    fn parse(&self) -> anyhow::Result<ResetTo> {
        Ok(if self.to_earliest {
            ResetTo::Earliest
        } else if self.to_latest {
            ResetTo::Latest
        } else if let Some(offset) = self.to_offset {
            ResetTo::Offset(offset)
        } else if let Some(datetime) = &self.to_datetime {
            ResetTo::Timestamp(
                parse_datetime(datetime, local_utc_offset_seconds())
                    .with_context(|| format!("--to-datetime {datetime}"))?,
            )
        } else {
            unreachable!("clap requires one of the --to-* options")
        })
    }
}

pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    // A command-line tool piped into `head` should stop quietly, not panic on EPIPE.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let json = args.json;
        match args.command {
            GroupsCommand::List { states } => {
                let states = states
                    .iter()
                    .map(|s| canonical_state(s))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut admin = GroupAdmin::connect(&args.bootstrap).await?;
                list(&mut admin, &states, json).await
            }
            GroupsCommand::Describe(selection) => {
                let mut admin = GroupAdmin::connect(&args.bootstrap).await?;
                let groups = selected_groups(&mut admin, selection).await?;
                describe(&mut admin, &groups, json).await
            }
            GroupsCommand::ResetOffsets(reset) => {
                // Bad input fails before anything is asked of the cluster.
                let target = reset.target.parse()?;
                let specs = reset
                    .scope
                    .topics
                    .iter()
                    .map(|s| parse_topic_spec(s))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut admin = GroupAdmin::connect(&args.bootstrap).await?;
                reset_offsets(
                    &mut admin,
                    &reset.group,
                    &specs,
                    target,
                    reset.execute,
                    json,
                )
                .await
            }
            GroupsCommand::Delete(selection) => {
                let mut admin = GroupAdmin::connect(&args.bootstrap).await?;
                let groups = selected_groups(&mut admin, selection).await?;
                delete(&mut admin, &groups, json).await
            }
        }
    })
}

async fn selected_groups(
    admin: &mut GroupAdmin,
    selection: GroupSelection,
) -> anyhow::Result<Vec<String>> {
    if selection.all_groups {
        return Ok(admin
            .list_groups(&[])
            .await?
            .into_iter()
            .map(|g| g.group_id)
            .collect());
    }
    let mut groups = Vec::new();
    for g in selection.groups {
        if g.is_empty() {
            bail!("--group: a group id cannot be empty");
        }
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(groups)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// list

/// Kafka's spelling of a group state, whatever the case it was typed in.
fn canonical_state(state: &str) -> anyhow::Result<String> {
    const STATES: &[&str] = &[
        "PreparingRebalance",
        "CompletingRebalance",
        "Stable",
        "Dead",
        "Empty",
    ];
    STATES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(state))
        .map(|s| (*s).to_owned())
        .ok_or_else(|| anyhow!("--state {state}: not one of {}", STATES.join(", ")))
}

#[derive(Serialize)]
struct ListedGroupJson<'a> {
    group: &'a str,
    state: Option<&'a str>,
    protocol_type: &'a str,
}

async fn list(admin: &mut GroupAdmin, states: &[String], json: bool) -> anyhow::Result<()> {
    let groups = admin.list_groups(states).await?;
    if json {
        let groups: Vec<ListedGroupJson> = groups
            .iter()
            .map(|g| ListedGroupJson {
                group: &g.group_id,
                state: g.state.as_deref(),
                protocol_type: &g.protocol_type,
            })
            .collect();
        return print_json(&serde_json::json!({ "groups": groups }));
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group_id.clone(),
                g.state.clone().unwrap_or_else(|| "-".to_owned()),
                dash_if_empty(&g.protocol_type),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print!(
            "{}",
            format_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// describe

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

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
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

async fn describe(admin: &mut GroupAdmin, groups: &[String], json: bool) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------------------
// reset-offsets

/// `TOPIC` (every partition: `None`) or `TOPIC:P,P,...`. Topic names cannot hold ':'.
fn parse_topic_spec(spec: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
    let (topic, partitions) = match spec.split_once(':') {
        None => (spec, None),
        Some((topic, list)) => {
            let mut partitions = Vec::new();
            for p in list.split(',') {
                let partition: i32 =
                    p.trim().parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
                        anyhow!("--topic {spec}: '{p}' is not a partition number")
                    })?;
                if !partitions.contains(&partition) {
                    partitions.push(partition);
                }
            }
            partitions.sort_unstable();
            (topic, Some(partitions))
        }
    };
    if topic.is_empty() {
        bail!("--topic {spec}: no topic name");
    }
    Ok((topic.to_owned(), partitions))
}

/// Kafka's `--to-offset`: an offset past the log end goes to the log end, one before the log
/// start to the log start.
fn clamp_offset(offset: i64, log_start: i64, log_end: i64) -> i64 {
    if offset > log_end {
        log_end
    } else if offset < log_start {
        log_start
    } else {
        offset
    }
}

/// Parses Kafka's `--to-datetime` format, `YYYY-MM-DDTHH:MM:SS[.sss][Z|+hh:mm|+hhmm|+hh]`, into
/// milliseconds since the epoch. Without a zone the time is local: `local_offset_seconds` east
/// of UTC (Kafka appends the local zone's offset at the time the tool runs).
fn parse_datetime(text: &str, local_offset_seconds: i64) -> anyhow::Result<i64> {
    let bad = |why: &str| anyhow!("'{text}': {why}; expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+hh:mm]");
    fn digits(s: &str, n: usize) -> Option<i64> {
        (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    }
    // ASCII only, so every slice below falls on a character boundary.
    if !text.is_ascii() {
        return Err(bad("not ASCII"));
    }
    let (date, rest) = text.split_once('T').ok_or_else(|| bad("no 'T'"))?;
    let mut fields = date.split('-');
    let (year, month, day) = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(y), Some(m), Some(d), None) => (digits(y, 4), digits(m, 2), digits(d, 2)),
        _ => return Err(bad("bad date")),
    };
    let (Some(year), Some(month), Some(day)) = (year, month, day) else {
        return Err(bad("bad date"));
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such day"));
    }
    if rest.len() < 8 {
        return Err(bad("bad time"));
    }
    let (time, mut rest) = rest.split_at(8);
    let mut hms = time.split(':');
    let (hour, minute, second) = match (hms.next(), hms.next(), hms.next(), hms.next()) {
        (Some(h), Some(m), Some(s), None) => (digits(h, 2), digits(m, 2), digits(s, 2)),
        _ => return Err(bad("bad time")),
    };
    let (Some(hour), Some(minute), Some(second)) = (hour, minute, second) else {
        return Err(bad("bad time"));
    };
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad("no such time"));
    }
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.find(['Z', '+', '-']).unwrap_or(fraction.len());
        millis = digits(&fraction[..end], 3).ok_or_else(|| bad("milliseconds take 3 digits"))?;
        rest = &fraction[end..];
    }
    let offset_seconds = match rest {
        "" => local_offset_seconds,
        "Z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad("bad zone")),
            };
            let zone = &zone[1..];
            let (h, m) = match zone.len() {
                2 => (digits(zone, 2), Some(0)),
                4 => (digits(&zone[..2], 2), digits(&zone[2..], 2)),
                5 if zone.as_bytes()[2] == b':' => (digits(&zone[..2], 2), digits(&zone[3..], 2)),
                _ => return Err(bad("bad zone")),
            };
            match (h, m) {
                (Some(h), Some(m)) if h <= 23 && m <= 59 => sign * (h * 3600 + m * 60),
                _ => return Err(bad("bad zone")),
            }
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Ok((seconds - offset_seconds) * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The local zone's offset from UTC now, in seconds east (what Kafka appends to a zoneless
/// `--to-datetime`).
fn local_utc_offset_seconds() -> i64 {
    // SAFETY: localtime_r writes only into the tm we own; a zeroed tm is a valid value.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[derive(Serialize)]
struct NewOffsetJson<'a> {
    topic: &'a str,
    partition: i32,
    new_offset: i64,
}

/// Works out where each partition goes, commits it with `execute`, and prints the plan.
async fn reset_offsets(
    admin: &mut GroupAdmin,
    group: &str,
    specs: &[(String, Option<Vec<i32>>)],
    target: ResetTo,
    execute: bool,
    json: bool,
) -> anyhow::Result<()> {
    let description = admin.describe_group(group).await?;
    if !description.is_inactive() {
        bail!(
            "group '{group}': offsets can only be reset while the group is inactive (Empty or \
             Dead), but it is {}; stop its consumers first",
            description.state
        );
    }
    let mut wanted: BTreeMap<String, Option<Vec<i32>>> = BTreeMap::new();
    if specs.is_empty() {
        // --all-topics: what the group has committed.
        for (topic, partition) in admin.committed_offsets(group).await?.into_keys() {
            wanted
                .entry(topic)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(partition);
        }
        if wanted.is_empty() {
            bail!("group '{group}' has no committed offsets; name the topics with --topic");
        }
    }
    for (topic, partitions) in specs {
        // A topic named twice: all of it wins over a list; lists are merged.
        let entry = wanted.entry(topic.clone()).or_insert(Some(Vec::new()));
        match (entry.as_mut(), partitions) {
            (Some(list), Some(more)) => list.extend(more),
            (_, None) => *entry = None,
            (None, Some(_)) => {}
        }
    }
    let mut plan: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for (topic, partitions) in wanted {
        let layout = admin.topic_layout(&topic).await?;
        let partitions: Vec<i32> = match partitions {
            None => layout.partitions.iter().map(|l| l.partition).collect(),
            Some(mut list) => {
                list.sort_unstable();
                list.dedup();
                for p in &list {
                    if !layout.partitions.iter().any(|l| l.partition == *p) {
                        bail!(
                            "topic '{topic}' has no partition {p} (it has {})",
                            layout.partitions.len()
                        );
                    }
                }
                list
            }
        };
        let new_offsets: BTreeMap<i32, i64> = match target {
            ResetTo::Earliest => admin.list_offsets(&layout, &partitions, EARLIEST).await?,
            ResetTo::Latest => admin.list_offsets(&layout, &partitions, LATEST).await?,
            ResetTo::Offset(offset) => {
                let starts = admin.list_offsets(&layout, &partitions, EARLIEST).await?;
                let ends = admin.list_offsets(&layout, &partitions, LATEST).await?;
                partitions
                    .iter()
                    .map(|p| (*p, clamp_offset(offset, starts[p], ends[p])))
                    .collect()
            }
            ResetTo::Timestamp(timestamp) => {
                let found = admin.list_offsets(&layout, &partitions, timestamp).await?;
                let ends = admin.list_offsets(&layout, &partitions, LATEST).await?;
                // -1: no record at or after the time, so nothing is left to read.
                partitions
                    .iter()
                    .map(|p| (*p, if found[p] < 0 { ends[p] } else { found[p] }))
                    .collect()
            }
        };
        plan.extend(
            new_offsets
                .into_iter()
                .map(|(p, o)| ((topic.clone(), p), o)),
        );
    }
    if execute {
        admin.commit_offsets(group, &plan).await?;
    } else {
        eprintln!("dry run: nothing was committed (add --execute to commit these offsets)");
    }
    if json {
        let partitions: Vec<NewOffsetJson> = plan
            .iter()
            .map(|((topic, partition), offset)| NewOffsetJson {
                topic,
                partition: *partition,
                new_offset: *offset,
            })
            .collect();
        return print_json(&serde_json::json!({
            "group": group,
            "executed": execute,
            "partitions": partitions,
        }));
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((topic, partition), offset)| {
            vec![
                group.to_owned(),
                topic.clone(),
                partition.to_string(),
                offset.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        format_table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// delete

#[derive(Serialize)]
struct DeletedJson<'a> {
    group: &'a str,
    /// Kafka's error name (or what went wrong on the way); `None` once deleted.
    error: Option<String>,
}

async fn delete(admin: &mut GroupAdmin, groups: &[String], json: bool) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for group in groups {
        let error = match admin.delete_group(group).await {
            Ok(0) => None,
            Ok(code) => Some(error_name(code)),
            Err(e) => Some(format!("{e:#}")),
        };
        results.push(DeletedJson { group, error });
    }
    if json {
        print_json(&serde_json::json!({ "groups": results }))?;
    } else if !results.is_empty() {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.group.to_owned(),
                    r.error.clone().unwrap_or_else(|| "deleted".to_owned()),
                ]
            })
            .collect();
        print!("{}", format_table(&["GROUP", "RESULT"], &rows));
    }
    let failures = results.iter().filter(|r| r.error.is_some()).count();
    if failures > 0 {
        bail!("{failures} of {} group(s) not deleted", results.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tables

/// Left-aligned columns as wide as their widest cell, two spaces apart, one line per row.
fn format_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        assert_eq!(
            row.len(),
            header.len(),
            "a table row has one cell per column"
        );
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTC: i64 = 0;

    #[test]
    fn datetimes_parse_as_kafka_reads_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z", UTC).unwrap(), 0);
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00Z", UTC).unwrap(),
            1_796_119_200_000
        );
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00.000Z", UTC).unwrap(),
            1_796_119_200_000
        );
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00.250+01:00", UTC).unwrap(),
            1_796_115_600_250
        );
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00.250+0100", UTC).unwrap(),
            1_796_115_600_250
        );
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00.250+01", UTC).unwrap(),
            1_796_115_600_250
        );
        assert_eq!(
            parse_datetime("2024-02-29T23:59:59.999-05:30", UTC).unwrap(),
            1_709_270_999_999
        );
        assert_eq!(parse_datetime("1969-12-31T23:59:59Z", UTC).unwrap(), -1000);
        // No zone: the local one, given here as 2 hours east of UTC.
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00", 7200).unwrap(),
            1_796_119_200_000 - 7_200_000
        );
        assert_eq!(
            parse_datetime("2026-12-01T10:00:00.5", UTC)
                .unwrap_err()
                .to_string(),
            "'2026-12-01T10:00:00.5': milliseconds take 3 digits; expected \
             YYYY-MM-DDTHH:MM:SS[.sss][Z|+hh:mm]"
        );
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T10:00",
            "2026-12-01 10:00:00",
            "2026-13-01T10:00:00Z",
            "2026-00-01T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2026-04-31T10:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T10:60:00Z",
            "2026-12-01T10:00:60Z",
            "2026-12-01T10:00:00.1234Z",
            "2026-12-01T10:00:00+25:00",
            "2026-12-01T10:00:00+01:60",
            "2026-12-01T10:00:00UTC",
            "2026-12-01T10:00:00+1",
            "26-12-01T10:00:00Z",
            "2026-12-1T10:00:00Z",
            "+026-12-01T10:00:00Z",
            "2026-12-01T1é:00:00Z",
        ] {
            assert!(parse_datetime(bad, UTC).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn local_offset_is_within_a_day() {
        assert!(local_utc_offset_seconds().abs() <= 14 * 3600);
    }

    #[test]
    fn topic_specs_parse() {
        assert_eq!(
            parse_topic_spec("orders").unwrap(),
            ("orders".to_owned(), None)
        );
        assert_eq!(
            parse_topic_spec("orders:2,0,2").unwrap(),
            ("orders".to_owned(), Some(vec![0, 2]))
        );
        assert_eq!(
            parse_topic_spec("my.topic-1:7").unwrap(),
            ("my.topic-1".to_owned(), Some(vec![7]))
        );
        for bad in [
            "",
            ":1",
            "orders:",
            "orders:a",
            "orders:1,",
            "orders:-1",
            "t:1:2",
        ] {
            assert!(parse_topic_spec(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn offsets_are_clamped_into_the_log() {
        assert_eq!(clamp_offset(5, 0, 10), 5);
        assert_eq!(clamp_offset(10, 0, 10), 10);
        assert_eq!(clamp_offset(11, 0, 10), 10);
        assert_eq!(clamp_offset(2, 3, 10), 3);
        assert_eq!(clamp_offset(-7, 3, 10), 3);
        assert_eq!(clamp_offset(0, 0, 0), 0);
    }

    #[test]
    fn states_are_spelled_as_kafka_spells_them() {
        assert_eq!(canonical_state("empty").unwrap(), "Empty");
        assert_eq!(
            canonical_state("PREPARINGREBALANCE").unwrap(),
            "PreparingRebalance"
        );
        assert!(canonical_state("Rebalancing").is_err());
    }

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
        let summary: Vec<(
            String,
            i32,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        )> = rows
            .iter()
            .map(|r| {
                (
                    r.topic.clone(),
                    r.partition,
                    r.current_offset,
                    r.log_end_offset,
                    r.lag,
                    r.consumer_id.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "t".into(),
                    0,
                    Some(10),
                    Some(13),
                    Some(3),
                    Some("m1".into())
                ),
                ("t".into(), 1, Some(4), Some(4), Some(0), None),
                ("t".into(), 2, None, Some(9), None, Some("m1".into())),
                ("u".into(), 0, Some(3), None, None, None),
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
    fn tables_pad_to_the_widest_cell_and_trim_line_ends() {
        let rows = vec![
            vec!["a-long-group".to_owned(), "".to_owned()],
            vec!["g".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            format_table(&["GROUP", "STATE"], &rows),
            "GROUP         STATE\na-long-group\ng             x\n"
        );
        assert_eq!(format_table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn assignments_print_as_kafka_prints_them() {
        let a = Assignment::Partitions(vec![tp("t", 0), tp("t", 1), tp("u", 2)]);
        assert_eq!(assignment_text(&a), "t(0,1),u(2)");
        assert_eq!(assignment_text(&Assignment::Partitions(Vec::new())), "-");
    }
}
