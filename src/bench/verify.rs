//! Checks what a consumer reads: per partition, offsets contiguous (no gap, nothing repeated or
//! going backwards); per (producer, partition) of bench records, sequences +1 each time, from 0
//! when the consumer saw the producer's whole output. The final count is checked by the caller,
//! which knows what was expected.
//!
//! One verifier per consumer connection (partitions are split among connections, so no state is
//! shared); it runs on that connection's bench thread.

use std::collections::HashMap;

use super::payload::BenchHeader;

/// Violations kept verbatim; beyond this only the count grows.
const MAX_MESSAGES: usize = 20;

#[derive(Debug, Default)]
pub struct Verifier {
    /// Next offset expected per partition.
    next_offset: HashMap<i32, i64>,
    /// Last sequence seen per (producer id, partition).
    last_sequence: HashMap<(u64, i32), u64>,
    /// Whether a producer's first record in a partition must carry sequence 0.
    sequences_from_zero: bool,
    pub violations: u64,
    pub messages: Vec<String>,
    /// Records that carried the bench header / did not.
    pub bench_records: u64,
    pub foreign_records: u64,
}

impl Verifier {
    /// `start_offsets`: where reading begins in each partition. `sequences_from_zero`: the
    /// consumer reads every record this run's (or any) producers wrote, so each sequence starts at 0.
    pub fn new(
        start_offsets: impl IntoIterator<Item = (i32, i64)>,
        sequences_from_zero: bool,
    ) -> Self {
        Verifier {
            next_offset: start_offsets.into_iter().collect(),
            sequences_from_zero,
            ..Verifier::default()
        }
    }

    pub fn next_offset(&self, partition: i32) -> Option<i64> {
        self.next_offset.get(&partition).copied()
    }

    pub fn violation(&mut self, message: String) {
        self.violations += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(message);
        }
    }

    fn check_offset(&mut self, partition: i32, offset: i64) {
        let next = self.next_offset.entry(partition).or_insert(offset);
        let expected = *next;
        if offset > expected {
            let missing = offset - expected;
            *next = offset + 1;
            self.violation(format!(
                "partition {partition}: offset gap, {missing} offset(s) {expected}..{} missing",
                offset - 1
            ));
        } else if offset < expected {
            self.violation(format!(
                "partition {partition}: offset {offset} read again after {} (repeated or out of order)",
                expected - 1
            ));
        } else {
            *next = offset + 1;
        }
    }

    /// A partition handed from one reader to the next (a group rebalance) resumes at `offset`,
    /// the group's committed position. Resuming anywhere but where the last reader stopped reads
    /// records twice or skips them: a violation. Reading then goes on from `offset`.
    pub fn resume_at(&mut self, partition: i32, offset: i64) {
        let Some(stopped) = self.next_offset.insert(partition, offset) else {
            return;
        };
        if offset < stopped {
            self.violation(format!(
                "partition {partition}: resumed at the committed offset {offset}, but offsets \
                 up to {} were read already: {} record(s) read twice",
                stopped - 1,
                stopped - offset
            ));
        } else if offset > stopped {
            self.violation(format!(
                "partition {partition}: resumed at the committed offset {offset}, but reading \
                 had stopped at {stopped}: {} record(s) skipped",
                offset - stopped
            ));
        }
    }

    /// A control batch (transaction marker): it occupies offsets but carries no data.
    pub fn observe_control(&mut self, partition: i32, base_offset: i64, last_offset: i64) {
        self.check_offset(partition, base_offset);
        self.next_offset.insert(partition, last_offset + 1);
    }

    /// One data record. Returns its bench header, if it has one.
    pub fn observe(
        &mut self,
        partition: i32,
        offset: i64,
        value: Option<&[u8]>,
    ) -> Option<BenchHeader> {
        self.check_offset(partition, offset);
        let Some(header) = value.and_then(BenchHeader::decode) else {
            self.foreign_records += 1;
            return None;
        };
        self.bench_records += 1;
        let key = (header.producer_id, partition);
        let seq = header.sequence;
        match self.last_sequence.insert(key, seq) {
            Some(last) if seq == last.wrapping_add(1) => {}
            Some(last) if seq > last => self.violation(format!(
                "partition {partition} offset {offset}: producer {:#x} sequence gap, {} record(s) {}..{} missing",
                header.producer_id,
                seq - last - 1,
                last + 1,
                seq - 1
            )),
            Some(last) => self.violation(format!(
                "partition {partition} offset {offset}: producer {:#x} sequence {seq} after {last} (duplicate or reordered)",
                header.producer_id
            )),
            None if self.sequences_from_zero && seq != 0 => self.violation(format!(
                "partition {partition} offset {offset}: producer {:#x} starts at sequence {seq}, records 0..{} missing",
                header.producer_id,
                seq - 1
            )),
            None => {}
        }
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(producer_id: u64, sequence: u64) -> Vec<u8> {
        let mut v = BenchHeader {
            producer_id,
            sequence,
            due_ns: 1,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(b"pad");
        v
    }

    #[test]
    fn clean_interleaved_producers_pass() {
        let mut v = Verifier::new([(0, 10), (1, 0)], true);
        let mut offset = 10;
        for seq in 0..5 {
            for producer in [1, 2] {
                v.observe(0, offset, Some(&value(producer, seq)));
                offset += 1;
            }
            v.observe(1, seq as i64, Some(&value(1, seq)));
        }
        v.observe_control(0, offset, offset);
        v.observe(0, offset + 1, Some(b"not a bench record"));
        assert_eq!(v.violations, 0, "{:?}", v.messages);
        assert_eq!(v.bench_records, 15);
        assert_eq!(v.foreign_records, 1);
        assert_eq!(v.next_offset(0), Some(offset + 2));
    }

    #[test]
    fn resuming_anywhere_but_where_reading_stopped_is_a_violation() {
        let mut v = Verifier::new([(3, 10)], false);
        v.observe(3, 10, Some(&value(1, 0)));
        v.observe(3, 11, Some(&value(1, 1)));
        v.resume_at(3, 12);
        assert_eq!(v.violations, 0, "{:?}", v.messages);
        v.resume_at(3, 11);
        assert_eq!(v.violations, 1);
        assert!(
            v.messages[0].contains("1 record(s) read twice"),
            "{:?}",
            v.messages
        );
        v.resume_at(3, 15);
        assert_eq!(v.violations, 2);
        assert!(
            v.messages[1].contains("4 record(s) skipped"),
            "{:?}",
            v.messages
        );
        assert_eq!(v.next_offset(3), Some(15));
    }

    #[test]
    fn gaps_repeats_and_reorders_are_caught() {
        let mut v = Verifier::new([(0, 0)], true);
        v.observe(0, 0, Some(&value(7, 0)));
        v.observe(0, 1, Some(&value(7, 2))); // sequence 1 skipped
        assert_eq!(v.violations, 1);
        assert!(v.messages[0].contains("sequence gap"), "{}", v.messages[0]);
        v.observe(0, 2, Some(&value(7, 2))); // duplicate
        assert_eq!(v.violations, 2);
        v.observe(0, 5, Some(&value(7, 3))); // offsets 3, 4 missing
        assert_eq!(v.violations, 3);
        assert!(v.messages[2].contains("offset gap"), "{}", v.messages[2]);
        v.observe(0, 4, Some(&value(7, 4))); // offset backwards
        assert_eq!(v.violations, 4);
        v.observe(0, 6, Some(&value(8, 3))); // a producer whose start we never saw
        assert_eq!(v.violations, 5);

        let mut lenient = Verifier::new([(0, 100)], false);
        lenient.observe(0, 100, Some(&value(8, 3)));
        assert_eq!(lenient.violations, 0);
    }
}
