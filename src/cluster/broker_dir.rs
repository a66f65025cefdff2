//! What a broker keeps in its log directory about itself, beside the partitions:
//!
//! - `.lock`: held with `flock` for the life of the process (as Kafka locks each log dir), so two
//!   brokers can never share a log directory. The kernel drops it when the process dies, even
//!   by SIGKILL.
//! - `zookeeper-session`: the id of the ZooKeeper session that holds this broker's registration.
//!   After a SIGKILL the old session lives on in ZooKeeper until it expires
//!   (`zookeeper.session.timeout.ms`), and with it the ephemeral `/brokers/ids/<id>` (and
//!   `/controller`). A restarted broker that finds those znodes owned by the session named here
//!   knows they are its own (it holds the lock, so no live process uses that session) and
//!   replaces them at once instead of waiting out the expiry. A znode owned by any other session
//!   still belongs to a live broker and is left alone.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = ".lock";
const SESSION_FILE: &str = "zookeeper-session";

/// The log directory's lock; released when dropped or when the process ends.
pub struct LogDirLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("log.dirs {0} is in use by another process (is another broker running with it?)")]
    Held(PathBuf),
    #[error("cannot lock log.dirs {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl LogDirLock {
    pub fn acquire(dir: &Path) -> Result<LogDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            return Err(if error.kind() == io::ErrorKind::WouldBlock {
                LockError::Held(dir.to_owned())
            } else {
                io_error(error)
            });
        }
        Ok(LogDirLock { _file: file })
    }
}

/// The session id recorded by the last run, if any (an unreadable file counts as none: the
/// worst outcome is waiting for the old session to expire, as without the file).
pub fn previous_session(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(SESSION_FILE)).ok()?;
    u64::from_str_radix(text.trim().trim_start_matches("0x"), 16)
        .ok()
        .map(|id| id as i64)
}

/// Records `session_id` as the one holding this broker's registration: written to a temporary
/// file, fsynced, renamed over the old one, and the directory fsynced.
pub fn record_session(dir: &Path, session_id: i64) -> io::Result<()> {
    let path = dir.join(SESSION_FILE);
    let temp = dir.join(format!("{SESSION_FILE}.tmp"));
    let file = File::create(&temp)?;
    io::Write::write_all(&mut &file, format!("{:#x}\n", session_id as u64).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    // IMPORTANT: the rename lives in the directory; fsync it or a crash can undo it.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_directory_and_sessions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let lock = LogDirLock::acquire(dir.path()).expect("first lock");
        assert!(matches!(
            LogDirLock::acquire(dir.path()),
            Err(LockError::Held(_))
        ));
        drop(lock);
        let _again = LogDirLock::acquire(dir.path()).expect("released on drop");

        assert_eq!(previous_session(dir.path()), None);
        record_session(dir.path(), 0x1234_5678_9abc).unwrap();
        assert_eq!(previous_session(dir.path()), Some(0x1234_5678_9abc));
        record_session(dir.path(), -5).unwrap();
        assert_eq!(previous_session(dir.path()), Some(-5));
    }
}
