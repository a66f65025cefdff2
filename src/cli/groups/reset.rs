//! `skein groups reset-offsets`: where each partition of an inactive group goes (log start, log
//! end, an offset clamped into the log, or the first record at or after a time), committed only
//! with `--execute`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use super::{format_table, print_json, ResetTarget};
use crate::client::cluster::{EARLIEST, LATEST};
use crate::client::groups::{GroupAdmin, TopicPartition};

/// Where `reset-offsets` moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

impl ResetTarget {
    pub(super) fn parse(&self) -> anyhow::Result<ResetTo> {
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

/// `TOPIC` (every partition: `None`) or `TOPIC:P,P,...`. Topic names cannot hold ':'.
pub(super) fn parse_topic_spec(spec: &str) -> anyhow::Result<(String, Option<Vec<i32>>)> {
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
pub(super) async fn reset_offsets(
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
}
