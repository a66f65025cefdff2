//! The cross-shard mesh: how work reaches another shard. Every shard has one bounded queue of
//! [`Job`]s (closures run on that shard's thread with its state); [`invoke_on`] wraps that into
//! "run this future over there and give me its result", as Seastar's `invoke_on` does. This is
//! how a connection's shard hands a partition's work (its batches moved, not copied) to the
//! partition's owner, and how the control thread and the checkpoint thread reach the shards.
//!
//! A leaf: generic over the state a shard keeps (`S`), it knows nothing of what a shard holds,
//! and every layer may use it.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;

/// Jobs a shard's queue holds; a sender beyond it waits (async) or gives up after its timeout
/// (threads). Each job is a small closure; the queue is drained as fast as the shard runs.
pub const JOB_QUEUE_DEPTH: usize = 16_384;

/// Work sent to a shard, run on that shard's thread with access to its state.
pub type Job<S> = Box<dyn FnOnce(&Rc<S>) + Send>;

/// The senders to every shard's job queue, by shard index. Cheap to clone.
pub struct ShardSenders<S>(Arc<Vec<flume::Sender<Job<S>>>>);

impl<S> Clone for ShardSenders<S> {
    fn clone(&self) -> Self {
        ShardSenders(self.0.clone())
    }
}

/// A shard's job queue is gone (the broker is shutting down), or, for a thread that cannot
/// wait, full for longer than it could wait.
#[derive(Debug, thiserror::Error)]
#[error("shard {0} has stopped or does not take jobs")]
pub struct ShardStopped(pub usize);

/// One bounded job queue per shard: the senders, and each shard's receiving end.
pub fn job_queues<S>(shards: usize) -> (ShardSenders<S>, Vec<flume::Receiver<Job<S>>>) {
    let (senders, receivers) = (0..shards).map(|_| flume::bounded(JOB_QUEUE_DEPTH)).unzip();
    (ShardSenders(Arc::new(senders)), receivers)
}

impl<S> ShardSenders<S> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// From async code (a shard's executor, the control thread's runtime): waits for room
    /// without blocking the thread. Jobs sent in order from one task arrive in that order.
    pub async fn send(&self, shard: usize, job: Job<S>) -> Result<(), ShardStopped> {
        self.0[shard]
            .send_async(job)
            .await
            .map_err(|_| ShardStopped(shard))
    }

    /// From a thread that may block (the main thread, the checkpoint thread), never from an
    /// executor: waits at most `timeout` for room.
    pub fn send_blocking(
        &self,
        shard: usize,
        job: Job<S>,
        timeout: Duration,
    ) -> Result<(), ShardStopped> {
        self.0[shard]
            .send_timeout(job, timeout)
            .map_err(|_| ShardStopped(shard))
    }
}

/// Runs `work` on shard `target` and returns its result. `here` is the calling shard (its index
/// and state): work for it runs inline, without a queue.
pub async fn invoke_on<S, F, Fut, R>(
    senders: &ShardSenders<S>,
    here: (usize, &Rc<S>),
    target: usize,
    work: F,
) -> Result<R, ShardStopped>
where
    S: 'static,
    F: FnOnce(Rc<S>) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    if target == here.0 {
        return Ok(work(here.1.clone()).await);
    }
    let (reply, answer) = oneshot::channel();
    let job: Job<S> = Box::new(move |state| {
        let state = state.clone();
        glommio::spawn_local(async move {
            let _ = reply.send(work(state).await);
        })
        .detach();
    });
    senders.send(target, job).await?;
    answer.await.map_err(|_| ShardStopped(target))
}
