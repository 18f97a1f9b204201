//! The apply journal: every step's intent is written durably before the step talks to the
//! platform, and its outcome after. A process killed in the middle leaves a run with steps done,
//! and at most `parallelism` steps in flight; the next apply reads it, says what happened, and
//! settles the in-flight steps by observing the platform again (a fresh plan is made from live
//! state, so a done step is not redone and a step whose answer was lost is found done or not).
//!
//! Two engines keep it, behind the same interface: a SQLite file in the state directory
//! ([`Place::Local`], keyed by target), and, when daemons share a PostgreSQL store, the store's
//! `journal` tables ([`Place::Shared`], keyed by unit: [`postgres`]), so the daemon that takes
//! a unit over settles the runs of the one that died exactly as a restarted one settles its own.

pub mod postgres;

use crate::lock::TargetKey;
use crate::plan::Plan;
use crate::redact::Redacted;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

pub struct Journal {
    db: Db,
    run: i64,
}

/// The engine a run is journalled by.
enum Db {
    Local(Mutex<Connection>),
    Shared(postgres::SharedJournal),
}

/// Where runs are journalled: the state directory's SQLite file, or a unit's shared journal in
/// PostgreSQL (while its lease is held).
#[derive(Clone, Copy)]
pub enum Place<'a> {
    Local(&'a Path),
    Shared(&'a postgres::SharedJournal),
}

/// An earlier run that did not finish.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub run: i64,
    pub started_at: i64,
    pub pid: i64,
    /// The daemon that ran it, for a shared journal (empty in a local one).
    pub holder: String,
    pub steps: i64,
    pub done: Vec<String>,
    pub in_flight: Vec<String>,
    pub failed: Vec<String>,
}

impl Unfinished {
    pub fn describe(&self) -> String {
        let by = if self.holder.is_empty() { format!("pid {}", self.pid) } else { format!("daemon {}", self.holder) };
        let mut s = format!(
            "an earlier apply ({by}, started {}) stopped after {} of {} steps",
            format_time(self.started_at),
            self.done.len(),
            self.steps
        );
        if !self.in_flight.is_empty() {
            s.push_str(&format!("; in flight, settled now by observing: {}", self.in_flight.join(", ")));
        }
        s
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    target      TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT NOT NULL,
    steps       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    run     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    state   TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at      INTEGER NOT NULL,
    PRIMARY KEY (run, idx)
);
";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

fn open(dir: &Path) -> anyhow::Result<Connection> {
    crate::state::create_dir(dir)?;
    // FULL: an intent is on disk before the step's request is sent.
    crate::state::open_db(
        &dir.join("journal.db"),
        "the apply journal",
        &format!("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; {SCHEMA}"),
        "it only records applies in progress, so it is safe to delete when no apply runs against this state directory (the next apply plans from the live state)",
    )
}

impl Journal {
    /// Runs for `target` that never finished, oldest first (recorded under its name, or by
    /// earlier versions under its URL as written); they are marked settled, since the caller is
    /// about to re-plan from live state.
    pub fn take_unfinished(dir: &Path, target: &TargetKey) -> anyhow::Result<Vec<Unfinished>> {
        Self::take_unfinished_in(Place::Local(dir), target)
    }

    /// As [`Journal::take_unfinished`], in either engine (a shared journal by its unit).
    pub fn take_unfinished_in(place: Place<'_>, target: &TargetKey) -> anyhow::Result<Vec<Unfinished>> {
        let dir = match place {
            Place::Local(dir) => dir,
            Place::Shared(shared) => return shared.take_unfinished(),
        };
        let db = open(dir)?;
        let keys = target.journal_keys();
        let (name, written) = (keys[0], keys.get(1).copied().unwrap_or(keys[0]));
        let mut runs = Vec::new();
        {
            let mut stmt = db.prepare(
                "SELECT id, started_at, pid, steps FROM runs WHERE target IN (?1, ?2) AND status = 'running' ORDER BY id",
            )?;
            let rows = stmt.query_map(params![name, written], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            for row in rows {
                let (run, started_at, pid, steps): (i64, i64, i64, i64) = row?;
                let mut u = Unfinished {
                    run,
                    started_at,
                    pid,
                    holder: String::new(),
                    steps,
                    done: vec![],
                    in_flight: vec![],
                    failed: vec![],
                };
                let mut s = db.prepare("SELECT name, state FROM steps WHERE run = ?1 ORDER BY idx")?;
                for r in s.query_map(params![run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                    let (name, state) = r?;
                    match state.as_str() {
                        "done" => u.done.push(name),
                        "failed" => u.failed.push(name),
                        _ => u.in_flight.push(name),
                    }
                }
                runs.push(u);
            }
        }
        db.execute(
            "UPDATE runs SET status = 'settled', finished_at = ?3 WHERE target IN (?1, ?2) AND status = 'running'",
            params![name, written, now()],
        )?;
        Ok(runs)
    }

    /// Start journalling a run of `plan` against `target`.
    pub fn begin(dir: &Path, target: &TargetKey, plan: &Plan) -> anyhow::Result<Journal> {
        Self::begin_in(Place::Local(dir), target, plan)
    }

    /// As [`Journal::begin`], in either engine.
    pub fn begin_in(place: Place<'_>, target: &TargetKey, plan: &Plan) -> anyhow::Result<Journal> {
        let dir = match place {
            Place::Local(dir) => dir,
            Place::Shared(shared) => {
                let run = shared.begin(plan.steps.len())?;
                return Ok(Journal { db: Db::Shared(shared.clone()), run });
            }
        };
        let db = open(dir)?;
        db.execute(
            "INSERT INTO runs (target, pid, started_at, status, steps) VALUES (?1, ?2, ?3, 'running', ?4)",
            params![target.name, std::process::id() as i64, now(), plan.steps.len() as i64],
        )?;
        let run = db.last_insert_rowid();
        Ok(Journal { db: Db::Local(Mutex::new(db)), run })
    }

    /// One durable write: the outcomes of steps that ended since the last one, and the intents
    /// of the steps about to be sent, which are on disk when this returns. A wave of steps
    /// that start together costs one sync, not one each.
    pub fn record(&self, finished: &[(usize, bool, Redacted)], intents: &[(usize, &str, &str)]) -> anyhow::Result<()> {
        let db = match &self.db {
            Db::Local(db) => db,
            Db::Shared(shared) => return shared.record(self.run, finished, intents),
        };
        let mut db = db.lock().unwrap();
        let tx = db.transaction()?;
        {
            let mut done =
                tx.prepare_cached("UPDATE steps SET state = ?3, message = ?4, at = ?5 WHERE run = ?1 AND idx = ?2")?;
            for (idx, ok, message) in finished {
                done.execute(params![
                    self.run,
                    *idx as i64,
                    if *ok { "done" } else { "failed" },
                    message.as_str(),
                    now()
                ])?;
            }
            let mut intent = tx.prepare_cached(
                "INSERT OR REPLACE INTO steps (run, idx, step_id, name, state, at) VALUES (?1, ?2, ?3, ?4, 'intent', ?5)",
            )?;
            for (idx, step_id, name) in intents {
                intent.execute(params![self.run, *idx as i64, step_id, name, now()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn end(&self, status: &str) -> anyhow::Result<()> {
        let db = match &self.db {
            Db::Local(db) => db,
            Db::Shared(shared) => return shared.end(self.run, status),
        };
        db.lock()
            .unwrap()
            .execute("UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1", params![self.run, status, now()])?;
        Ok(())
    }

    pub fn run_id(&self) -> i64 {
        self.run
    }

    /// The state a step of this run is journalled in (for tests and diagnostics).
    pub fn step_state(&self, idx: usize) -> Option<String> {
        let db = match &self.db {
            Db::Local(db) => db,
            Db::Shared(shared) => return shared.step_state(self.run, idx),
        };
        db.lock()
            .unwrap()
            .query_row("SELECT state FROM steps WHERE run = ?1 AND idx = ?2", params![self.run, idx as i64], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn a_run_that_stops_leaves_its_done_in_flight_and_failed_steps() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan::default();
        let t = TargetKey::named("t");
        let j = Journal::begin(dir.path(), &t, &plan).unwrap();
        j.record(&[], &[(0, "s0", "create a"), (1, "s1", "create b"), (2, "s2", "create c")]).unwrap();
        let r = crate::redact::Redactor::default();
        j.record(&[(0, true, r.redact("")), (1, false, r.redact("boom"))], &[(3, "s3", "create d")]).unwrap();
        assert_eq!(j.step_state(0).as_deref(), Some("done"));
        assert_eq!(j.step_state(3).as_deref(), Some("intent"));
        drop(j); // as if the process died here
        let left = Journal::take_unfinished(dir.path(), &t).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].done, ["create a"]);
        assert_eq!(left[0].failed, ["create b"]);
        assert_eq!(left[0].in_flight, ["create c", "create d"]);
        assert!(Journal::take_unfinished(dir.path(), &t).unwrap().is_empty(), "settled once read");
    }
}
