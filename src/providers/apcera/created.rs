//! The record of what capstan created where the platform has no place for a mark: semantic
//! pipeline rules and staging pipelines (seed 003 L3308-3470, L3898-4100) carry no labels, no
//! description and no free text — `name` must be the FQN's last part, `created_by` is the
//! platform's. So capstan proves it made one by its uuid: when a create is answered, the uuid
//! (with kind, FQN and owner) is written to `apcera-created.json` in the state directory, before
//! the step is done; a delete removes it. A live rule or pipeline is capstan's only when its
//! uuid, kind and FQN are all in the record with this owner: one of the same name made by anyone
//! else has another uuid and is never pruned.
//!
//! What this costs, on purpose: ownership of these two kinds is local to a state directory. A
//! plan with another state directory (a CI checkout, a second daemon) sees them as not managed
//! and never prunes them; a lost record (or a create whose answer was lost) leaves them in place
//! rather than deleting what capstan cannot prove it made. Every other kind keeps its mark on
//! the platform (mod.rs). The file is written whole to a temporary file, synced and renamed, so
//! a kill leaves the old record or the new one; a damaged file is an error naming it, never
//! silently emptied (that would forget what was applied).
//!
//! Several processes may share one state directory (a daemon and a CLI apply, applies to two
//! targets), so no process trusts its own copy: each change re-reads the file and writes it back
//! under an exclusive `flock` of `apcera-created.json.lock` (never writing an older view over
//! what another one recorded), and every observation re-reads it. A record that is a symbolic
//! link is read and written where it points, and stays a link.

use anyhow::Context;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file's name in the state directory.
pub const FILE: &str = "apcera-created.json";
/// A record larger than this is not read (a million entries fit well within it).
const MAX_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    kind: String,
    fqn: String,
    owner: String,
}

pub struct Created {
    /// None: no state directory (offline, or a connection made without one): kept in memory.
    path: Option<PathBuf>,
    /// By uuid.
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Created {
    /// The record kept in `state_dir`, read now: an unreadable one is an error naming it.
    pub fn open(state_dir: Option<&Path>) -> anyhow::Result<Self> {
        let path = state_dir.map(|d| resolve(&d.join(FILE))).transpose()?;
        let entries = match &path {
            Some(p) => read(p)?,
            None => BTreeMap::new(),
        };
        Ok(Created { path, entries: Mutex::new(entries) })
    }

    /// The owner that created the live `kind` object `fqn` with this `uuid`, if capstan did.
    pub fn owner_of(&self, kind: &str, fqn: &str, uuid: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap();
        entries.get(uuid).filter(|e| e.kind == kind && e.fqn == fqn).map(|e| e.owner.clone())
    }

    /// Note that capstan (as `owner`) created this object, durably.
    pub fn add(&self, kind: &str, fqn: &str, uuid: &str, owner: &str) -> Result<(), String> {
        if uuid.is_empty() {
            return Err(format!("the platform answered the creation of {kind} {fqn} without a uuid"));
        }
        let entry = Entry { kind: kind.to_string(), fqn: fqn.to_string(), owner: owner.to_string() };
        self.change(|entries| {
            entries.insert(uuid.to_string(), entry);
            true
        })
        .map_err(|e| {
            format!("{kind} {fqn} was created (uuid {uuid}) but could not be recorded as capstan's, so it will not be pruned: {e:#}")
        })
    }

    /// Forget an object capstan deleted (nothing to do for one it never recorded).
    pub fn remove(&self, uuid: &str) -> Result<(), String> {
        self.change(|entries| entries.remove(uuid).is_some())
            .map_err(|e| format!("cannot update the record of what capstan created: {e:#}"))
    }

    /// Read the record again: another process with this state directory may have changed it.
    pub fn reload(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.path {
            *self.entries.lock().unwrap() = read(path)?;
        }
        Ok(())
    }

    /// Change the record as it is in the file now (re-read under the file's lock), and write it
    /// back when `f` says it changed anything.
    fn change(&self, f: impl FnOnce(&mut BTreeMap<String, Entry>) -> bool) -> anyhow::Result<()> {
        let mut entries = self.entries.lock().unwrap();
        let Some(path) = &self.path else {
            f(&mut entries);
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            crate::state::create_dir(dir)?;
        }
        let _held = lock(&path.with_extension("json.lock"))?;
        let mut now = read(path)?;
        if f(&mut now) {
            write(path, &now)?;
        }
        *entries = now;
        Ok(())
    }
}

/// Where the record is: the file a symbolic link at `path` points to (a record kept on a lasting
/// volume), so that it is written there and the link stays, and it is locked there too.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .with_context(|| format!("{} is a symbolic link to nothing that can be read", path.display())),
        _ => Ok(path.to_path_buf()),
    }
}

/// Hold an exclusive lock on `path` (made if need be, never through a symbolic link) until the
/// returned file is dropped.
fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open the lock {}", path.display()))?;
    // Blocking: another process holds it only while it rewrites the record.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}

/// Write the record whole: a temporary file (never through a symbolic link), synced, renamed
/// over the old one, and the rename synced.
fn write(path: &Path, entries: &BTreeMap<String, Entry>) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created: Map<String, Value> = entries
        .iter()
        .map(|(u, e)| (u.clone(), json!({ "kind": e.kind, "fqn": e.fqn, "owner": e.owner })))
        .collect();
    let text = serde_json::to_vec_pretty(&json!({ "created": created }))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&text).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<BTreeMap<String, Entry>> {
    let damaged = |why: String| {
        anyhow::anyhow!(
            "the record of what capstan created on Apcera, {}, is damaged ({why}): restore it, or move it aside (then rules and staging pipelines capstan made are no longer pruned)",
            path.display()
        )
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(damaged(format!("not a file of at most {MAX_BYTES} bytes")));
    }
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| damaged(e.to_string()))?;
    let created = v.get("created").and_then(Value::as_object).ok_or_else(|| damaged("no \"created\" object".into()))?;
    let mut out = BTreeMap::new();
    for (uuid, e) in created {
        let field = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(kind), Some(fqn), Some(owner)) = (field("kind"), field("fqn"), field("owner")) else {
            return Err(damaged(format!("entry {uuid:?} lacks kind, fqn or owner")));
        };
        out.insert(uuid.clone(), Entry { kind, fqn, owner });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_proves_ownership_only_for_its_uuid_kind_and_fqn_and_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Created::open(Some(tmp.path())).unwrap();
        c.add("sempiperule", "sempiperule::/a::r", "u1", "me").unwrap();
        let c = Created::open(Some(tmp.path())).unwrap();
        assert_eq!(c.owner_of("sempiperule", "sempiperule::/a::r", "u1").as_deref(), Some("me"));
        assert_eq!(c.owner_of("sempiperule", "sempiperule::/a::r", "u2"), None, "same name, another uuid");
        assert_eq!(c.owner_of("stagpipe", "sempiperule::/a::r", "u1"), None);
        assert_eq!(c.owner_of("sempiperule", "sempiperule::/a::other", "u1"), None);
        c.remove("u1").unwrap();
        assert_eq!(Created::open(Some(tmp.path())).unwrap().owner_of("sempiperule", "sempiperule::/a::r", "u1"), None);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it_and_is_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(FILE), "{\"created\": {\"u1\": {\"kind\": 3}}}").unwrap();
        let e = Created::open(Some(tmp.path())).err().unwrap().to_string();
        assert!(e.contains(FILE) && e.contains("is damaged"), "{e}");
        std::fs::write(tmp.path().join(FILE), "not json").unwrap();
        assert!(Created::open(Some(tmp.path())).is_err());
        assert_eq!(std::fs::read_to_string(tmp.path().join(FILE)).unwrap(), "not json");
    }

    #[test]
    fn two_holders_of_one_record_never_write_over_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (Created::open(Some(tmp.path())).unwrap(), Created::open(Some(tmp.path())).unwrap());
        a.add("sempiperule", "sempiperule::/a::r", "u1", "me").unwrap();
        b.add("sempiperule", "sempiperule::/a::s", "u2", "me").unwrap();
        assert!(a.owner_of("sempiperule", "sempiperule::/a::s", "u2").is_none(), "not seen before a reload");
        let c = Created::open(Some(tmp.path())).unwrap();
        assert!(c.owner_of("sempiperule", "sempiperule::/a::r", "u1").is_some(), "a's entry kept");
        assert!(c.owner_of("sempiperule", "sempiperule::/a::s", "u2").is_some(), "b's entry kept");
        a.reload().unwrap();
        assert!(a.owner_of("sempiperule", "sempiperule::/a::s", "u2").is_some());
    }

    #[test]
    fn without_a_state_directory_nothing_is_written() {
        let c = Created::open(None).unwrap();
        c.add("stagpipe", "stagpipe::/a::p", "u1", "me").unwrap();
        assert_eq!(c.owner_of("stagpipe", "stagpipe::/a::p", "u1").as_deref(), Some("me"));
        assert!(c.add("stagpipe", "stagpipe::/a::p", "", "me").is_err());
    }
}
