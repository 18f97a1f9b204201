//! Snapshots of manifest files: everything the later stages read comes from one [`Snapshot`],
//! taken from a plain directory or from one commit of a git repository.

pub mod dir;
pub mod git;

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The configuration file at a manifest directory's root: read with the snapshot, never as
/// a manifest.
pub const CONFIG_FILE: &str = "capstan.yaml";

/// One manifest file's content at the snapshot's moment.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The path shown in messages: the directory as the user named it joined with the file's
    /// path inside it, so editors can open `file:line:column` directly.
    pub path: PathBuf,
    pub text: Arc<str>,
}

/// Where a snapshot came from, for messages and history.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    Dir { path: PathBuf },
    Git { repo: String, commit: String, path: String },
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub origin: Origin,
    /// Sorted by path, so every stage sees files in the same order on every run.
    pub files: Vec<SourceFile>,
    /// Data files ([`is_data_path`]): never parsed as manifests, only read where a document
    /// names one (`file:`), by path; sorted by path.
    pub data: Vec<SourceFile>,
    /// The root's capstan.yaml at the same moment, if there is one.
    pub config: Option<SourceFile>,
}

/// The most all of one snapshot's files may hold together (one file may hold
/// [`crate::base::yaml::MAX_FILE_BYTES`]).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Counts what a snapshot has read, so that no file and no snapshot grows past its limit
/// before it is read (a 10 GB file, a symlink to `/dev/zero`).
#[derive(Default)]
pub struct Budget {
    used: usize,
}

impl Budget {
    /// Take `len` bytes of `shown` out of the budget, or say which limit it is over.
    pub fn take(&mut self, shown: &std::path::Path, len: u64) -> anyhow::Result<()> {
        let max = crate::base::yaml::MAX_FILE_BYTES;
        if len > max as u64 {
            anyhow::bail!("{}: holds {len} bytes: expected at most {max} bytes (16 MiB) in one file", shown.display());
        }
        self.used += len as usize;
        if self.used > MAX_SNAPSHOT_BYTES {
            anyhow::bail!(
                "{}: the manifests hold more than {MAX_SNAPSHOT_BYTES} bytes together: expected at most 64 MiB in one snapshot",
                shown.display()
            );
        }
        Ok(())
    }

    /// Read a file as UTF-8 text within the budget, reading no more than the limit allows.
    pub fn read(&mut self, path: &std::path::Path, shown: &std::path::Path) -> std::io::Result<Option<String>> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(crate::base::yaml::MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        self.take(shown, bytes.len() as u64).map_err(std::io::Error::other)?;
        Ok(String::from_utf8(bytes).ok())
    }
}

/// Whether a path inside the manifest directory is a manifest: `*.yaml`, `*.yml` or `*.json`,
/// or one of those rendered from a handlebars template (`*.yaml.hbs`, ...), not hidden, and not
/// the root's `capstan.yaml` (which is configuration).
pub fn is_manifest_path(rel: &std::path::Path) -> bool {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.strip_suffix(".hbs").unwrap_or(name);
    (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
        && !name.starts_with('.')
        && rel != std::path::Path::new(CONFIG_FILE)
}

/// The names of data files, as messages say it.
pub const DATA_FILES: &str = "*.pol";

/// Whether a path inside the manifest directory is a data file a manifest may name with
/// `file:` (a policy document in its own syntax, `*.pol`), not hidden. Read under the same
/// rules and budget as manifests, in directory and git mode alike.
pub fn is_data_path(rel: &std::path::Path) -> bool {
    rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".pol") && !n.starts_with('.'))
}

/// What the manifest directory holds that capstan will not read, and will not skip without a
/// word either: the same rules in directory and git mode, so CI (reading a checkout) and the
/// daemon (reading the commit) always read the same files. Hidden entries are outside the rules
/// (they are never read).
pub enum Refused {
    /// A symbolic link, with where it points. A commit stores only the link's text, which a
    /// checkout resolves on the disk it is on (out of the tree, even): followed in one mode and
    /// not in the other, it would make the two disagree, so it is refused in both.
    Link(String),
    /// A name that is not UTF-8 (it can be neither shown nor matched reliably).
    NotUtf8,
    /// A git submodule (a directory holding its own `.git`): its files are another
    /// repository's, absent from this commit's objects, present in a checkout.
    Submodule,
    /// Neither a file, a directory nor a link (a FIFO, a socket, a device) with a manifest's name.
    Special,
}

impl Refused {
    /// One line naming the path and what was expected.
    pub fn describe(&self, path: &std::path::Path) -> String {
        let path = path.display();
        match self {
            Refused::Link(to) => format!(
                "{path} is a symbolic link (to {to}): links are not followed, since a commit and a checkout resolve them differently; expected the files themselves"
            ),
            Refused::NotUtf8 => format!("{path}: the name is not UTF-8: expected UTF-8 file and directory names"),
            Refused::Submodule => format!(
                "{path} is a git submodule (or a repository inside this one): its files are not in this commit; expected the manifests in this repository"
            ),
            Refused::Special => format!("{path} is not a regular file: expected a file"),
        }
    }
}

/// Fail with every refused entry, one per line, or carry on when there is none.
pub fn check_refused(refused: &[(std::path::PathBuf, Refused)]) -> anyhow::Result<()> {
    if refused.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = refused.iter().map(|(p, r)| format!("  {}", r.describe(p))).collect();
    anyhow::bail!("the manifest directory holds what capstan does not read (nothing was read):\n{}", lines.join("\n"))
}

/// Whether a manifest file is a handlebars template, rendered before it is parsed.
pub fn is_template(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "hbs")
}
