//! A shard's request-memory budget (Kafka's `queued.max.request.bytes`, reserved before a frame
//! is allocated as Redpanda does): every request frame the shard reads holds a [`Reservation`]
//! of its size from before its body is allocated until its response is written. A frame that does
//! not fit waits; it holds nothing while it waits, so a peer that announces a huge frame and
//! sends nothing costs nothing.
//!
//! Two classes of frame share it. Large frames (over [`SMALL_FRAME_BYTES`]) may together hold at
//! most three quarters of the budget and wait in arrival order; small frames (nearly every
//! produce and fetch) may use all of it and are served first-fit, so however many large frames
//! arrive, small requests find room. So that small frames cannot starve a large one in turn,
//! once the first large waiter has waited [`AGED`], small frames are held to the last quarter
//! until it is in. Newcomers queue behind waiters of their class rather than pass them. Room
//! set aside for a woken waiter is promised to it until it takes it or goes away.
//!
//! Lives on one shard's thread (`Rc`, `Cell`): reservations are taken and dropped there.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

/// Frames up to this size may use the whole budget; larger ones only three quarters of it.
pub const SMALL_FRAME_BYTES: u64 = 1 << 20;

/// How long the first large waiter waits before small frames are held to the last quarter.
const AGED: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Small = 0,
    Large = 1,
}

pub struct RequestBudget {
    total: u64,
    /// Bytes held, by class.
    held: [Cell<u64>; 2],
    /// Room set aside for woken waiters that have not taken it yet, by class.
    promised: [Cell<u64>; 2],
    waiters: RefCell<Vec<Waiter>>,
}

struct Waiter {
    bytes: u64,
    class: Class,
    /// When the frame began waiting (kept when it queues again).
    since: Instant,
    wake: oneshot::Sender<()>,
}

/// Bytes of the budget held by one request; given back when dropped. It can grow once the
/// request is decoded and what handling it will allocate is known ([`Reservation::try_grow`]).
pub struct Reservation {
    budget: Rc<RequestBudget>,
    bytes: Cell<u64>,
    class: Class,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// How much this reservation could grow by now: whatever is free, whatever its class (the
    /// cap on large frames is on frames; a large request must still be able to decode).
    pub fn growable(&self) -> u64 {
        self.budget.available()
    }

    /// Gives `bytes` of the reservation back early (what it held for a frame now freed).
    pub fn shrink(&self, bytes: u64) {
        let bytes = bytes.min(self.bytes.get());
        self.bytes.set(self.bytes.get() - bytes);
        self.budget.release(bytes, self.class);
    }

    /// Takes `extra` more bytes if the budget has them now. Never waits: a request that holds
    /// its frame while waiting for more could, with others doing the same, wait forever.
    pub fn try_grow(&self, extra: u64) -> bool {
        if extra > self.growable() {
            return false;
        }
        self.budget.add(&self.budget.held, self.class, extra);
        self.bytes.set(self.bytes.get() + extra);
        true
    }
}

impl RequestBudget {
    pub fn new(total_bytes: u64) -> Rc<RequestBudget> {
        assert!(total_bytes > 0);
        Rc::new(RequestBudget {
            total: total_bytes,
            held: Default::default(),
            promised: Default::default(),
            waiters: RefCell::new(Vec::new()),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes neither held nor promised.
    pub fn available(&self) -> u64 {
        let taken: u64 = (0..2)
            .map(|c| self.held[c].get() + self.promised[c].get())
            .sum();
        self.total - taken
    }

    fn large_limit(&self) -> u64 {
        self.total / 4 * 3
    }

    fn add(&self, cells: &[Cell<u64>; 2], class: Class, bytes: u64) {
        let cell = &cells[class as usize];
        cell.set(cell.get() + bytes);
    }

    fn sub(&self, cells: &[Cell<u64>; 2], class: Class, bytes: u64) {
        let cell = &cells[class as usize];
        cell.set(cell.get().checked_sub(bytes).expect("budget accounting"));
    }

    fn class_taken(&self, class: Class) -> u64 {
        self.held[class as usize].get() + self.promised[class as usize].get()
    }

    /// Room a frame of `class` may take now; `held_back` holds small frames to the last quarter
    /// (an aged large frame is waiting).
    fn room(&self, class: Class, held_back: bool) -> u64 {
        let free = self.available();
        match class {
            Class::Large => free.min(self.large_limit().saturating_sub(self.class_taken(class))),
            Class::Small if held_back => {
                let quarter = self.total - self.large_limit();
                free.min(quarter.saturating_sub(self.class_taken(class)))
            }
            Class::Small => free,
        }
    }

    /// What a frame of `frame_bytes` reserves, and its class: its size, except that a frame
    /// larger than large frames may hold reserves all they may hold (it must be able to run).
    fn cost(&self, frame_bytes: u64) -> (u64, Class) {
        if frame_bytes > SMALL_FRAME_BYTES {
            (frame_bytes.min(self.large_limit()), Class::Large)
        } else {
            (frame_bytes.min(self.total), Class::Small)
        }
    }

    /// Whether the first large waiter has waited long enough to hold small frames back.
    fn large_waiter_aged(waiters: &[Waiter], now: Instant) -> bool {
        waiters
            .iter()
            .find(|w| w.class == Class::Large && !w.wake.is_canceled())
            .is_some_and(|w| now.duration_since(w.since) >= AGED)
    }

    /// Reserves `frame_bytes` now if it fits and no frame of its class is waiting.
    pub fn try_reserve(self: &Rc<Self>, frame_bytes: u64) -> Option<Reservation> {
        let (bytes, class) = self.cost(frame_bytes);
        let waiters = self.waiters.borrow();
        if waiters
            .iter()
            .any(|w| w.class == class && !w.wake.is_canceled())
        {
            return None;
        }
        let held_back = class == Class::Small && Self::large_waiter_aged(&waiters, Instant::now());
        if bytes > self.room(class, held_back) {
            return None;
        }
        drop(waiters);
        Some(self.take(bytes, class))
    }

    fn take(self: &Rc<Self>, bytes: u64, class: Class) -> Reservation {
        self.add(&self.held, class, bytes);
        Reservation {
            budget: self.clone(),
            bytes: Cell::new(bytes),
            class,
        }
    }

    /// Reserves `frame_bytes`, waiting until it fits. Cancel-safe: dropping the future holds
    /// nothing, and a waiter dropped after being woken hands its turn on.
    pub async fn reserve(self: &Rc<Self>, frame_bytes: u64) -> Reservation {
        if let Some(reservation) = self.try_reserve(frame_bytes) {
            return reservation;
        }
        let (bytes, class) = self.cost(frame_bytes);
        let since = Instant::now();
        loop {
            let (wake, woken) = oneshot::channel();
            {
                let mut waiters = self.waiters.borrow_mut();
                // In arrival order, also when a waiter that lost its room queues again.
                let at = waiters.partition_point(|w| w.since <= since);
                waiters.insert(
                    at,
                    Waiter {
                        bytes,
                        class,
                        since,
                        wake,
                    },
                );
            }
            // The room may be there already (the queue held only waiters that went away).
            self.wake_waiters();
            let mut wait = Wait {
                budget: self,
                bytes,
                class,
                woken,
                done: false,
            };
            let woke = (&mut wait.woken).await.is_ok();
            wait.done = true;
            if woke {
                // The room promised to this waiter becomes its reservation.
                self.sub(&self.promised, class, bytes);
                return self.take(bytes, class);
            }
        }
    }

    fn release(&self, bytes: u64, class: Class) {
        self.sub(&self.held, class, bytes);
        self.wake_waiters();
    }

    /// Wakes, in arrival order, the waiters the room can hold, promising each its room: large
    /// ones strictly in order, small ones first-fit.
    fn wake_waiters(&self) {
        let mut waiters = self.waiters.borrow_mut();
        if waiters.is_empty() {
            return;
        }
        waiters.retain(|w| !w.wake.is_canceled());
        let held_back = Self::large_waiter_aged(&waiters, Instant::now());
        let mut large_blocked = false;
        waiters.retain_mut(|w| {
            if w.class == Class::Large && large_blocked {
                return true;
            }
            if w.bytes > self.room(w.class, held_back && w.class == Class::Small) {
                large_blocked |= w.class == Class::Large;
                return true;
            }
            let (placeholder, _) = oneshot::channel();
            if std::mem::replace(&mut w.wake, placeholder).send(()).is_ok() {
                self.add(&self.promised, w.class, w.bytes);
            }
            false
        });
    }
}

/// One wait for room. If the future is dropped after its waiter was woken but before it took
/// the room, the room promised to it goes to the next waiters instead of being lost.
struct Wait<'a> {
    budget: &'a RequestBudget,
    bytes: u64,
    class: Class,
    woken: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if !self.done && matches!(self.woken.try_recv(), Ok(Some(()))) {
            let budget = self.budget;
            budget.sub(&budget.promised, self.class, self.bytes);
            budget.wake_waiters();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.bytes.get(), self.class);
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

    /// Runs `test` on a glommio executor of its own.
    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { test().await })
            .unwrap()
            .join()
            .unwrap();
    }

    /// `future`'s output, or a failed test if it takes more than 5 s (a lost wake-up).
    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        futures::select! {
            out = future.fuse() => out,
            _ = glommio::timer::sleep(std::time::Duration::from_secs(5)).fuse() => {
                panic!("a waiter was never woken")
            }
        }
    }

    /// Lets every spawned task run up to its next wait.
    async fn settle() {
        for _ in 0..3 {
            glommio::executor().yield_now().await;
        }
    }

    #[test]
    fn a_woken_waiter_that_goes_away_hands_its_room_on() {
        on_executor(|| async move {
            let budget = RequestBudget::new(4 * MIB);
            let held: Vec<_> = (0..4).map(|_| budget.try_reserve(MIB).unwrap()).collect();
            let first = budget.reserve(MIB).boxed_local();
            let mut first = Some(first);
            // Poll the first waiter once so that it queues.
            assert!(futures::poll!(first.as_mut().unwrap()).is_pending());
            let second = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(MIB).await }
            });
            settle().await;
            // Room for one: the first waiter is woken, then dropped before it takes the room.
            let mut held = held;
            held.pop();
            drop(first.take());
            let second = within(second).await;
            assert_eq!(second.bytes(), MIB, "the second waiter got the room");
            drop(held);
        });
    }

    #[test]
    fn large_waiters_are_woken_only_when_large_frames_may_grow() {
        on_executor(|| async move {
            let budget = RequestBudget::new(8 * MIB);
            let large = budget.try_reserve(6 * MIB).unwrap(); // all large frames may hold
            let small: Vec<_> = (0..2).map(|_| budget.try_reserve(MIB).unwrap()).collect();
            let waiting_large = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(2 * MIB).await }
            });
            let waiting_small = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(MIB).await }
            });
            settle().await;
            // 2 MiB free, but not for large frames: the small waiter behind gets it.
            drop(small);
            let got_small = within(waiting_small).await;
            assert_eq!(got_small.bytes(), MIB);
            drop(large);
            assert_eq!(within(waiting_large).await.bytes(), 2 * MIB);
        });
    }

    #[test]
    fn newcomers_queue_behind_waiters_of_their_class_only() {
        on_executor(|| async move {
            const HALF: u64 = MIB / 2;
            let budget = RequestBudget::new(4 * MIB);
            let mut held: Vec<_> = (0..7).map(|_| budget.try_reserve(HALF).unwrap()).collect();
            let waiting = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(MIB).await }
            });
            settle().await;
            assert!(
                budget.try_reserve(HALF).is_none(),
                "half a MiB is free, but a small waiter is first"
            );
            held.pop();
            assert_eq!(within(waiting).await.bytes(), MIB);
            drop(held);
            // A small newcomer does pass a large waiter that does not fit (and is not aged).
            let large = budget.try_reserve(3 * MIB).unwrap();
            let waiting_large = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(2 * MIB).await }
            });
            settle().await;
            let small = budget.try_reserve(MIB).expect("room in the last quarter");
            drop((large, small));
            assert_eq!(within(waiting_large).await.bytes(), 2 * MIB);
        });
    }

    #[test]
    fn an_aged_large_waiter_holds_small_frames_to_the_last_quarter() {
        on_executor(|| async move {
            let budget = RequestBudget::new(8 * MIB);
            let small: Vec<_> = (0..6).map(|_| budget.try_reserve(MIB).unwrap()).collect();
            let waiting_large = glommio::spawn_local({
                let budget = budget.clone();
                async move { budget.reserve(4 * MIB).await }
            });
            // (That small frames pass a waiter not yet aged is the test above: asserting it
            // here would race the 100 ms on a loaded machine.)
            glommio::timer::sleep(AGED * 2).await;
            assert!(
                budget.try_reserve(MIB).is_none(),
                "aged: small frames keep to the last quarter (2 MiB), which 6 MiB exceeds"
            );
            drop(small);
            assert_eq!(within(waiting_large).await.bytes(), 4 * MIB);
            assert!(budget.try_reserve(MIB).is_some());
        });
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
