//! When each record is due. With `--rate R` record `i` of a producer is due at `start + i / R`,
//! whether or not the producer kept up; latency is measured from that due time, so a stalled
//! broker shows up as latency instead of silently lowering the offered load (no coordinated
//! omission). Without a rate every record is due the moment it is generated.

/// What the producer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Record `index` is due since `due_ns`.
    Due { index: u64, due_ns: u64 },
    /// Nothing is due before `until_ns`.
    Wait { until_ns: u64 },
    /// The run is over for this producer (count reached or time up).
    Done,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    start_ns: u64,
    /// Nanoseconds between records, or None for "as fast as possible".
    interval_ns: Option<f64>,
    limit: Option<u64>,
    end_ns: Option<u64>,
    next: u64,
}

impl Schedule {
    /// `rate` in records/s; `limit` records at most; nothing due at or after `end_ns`.
    pub fn new(start_ns: u64, rate: Option<f64>, limit: Option<u64>, end_ns: Option<u64>) -> Self {
        assert!(rate.is_none_or(|r| r > 0.0), "rate must be positive");
        Schedule {
            start_ns,
            interval_ns: rate.map(|r| 1e9 / r),
            limit,
            end_ns,
            next: 0,
        }
    }

    /// Records handed out so far.
    pub fn issued(&self) -> u64 {
        self.next
    }

    pub fn poll(&mut self, now_ns: u64) -> Next {
        if self.limit.is_some_and(|l| self.next >= l) {
            return Next::Done;
        }
        let due_ns = match self.interval_ns {
            Some(interval) => self.start_ns + (self.next as f64 * interval) as u64,
            None => now_ns.max(self.start_ns),
        };
        if self.end_ns.is_some_and(|end| due_ns >= end) {
            return Next::Done;
        }
        if due_ns > now_ns {
            return Next::Wait { until_ns: due_ns };
        }
        let index = self.next;
        self.next += 1;
        Next::Due { index, due_ns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_spaces_records_and_catches_up_after_a_stall() {
        let mut s = Schedule::new(1_000, Some(1000.0), None, None);
        assert_eq!(
            s.poll(1_000),
            Next::Due {
                index: 0,
                due_ns: 1_000
            }
        );
        assert_eq!(
            s.poll(1_000),
            Next::Wait {
                until_ns: 1_001_000
            }
        );
        // A 5.5 ms stall: records 1..=5 are all due, each at its own scheduled time.
        let now = 1_000 + 5_500_000;
        for i in 1..=5u64 {
            assert_eq!(
                s.poll(now),
                Next::Due {
                    index: i,
                    due_ns: 1_000 + i * 1_000_000
                }
            );
        }
        assert_eq!(
            s.poll(now),
            Next::Wait {
                until_ns: 6_001_000
            }
        );
        assert_eq!(s.issued(), 6);
    }

    #[test]
    fn limit_and_end_stop_the_schedule() {
        let mut s = Schedule::new(0, None, Some(3), None);
        for i in 0..3 {
            assert_eq!(
                s.poll(50),
                Next::Due {
                    index: i,
                    due_ns: 50
                }
            );
        }
        assert_eq!(s.poll(60), Next::Done);

        let mut s = Schedule::new(0, Some(1000.0), None, Some(2_500_000));
        let mut due = 0;
        while let Next::Due { .. } = s.poll(10_000_000) {
            due += 1;
        }
        assert_eq!(
            due, 3,
            "records due at 0, 1 and 2 ms fall before the 2.5 ms end"
        );
        assert_eq!(s.poll(10_000_000), Next::Done);

        let mut s = Schedule::new(0, None, None, Some(100));
        assert!(matches!(s.poll(99), Next::Due { .. }));
        assert_eq!(s.poll(100), Next::Done);
    }
}
