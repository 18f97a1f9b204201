//! Snapshots read straight from a git repository's object database at one commit, with `gix`:
//! no checkout and no working tree, so a snapshot is consistent even while someone pushes, and
//! a bare repository works as well as a normal one.
//!
//! A repository is a local path (read in place) or a URL (`file://`, `http://`, `https://`),
//! fetched into a bare cache under the state directory. The first fetch clones; later ones
//! fetch every branch and tag into the same cache. All of it is blocking I/O: async callers run
//! it on the blocking thread pool.

use super::{Origin, Snapshot, SourceFile, is_manifest_path};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Which repository, which revision, which directory inside it.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    /// A local path, or a `file://`, `http://` or `https://` URL.
    pub location: String,
    /// A branch, tag or commit; None means HEAD (a local repository) or the remote's default
    /// branch (a remote one).
    pub reference: Option<String>,
    /// The manifest directory inside the repository ("" for its root).
    pub path: String,
}

impl RepoSpec {
    pub fn is_remote(&self) -> bool {
        self.location.contains("://")
    }

    /// The directory the cache of a remote repository lives in, under `state_dir`.
    fn cache_dir(&self, state_dir: &Path) -> PathBuf {
        let h = xxhash_rust::xxh3::xxh3_64(self.location.as_bytes());
        state_dir.join("repos").join(format!("{h:016x}.git"))
    }
}

/// A repository to read snapshots from.
pub struct GitSource {
    pub spec: RepoSpec,
    /// Where the repository's objects are read from: the local path or the fetch cache.
    repo_dir: PathBuf,
}

impl GitSource {
    /// Open a local repository, or a remote's cache (cloning it on first use).
    pub fn open(spec: RepoSpec, state_dir: &Path) -> anyhow::Result<Self> {
        let repo_dir = if spec.is_remote() {
            let dir = spec.cache_dir(state_dir);
            if !dir.join("HEAD").exists() {
                clone_bare(&spec.location, &dir)?;
            }
            dir
        } else {
            let p = PathBuf::from(&spec.location);
            gix::open(&p).with_context(|| format!("{} is not a git repository", p.display()))?;
            p
        };
        Ok(GitSource { spec, repo_dir })
    }

    fn repo(&self) -> anyhow::Result<gix::Repository> {
        let mut repo = gix::open(&self.repo_dir).with_context(|| format!("cannot open {}", self.repo_dir.display()))?;
        // Object and tree caches make repeated snapshots of a large tree cheap.
        repo.object_cache_size_if_unset(16 * 1024 * 1024);
        Ok(repo)
    }

    /// The git directory, whose refs a watcher follows for a local repository.
    pub fn git_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self.repo()?.git_dir().to_path_buf())
    }

    /// Bring the cache up to date with the remote (nothing to do for a local repository).
    pub fn fetch(&self) -> anyhow::Result<()> {
        if !self.spec.is_remote() {
            return Ok(());
        }
        let repo = self.repo()?;
        let remote = repo.find_remote("origin").context("the cache has no origin remote")?;
        remote
            .connect(gix::remote::Direction::Fetch)
            .with_context(|| format!("cannot connect to {}", self.spec.location))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .context("cannot prepare the fetch")?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .with_context(|| format!("cannot fetch from {}", self.spec.location))?;
        Ok(())
    }

    /// The commit the configured reference points at now.
    pub fn resolve(&self) -> anyhow::Result<String> {
        match &self.spec.reference {
            Some(r) => self.resolve_rev(r),
            None => {
                let repo = self.repo()?;
                let id = repo.head_commit().with_context(|| format!("{} has no commits", self.spec.location))?.id;
                Ok(id.to_string())
            }
        }
    }

    /// The commit a branch, tag, commit id or revision expression (`main~1`) names.
    pub fn resolve_rev(&self, rev: &str) -> anyhow::Result<String> {
        let repo = self.repo()?;
        let id = repo
            .rev_parse_single(rev)
            .with_context(|| format!("no branch, tag or commit {rev:?} in {}", self.spec.location))?
            .object()?
            .peel_to_commit()?
            .id;
        Ok(id.to_string())
    }

    /// The commits reachable from `to` but not from `from` (`git rev-list from..to`), `to`
    /// itself excluded, oldest first; at most `limit` of them (the newest ones).
    pub fn commits_between(&self, from: &str, to: &str, limit: usize) -> anyhow::Result<Vec<String>> {
        let repo = self.repo()?;
        let parse =
            |c: &str| gix::ObjectId::from_hex(c.as_bytes()).with_context(|| format!("{c:?} is not a commit id"));
        let (from, to) = (parse(from)?, parse(to)?);
        let mut out = Vec::new();
        for info in repo.rev_walk([to]).with_hidden([from]).all()? {
            let id = info?.id;
            if id != to {
                out.push(id.to_string());
            }
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Whether `commit` is `head` or one of its first parents, at most `limit` back (the
    /// commits a branch has been at, merged branches' own commits excluded).
    pub fn is_first_parent_ancestor(&self, head: &str, commit: &str, limit: usize) -> anyhow::Result<bool> {
        let repo = self.repo()?;
        let want =
            gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("{commit:?} is not a commit id"))?;
        let mut at =
            gix::ObjectId::from_hex(head.as_bytes()).with_context(|| format!("{head:?} is not a commit id"))?;
        for _ in 0..limit {
            if at == want {
                return Ok(true);
            }
            match repo.find_commit(at)?.parent_ids().next() {
                Some(p) => at = p.detach(),
                None => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Every manifest file under the spec's path at `commit`, and capstan.yaml if there is one.
    pub fn snapshot(&self, commit: &str) -> anyhow::Result<Snapshot> {
        let repo = self.repo()?;
        let id =
            gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("{commit:?} is not a commit id"))?;
        let commit_obj = repo.find_commit(id).with_context(|| format!("no commit {commit}"))?;
        let mut tree = commit_obj.tree()?;
        let base = self.spec.path.trim_matches('/');
        if !base.is_empty() {
            let entry = tree
                .lookup_entry_by_path(base)?
                .with_context(|| format!("commit {} has no directory {base}", short(commit)))?;
            if !entry.mode().is_tree() {
                bail!("{base} is not a directory at commit {}", short(commit));
            }
            tree = entry.object()?.into_tree();
        }
        let mut files = Vec::new();
        let mut config = None;
        for entry in tree.traverse().breadthfirst.files()? {
            if !entry.mode.is_blob() {
                continue;
            }
            let rel = PathBuf::from(entry.filepath.to_string());
            let hidden = rel.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
            let is_config = rel == Path::new(crate::config::CONFIG_FILE);
            if hidden || !(is_config || is_manifest_path(&rel)) {
                continue;
            }
            let blob = repo.find_blob(entry.oid)?;
            let text = String::from_utf8(blob.data.clone())
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", rel.display()))?;
            let shown = if base.is_empty() { rel.clone() } else { Path::new(base).join(&rel) };
            let file = SourceFile { path: shown, text: text.into() };
            if is_config {
                config = Some(file);
            } else {
                files.push(file);
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Snapshot {
            origin: Origin::Git {
                repo: self.spec.location.clone(),
                commit: commit.to_string(),
                path: base.to_string(),
            },
            files,
            config,
        })
    }
}

fn clone_bare(url: &str, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.parent().unwrap_or(dir))?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut prepare = gix::prepare_clone_bare(url, &tmp)
        .with_context(|| format!("cannot clone {url}"))?
        // A bare clone has no fetch refspec; later fetches need one for branches and tags.
        .configure_remote(|r| {
            r.with_refspecs(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
        });
    prepare
        .fetch_only(gix::progress::Discard, &AtomicBool::new(false))
        .with_context(|| format!("cannot clone {url}"))?;
    // Only a complete clone takes the cache's name, so an interrupted one is started afresh.
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}
