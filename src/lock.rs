//! One apply per target at a time. The lock is an exclusive `flock` on a file named after the
//! target, held for as long as the process applies; the kernel releases it when the process
//! ends in any way, so a lock whose holder died is simply free again. The file records who
//! holds it (host, pid, since when) so that a second apply can say so.

use anyhow::Context;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub struct TargetLock {
    file: File,
    path: PathBuf,
}

/// Who holds a lock, as written in its file.
pub fn holder_of(path: &Path) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown-host".into())
}

/// The directory locks live in: one per user and machine, so applies from different
/// directories to the same target exclude each other.
pub fn lock_dir() -> PathBuf {
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("capstan-{uid}")).join("locks")
}

impl TargetLock {
    /// Take the lock for `key` (a target's URL, or the embedded sandbox's state file), or fail
    /// at once naming the holder.
    pub fn acquire(key: &str) -> anyhow::Result<TargetLock> {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let name = format!("{:016x}.lock", xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock {}", path.display()))?;
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            anyhow::bail!(
                "another apply to {key} is running ({}); try again when it has finished",
                if holder.is_empty() { "holder unknown".to_string() } else { format!("held by {holder}") }
            );
        }
        // Ours now: whatever a dead holder wrote is replaced.
        let since =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "host {} pid {} since {since}", hostname(), std::process::id())?;
        file.sync_all()?;
        Ok(TargetLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_and_the_lock_frees_on_drop() {
        let key = format!("test-target-{}", std::process::id());
        let first = TargetLock::acquire(&key).unwrap();
        // flock locks belong to open file descriptions: a second open in this process conflicts too.
        let err = TargetLock::acquire(&key).err().unwrap().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains("since "), "{err}");
        drop(first);
        TargetLock::acquire(&key).unwrap();
    }
}
