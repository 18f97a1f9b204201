//! The state directory (`.capstan/` by default): what capstan keeps between runs — the apply
//! journal, the daemon's history, fetched repositories, the embedded sandbox's state. Made
//! git-ignored when capstan makes it, and its SQLite files opened with errors that name the
//! file and say what to do.

use anyhow::Context;
use rusqlite::Connection;
use std::path::Path;

/// Create `dir` if it is missing. A directory capstan makes, or one named `.capstan`, gets a
/// `.gitignore` of `*`: its content is local scratch, never something to commit (a directory
/// the user made under another name is left as it is).
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let ignore = dir.join(".gitignore");
    let ours = !existed || dir.file_name().is_some_and(|n| n == ".capstan");
    if ours && std::fs::symlink_metadata(&ignore).is_err() {
        std::fs::write(&ignore, "*\n").with_context(|| format!("cannot write {}", ignore.display()))?;
    }
    Ok(())
}

/// Open the SQLite database `path` (`what` it is, for messages) and run `setup` (pragmas and
/// schema) on it. A file that is not a database, or a damaged one, is an error naming it and
/// saying what to do: `remedy`.
pub fn open_db(path: &Path, what: &str, setup: &str, remedy: &str) -> anyhow::Result<Connection> {
    let broken = |e: rusqlite::Error| {
        let damaged = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
        );
        if damaged {
            anyhow::anyhow!(
                "{what} {} is damaged or not a database ({e}): move it aside, with its -wal and -shm files if there are any (mv {0} {0}.broken); {remedy}",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot open {what} {}: {e}", path.display())
        }
    };
    let db = Connection::open(path).map_err(broken)?;
    db.execute_batch(setup).map_err(broken)?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_capstan_makes_is_git_ignored_and_one_it_did_not_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("state");
        create_dir(&made).unwrap();
        assert_eq!(std::fs::read_to_string(made.join(".gitignore")).unwrap(), "*\n");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        create_dir(&theirs).unwrap();
        assert!(!theirs.join(".gitignore").exists());
        let dot = tmp.path().join(".capstan");
        std::fs::create_dir(&dot).unwrap();
        create_dir(&dot).unwrap();
        assert!(dot.join(".gitignore").exists(), "an existing .capstan is capstan's");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named_with_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("j.db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let e = open_db(&path, "the journal", "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (x);", "do X")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with(&format!("the journal {} is damaged or not a database", path.display())), "{e}");
        assert!(e.contains("move it aside") && e.ends_with("do X"), "{e}");
    }
}
