//! The shard's segment writer: one thread beside the shard's executor that runs the group writes of
//! every partition on the shard, one after another.
//!
//! A buffered `pwritev` can sleep in the kernel (dirty-page throttling, ext4 journal waits), and a
//! shard's executor must never sleep. One thread per shard, rather than a pool: the copying into the
//! page cache is bound to the shard's core either way, and threads sharing a core only preempt one
//! another (`perf/RESULTS.md` measured a four-thread pool 10% slower than one thread). The thread
//! runs as SCHED_BATCH, so waking it does not preempt the executor. Created from the shard's pinned
//! executor thread, it inherits that thread's CPU affinity.

use futures::channel::oneshot;

use crate::storage::{SegmentWrite, StorageError};

struct WriteJob {
    write: SegmentWrite,
    done: oneshot::Sender<(SegmentWrite, Result<(), StorageError>)>,
}

#[derive(Clone)]
pub struct SegmentWriter {
    jobs: flume::Sender<WriteJob>,
}

impl SegmentWriter {
    /// Starts the thread; it ends when the last handle is dropped.
    pub fn start(shard_id: usize) -> std::io::Result<SegmentWriter> {
        let (jobs, queue) = flume::unbounded::<WriteJob>();
        std::thread::Builder::new()
            .name(format!("skein-writer-{shard_id}"))
            .spawn(move || {
                batch_scheduling();
                for job in queue.iter() {
                    let written = job.write.run();
                    // The write goes back with its result, to be dropped on the shard's thread:
                    // its buffers are request frames, allocated there.
                    let _ = job.done.send((job.write, written));
                }
            })?;
        Ok(SegmentWriter { jobs })
    }

    /// Runs `write` on the writer thread and waits for it.
    pub async fn write(&self, write: SegmentWrite) -> Result<(), StorageError> {
        let (done, finished) = oneshot::channel();
        let stopped = || StorageError::Io {
            path: "segment writer".into(),
            source: std::io::Error::other("the shard's writer thread is gone"),
        };
        self.jobs
            .send(WriteJob { write, done })
            .map_err(|_| stopped())?;
        let (write, written) = finished.await.map_err(|_| stopped())?;
        drop(write);
        written
    }
}

/// SCHED_BATCH: a woken writer does not preempt the shard's executor on their shared core; it
/// runs when the executor waits for I/O or its time slice ends. Without it every hand-off cost
/// two context switches in the middle of the executor's work.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(
            "cannot make the segment writer SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}
