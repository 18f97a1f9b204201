//! A snapshot of a manifest directory on disk.

use super::{Origin, Refused, Snapshot, SourceFile, check_refused, is_data_path, is_manifest_path};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Read every manifest file under `root`, recursively, skipping hidden entries (`.git`,
/// `.capstan`) and `capstan.yaml` at the root. Links, names that are not UTF-8, submodules and
/// special files are refused ([`Refused`]), as a commit's are.
pub fn snapshot(root: &Path) -> anyhow::Result<Snapshot> {
    // A mistyped directory must never read as "nothing is declared", which would plan to
    // delete everything.
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("the manifest directory {} does not exist", root.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read manifest directory {}", root.display())),
    };
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", root.display());
    let mut paths = Vec::new();
    let mut refused = Vec::new();
    walk(root, root, &mut paths, &mut refused)?;
    refused.sort_by(|a, b| a.0.cmp(&b.0));
    check_refused(&refused)?;
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut data = Vec::new();
    let mut budget = super::Budget::default();
    for rel in paths {
        let path = root.join(&rel);
        let text = budget.read(&path, &path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = text.ok_or_else(|| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
        let file = SourceFile { path: display_path(root, &rel), text: text.into() };
        if is_data_path(&rel) { data.push(file) } else { files.push(file) }
    }
    let config_path = root.join(super::CONFIG_FILE);
    let config = match budget.read(&config_path, &config_path) {
        Ok(Some(text)) => {
            Some(SourceFile { path: display_path(root, Path::new(super::CONFIG_FILE)), text: text.into() })
        }
        Ok(None) => anyhow::bail!("{}: not UTF-8 text", config_path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", config_path.display())),
    };
    Ok(Snapshot { origin: Origin::Dir { path: root.to_path_buf() }, files, data, config })
}

/// `./x.yaml` reads better as `x.yaml`.
fn display_path(root: &Path, rel: &Path) -> PathBuf {
    if root == Path::new(".") { rel.to_path_buf() } else { root.join(rel) }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>, refused: &mut Vec<(PathBuf, Refused)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let shown = display_path(root, path.strip_prefix(root).unwrap_or(&path));
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        if name.to_str().is_none() {
            refused.push((shown, Refused::NotUtf8));
            continue;
        }
        // Not followed: the entry itself, as a commit records it.
        let ty = entry.file_type()?;
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if ty.is_symlink() {
            let to = std::fs::read_link(&path).map(|t| t.display().to_string()).unwrap_or_else(|e| e.to_string());
            refused.push((shown, Refused::Link(to)));
        } else if ty.is_dir() {
            if path.join(".git").symlink_metadata().is_ok() {
                refused.push((shown, Refused::Submodule));
            } else {
                walk(root, &path, out, refused)?;
            }
        } else if is_manifest_path(&rel) || is_data_path(&rel) {
            if ty.is_file() {
                out.push(rel);
            } else {
                refused.push((shown, Refused::Special));
            }
        }
    }
    Ok(())
}
