//! How the daemon learns of new commits: `notify` on a local repository's refs (loose refs,
//! `packed-refs`, `HEAD`), so a commit is seen within milliseconds; polling for a remote one,
//! every `--interval` with ±10% jitter so many daemons do not poll in step. Webhooks arrive
//! through the API. Every signal only wakes the reconcile loop, which reads the newest commit.

use super::{Daemon, Reason};
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};
use rand::Rng;
use std::path::Path;
use std::sync::Arc;

pub struct Watcher {
    _notify: Option<notify::RecommendedWatcher>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(p) = &self.poller {
            p.abort();
        }
    }
}

pub fn start(daemon: Arc<Daemon>) -> Watcher {
    if daemon.opts.repo.is_remote() {
        let interval = daemon.opts.interval;
        let poller = tokio::spawn(async move {
            loop {
                let jitter = rand::rng().random_range(0.9..=1.1);
                tokio::time::sleep(interval.mul_f64(jitter)).await;
                daemon.trigger(Reason::Poll);
            }
        });
        return Watcher { _notify: None, poller: Some(poller) };
    }
    match watch_refs(daemon.clone()) {
        Ok(w) => Watcher { _notify: Some(w), poller: None },
        Err(e) => {
            // Without file events, fall back to polling the local repository.
            tracing::warn!("cannot watch the repository's refs ({e:#}); polling every {:?}", daemon.opts.interval);
            let interval = daemon.opts.interval;
            let poller = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    daemon.trigger(Reason::Poll);
                }
            });
            Watcher { _notify: None, poller: Some(poller) }
        }
    }
}

fn watch_refs(daemon: Arc<Daemon>) -> anyhow::Result<notify::RecommendedWatcher> {
    // Absolute, as the paths of events are (a relative --repo matched none of them).
    let git_dir = std::fs::canonicalize(daemon.source_git_dir()?)?;
    let dir = git_dir.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if may_move_a_ref(&event.kind) && event.paths.iter().any(|p| is_ref_path(&dir, p)) {
            daemon.trigger(Reason::Change);
        }
    })?;
    watcher.watch(&git_dir, RecursiveMode::NonRecursive)?;
    watcher.watch(&git_dir.join("refs"), RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Whether an event can mean that a ref moved. Reading the refs, which every reconcile does,
/// must not wake the loop, or it wakes itself for ever.
fn may_move_a_ref(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// HEAD, packed-refs, or anything under refs/.
fn is_ref_path(git_dir: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(git_dir) else { return false };
    rel.starts_with("refs") || rel == Path::new("HEAD") || rel == Path::new("packed-refs")
}
