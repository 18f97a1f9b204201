//! The shared journal: a unit's runs in the PostgreSQL store (`journal_runs` and `journal`,
//! schema version 3), written by whichever daemon holds the unit's lease. Same records as the
//! local journal — a run, each step's intent before it is sent and its outcome after — keyed by
//! the unit instead of the target, so the daemon that takes a unit over reads the runs a dead
//! daemon left and settles them by re-planning from live state, never by re-sending.
//!
//! Fenced in the database as well as before: a run is begun, and an intent written, only while
//! the lease row still names this daemon with its generation (one statement each, so nothing
//! comes between the check and the write). An outcome is always written: it is what happened.
//! Every job is idempotent (a run carries an id of its own; intents and outcomes are upserts),
//! since the store's connection runs a job once more after a lost connection.

use super::Unfinished;
use crate::pg::Postgres;
use crate::redact::Redacted;
use std::sync::Arc;

/// A unit's journal in the shared store, as the lease holder with `generation` writes it.
#[derive(Clone)]
pub struct SharedJournal {
    db: Arc<Postgres>,
    unit: String,
    holder: String,
    generation: i64,
}

/// Seconds since the epoch, as the store's records keep time.
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The condition on the lease a run is begun under.
const HOLDS: &str =
    "EXISTS (SELECT 1 FROM leases WHERE unit = $1 AND holder = $2 AND generation = $3 AND expires_at > now())";

impl SharedJournal {
    pub fn new(db: Arc<Postgres>, unit: &str, holder: &str, generation: i64) -> Self {
        SharedJournal { db, unit: unit.to_string(), holder: holder.to_string(), generation }
    }

    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The unit's runs that never finished, oldest first, marked settled (the caller re-plans
    /// from live state).
    pub fn take_unfinished(&self) -> anyhow::Result<Vec<Unfinished>> {
        let unit = self.unit.clone();
        self.db.call(move |c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "SELECT id, started_at, pid, holder, steps FROM journal_runs WHERE unit = $1 AND status = 'running' ORDER BY id FOR UPDATE",
                &[&unit],
            )?;
            let mut runs = Vec::new();
            for r in rows {
                let mut u = Unfinished {
                    run: r.get(0),
                    started_at: r.get(1),
                    pid: r.get(2),
                    holder: r.get(3),
                    steps: r.get(4),
                    done: vec![],
                    in_flight: vec![],
                    failed: vec![],
                };
                for s in tx.query("SELECT name, state FROM journal WHERE run = $1 ORDER BY idx", &[&u.run])? {
                    let (name, state): (String, String) = (s.get(0), s.get(1));
                    match state.as_str() {
                        "done" => u.done.push(name),
                        "failed" => u.failed.push(name),
                        _ => u.in_flight.push(name),
                    }
                }
                runs.push(u);
            }
            tx.execute(
                "UPDATE journal_runs SET status = 'settled', finished_at = $2 WHERE unit = $1 AND status = 'running'",
                &[&unit, &now()],
            )?;
            tx.commit()?;
            Ok(runs)
        })
    }

    /// A new run of `steps` steps; Err when this daemon no longer holds the unit's lease.
    pub fn begin(&self, steps: usize) -> anyhow::Result<i64> {
        let (unit, holder, generation) = (self.unit.clone(), self.holder.clone(), self.generation);
        let op = uuid::Uuid::new_v4().to_string();
        let steps = steps as i64;
        let run = self.db.call(move |c| {
            let sql = format!(
                "INSERT INTO journal_runs (op, unit, holder, generation, pid, started_at, status, steps)
                 SELECT $4, $1, $2, $3, $5, $6, 'running', $7 WHERE {HOLDS}
                 ON CONFLICT (op) DO UPDATE SET op = EXCLUDED.op RETURNING id"
            );
            let pid = std::process::id() as i64;
            Ok(c.query_opt(&sql, &[&unit, &holder, &generation, &op, &pid, &now(), &steps])?
                .map(|r| r.get::<_, i64>(0)))
        })?;
        run.ok_or_else(|| anyhow::anyhow!("{}", self.lost()))
    }

    fn lost(&self) -> String {
        format!("this daemon no longer holds the lease of unit {} (generation {})", self.unit, self.generation)
    }

    /// Outcomes of steps that ended, and intents of steps about to be sent, in one transaction;
    /// the intents only while the lease is held (Err otherwise: they are not to be sent).
    pub fn record(
        &self,
        run: i64,
        finished: &[(usize, bool, Redacted)],
        intents: &[(usize, &str, &str)],
    ) -> anyhow::Result<()> {
        let finished: Vec<(i64, &'static str, String)> = finished
            .iter()
            .map(|(i, ok, m)| (*i as i64, if *ok { "done" } else { "failed" }, m.as_str().to_string()))
            .collect();
        let intents: Vec<(i64, String, String)> =
            intents.iter().map(|(i, id, name)| (*i as i64, id.to_string(), name.to_string())).collect();
        let (unit, holder, generation) = (self.unit.clone(), self.holder.clone(), self.generation);
        let held = self.db.call(move |c| {
            let mut tx = c.transaction()?;
            for (idx, state, message) in &finished {
                tx.execute(
                    "UPDATE journal SET state = $3, message = $4, at = $5 WHERE run = $1 AND idx = $2",
                    &[&run, idx, state, message, &now()],
                )?;
            }
            // The lease row is locked until this commits: a daemon taking the unit over waits
            // for it, and then finds these intents when it settles the run.
            let held = intents.is_empty()
                || tx
                    .query_opt(
                        "SELECT 1 FROM leases WHERE unit = $1 AND holder = $2 AND generation = $3 AND expires_at > now() FOR SHARE",
                        &[&unit, &holder, &generation],
                    )?
                    .is_some();
            if held {
                for (idx, step_id, name) in &intents {
                    tx.execute(
                        "INSERT INTO journal (run, idx, step_id, name, state, at) VALUES ($1, $2, $3, $4, 'intent', $5)
                         ON CONFLICT (run, idx) DO UPDATE SET step_id = EXCLUDED.step_id, name = EXCLUDED.name, state = 'intent', message = '', at = EXCLUDED.at",
                        &[&run, idx, step_id, name, &now()],
                    )?;
                }
            }
            tx.commit()?;
            Ok(held)
        })?;
        if held { Ok(()) } else { Err(anyhow::anyhow!("{}", self.lost())) }
    }

    pub fn end(&self, run: i64, status: &str) -> anyhow::Result<()> {
        let status = status.to_string();
        self.db.call(move |c| {
            c.execute(
                "UPDATE journal_runs SET status = $2, finished_at = $3 WHERE id = $1 AND status = 'running'",
                &[&run, &status, &now()],
            )
            .map(drop)
        })
    }

    pub fn step_state(&self, run: i64, idx: usize) -> Option<String> {
        let idx = idx as i64;
        self.db
            .call(move |c| {
                Ok(c.query_opt("SELECT state FROM journal WHERE run = $1 AND idx = $2", &[&run, &idx])?
                    .map(|r| r.get(0)))
            })
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::lease;
    use std::time::Duration;

    /// A run one daemon left is found and settled once by the daemon that takes the unit over;
    /// and the daemon that lost the lease can neither begin a run nor write an intent, while
    /// the outcome of a step it had in flight is still kept.
    #[test]
    fn a_taken_over_unit_settles_the_dead_holders_run_and_the_old_holder_writes_no_intent() {
        // The lease tests' server: one per test binary, not a second one started here.
        let url = lease::tests::server_url();
        let db = Arc::new(Postgres::open(&url).unwrap());
        let unit = format!("journal-test-{}", lease::daemon_id());
        let ttl = Duration::from_millis(600);
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let a = lease::acquire(&mut c, &unit, "a", ttl).unwrap().expect("a takes the unit");
        let ja = SharedJournal::new(db.clone(), &unit, "a", a.generation);
        let run = ja.begin(3).unwrap();
        ja.record(run, &[], &[(0, "s0", "create x"), (1, "s1", "create y")]).unwrap();
        let r = crate::redact::Redactor::default();
        ja.record(run, &[(0, true, r.redact(""))], &[]).unwrap();
        assert_eq!(ja.step_state(run, 1).as_deref(), Some("intent"));

        std::thread::sleep(Duration::from_millis(700)); // a stops renewing: the lease expires
        assert!(
            ja.record(run, &[], &[(2, "s2", "create z")]).is_err(),
            "no intent is written once the lease has expired"
        );
        assert_eq!(ja.step_state(run, 2), None);
        let b = lease::acquire(&mut c, &unit, "b", ttl).unwrap().expect("b takes the expired unit");
        let jb = SharedJournal::new(db.clone(), &unit, "b", b.generation);
        let left = jb.take_unfinished().unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].holder, "a");
        assert_eq!(left[0].done, ["create x"]);
        assert_eq!(left[0].in_flight, ["create y"]);
        assert!(jb.take_unfinished().unwrap().is_empty(), "settled once read");
        assert!(ja.begin(1).is_err(), "a cannot begin a run under a lease it lost");
        // What a's in-flight step came to is still written: it is what happened.
        ja.record(run, &[(1, false, r.redact("boom"))], &[]).unwrap();
        assert_eq!(ja.step_state(run, 1).as_deref(), Some("failed"));
        ja.end(run, "fenced").unwrap();
        let status: String = c.query_one("SELECT status FROM journal_runs WHERE id = $1", &[&run]).unwrap().get(0);
        assert_eq!(status, "settled", "a's end does not overwrite the settling");
        let run_b = jb.begin(1).unwrap();
        assert!(run_b > run);
    }
}
