//! Snapshots read straight from a git repository's object database at one commit, with `gix`:
//! no checkout and no working tree, so a snapshot is consistent even while someone pushes, and
//! a bare repository works as well as a normal one.
//!
//! A repository is a local path (read in place) or a URL (`file://`, `http://`, `https://`),
//! fetched into a bare cache under the state directory. The first fetch clones; later ones
//! fetch every branch and tag into the same cache. All of it is blocking I/O: async callers run
//! it on the blocking thread pool.
//!
//! Credentials never leave memory: a URL's `user:password@` is taken out of it when the spec is
//! made, so messages, status, history and the cache's own configuration only ever see the URL
//! without them; they are handed to the transport when the server asks for them. Without any,
//! the server's challenge is answered from `CAPSTAN_GIT_USERNAME`/`CAPSTAN_GIT_PASSWORD`, else by
//! the git credential helpers configured for the URL (`credential.helper`), as `git fetch` does.

use super::{Origin, Refused, Snapshot, SourceFile, check_refused, is_data_path, is_manifest_path};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Which repository, which revision, which directory inside it.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    /// A local path, or a `file://`, `http://` or `https://` URL, without credentials.
    pub location: String,
    /// A branch, tag or commit; None means HEAD (a local repository) or the remote's default
    /// branch (a remote one).
    pub reference: Option<String>,
    /// The manifest directory inside the repository ("" for its root).
    pub path: String,
    /// What was in the URL's userinfo, sent only when the server asks.
    pub credentials: Option<Credentials>,
}

/// A user name and password (or token) for a git server; `Debug` does not show them.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl Credentials {
    /// `CAPSTAN_GIT_PASSWORD` (and `CAPSTAN_GIT_USERNAME`, default `git`), if set.
    fn from_env() -> Option<Credentials> {
        let password = std::env::var("CAPSTAN_GIT_PASSWORD").ok().filter(|p| !p.is_empty())?;
        let username = std::env::var("CAPSTAN_GIT_USERNAME").ok().filter(|u| !u.is_empty());
        Some(Credentials { username: username.unwrap_or_else(|| "git".into()), password })
    }

    /// The answer to a transport's request for credentials.
    fn answer(
        &self,
        action: gix::credentials::helper::Action,
    ) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
        match action {
            gix::credentials::helper::Action::Get(ctx) => Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: self.username.clone(),
                    password: self.password.clone(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            })),
            _ => Ok(None),
        }
    }
}

impl RepoSpec {
    /// A spec for `location` as given (a path or URL): credentials written into a URL are
    /// taken out of it and kept apart.
    pub fn new(location: &str, reference: Option<String>, path: String) -> RepoSpec {
        let (location, credentials) = split_credentials(location);
        RepoSpec { location, reference, path, credentials }
    }

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
            crate::state::create_dir(state_dir)?;
            let dir = spec.cache_dir(state_dir);
            if !dir.join("HEAD").exists() {
                clone_bare(&spec, &dir)?;
            }
            dir
        } else {
            let p = PathBuf::from(&spec.location);
            gix::open(&p).with_context(|| format!("{} is not a git repository", p.display()))?;
            p
        };
        Ok(GitSource { spec, repo_dir })
    }

    /// The same repository (and fetch cache), with another manifest directory: a daemon's
    /// deployment units share one source and each reads its own directory.
    pub fn at_path(&self, path: &str) -> GitSource {
        let mut spec = self.spec.clone();
        spec.path = path.to_string();
        GitSource { spec, repo_dir: self.repo_dir.clone() }
    }

    /// The directories (relative to the repository root, slash-separated; "" for the root) that
    /// hold a file named `file` at `commit`, at most `depth` levels down, sorted. More than
    /// `limit` of them is an error. Hidden directories are not looked into.
    pub fn directories_with(
        &self,
        commit: &str,
        file: &str,
        depth: usize,
        limit: usize,
    ) -> anyhow::Result<Vec<String>> {
        let repo = self.repo()?;
        let id =
            gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("{commit:?} is not a commit id"))?;
        let tree = repo.find_commit(id).with_context(|| format!("no commit {commit}"))?.tree()?;
        let mut found = Vec::new();
        let mut queue = std::collections::VecDeque::from([(String::new(), tree.id, 0usize)]);
        while let Some((dir, tree_id, level)) = queue.pop_front() {
            let tree = repo.find_tree(tree_id)?;
            for entry in tree.iter() {
                let entry = entry?;
                let Ok(name) = std::str::from_utf8(entry.filename()) else { continue };
                if entry.mode().is_blob() && name == file {
                    found.push(dir.clone());
                    // Too many is an error, never a silent cut: a unit left out of a cut
                    // would look gone and stop being reconciled.
                    anyhow::ensure!(
                        found.len() <= limit,
                        "more than {limit} directories of commit {} hold a {file}",
                        &commit[..commit.len().min(12)]
                    );
                } else if entry.mode().is_tree() && level < depth && !name.starts_with('.') {
                    let sub = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
                    queue.push_back((sub, entry.oid().to_owned(), level + 1));
                }
            }
        }
        found.sort();
        Ok(found)
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
        let mut connection = remote
            .connect(gix::remote::Direction::Fetch)
            .with_context(|| format!("cannot connect to {}", self.spec.location))?;
        if let Some(c) = self.spec.credentials.clone().or_else(Credentials::from_env) {
            connection.set_credentials(move |action| c.answer(action));
        }
        connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .with_context(|| format!("cannot fetch from {}", self.spec.location))?
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .with_context(|| format!("cannot fetch from {}", self.spec.location))?;
        Ok(())
    }

    /// Fetch, then resolve the configured reference; a failure is tried again twice (after
    /// 0.5 s and 2 s), and one for want of file descriptors says so.
    pub fn fetch_and_resolve(&self) -> anyhow::Result<String> {
        let mut delays = [Duration::from_millis(500), Duration::from_secs(2)].into_iter();
        loop {
            match self.fetch().and_then(|()| self.resolve()) {
                Ok(sha) => return Ok(sha),
                Err(e) => {
                    let e = match crate::fds::exhausted() {
                        Some(why) => e.context(format!("cannot read {}: this process is {why}", self.spec.location)),
                        None => e,
                    };
                    match delays.next() {
                        Some(d) => {
                            tracing::warn!("{e:#}; trying again in {d:?}");
                            std::thread::sleep(d);
                        }
                        None => return Err(e),
                    }
                }
            }
        }
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

    /// A commit's author (name) and the first line of its message, for people to recognise it.
    pub fn commit_info(&self, commit: &str) -> anyhow::Result<(String, String)> {
        let repo = self.repo()?;
        let id =
            gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("{commit:?} is not a commit id"))?;
        let c = repo.find_commit(id).with_context(|| format!("no commit {commit}"))?;
        let author = c.author()?.name.to_string();
        let message = c.message_raw_sloppy().to_string();
        Ok((author, message.lines().next().unwrap_or_default().to_string()))
    }

    /// The content of the file at `path` (relative to the repository's root; `..` may not leave
    /// it) at `commit`.
    pub fn read_file(&self, commit: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in path.components() {
            match c {
                std::path::Component::Normal(p) => parts.push(p),
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir if parts.pop().is_some() => {}
                _ => bail!("{} is outside the repository", path.display()),
            }
        }
        let rel: PathBuf = parts.iter().collect();
        let repo = self.repo()?;
        let id =
            gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("{commit:?} is not a commit id"))?;
        let tree = repo.find_commit(id).with_context(|| format!("no commit {commit}"))?.tree()?;
        let entry = tree
            .lookup_entry_by_path(&rel)?
            .with_context(|| format!("commit {} has no file {}", short(commit), rel.display()))?;
        if !entry.mode().is_blob() {
            bail!("{} is not a file at commit {}", rel.display(), short(commit));
        }
        Ok(entry.object()?.detach().data)
    }

    /// Reads files as capstan.yaml at `commit` names them: a relative path from the commit,
    /// an absolute one from this machine.
    pub fn reader_at<'a>(&'a self, commit: &'a str) -> impl Fn(&Path) -> anyhow::Result<Vec<u8>> + 'a {
        move |p| if p.is_absolute() { Ok(std::fs::read(p)?) } else { self.read_file(commit, p) }
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
    /// Links, names that are not UTF-8 and submodules are refused ([`Refused`]), as in a
    /// directory.
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
        let mut data = Vec::new();
        let mut config = None;
        let mut refused = Vec::new();
        let shown = |rel: &Path| if base.is_empty() { rel.to_path_buf() } else { Path::new(base).join(rel) };
        let mut budget = super::Budget::default();
        for entry in tree.traverse().breadthfirst.files()? {
            let hidden = entry.filepath.split(|b| *b == b'/').any(|c| c.starts_with(b"."));
            if hidden {
                continue;
            }
            let Ok(text_path) = std::str::from_utf8(&entry.filepath) else {
                refused.push((shown(Path::new(&entry.filepath.to_string())), Refused::NotUtf8));
                continue;
            };
            let rel = PathBuf::from(text_path);
            if entry.mode.is_link() {
                let to = repo.find_blob(entry.oid).map(|b| String::from_utf8_lossy(&b.data).into_owned())?;
                refused.push((shown(&rel), Refused::Link(to)));
                continue;
            }
            if entry.mode.is_commit() {
                refused.push((shown(&rel), Refused::Submodule));
                continue;
            }
            let is_config = rel == Path::new(super::CONFIG_FILE);
            if !entry.mode.is_blob() || !(is_config || is_manifest_path(&rel) || is_data_path(&rel)) {
                continue;
            }
            let path = shown(&rel);
            // The size from the object's header, before a byte of it is inflated.
            budget.take(&path, repo.find_header(entry.oid)?.size())?;
            let blob = repo.find_blob(entry.oid)?;
            let text = String::from_utf8(blob.data.clone())
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", rel.display()))?;
            let file = SourceFile { path, text: text.into() };
            if is_config {
                config = Some(file);
            } else if is_data_path(&rel) {
                data.push(file);
            } else {
                files.push(file);
            }
        }
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        check_refused(&refused)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        data.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Snapshot {
            origin: Origin::Git {
                repo: self.spec.location.clone(),
                commit: commit.to_string(),
                path: base.to_string(),
            },
            files,
            data,
            config,
        })
    }
}

fn clone_bare(spec: &RepoSpec, dir: &Path) -> anyhow::Result<()> {
    let url = spec.location.as_str();
    std::fs::create_dir_all(dir.parent().unwrap_or(dir))?;
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut prepare = gix::prepare_clone_bare(url, &tmp)
        .with_context(|| format!("cannot clone {url}"))?
        // A bare clone has no fetch refspec; later fetches need one for branches and tags.
        .configure_remote(|r| {
            r.with_refspecs(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
        });
    if let Some(c) = spec.credentials.clone().or_else(Credentials::from_env) {
        prepare = prepare.configure_connection(move |conn| {
            let c = c.clone();
            conn.set_credentials(move |action| c.answer(action));
            Ok(())
        });
    }
    prepare
        .fetch_only(gix::progress::Discard, &AtomicBool::new(false))
        .with_context(|| format!("cannot clone {url}"))?;
    // Only a complete clone takes the cache's name, so an interrupted one is started afresh.
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

/// `location` without the `user:password@` of a URL, and what that said.
fn split_credentials(location: &str) -> (String, Option<Credentials>) {
    let Some(scheme_end) = location.find("://").map(|i| i + 3) else {
        return (location.to_string(), None);
    };
    let authority_end = location[scheme_end..].find(['/', '?', '#']).map_or(location.len(), |i| i + scheme_end);
    let Some(at) = location[scheme_end..authority_end].rfind('@').map(|i| i + scheme_end) else {
        return (location.to_string(), None);
    };
    let userinfo = &location[scheme_end..at];
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let clean = format!("{}{}", &location[..scheme_end], &location[at + 1..]);
    let credentials =
        Credentials { username: crate::base::percent_decode(user), password: crate::base::percent_decode(password) };
    (clean, Some(credentials))
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_a_url_and_decoded() {
        let s = RepoSpec::new("https://bot:p%40ss:w@git.example.com/shop.git", None, String::new());
        assert_eq!(s.location, "https://git.example.com/shop.git");
        let c = s.credentials.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("bot", "p@ss:w"));
        assert_eq!(format!("{c:?}"), "Credentials(..)");
        let s = RepoSpec::new("http://tok@127.0.0.1:9/a@b", None, String::new());
        assert_eq!(s.location, "http://127.0.0.1:9/a@b");
        assert_eq!(s.credentials.unwrap().username, "tok");
        for plain in ["/srv/repo@2", "file:///srv/r.git", "https://h/x?u=a@b"] {
            let s = RepoSpec::new(plain, None, String::new());
            assert_eq!((s.location.as_str(), s.credentials.is_none()), (plain, true));
        }
    }

    /// A real repository made with the git CLI: units are the directories holding the file,
    /// sorted; more than the limit is an error, never a silent cut (a unit cut off would look
    /// gone and stop being reconciled).
    #[test]
    fn directories_with_finds_every_unit_and_refuses_more_than_the_limit() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        for dir in ["clusters/b", "clusters/a", "other", ".hidden", "clusters/a/deeper"] {
            std::fs::create_dir_all(repo.path().join(dir)).unwrap();
            std::fs::write(repo.path().join(dir).join("capstan.yaml"), "owner: units-test\n").unwrap();
        }
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(repo.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@capstan.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@capstan.invalid")
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "units"]);
        let spec = RepoSpec::new(repo.path().to_str().unwrap(), None, String::new());
        let source = GitSource::open(spec, state.path()).unwrap();
        let head = source.resolve().unwrap();
        let all = source.directories_with(&head, "capstan.yaml", 16, 4).unwrap();
        assert_eq!(all, ["clusters/a", "clusters/a/deeper", "clusters/b", "other"]);
        assert_eq!(source.directories_with(&head, "capstan.yaml", 1, 4).unwrap(), ["other"]);
        let err = source.directories_with(&head, "capstan.yaml", 16, 3).unwrap_err();
        assert!(format!("{err:#}").contains("more than 3 directories"), "{err:#}");
    }
}
