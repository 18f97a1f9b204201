//! The daemon's durable state, in one SQLite database under the state directory: every commit
//! it has seen with its outcome, the plans it ran with their step statuses, the history, and
//! small keyed values (the last good commit). A daemon restarted on the same directory carries
//! on from it.
//!
//! The history is append-only: one entry per thing that happened to a commit (seen, applying,
//! applied, failed, invalid, refused, interrupted, stopped, superseded, drift found), with what
//! triggered it (`commit`, `sync`, `resync`, `rollback`, `retry`, `continue`) and how many of
//! its plan's steps were applied. A commit's `status` is derived from its entries by
//! [`Store::record`], and never rewrites the past: once applied, a commit stays `applied`
//! whatever a later attempt at it does (the attempt is in the history); only a commit that
//! never had a step applied becomes `superseded` (one that had is `partial`); `superseded_by`
//! is there only for those.

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
    /// Some of its steps were applied, then a newer commit was applied instead.
    Partial,
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
            CommitStatus::Partial => "partial",
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
            "partial" => CommitStatus::Partial,
            _ => CommitStatus::Pending,
        }
    }
}

/// One commit as the daemon knows it.
#[derive(Clone, Debug, Serialize)]
pub struct Configuration {
    pub sha: String,
    pub status: CommitStatus,
    /// Unix seconds, served as RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub seen_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
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
    /// What happened to it, oldest first.
    pub history: Vec<Entry>,
}

/// One entry of the append-only history.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// Increasing: the order things happened in.
    pub seq: i64,
    /// Unix seconds, served as RFC 3339.
    #[serde(serialize_with = "rfc3339")]
    pub at: i64,
    pub sha: String,
    /// What set it off: `commit`, `sync`, `resync`, `rollback`, `retry`, `continue`.
    pub trigger: String,
    /// `seen`, `applying`, `applied`, `failed`, `invalid`, `refused`, `interrupted`,
    /// `stopped`, `superseded`, `drift_found`.
    pub outcome: String,
    pub steps_applied: usize,
    pub steps_total: usize,
    /// More about it (the errors, the drifted resources, the commit that superseded it).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// A commit without its (possibly large) rendered manifest, outcome and errors.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub sha: String,
    pub status: CommitStatus,
    #[serde(serialize_with = "rfc3339")]
    pub seen_at: i64,
    #[serde(serialize_with = "rfc3339_opt")]
    pub applied_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// The outcome of the last thing that happened to it (`applied`, or the `failed` of a later
    /// rollback to it), and what set that off.
    pub last_outcome: Option<String>,
    pub last_trigger: Option<String>,
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
CREATE TABLE IF NOT EXISTS history (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    sha           TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    steps_applied INTEGER NOT NULL DEFAULT 0,
    steps_total   INTEGER NOT NULL DEFAULT 0,
    detail        TEXT
);
CREATE INDEX IF NOT EXISTS history_sha ON history (sha);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Unix seconds as RFC 3339 in UTC (`2026-12-05T13:30:00Z`), as the rest of the ecosystem
/// writes times.
pub fn rfc3339_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn rfc3339<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_text(*t))
}

fn rfc3339_opt<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339_text(*t)),
        None => s.serialize_none(),
    }
}

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

    /// Append to the history, and derive the commit's status from it (see the module docs).
    /// A commit not seen before is recorded.
    pub fn record(
        &self,
        sha: &str,
        trigger: &str,
        outcome: &str,
        steps: (usize, usize),
        detail: &Value,
    ) -> anyhow::Result<()> {
        let mut db = self.db.lock().unwrap();
        let tx = db.transaction()?;
        // One sequence for commits and entries: the configurations list newest activity first.
        let seq: i64 = tx.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM configurations), 0), COALESCE((SELECT MAX(seq) FROM history), 0)) + 1",
            [],
            |r| r.get(0),
        )?;
        let detail_text = (!detail.is_null()).then(|| detail.to_string());
        tx.execute(
            "INSERT INTO history (seq, at, sha, trigger, outcome, steps_applied, steps_total, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![seq, now(), sha, trigger, outcome, steps.0 as i64, steps.1 as i64, detail_text],
        )?;
        // A commit moves up the list by what happens to it, not by being superseded (that is
        // the newer commit's doing).
        tx.execute(
            "INSERT INTO configurations (sha, status, seen_at, seq) VALUES (?1, 'pending', ?2, ?3)
             ON CONFLICT(sha) DO UPDATE SET seq = CASE WHEN ?4 THEN seq ELSE excluded.seq END",
            params![sha, now(), seq, outcome == "superseded"],
        )?;
        let status: String =
            tx.query_row("SELECT status FROM configurations WHERE sha = ?1", params![sha], |r| r.get(0))?;
        let applied = status == "applied";
        let errors = detail.get("errors").map(|e| e.to_string());
        match outcome {
            "applied" => {
                tx.execute(
                    "UPDATE configurations SET status = 'applied', applied_at = ?2, superseded_by = NULL, errors = '[]' WHERE sha = ?1",
                    params![sha, now()],
                )?;
            }
            "applying" | "failed" | "invalid" | "refused" if !applied => {
                // Errors are the attempt's: given with it, or set by `set_errors`.
                let errors = if outcome == "applying" { Some("[]".to_string()) } else { errors };
                tx.execute(
                    "UPDATE configurations SET status = ?2, errors = COALESCE(?3, errors), superseded_by = NULL WHERE sha = ?1",
                    params![sha, outcome, errors],
                )?;
            }
            "interrupted" | "stopped" if !applied => {
                tx.execute("UPDATE configurations SET status = 'pending' WHERE sha = ?1", params![sha])?;
            }
            "superseded" if status == "pending" || status == "applying" => {
                let touched: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(steps_applied), 0) FROM history WHERE sha = ?1",
                    params![sha],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "UPDATE configurations SET status = ?2, superseded_by = ?3 WHERE sha = ?1",
                    params![
                        sha,
                        if touched > 0 { "partial" } else { "superseded" },
                        detail.get("superseded_by").and_then(Value::as_str)
                    ],
                )?;
            }
            _ => {}
        }
        tx.commit()?;
        Ok(())
    }

    /// Record a commit as seen (keeping what is already known about it).
    pub fn seen(&self, sha: &str) -> anyhow::Result<()> {
        if self.status(sha)?.is_none() {
            self.record(sha, "commit", "seen", (0, 0), &Value::Null)?;
        }
        Ok(())
    }

    /// Record that `sha` will not be applied because `by` is applied instead: a commit not seen
    /// before is recorded so (coalesced in a burst), one pending or being applied changes to it.
    pub fn supersede(&self, sha: &str, by: &str) -> anyhow::Result<()> {
        if self.status(sha)?.is_none_or(|s| matches!(s, CommitStatus::Pending | CommitStatus::Applying)) {
            self.record(sha, "commit", "superseded", (0, 0), &serde_json::json!({ "superseded_by": by }))?;
        }
        Ok(())
    }

    /// Every commit pending or being applied but `except` is superseded by `by`.
    pub fn supersede_pending(&self, except: &str, by: &str) -> anyhow::Result<()> {
        let open: Vec<String> = {
            let db = self.db.lock().unwrap();
            let mut stmt = db.prepare(
                "SELECT sha FROM configurations WHERE sha != ?1 AND status IN ('pending', 'applying') ORDER BY seq",
            )?;
            stmt.query_map(params![except], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for sha in open {
            self.supersede(&sha, by)?;
        }
        Ok(())
    }

    /// Record an outcome for a commit (as [`Store::record`] does, triggered by a commit).
    pub fn set_status(&self, sha: &str, status: CommitStatus) -> anyhow::Result<()> {
        self.record(sha, "commit", status.as_str(), (0, 0), &Value::Null)
    }

    /// Whether this daemon has ever applied `sha` completely.
    pub fn applied_before(&self, sha: &str) -> anyhow::Result<bool> {
        let db = self.db.lock().unwrap();
        let n: i64 = db.query_row(
            "SELECT (SELECT COUNT(*) FROM history WHERE sha = ?1 AND outcome = 'applied') + (SELECT COUNT(*) FROM configurations WHERE sha = ?1 AND status = 'applied')",
            params![sha],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// The history, newest first: of one commit, or of all; at most `limit` entries.
    pub fn history(&self, sha: Option<&str>, limit: usize) -> anyhow::Result<Vec<Entry>> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT seq, at, sha, trigger, outcome, steps_applied, steps_total, detail FROM history
             WHERE ?1 IS NULL OR sha = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![sha, limit as i64], |r| {
            Ok(Entry {
                seq: r.get(0)?,
                at: r.get(1)?,
                sha: r.get(2)?,
                trigger: r.get(3)?,
                outcome: r.get(4)?,
                steps_applied: r.get::<_, i64>(5)? as usize,
                steps_total: r.get::<_, i64>(6)? as usize,
                detail: r
                    .get::<_, Option<String>>(7)?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or(Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        let found = {
            let db = self.db.lock().unwrap();
            db.query_row(
                "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations WHERE sha = ?1",
                params![sha],
                row,
            )
            .optional()?
        };
        let Some(mut c) = found else { return Ok(None) };
        c.history = self.history(Some(sha), 1000)?;
        c.history.reverse();
        Ok(Some(c))
    }

    /// The errors that made a commit invalid, refused or failed, without its other records.
    pub fn errors(&self, sha: &str) -> anyhow::Result<Vec<Value>> {
        let db = self.db.lock().unwrap();
        let text: Option<String> =
            db.query_row("SELECT errors FROM configurations WHERE sha = ?1", params![sha], |r| r.get(0)).optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
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
        let mut stmt = db.prepare(
            "SELECT c.sha, c.status, c.seen_at, c.applied_at, c.superseded_by, h.outcome, h.trigger FROM configurations c
             LEFT JOIN history h ON h.seq = (SELECT MAX(seq) FROM history WHERE sha = c.sha AND outcome != 'seen')
             ORDER BY c.seq DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Summary {
                sha: r.get(0)?,
                status: CommitStatus::parse(&r.get::<_, String>(1)?),
                seen_at: r.get(2)?,
                applied_at: r.get(3)?,
                superseded_by: r.get(4)?,
                last_outcome: r.get(5)?,
                last_trigger: r.get(6)?,
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
        history: Vec::new(),
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
