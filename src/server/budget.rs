//! A shard's request-memory budget (Kafka's `queued.max.request.bytes`, reserved before a frame
//! is allocated as Redpanda does): every request frame the shard reads holds a [`Reservation`]
//! of its size from before its body is allocated until its response is written. A frame that does
//! not fit waits; it holds nothing while it waits, so a peer that announces a huge frame and
//! sends nothing costs nothing.
//!
//! Waiters are served first-fit, not strictly in order: a small request can pass a large one
//! that does not fit yet. Large frames (over [`SMALL_FRAME_BYTES`]) may together hold at most
//! three quarters of the budget, so however many of them arrive, requests of up to 1 MiB (nearly
//! every produce and fetch) always find room.
//!
//! Lives on one shard's thread (`Rc`, `Cell`): reservations are taken and dropped there.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

/// Frames up to this size may use the whole budget; larger ones only three quarters of it.
pub const SMALL_FRAME_BYTES: u64 = 1 << 20;

pub struct RequestBudget {
    total: u64,
    available: Cell<u64>,
    /// Bytes held by large frames.
    large_held: Cell<u64>,
    waiters: RefCell<Vec<Waiter>>,
}

struct Waiter {
    bytes: u64,
    wake: oneshot::Sender<()>,
}

/// Bytes of the budget held by one request; given back when dropped. It can grow once the
/// request is decoded and what handling it will allocate is known ([`Reservation::try_grow`]).
pub struct Reservation {
    budget: Rc<RequestBudget>,
    bytes: Cell<u64>,
    large: bool,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// How much this reservation could grow by now.
    pub fn growable(&self) -> u64 {
        let budget = &self.budget;
        let mut room = budget.available.get();
        if self.large {
            room = room.min(budget.large_limit() - budget.large_held.get());
        }
        room
    }

    /// Takes `extra` more bytes if the budget has them now. Never waits: a request that holds
    /// its frame while waiting for more could, with others doing the same, wait forever.
    pub fn try_grow(&self, extra: u64) -> bool {
        if !self.budget.fits(extra, self.large) {
            return false;
        }
        self.budget
            .available
            .set(self.budget.available.get() - extra);
        if self.large {
            self.budget
                .large_held
                .set(self.budget.large_held.get() + extra);
        }
        self.bytes.set(self.bytes.get() + extra);
        true
    }
}

impl RequestBudget {
    pub fn new(total_bytes: u64) -> Rc<RequestBudget> {
        assert!(total_bytes > 0);
        Rc::new(RequestBudget {
            total: total_bytes,
            available: Cell::new(total_bytes),
            large_held: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn available(&self) -> u64 {
        self.available.get()
    }

    fn large_limit(&self) -> u64 {
        self.total / 4 * 3
    }

    /// What a frame of `frame_bytes` reserves: its size, except that a frame larger than large
    /// frames may hold reserves all they may hold (it must be able to run at all).
    fn cost(&self, frame_bytes: u64) -> (u64, bool) {
        let large = frame_bytes > SMALL_FRAME_BYTES;
        if large {
            (frame_bytes.min(self.large_limit()), true)
        } else {
            (frame_bytes.min(self.total), false)
        }
    }

    fn fits(&self, bytes: u64, large: bool) -> bool {
        bytes <= self.available.get()
            && (!large || self.large_held.get() + bytes <= self.large_limit())
    }

    /// Reserves `frame_bytes` now, if it fits.
    pub fn try_reserve(self: &Rc<Self>, frame_bytes: u64) -> Option<Reservation> {
        let (bytes, large) = self.cost(frame_bytes);
        if !self.fits(bytes, large) {
            return None;
        }
        self.available.set(self.available.get() - bytes);
        if large {
            self.large_held.set(self.large_held.get() + bytes);
        }
        Some(Reservation {
            budget: self.clone(),
            bytes: Cell::new(bytes),
            large,
        })
    }

    /// Reserves `frame_bytes`, waiting until it fits. Cancel-safe: dropping the future holds
    /// nothing.
    pub async fn reserve(self: &Rc<Self>, frame_bytes: u64) -> Reservation {
        loop {
            if let Some(reservation) = self.try_reserve(frame_bytes) {
                return reservation;
            }
            let (wake, woken) = oneshot::channel();
            self.waiters.borrow_mut().push(Waiter {
                bytes: self.cost(frame_bytes).0,
                wake,
            });
            // Woken when a release may have made room; someone else may take it first, so try
            // again. A dropped waiter's sender fails to send and is simply discarded.
            let _ = woken.await;
        }
    }

    fn release(&self, bytes: u64, large: bool) {
        self.available.set(self.available.get() + bytes);
        if large {
            self.large_held.set(self.large_held.get() - bytes);
        }
        let mut waiters = self.waiters.borrow_mut();
        if waiters.is_empty() {
            return;
        }
        // Wake, in arrival order, every waiter that could fit now (first fit).
        let mut room = self.available.get();
        waiters.retain_mut(|w| {
            if w.wake.is_canceled() {
                return false;
            }
            if w.bytes <= room {
                room -= w.bytes;
                let (wake, _) = oneshot::channel();
                let _ = std::mem::replace(&mut w.wake, wake).send(());
                return false;
            }
            true
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes.get(), self.large);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reservations_come_back_when_dropped() {
        let budget = RequestBudget::new(10 * MIB);
        let a = budget.try_reserve(MIB / 2).expect("fits");
        let b = budget.try_reserve(MIB / 2).expect("fits");
        assert_eq!(budget.available(), 9 * MIB);
        drop((a, b));
        assert_eq!(budget.available(), 10 * MIB);
    }

    #[test]
    fn a_reservation_grows_only_into_what_is_free() {
        let budget = RequestBudget::new(4 * MIB);
        let a = budget.try_reserve(MIB).unwrap();
        assert!(a.try_grow(2 * MIB));
        assert_eq!((a.bytes(), budget.available()), (3 * MIB, MIB));
        assert!(!a.try_grow(2 * MIB), "no more than is free");
        drop(a);
        assert_eq!(budget.available(), 4 * MIB);
    }

    #[test]
    fn large_frames_leave_a_quarter_for_small_ones() {
        let budget = RequestBudget::new(8 * MIB);
        let big: Vec<_> = (0..3)
            .map(|_| budget.try_reserve(2 * MIB).expect("fits"))
            .collect();
        assert!(
            budget.try_reserve(2 * MIB).is_none(),
            "large frames hold 3/4"
        );
        let small: Vec<_> = (0..2)
            .map(|_| budget.try_reserve(MIB).expect("room"))
            .collect();
        assert!(budget.try_reserve(1).is_none(), "now the budget is full");
        drop((big, small));
        assert_eq!(budget.available(), 8 * MIB);
    }

    #[test]
    fn a_frame_larger_than_the_budget_still_runs_alone() {
        let budget = RequestBudget::new(8 * MIB);
        let huge = budget
            .try_reserve(100 * MIB)
            .expect("takes what large frames may hold");
        assert_eq!(huge.bytes(), 6 * MIB);
        assert!(budget.try_reserve(MIB + 1).is_none());
        assert!(budget.try_reserve(MIB).is_some());
    }

    #[test]
    fn a_small_waiter_passes_a_large_one_that_does_not_fit() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async move {
                let budget = RequestBudget::new(8 * MIB);
                let held = budget.try_reserve(MIB).unwrap();
                let held_large = budget.try_reserve(6 * MIB).unwrap();
                let large = glommio::spawn_local({
                    let budget = budget.clone();
                    async move { budget.reserve(5 * MIB).await }
                });
                let small = glommio::spawn_local({
                    let budget = budget.clone();
                    async move { budget.reserve(MIB).await }
                });
                // Let both tasks run up to their wait.
                for _ in 0..3 {
                    glommio::executor().yield_now().await;
                }
                drop(held);
                let small = small.await;
                assert_eq!(small.bytes(), MIB);
                drop(held_large);
                let large = large.await;
                assert_eq!(large.bytes(), 5 * MIB);
                // A cancelled wait holds nothing.
                let waiting = budget.reserve(7 * MIB).boxed_local();
                drop(waiting);
                drop((small, large));
                assert_eq!(budget.available(), 8 * MIB);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
