//! One client connection, on the shard that accepted it. Requests are pipelined: a reader task
//! reads frames and starts each request's handler as soon as it arrives, while this task awaits the
//! handlers in arrival order and writes their responses, so responses leave in request order as
//! Kafka requires while a produce waits for its write. Handlers start in arrival order (glommio
//! runs spawned tasks first-in first-out), so a partition's appends from one connection keep their
//! order too.
//!
//! What one connection may hold, and for how long (README, "Limits"):
//! - a frame's body is allocated only once the shard's request budget ([`RequestBudget`]) holds
//!   its size, and that reservation lives until the response is written;
//! - at most [`PIPELINE_DEPTH`] requests and a quarter of the shard's budget in flight (one
//!   request of any allowed size always runs);
//! - a watchdog closes the connection when a frame has not all arrived, or a response not all
//!   been written, `connections.max.stall.ms` after it began, and when nothing is in flight and
//!   nothing arrived for `connections.max.idle.ms`.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt, FutureExt, SinkExt, StreamExt};
use glommio::net::TcpStream;
use tracing::debug;

use super::budget::{RequestBudget, Reservation};
use super::handlers::{self, HandleError};
use super::limits::ConnectionSlot;
use super::log_limit;
use super::Response;
use crate::protocol::frame::{read_body, read_length, FrameError};
use crate::shard::metrics::ClosedBy;
use crate::shard::Shard;

/// Requests of one connection being handled at once; the reader waits when this many are
/// unanswered. Clients keep far fewer in flight (Kafka's default is 5).
pub const PIPELINE_DEPTH: usize = 64;

/// What the reader is doing, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Waiting for the next request's length.
    Between,
    /// A length arrived at `reading_since`: waiting for budget, then the body.
    Frame,
}

/// Shared between the reader, the writer and the watchdog of one connection (one thread).
struct State {
    reading: Cell<Reading>,
    reading_since: Cell<Instant>,
    writing_since: Cell<Option<Instant>>,
    /// Last frame read or response written.
    last_activity: Cell<Instant>,
    in_flight: Cell<usize>,
    in_flight_bytes: Cell<u64>,
    /// Woken when a response has been written (in-flight bytes went down).
    drained: Cell<Option<oneshot::Sender<()>>>,
    /// The connection's place under `max.connections(.per.ip)`, given back as soon as the
    /// connection is known to be closing.
    slot: Cell<Option<ConnectionSlot>>,
}

impl State {
    fn new(slot: ConnectionSlot) -> Rc<State> {
        let now = Instant::now();
        Rc::new(State {
            reading: Cell::new(Reading::Between),
            reading_since: Cell::new(now),
            writing_since: Cell::new(None),
            last_activity: Cell::new(now),
            in_flight: Cell::new(0),
            in_flight_bytes: Cell::new(0),
            drained: Cell::new(None),
            slot: Cell::new(Some(slot)),
        })
    }

    fn give_back_slot(&self) {
        drop(self.slot.take());
    }

    fn set_reading(&self, reading: Reading) {
        self.reading.set(reading);
        self.reading_since.set(Instant::now());
    }

    async fn wait_drained(&self) {
        let (tx, rx) = oneshot::channel();
        self.drained.set(Some(tx));
        let _ = rx.await;
    }

    /// A request whose frame had `frame_bytes` has been answered.
    fn answered(&self, frame_bytes: u64) {
        self.in_flight.set(self.in_flight.get() - 1);
        let left = self.in_flight_bytes.get().checked_sub(frame_bytes);
        self.in_flight_bytes
            .set(left.expect("a connection answers no more bytes than it started"));
        self.last_activity.set(Instant::now());
        if let Some(drained) = self.drained.take() {
            let _ = drained.send(());
        }
    }
}

/// A started request: its handler, the budget it holds until the answer is out (the frame and,
/// once decoded, its working memory), and its frame's size.
type Started = (
    glommio::Task<Result<Option<Response>, HandleError>>,
    Rc<Reservation>,
    u64,
);

/// Bytes a connection reads ahead of the frame it is on (its only memory outside the request
/// budget besides the frame being announced).
const READ_AHEAD_BYTES: usize = 4 * 1024;

/// Responses, and bytes of them, written together at most (see the writing loop in
/// [`serve`]).
const COALESCE_MAX_RESPONSES: usize = 64;
const COALESCE_MAX_BYTES: usize = 1 << 20;

/// A request the writer took from the queue while gathering answers to send together: still
/// being handled, or handled with an answer that must not join them (a file piece, an error).
enum Carried {
    Running(Started),
    Ready(Result<Option<Response>, HandleError>, Rc<Reservation>, u64),
}

/// Serves one connection until it closes. `slot` is its place under `max.connections(.per.ip)`:
/// given back as soon as the peer closes, while requests already read finish (their answers go
/// nowhere, but a produce a client sent before closing is still appended, as in Kafka).
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    budget: Rc<RequestBudget>,
    slot: ConnectionSlot,
) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map_or_else(|| "unknown peer".to_owned(), |a| a.to_string());
    let client_host: Rc<str> =
        peer_addr.map_or_else(|| "/unknown".into(), |a| format!("/{}", a.ip()).into());
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{peer}: cannot set TCP_NODELAY: {e}");
    }
    shard.wait_ready().await;
    let socket = stream.as_raw_fd();
    let state = State::new(slot);
    let (reader, mut writer) = stream.split();
    // Small pipelined requests (commits, heartbeats, small produces) arrive many to a packet:
    // one recv takes up to READ_AHEAD_BYTES of them instead of two recvs per frame (length,
    // body). A body at least that large is read straight into its own buffer (BufReader
    // bypasses itself for large reads when empty), so large frames are not copied.
    let mut reader = futures::io::BufReader::with_capacity(READ_AHEAD_BYTES, reader);
    // A futures channel holds its buffer plus one message per sender, and the writer holds the
    // request it is awaiting: PIPELINE_DEPTH in all.
    let (mut started, mut in_order) = mpsc::channel::<Started>(PIPELINE_DEPTH - 2);
    let (close, closed) = oneshot::channel::<String>();
    // Every task below is dropped (cancelled) when this function returns, whichever side ended
    // the connection.
    let _watchdog = glommio::spawn_local(watch(shard.clone(), state.clone(), socket, close));
    let _reading = glommio::spawn_local({
        let (shard, state, peer) = (shard.clone(), state.clone(), peer.clone());
        let limits = shard.config.limits.clone();
        let connection_cap = budget.total() / 4;
        async move {
            // However the reader ends (the peer closed, or sent what closes the connection), its
            // place is given back at once; requests already read still finish.
            let _give_back = GiveBackSlot(&state);
            loop {
                // The writer may hold answers done but not yet written (to send them together),
                // so the channel alone does not bound what is in flight: count them.
                while state.in_flight.get() >= PIPELINE_DEPTH {
                    state.wait_drained().await;
                }
                state.set_reading(Reading::Between);
                let len = match read_length(&mut reader, limits.socket_request_max_bytes).await {
                    Ok(len) => len as u64,
                    Err(FrameError::Closed) => return,
                    Err(e) => {
                        if matches!(e, FrameError::TooLarge { .. } | FrameError::TooShort(_)) {
                            shard.metrics.connection_closed_by(ClosedBy::FrameSize);
                        }
                        log_limit::warn("connection closed", || {
                            format!("{peer}: {e}; closing the connection")
                        });
                        return;
                    }
                };
                state.set_reading(Reading::Frame);
                // This connection's own requests first, then the shard's budget.
                while state.in_flight_bytes.get() > 0
                    && state.in_flight_bytes.get() + len > connection_cap
                {
                    state.wait_drained().await;
                }
                let reservation = Rc::new(match budget.try_reserve(len) {
                    Some(reservation) => reservation,
                    None => {
                        shard.metrics.request_budget_wait();
                        budget.reserve(len).await
                    }
                });
                let frame = match read_body(&mut reader, len as usize).await {
                    Ok(frame) => frame,
                    Err(FrameError::Closed) => return,
                    Err(e) => {
                        log_limit::warn("connection closed", || {
                            format!("{peer}: {e}; closing the connection")
                        });
                        return;
                    }
                };
                state.last_activity.set(Instant::now());
                state.in_flight.set(state.in_flight.get() + 1);
                // The connection's own cap counts frames (the reservation grows as it is handled).
                state.in_flight_bytes.set(state.in_flight_bytes.get() + len);
                let (shard, held, host) = (shard.clone(), reservation.clone(), client_host.clone());
                let handling = glommio::spawn_local(async move {
                    handlers::handle(&shard, frame, held, host).await
                });
                if started.send((handling, reservation, len)).await.is_err() {
                    return;
                }
            }
        }
    });
    let writing = async {
        // A request taken from the queue behind a response being coalesced, not yet written.
        let mut carried: Option<Carried> = None;
        loop {
            let (handled, reservation, frame_bytes) = match carried.take() {
                Some(Carried::Ready(handled, reservation, frame_bytes)) => {
                    (handled, reservation, frame_bytes)
                }
                Some(Carried::Running((handling, reservation, frame_bytes))) => {
                    (handling.await, reservation, frame_bytes)
                }
                None => match in_order.next().await {
                    Some((handling, reservation, frame_bytes)) => {
                        (handling.await, reservation, frame_bytes)
                    }
                    None => break,
                },
            };
            match handled {
                Ok(Some(mut response)) => {
                    // Answers already done behind this one leave with it, in one sendmsg: many
                    // small pipelined requests (commits, acks) cost one system call, not one each.
                    let mut answered = vec![(reservation, frame_bytes)];
                    let mut bytes = response.in_memory_len();
                    while bytes.is_some_and(|b| b < COALESCE_MAX_BYTES)
                        && answered.len() < COALESCE_MAX_RESPONSES
                    {
                        let Some(Some((mut handling, reservation, frame_bytes))) =
                            in_order.next().now_or_never()
                        else {
                            break;
                        };
                        match (&mut handling).now_or_never() {
                            None => {
                                carried =
                                    Some(Carried::Running((handling, reservation, frame_bytes)));
                                break;
                            }
                            Some(Ok(Some(more))) if more.in_memory_len().is_some() => {
                                bytes = bytes.zip(more.in_memory_len()).map(|(a, b)| a + b);
                                response.pieces.extend(more.pieces);
                                answered.push((reservation, frame_bytes));
                            }
                            Some(Ok(None)) => answered.push((reservation, frame_bytes)),
                            Some(other) => {
                                carried = Some(Carried::Ready(other, reservation, frame_bytes));
                                break;
                            }
                        }
                    }
                    state.writing_since.set(Some(Instant::now()));
                    let written = response.write_to(&mut writer, socket).await;
                    state.writing_since.set(None);
                    if let Err(e) = written {
                        debug!("{peer}: writing a response failed: {e}");
                        return;
                    }
                    for (reservation, frame_bytes) in answered {
                        state.answered(frame_bytes);
                        drop(reservation);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    shard.metrics.connection_closed_by(e.closed_by());
                    log_limit::warn("connection closed", || {
                        format!("{peer}: {e}; closing the connection")
                    });
                    return;
                }
            }
            state.answered(frame_bytes);
            drop(reservation);
        }
    };
    let outcome = futures::select! {
        _ = writing.fuse() => None,
        why = closed.fuse() => why.ok(),
    };
    state.give_back_slot();
    if let Some(why) = outcome {
        log_limit::warn("connection closed", || {
            format!("{peer}: {why}; closing the connection")
        });
    }
}

/// Gives the connection's slot back when dropped (the reader ending, however it ends).
struct GiveBackSlot<'a>(&'a State);

impl Drop for GiveBackSlot<'_> {
    fn drop(&mut self) {
        self.0.give_back_slot();
    }
}

/// Closes the connection (shuts the socket down, which ends any read or write on it, and tells
/// `serve` why) when a limit in time is passed.
async fn watch(shard: Rc<Shard>, state: Rc<State>, socket: RawFd, close: oneshot::Sender<String>) {
    let limits = &shard.config.limits;
    let idle = Duration::from_millis(limits.connections_max_idle_ms);
    let stall = Duration::from_millis(limits.connections_max_stall_ms);
    let tick = (idle.min(stall) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let why = loop {
        glommio::timer::sleep(tick).await;
        let now = Instant::now();
        if let Some(since) = state.writing_since.get() {
            if now - since > stall {
                shard.metrics.connection_closed_by(ClosedBy::Stalled);
                break format!("a response not written after {stall:?} (connections.max.stall.ms)");
            }
        }
        match state.reading.get() {
            Reading::Frame if now - state.reading_since.get() > stall => {
                shard.metrics.connection_closed_by(ClosedBy::Stalled);
                break format!(
                    "a request frame not complete after {stall:?} (connections.max.stall.ms)"
                );
            }
            Reading::Between
                if state.in_flight.get() == 0
                    && now - state.last_activity.get().max(state.reading_since.get()) > idle =>
            {
                shard.metrics.connection_closed_by(ClosedBy::Idle);
                break format!("idle for {idle:?} (connections.max.idle.ms)");
            }
            _ => {}
        }
    };
    // SAFETY: `socket` is the connection's descriptor, open until `serve` returns, which cannot
    // happen before this task has run to here (it owns the task). shutdown(2) only ends I/O on it.
    // The place under max.connections(.per.ip) goes back before the peer can see the close.
    state.give_back_slot();
    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
    let _ = close.send(why);
}
