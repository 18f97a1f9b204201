//! Snapshots of manifest files: everything the later stages read comes from one [`Snapshot`],
//! taken from a plain directory or from one commit of a git repository.

pub mod dir;
pub mod git;

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// The root's capstan.yaml at the same moment, if there is one.
    pub config: Option<SourceFile>,
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
        && rel != std::path::Path::new(crate::config::CONFIG_FILE)
}

/// Whether a manifest file is a handlebars template, rendered before it is parsed.
pub fn is_template(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "hbs")
}
