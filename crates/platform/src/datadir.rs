//! The data directory belongs to one process at a time.
//!
//! Two servers on one SQLite file would both run and both write, and each one's live streams
//! would miss the other's sales. The first process holds an exclusive lock on `redstore.lock` in
//! the directory for as long as it runs (the operating system releases it when the process ends,
//! however it ends); a second one is refused at once, naming the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "redstore.lock";

/// An exclusive hold on a data directory; released when dropped.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

/// The data directory is held by another process.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data directory {dir} is in use by another Red Store process ({holder}); stop it first, \
     or give this one another --data-dir"
)]
pub struct DataDirInUse {
    pub dir: String,
    /// What the holder wrote about itself: its pid and what it runs.
    pub holder: String,
}

impl DataDirLock {
    /// Takes the lock of `dir` (which must exist) without waiting, and records `holder` (what
    /// this process is, e.g. `redstore up on 127.0.0.1:50051`) with the process id for whoever
    /// is refused next.
    pub fn acquire(dir: &Path, holder: &str) -> anyhow::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "its process id is not recorded".to_owned(),
                    recorded => recorded.lines().collect::<Vec<_>>().join(", "),
                };
                return Err(DataDirInUse { dir: dir.display().to_string(), holder }.into());
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock the data directory {}: {e}", dir.display())
            }
        }
        let mut lock = Self { file, path };
        lock.record(holder);
        Ok(lock)
    }

    /// Records this process (its id and `holder`) for the next process refused; the lock, not
    /// this text, is what excludes it.
    pub fn record(&mut self, holder: &str) {
        let record = format!("pid {}\n{holder}\n", std::process::id());
        let file = &mut self.file;
        let written = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| {
            file.write_all(record.as_bytes())?;
            file.flush()
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot record this process in the lock file");
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(dir.path(), "redstore up on 127.0.0.1:0").unwrap();
        first.record("redstore up on 127.0.0.1:50051");
        let refused = DataDirLock::acquire(dir.path(), "another").unwrap_err();
        let in_use = refused.downcast_ref::<DataDirInUse>().expect("in use");
        assert!(in_use.holder.contains(&format!("pid {}", std::process::id())), "{in_use}");
        assert!(in_use.holder.contains("redstore up on 127.0.0.1:50051"), "{in_use}");
        drop(first);
        let second = DataDirLock::acquire(dir.path(), "another").expect("free again once the first let go");
        assert_eq!(second.path(), dir.path().join(LOCK_FILE));
    }
}
