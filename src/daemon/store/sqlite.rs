//! The embedded engine: one SQLite database, `capstan.db`, in the state directory. Nothing to
//! install; one daemon per state directory. Calls hold a mutex over the connection and run on
//! the caller's thread (each is a short local write or read).

use super::{CommitStatus, Configuration, Engine, Entry, Summary, Transition, now, transition};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

pub struct Sqlite {
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

impl Sqlite {
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
        Ok(Sqlite { db: Mutex::new(db) })
    }
}

impl Engine for Sqlite {
    fn record(
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
        match transition(outcome, &status, detail) {
            Transition::Applied => {
                tx.execute(
                    "UPDATE configurations SET status = 'applied', applied_at = ?2, superseded_by = NULL, errors = '[]' WHERE sha = ?1",
                    params![sha, now()],
                )?;
            }
            Transition::Attempt { errors } => {
                tx.execute(
                    "UPDATE configurations SET status = ?2, errors = COALESCE(?3, errors), superseded_by = NULL WHERE sha = ?1",
                    params![sha, outcome, errors],
                )?;
            }
            Transition::Pending => {
                tx.execute("UPDATE configurations SET status = 'pending' WHERE sha = ?1", params![sha])?;
            }
            Transition::Superseded { by } => {
                let touched: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(steps_applied), 0) FROM history WHERE sha = ?1",
                    params![sha],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "UPDATE configurations SET status = ?2, superseded_by = ?3 WHERE sha = ?1",
                    params![sha, if touched > 0 { "partial" } else { "superseded" }, by],
                )?;
            }
            Transition::None => {}
        }
        tx.commit()?;
        Ok(())
    }

    fn open_commits(&self, except: &str) -> anyhow::Result<Vec<String>> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT sha FROM configurations WHERE sha != ?1 AND status IN ('pending', 'applying') ORDER BY seq",
        )?;
        Ok(stmt.query_map(params![except], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    fn applied_before(&self, sha: &str) -> anyhow::Result<bool> {
        let db = self.db.lock().unwrap();
        let n: i64 = db.query_row(
            "SELECT (SELECT COUNT(*) FROM history WHERE sha = ?1 AND outcome = 'applied') + (SELECT COUNT(*) FROM configurations WHERE sha = ?1 AND status = 'applied')",
            params![sha],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    fn history(&self, sha: Option<&str>, limit: usize) -> anyhow::Result<Vec<Entry>> {
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
                detail: super::json_or_null(r.get(7)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_rendered(&self, sha: &str, rendered: &str) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET rendered = ?2 WHERE sha = ?1", params![sha, rendered])?;
        Ok(())
    }

    fn set_errors(&self, sha: &str, errors: &str) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET errors = ?2 WHERE sha = ?1", params![sha, errors])?;
        Ok(())
    }

    fn set_outcome(&self, sha: &str, outcome: &str) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET outcome = ?2 WHERE sha = ?1", params![sha, outcome])?;
        Ok(())
    }

    fn set_plan(&self, sha: &str, text: &str) -> anyhow::Result<()> {
        self.db
            .lock()
            .unwrap()
            .execute("UPDATE configurations SET plan = ?2 WHERE sha = ?1 AND plan IS NULL", params![sha, text])?;
        Ok(())
    }

    fn plan(&self, sha: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        Ok(db
            .query_row("SELECT plan FROM configurations WHERE sha = ?1", params![sha], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }

    fn configuration(&self, sha: &str) -> anyhow::Result<Option<Configuration>> {
        let db = self.db.lock().unwrap();
        Ok(db
            .query_row(
                "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations WHERE sha = ?1",
                params![sha],
                row,
            )
            .optional()?)
    }

    fn errors(&self, sha: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        Ok(db.query_row("SELECT errors FROM configurations WHERE sha = ?1", params![sha], |r| r.get(0)).optional()?)
    }

    fn status(&self, sha: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        Ok(db.query_row("SELECT status FROM configurations WHERE sha = ?1", params![sha], |r| r.get(0)).optional()?)
    }

    fn summaries(&self) -> anyhow::Result<Vec<Summary>> {
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

    fn list(&self) -> anyhow::Result<Vec<Configuration>> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare(
            "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations ORDER BY seq DESC",
        )?;
        let rows = stmt.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn get_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        let db = self.db.lock().unwrap();
        db.query_row("SELECT value FROM kv WHERE key = ?1", params![key], |r| r.get(0)).optional().map_err(Into::into)
    }

    fn set_value(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.db.lock().unwrap().execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Configuration> {
    Ok(super::configuration_from(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        [r.get(4)?, r.get(5)?, r.get(6)?],
        r.get(7)?,
    ))
}
