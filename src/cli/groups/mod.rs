//! `skein groups list|describe|reset-offsets|delete --bootstrap HOST:PORT`: consumer groups as
//! Kafka's `kafka-consumer-groups.sh` shows and changes them. The protocol work is in
//! `client::groups`; here are the arguments, `list` and `delete`, and the table printer;
//! `describe` (lags) and `reset` (plans, datetimes) have a file each. Output is tables, or with
//! `--json` one JSON document on stdout. Every failure exits non-zero. Runs on one tokio
//! current-thread runtime, one request at a time.

mod describe;
mod reset;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::groups::{error_name, GroupAdmin};

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
                describe::describe(&mut admin, &groups, json).await
            }
            GroupsCommand::ResetOffsets(options) => {
                // Bad input fails before anything is asked of the cluster.
                let target = options.target.parse()?;
                let specs = options
                    .scope
                    .topics
                    .iter()
                    .map(|s| reset::parse_topic_spec(s))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut admin = GroupAdmin::connect(&args.bootstrap).await?;
                reset::reset_offsets(
                    &mut admin,
                    &options.group,
                    &specs,
                    target,
                    options.execute,
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

fn dash_if_empty(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_spelled_as_kafka_spells_them() {
        assert_eq!(canonical_state("empty").unwrap(), "Empty");
        assert_eq!(
            canonical_state("PREPARINGREBALANCE").unwrap(),
            "PreparingRebalance"
        );
        assert!(canonical_state("Rebalancing").is_err());
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
}
