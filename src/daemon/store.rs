//! The daemon's durable state, in one SQLite database under the state directory: every commit
//! it has seen with its outcome, the plans it ran with their step statuses, and small keyed
//! values (the last good commit). A daemon restarted on the same directory carries on from it.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

/// What became of one commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitStatus {
    /// Seen, not yet reconciled.
    Pending,
    /// Rendering or validation failed: nothing from it was applied.
    Invalid,
    /// Being applied.
    Applying,
    /// Applied; the platform matched it.
    Applied,
    /// Applying failed part way.
    Failed,
    /// A newer commit arrived before this one was applied; it never will be.
    Superseded,
    /// Its plan was refused (it deleted more than the mass-delete guard allows): nothing from
    /// it was applied.
    Refused,
}

impl CommitStatus {
    fn as_str(self) -> &'static str {
        match self {
            CommitStatus::Pending => "pending",
            CommitStatus::Invalid => "invalid",
            CommitStatus::Applying => "applying",
            CommitStatus::Applied => "applied",
            CommitStatus::Failed => "failed",
            CommitStatus::Superseded => "superseded",
            CommitStatus::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "invalid" => CommitStatus::Invalid,
            "applying" => CommitStatus::Applying,
            "applied" => CommitStatus::Applied,
            "failed" => CommitStatus::Failed,
            "superseded" => CommitStatus::Superseded,
            "refused" => CommitStatus::Refused,
            _ => CommitStatus::Pending,
        }
    }
}

/// One commit as the daemon knows it.
#[derive(Clone, Debug, Serialize)]
pub struct Configuration {
    pub sha: String,
    pub status: CommitStatus,
    /// Unix seconds.
    pub seen_at: i64,
    pub applied_at: Option<i64>,
    /// The merged, expanded manifest (redacted), when it rendered.
    pub rendered: Option<Value>,
    /// The errors that made it invalid or failed it.
    pub errors: Vec<Value>,
    /// The plan as run, with step statuses.
    pub outcome: Option<Value>,
    /// For a superseded commit: the newer commit applied instead of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// A commit without its (possibly large) rendered manifest, outcome and errors.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub sha: String,
    pub status: CommitStatus,
    pub seen_at: i64,
    pub applied_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

pub struct Store {
    db: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS configurations (
    sha        TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    seen_at    INTEGER NOT NULL,
    applied_at INTEGER,
    rendered   TEXT,
    errors     TEXT NOT NULL DEFAULT '[]',
    outcome    TEXT,
    plan       TEXT,
    seq        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        crate::state::create_dir(dir)?;
        // WAL with synchronous=NORMAL: a committed write survives a crash of the process.
        let db = crate::state::open_db(
            &dir.join("capstan.db"),
            "the daemon's history",
            &format!("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; {SCHEMA}"),
            "the daemon then starts with no history: it applies the branch's newest commit again, as on a first start",
        )?;
        // Databases from before these columns get them (an error here means it is there).
        let _ = db.execute_batch("ALTER TABLE configurations ADD COLUMN plan TEXT");
        let _ = db.execute_batch("ALTER TABLE configurations ADD COLUMN superseded_by TEXT");
        Ok(Store { db: Mutex::new(db) })
    }

    /// Record a commit as seen (keeping what is already known about it).
    pub fn seen(&self, sha: &str) -> anyhow::Result<()> {
        let db = self.db.lock().unwrap();
        let seq: i64 = db.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM configurations", [], |r| r.get(0))?;
        db.execute(
            "INSERT OR IGNORE INTO configurations (sha, status, seen_at, seq) VALUES (?1, 'pending', ?2, ?3)",
            params![sha, now(), seq],
        )?;
        Ok(())
    }

    /// Record that `sha` will not be applied because `by` is applied instead: a commit not seen
    /// before is recorded so (coalesced in a burst), one pending or being applied changes to it.
    pub fn supersede(&self, sha: &str, by: &str) -> anyhow::Result<()> {
        let db = self.db.lock().unwrap();
        let seq: i64 = db.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM configurations", [], |r| r.get(0))?;
        db.execute(
            "INSERT INTO configurations (sha, status, seen_at, seq, superseded_by) VALUES (?1, 'superseded', ?2, ?3, ?4)
             ON CONFLICT(sha) DO UPDATE SET status = 'superseded', superseded_by = excluded.superseded_by
             WHERE status IN ('pending', 'applying')",
            params![sha, now(), seq, by],
        )?;
        Ok(())
    }

    /// Every commit pending or being applied but `except` is superseded by `by`.
    pub fn supersede_pending(&self, except: &str, by: &str) -> anyhow::Result<()> {
        self.db.lock().unwrap().execute(
            "UPDATE configurations SET status = 'superseded', superseded_by = ?2
             WHERE sha != ?1 AND status IN ('pending', 'applying')",
            params![except, by],
        )?;
        Ok(())
    }

    pub fn set_status(&self, sha: &str, status: CommitStatus) -> anyhow::Result<()> {
        let db = self.db.lock().unwrap();
        let applied_at = (status == CommitStatus::Applied).then(now);
        db.execute(
            "UPDATE configurations SET status = ?2, applied_at = COALESCE(?3, applied_at) WHERE sha = ?1",
            params![sha, status.as_str(), applied_at],
        )?;
        Ok(())
    }

    pub fn set_rendered(&self, sha: &str, rendered: &Value) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET rendered = ?2 WHERE sha = ?1", params![sha, rendered.to_string()])?;
        Ok(())
    }

    pub fn set_errors(&self, sha: &str, errors: &[Value]) -> anyhow::Result<()> {
        let text = serde_json::to_string(errors)?;
        self.db.lock().unwrap().execute("UPDATE configurations SET errors = ?2 WHERE sha = ?1", params![sha, text])?;
        Ok(())
    }

    pub fn set_outcome(&self, sha: &str, outcome: &Value) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET outcome = ?2 WHERE sha = ?1", params![sha, outcome.to_string()])?;
        Ok(())
    }

    /// The plan made for a commit, exactly as `capstan plan --output json` prints it (the
    /// first one, made against the live state the commit found).
    pub fn set_plan(&self, sha: &str, text: &str) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET plan = ?2 WHERE sha = ?1 AND plan IS NULL", params![sha, text])?;
        Ok(())
    }

    pub fn plan(&self, sha: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        Ok(db
            .query_row("SELECT plan FROM configurations WHERE sha = ?1", params![sha], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    pub fn get(&self, sha: &str) -> anyhow::Result<Option<Configuration>> {
        let db = self.db.lock().unwrap();
        db.query_row(
            "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations WHERE sha = ?1",
            params![sha],
            row,
        )
        .optional()
        .map_err(Into::into)
    }

    /// What became of a commit, without reading its records.
    pub fn status(&self, sha: &str) -> anyhow::Result<Option<CommitStatus>> {
        let db = self.db.lock().unwrap();
        let status: Option<String> =
            db.query_row("SELECT status FROM configurations WHERE sha = ?1", params![sha], |r| r.get(0)).optional()?;
        Ok(status.map(|s| CommitStatus::parse(&s)))
    }

    /// Every commit seen, newest first, without the large fields (a daemon holding thousands
    /// of resources stores megabytes per commit).
    pub fn summaries(&self) -> anyhow::Result<Vec<Summary>> {
        let db = self.db.lock().unwrap();
        let mut stmt =
            db.prepare("SELECT sha, status, seen_at, applied_at, superseded_by FROM configurations ORDER BY seq DESC")?;
        let rows = stmt.query_map([], |r| {
            Ok(Summary {
                sha: r.get(0)?,
                status: CommitStatus::parse(&r.get::<_, String>(1)?),
                seen_at: r.get(2)?,
                applied_at: r.get(3)?,
                superseded_by: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every commit seen, newest first.
    pub fn list(&self) -> anyhow::Result<Vec<Configuration>> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations ORDER BY seq DESC",
        )?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        db.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| r.get(0)).optional().map_err(Into::into)
    }

    pub fn set_value(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.db.lock().unwrap().execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Configuration> {
    let parse = |s: Option<String>| s.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    Ok(Configuration {
        sha: r.get(0)?,
        status: CommitStatus::parse(&r.get::<_, String>(1)?),
        seen_at: r.get(2)?,
        applied_at: r.get(3)?,
        rendered: parse(r.get(4)?),
        errors: parse(r.get(5)?).and_then(|v| v.as_array().cloned()).unwrap_or_default(),
        outcome: parse(r.get(6)?),
        superseded_by: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_survives_reopening_and_lists_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.seen("aaa").unwrap();
            s.set_status("aaa", CommitStatus::Applied).unwrap();
            s.seen("bbb").unwrap();
            s.set_errors("bbb", &[serde_json::json!({"message": "x"})]).unwrap();
            s.set_status("bbb", CommitStatus::Invalid).unwrap();
            s.set_value("last_good", "aaa").unwrap();
            s.seen("aaa").unwrap(); // seeing it again keeps what is known
        }
        let s = Store::open(dir.path()).unwrap();
        let list = s.list().unwrap();
        assert_eq!(list.iter().map(|c| c.sha.as_str()).collect::<Vec<_>>(), ["bbb", "aaa"]);
        assert_eq!(list[1].status, CommitStatus::Applied);
        assert!(list[1].applied_at.is_some());
        assert_eq!(list[0].errors.len(), 1);
        assert_eq!(s.get_value("last_good").unwrap().as_deref(), Some("aaa"));
    }

    #[test]
    fn superseding_records_unseen_commits_and_changes_only_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.seen("applied").unwrap();
        s.set_status("applied", CommitStatus::Applied).unwrap();
        s.seen("pending").unwrap();
        for sha in ["applied", "pending", "unseen"] {
            s.supersede(sha, "newest").unwrap();
        }
        s.seen("applying").unwrap();
        s.set_status("applying", CommitStatus::Applying).unwrap();
        s.seen("newest").unwrap();
        s.supersede_pending("newest", "newest").unwrap();
        assert_eq!(s.status("applying").unwrap(), Some(CommitStatus::Superseded));
        assert_eq!(s.status("newest").unwrap(), Some(CommitStatus::Pending));
        assert_eq!(s.status("nothing").unwrap(), None);
        let summaries: Vec<String> = s.summaries().unwrap().into_iter().map(|c| c.sha).collect();
        assert_eq!(summaries, ["newest", "applying", "unseen", "pending", "applied"]);
        let get = |sha: &str| s.get(sha).unwrap().unwrap();
        assert_eq!(get("applied").status, CommitStatus::Applied);
        assert_eq!(get("applied").superseded_by, None);
        assert_eq!(get("pending").status, CommitStatus::Superseded);
        assert_eq!(get("unseen").status, CommitStatus::Superseded);
        assert_eq!(get("unseen").superseded_by.as_deref(), Some("newest"));
    }
}
