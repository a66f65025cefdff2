//! One clock for the whole process: nanoseconds since the Unix epoch, read from a monotonic
//! `Instant` anchored once to the wall clock. Monotonic (latencies never go negative because NTP
//! stepped the wall clock), yet comparable to timestamps carried in records.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_ns: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    })
}

/// Nanoseconds since the Unix epoch, monotonic within this process.
pub fn now_ns() -> u64 {
    let a = anchor();
    a.unix_ns + a.instant.elapsed().as_nanos() as u64
}

/// How long until `at_ns` (zero if it has passed).
pub fn until(at_ns: u64) -> Duration {
    Duration::from_nanos(at_ns.saturating_sub(now_ns()))
}

/// tokio's timer wheel ticks in whole milliseconds, so a 30 µs sleep lasts about a millisecond.
/// The last stretch before a deadline is therefore waited out by yielding to the runtime's other
/// tasks instead; without this, every record sent at a `--rate` left ~0.5-1 ms late and that
/// delay, the generator's own, was reported as broker latency.
const TIMER_SLACK: Duration = Duration::from_micros(1500);

/// Waits until `at_ns` on the current tokio runtime, to within a few microseconds.
pub async fn sleep_until(at_ns: u64) {
    let d = until(at_ns);
    if d > TIMER_SLACK {
        tokio::time::sleep(d - TIMER_SLACK).await;
    }
    while now_ns() < at_ns {
        tokio::task::yield_now().await;
    }
}
