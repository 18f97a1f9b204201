//! One apply per target at a time. The lock is an exclusive `flock` on files named after the
//! target, held for as long as the process applies; the kernel releases it when the process
//! ends in any way, so a lock whose holder died is simply free again. The file records who
//! holds it (host, pid, since when) so that a second apply can say so.
//!
//! A target is known by its normalised URL (`TargetKey`): lower-case scheme and host, the port
//! always written, no trailing slash, no credentials. Its lock is one file for that name and
//! one for each address the host resolves to, all taken: `http://localhost:8080/` and
//! `http://127.0.0.1:8080` share the address lock of 127.0.0.1, so they exclude each other.
//! Two names whose addresses do not overlap (a cluster behind two load balancers) cannot be
//! seen to be one target.
//!
//! Locks live in a directory per user (applies from different directories to one target must
//! exclude each other): `$XDG_RUNTIME_DIR/capstan/locks`, else `capstan-<uid>/locks` in the
//! temporary directory. Both are created with mode 0700 and used only when they are real
//! directories owned by this user that no one else can write in (one others can only read is
//! made 0700); a lock file is opened without following symlinks and only ever emptied when it
//! is one of capstan's lock files.

use anyhow::{Context, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What identifies a target for locking and journalling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetKey {
    /// The normalised URL (or `sandbox:<state file>` for the embedded sandbox): the journal's
    /// key, and what messages call the target.
    pub name: String,
    /// The same URL with each address its host resolved to, locked as well.
    pub addresses: Vec<String>,
    /// The URL as written, which journals of earlier versions were keyed by.
    pub written: String,
}

impl TargetKey {
    /// A key that is just a name (the embedded sandbox's state file; tests).
    pub fn named(name: impl Into<String>) -> TargetKey {
        let name = name.into();
        TargetKey { written: name.clone(), name, addresses: Vec::new() }
    }

    /// The key of a target URL, its host resolved to every address it has (a name that does
    /// not resolve is locked by name only: nothing can be sent to it anyway).
    pub async fn for_url(url: &str) -> anyhow::Result<TargetKey> {
        let u = Normalised::parse(url)?;
        let mut addrs: Vec<std::net::IpAddr> = match tokio::net::lookup_host((u.bare_host(), u.port)).await {
            Ok(found) => found.map(|a| a.ip().to_canonical()).collect(),
            Err(e) => {
                tracing::debug!("cannot resolve {}: {e}; locking it by name only", u.host);
                Vec::new()
            }
        };
        addrs.sort();
        addrs.dedup();
        let name = u.with_host(&u.host);
        let addresses = addrs
            .iter()
            .map(|ip| match ip {
                std::net::IpAddr::V4(v4) => u.with_host(&v4.to_string()),
                std::net::IpAddr::V6(v6) => u.with_host(&format!("[{v6}]")),
            })
            .filter(|a| *a != name)
            .collect();
        Ok(TargetKey { name, addresses, written: crate::redact::url(url) })
    }

    /// Whether `self` and `other` may be one server: they share a name or an address
    /// (`http://localhost:8080` and `http://127.0.0.1:8080/` do), as their locks do.
    pub fn overlaps(&self, other: &TargetKey) -> bool {
        self.lock_names().any(|a| other.lock_names().any(|b| a == b))
    }

    /// The normalised name of `url` (what [`TargetKey::for_url`] calls it), without resolving it.
    pub fn name_of(url: &str) -> anyhow::Result<String> {
        let u = Normalised::parse(url)?;
        Ok(u.with_host(&u.host))
    }

    /// Every name whose lock is taken: the URL's, then each address's.
    fn lock_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.addresses.iter().map(String::as_str))
    }

    /// The keys a journal may have recorded this target under.
    pub fn journal_keys(&self) -> Vec<&str> {
        let mut keys = vec![self.name.as_str()];
        if self.written != self.name {
            keys.push(&self.written);
        }
        keys
    }
}

/// A URL taken apart into what identifies its server: lower-case scheme and host (an IPv6
/// address in brackets, an IPv4-mapped one as IPv4), the port (the scheme's default when none
/// is written), and the path without trailing slashes plus the query; userinfo dropped.
struct Normalised {
    scheme: String,
    host: String,
    port: u16,
    rest: String,
}

impl Normalised {
    fn parse(url: &str) -> anyhow::Result<Normalised> {
        let shown = crate::redact::url(url);
        let u = reqwest::Url::parse(url).with_context(|| format!("{shown} is not a URL"))?;
        let host = u.host_str().with_context(|| format!("{shown} has no host"))?;
        let host = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(ip) => match ip.to_canonical() {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            },
            Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
        };
        let port = u.port_or_known_default().with_context(|| format!("{shown} has no port"))?;
        let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
        let rest = format!("{}{query}", u.path().trim_end_matches('/'));
        Ok(Normalised { scheme: u.scheme().to_string(), host, port, rest })
    }

    /// The host as a resolver takes it (no brackets).
    fn bare_host(&self) -> &str {
        self.host.trim_matches(['[', ']'])
    }

    fn with_host(&self, host: &str) -> String {
        format!("{}://{host}:{}{}", self.scheme, self.port, self.rest)
    }
}

pub struct TargetLock {
    files: Vec<(File, PathBuf)>,
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
/// directories to the same target exclude each other. Created (mode 0700) when missing;
/// refused when it, or the directory made for it, is not a directory of this user's that
/// only this user can write in.
pub fn lock_dir() -> anyhow::Result<PathBuf> {
    let uid = unsafe { libc::getuid() };
    let base = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("capstan"),
        None => std::env::temp_dir().join(format!("capstan-{uid}")),
    };
    private_dir(&base, uid)?;
    let dir = base.join("locks");
    private_dir(&dir, uid)?;
    Ok(dir)
}

/// Make `dir` with mode 0700 if it is missing, and check that it is a real directory owned by
/// `uid` that no one else can write in (and make it 0700 if others can read it).
fn private_dir(dir: &Path, uid: u32) -> anyhow::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create the lock directory {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let why = if meta.file_type().is_symlink() {
        Some("it is a symbolic link".to_string())
    } else if !meta.is_dir() {
        Some("it is not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!("it belongs to uid {}, not to this user (uid {uid})", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("its mode is {:04o}: others can write in it (expected 0700)", meta.mode() & 0o7777))
    } else if meta.mode() & 0o077 != 0 {
        // Others could read it but never write in it (as earlier versions made it): ours to close.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
        None
    } else {
        None
    };
    match why {
        Some(why) => bail!(
            "refusing to keep locks in {}: {why}; remove it (capstan makes it again, mode 0700) or set XDG_RUNTIME_DIR to a private directory",
            dir.display()
        ),
        None => Ok(()),
    }
}

/// Open (creating it if missing) the lock file `path`, refusing to follow a symlink or to use
/// a file that is not one of this user's capstan lock files.
fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!(
                "refusing to use the lock {}: it is a symbolic link (capstan never follows one there); remove it",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot open the lock {}: {e}", path.display()),
        })?;
    let meta = file.metadata()?;
    let uid = unsafe { libc::getuid() };
    if !meta.is_file() || meta.uid() != uid || meta.nlink() != 1 {
        bail!(
            "refusing to use the lock {}: it is not a plain file of this user's with one name; remove it",
            path.display()
        );
    }
    Ok(file)
}

/// What capstan writes into a lock file: empty, or one `host H pid P since T` line.
fn is_lock_text(text: &[u8]) -> bool {
    text.is_empty() || (text.len() < 1024 && text.starts_with(b"host ") && text.ends_with(b"\n"))
}

impl TargetLock {
    /// Take the lock of every name of `key`, or fail at once naming the holder.
    pub fn acquire(key: &TargetKey) -> anyhow::Result<TargetLock> {
        let dir = lock_dir()?;
        let mut lock = TargetLock { files: Vec::new() };
        for name in key.lock_names() {
            let path = dir.join(format!("{:016x}.lock", xxhash_rust::xxh3::xxh3_64(name.as_bytes())));
            let mut file = open_lock_file(&path)?;
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let mut holder = String::new();
                let _ = Read::by_ref(&mut file).take(1024).read_to_string(&mut holder);
                let holder = holder.trim();
                let through = if name == key.name { String::new() } else { format!(" (as {name})") };
                // Dropping `lock` releases what was taken so far.
                bail!(
                    "another apply to {}{through} is running ({}); try again when it has finished",
                    key.name,
                    if holder.is_empty() { "holder unknown".to_string() } else { format!("held by {holder}") }
                );
            }
            let mut text = Vec::new();
            Read::by_ref(&mut file).take(1024).read_to_end(&mut text)?;
            if !is_lock_text(&text) {
                bail!(
                    "refusing to use the lock {}: it holds something other than a capstan lock; remove it",
                    path.display()
                );
            }
            // Ours now, and a lock file: whatever a dead holder wrote is replaced.
            let since = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "host {} pid {} since {since}", hostname(), std::process::id())?;
            file.sync_all()?;
            lock.files.push((file, path));
        }
        Ok(lock)
    }

    /// The lock file of the target's name.
    pub fn path(&self) -> &Path {
        &self.files[0].1
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        for (file, _) in &self.files {
            // Checked to be a lock file of ours when it was taken.
            let _ = file.set_len(0);
            unsafe {
                libc::flock(file.as_raw_fd(), libc::LOCK_UN);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_and_the_lock_frees_on_drop() {
        let key = TargetKey::named(format!("test-target-{}", std::process::id()));
        let first = TargetLock::acquire(&key).unwrap();
        // flock locks belong to open file descriptions: a second open in this process conflicts too.
        let err = TargetLock::acquire(&key).err().unwrap().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains("since "), "{err}");
        drop(first);
        TargetLock::acquire(&key).unwrap();
    }

    #[test]
    fn urls_are_normalised_to_scheme_host_port_and_path() {
        let n = |u: &str| {
            let n = Normalised::parse(u).unwrap();
            n.with_host(&n.host)
        };
        assert_eq!(n("http://LOCALHOST:8080/"), "http://localhost:8080");
        assert_eq!(n("http://localhost."), "http://localhost:80");
        assert_eq!(n("https://user:secret@Api.Example.com/v1/"), "https://api.example.com:443/v1");
        assert_eq!(n("http://[::ffff:127.0.0.1]:9"), "http://127.0.0.1:9");
        assert_eq!(n("http://[0:0::1]:9//"), "http://[::1]:9");
        assert!(Normalised::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn a_name_and_its_address_share_an_address_lock() {
        let by_name = TargetKey::for_url("http://localhost:7/").await.unwrap();
        let by_ip = TargetKey::for_url("http://127.0.0.1:7").await.unwrap();
        assert_eq!(by_name.name, "http://localhost:7");
        assert!(by_name.addresses.contains(&"http://127.0.0.1:7".to_string()), "{by_name:?}");
        assert!(by_ip.addresses.is_empty(), "an address is its own name: {by_ip:?}");
        assert!(by_name.overlaps(&by_ip) && by_ip.overlaps(&by_name), "one server, two spellings");
        assert!(!by_ip.overlaps(&TargetKey::for_url("http://127.0.0.1:8").await.unwrap()), "another port");
        assert_eq!(TargetKey::name_of("http://LOCALHOST:7/").unwrap(), by_name.name);
        let held = TargetLock::acquire(&by_name).unwrap();
        let err = TargetLock::acquire(&by_ip).err().expect("one server, one lock").to_string();
        assert!(err.contains("another apply to http://127.0.0.1:7 is running"), "{err}");
        drop(held);
        TargetLock::acquire(&by_ip).unwrap();
    }
}
