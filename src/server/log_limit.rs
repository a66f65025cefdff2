//! Warnings a client can cause, written at a bounded rate: a flood of bad requests or
//! connections must not flood the log (or the disk under it) too. Each kind of warning may write
//! [`LINES_PER_WINDOW`] lines per [`WINDOW`] on each shard; the next line after a quiet spell says
//! how many were held back. Shard-local (a thread-local per shard's thread): no locks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Lines of one kind a shard writes per window.
pub const LINES_PER_WINDOW: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Kind {
    window_start: Option<Instant>,
    written: u32,
    held_back: u64,
}

thread_local! {
    static KINDS: RefCell<HashMap<&'static str, Kind>> = RefCell::new(HashMap::new());
}

/// Writes `message()` as a warning unless `kind` has used up its lines in this window; the
/// message is not even built when it is held back.
pub fn warn(kind: &'static str, message: impl FnOnce() -> String) {
    let held_back = KINDS.with(|kinds| {
        let mut kinds = kinds.borrow_mut();
        let k = kinds.entry(kind).or_default();
        let now = Instant::now();
        if k.window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            k.window_start = Some(now);
            k.written = 0;
        }
        if k.written >= LINES_PER_WINDOW {
            k.held_back += 1;
            return None;
        }
        k.written += 1;
        Some(std::mem::take(&mut k.held_back))
    });
    let Some(held_back) = held_back else {
        return;
    };
    let line = message();
    match held_back {
        0 => tracing::warn!("{line}"),
        n => tracing::warn!("{line} ({n} more like it not logged)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_writes_its_lines_then_holds_back() {
        let mut built = 0;
        for _ in 0..LINES_PER_WINDOW + 5 {
            warn("test-kind", || {
                built += 1;
                "line".to_owned()
            });
        }
        assert_eq!(
            built, LINES_PER_WINDOW,
            "held-back messages are not even built"
        );
        KINDS.with(|kinds| assert_eq!(kinds.borrow()["test-kind"].held_back, 5));
    }
}
