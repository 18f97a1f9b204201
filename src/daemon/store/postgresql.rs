//! The shared engine: the history and keyed values in a PostgreSQL database
//! (`--store postgres://user:password@host:port/database`), which daemons on other machines can
//! read and, later, share.
//!
//! **The connection** is a [`crate::pg::Postgres`]: one thread owns it, each call is a job sent
//! to it (the caller blocks as it does on SQLite's mutex), a lost connection is made again and
//! a job it failed under run once more — every job here is idempotent: a history entry
//! carries an id, and an entry whose transaction did commit before the answer was lost is not
//! written twice. Any other failure is the caller's error: history is never dropped silently.
//!
//! **Migrations** run on open, in one transaction under an advisory lock (daemons starting
//! together migrate once): `capstan_schema` lists the versions applied. A store whose version
//! is newer than this binary knows is refused, never written.
//!
//! TLS is rustls, as the URL's `sslmode` and `sslrootcert` say (`crate::pg`'s `tls.rs`). The
//! URL's password is never shown: every message names the store by [`crate::redact::url`].
//! A daemon's units share one bounded [`Pool`] of connections, each unit's jobs in its schema.

use super::{CommitStatus, Configuration, Engine, Entry, Summary, Transition, now, transition};
pub use crate::pg::{Pool, Postgres, calls};
use postgres::Client;
use serde_json::Value;
use std::sync::Arc;

/// One step of the schema each, in order: version N is `MIGRATIONS[N - 1]`. Never edit a
/// released one; add the next.
const MIGRATIONS: &[&str] = &[
    "
CREATE SEQUENCE capstan_seq;
CREATE TABLE configurations (
    sha           TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    seen_at       BIGINT NOT NULL,
    applied_at    BIGINT,
    rendered      TEXT,
    errors        TEXT NOT NULL DEFAULT '[]',
    outcome       TEXT,
    plan          TEXT,
    superseded_by TEXT,
    seq           BIGINT NOT NULL
);
CREATE TABLE history (
    seq           BIGINT PRIMARY KEY,
    op            TEXT NOT NULL UNIQUE,
    at            BIGINT NOT NULL,
    sha           TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    steps_applied BIGINT NOT NULL DEFAULT 0,
    steps_total   BIGINT NOT NULL DEFAULT 0,
    detail        TEXT
);
CREATE INDEX history_sha ON history (sha);
CREATE TABLE kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
",
    "
CREATE TABLE leases (
    unit       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    generation BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE daemons (
    id         TEXT PRIMARY KEY,
    seen_until TIMESTAMPTZ NOT NULL
);
",
    // The shared apply journal (`crate::journal::postgres`): a unit's runs, each step's intent
    // before it is sent and its outcome after, so the daemon that takes a unit over settles
    // the runs the one before it left.
    "
CREATE TABLE journal_runs (
    id          BIGSERIAL PRIMARY KEY,
    op          TEXT NOT NULL UNIQUE,
    unit        TEXT NOT NULL,
    holder      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    pid         BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    status      TEXT NOT NULL,
    steps       BIGINT NOT NULL
);
CREATE INDEX journal_runs_unit ON journal_runs (unit, status);
CREATE TABLE journal (
    run     BIGINT NOT NULL REFERENCES journal_runs (id),
    idx     BIGINT NOT NULL,
    step_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    state   TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    at      BIGINT NOT NULL,
    PRIMARY KEY (run, idx)
);
",
    // Events relayed between daemons too large for a notification (`daemon::relay`), and the
    // URL of each daemon's API (a unit's holder is named with it when another daemon is asked
    // to change the unit).
    "
CREATE TABLE fleet_events (
    id     BIGSERIAL PRIMARY KEY,
    origin TEXT NOT NULL,
    at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    body   TEXT NOT NULL
);
CREATE INDEX fleet_events_at ON fleet_events (at);
ALTER TABLE daemons ADD COLUMN address TEXT;
",
];

/// The versions whose tables are the fleet's, kept in the default schema only (see
/// `migrate_in`): 2 (leases, daemons), 3 (the shared journal) and 4 (relayed events, the
/// daemons' addresses).
const FLEET_VERSIONS: &[i64] = &[2, 3, 4];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations to run on a store at version `current`; an error when it is newer than this
/// binary knows (a newer capstan wrote it: this one could misread it or undo what it relies on).
fn migrations_from(current: i64, shown: &str) -> anyhow::Result<&'static [&'static str]> {
    match usize::try_from(current) {
        Ok(n) if n <= MIGRATIONS.len() => Ok(&MIGRATIONS[n..]),
        _ => anyhow::bail!(
            "the store {shown} has schema version {current}, newer than this capstan knows ({SCHEMA_VERSION}): \
             a newer capstan wrote it; run that version (or a newer one) against it"
        ),
    }
}

/// An advisory lock's key ("capstan" in ASCII): daemons starting together migrate one by one.
const MIGRATION_LOCK: i64 = 0x63_6170_7374_616e;

/// The schema a unit of a daemon of several keeps its history in (`capstan_unit_<hash>`): a
/// name PostgreSQL takes as it is, the same for the same unit on every daemon and every start,
/// and another for every other unit.
pub fn unit_schema(unit: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(unit.as_bytes());
    format!("capstan_unit_{}", hex::encode(&digest[..12]))
}

/// Run the migrations this store lacks, in `schema` (made first) when one is given: the
/// connection's search path is that schema, so every table of every migration is made there.
fn migrate_in(client: &mut Client, shown: &str, schema: Option<&str>) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    if let Some(schema) = schema {
        // The name is ours (`unit_schema`): letters, digits and `_` only.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS capstan_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    let current: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM capstan_schema", &[])?.get(0);
    for (i, sql) in migrations_from(current, shown)?.iter().enumerate() {
        let version = current + 1 + i as i64;
        // A unit's schema holds its history only: the fleet's tables (leases, daemons, the
        // shared journal) are the default schema's, read by every daemon on a connection of
        // its own; a copy in a unit's schema could only be read by mistake.
        let sql = if schema.is_some() && FLEET_VERSIONS.contains(&version) { "" } else { sql };
        tx.batch_execute(sql)
            .map_err(|e| anyhow::Error::new(e).context(format!("migrating {shown} to version {version}")))?;
        tx.execute("INSERT INTO capstan_schema (version, applied_at) VALUES ($1, $2)", &[&version, &now()])?;
    }
    tx.commit()?;
    Ok(())
}

impl Postgres {
    /// Connects, migrates, and starts the thread that owns the connection.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let (config, tls, shown) = crate::pg::parse(url)?;
        let migrating = shown.clone();
        let store = Postgres::start(config, tls, &shown, move |c| migrate_in(c, &migrating, None))?;
        tracing::info!(store = %shown, version = SCHEMA_VERSION, "the history is kept in PostgreSQL");
        Ok(store)
    }

    /// The store of one unit of a daemon of several: the same tables, in the unit's own schema
    /// (`unit_schema`), so each unit's history is apart and found again on every start; its
    /// jobs run on `pool`, the connections all the daemon's units share.
    pub fn open_unit(pool: &Arc<Pool>, unit: &str) -> anyhow::Result<Self> {
        let schema = unit_schema(unit);
        let migrating = format!("{} (schema {schema}, unit {unit})", pool.shown());
        let s = schema.clone();
        Postgres::on(pool.clone(), Some(schema), move |c| migrate_in(c, &migrating, Some(&s)))
    }
}

fn configuration(r: &postgres::Row) -> Configuration {
    super::configuration_from(r.get(0), r.get(1), r.get(2), r.get(3), [r.get(4), r.get(5), r.get(6)], r.get(7))
}

impl Engine for Postgres {
    fn record(
        &self,
        sha: &str,
        trigger: &str,
        outcome: &str,
        steps: (usize, usize),
        detail: &Value,
    ) -> anyhow::Result<()> {
        let (sha, trigger, outcome, detail) =
            (sha.to_string(), trigger.to_string(), outcome.to_string(), detail.clone());
        // The entry's id: a second attempt after a lost answer finds it written.
        let op = uuid::Uuid::new_v4().to_string();
        let steps = (steps.0 as i64, steps.1 as i64);
        self.call(move |c| {
            let mut tx = c.transaction()?;
            if tx.query_opt("SELECT 1 FROM history WHERE op = $1", &[&op])?.is_some() {
                return tx.commit();
            }
            // One sequence for commits and entries: the configurations list newest activity first.
            let seq: i64 = tx.query_one("SELECT nextval('capstan_seq')", &[])?.get(0);
            let detail_text = (!detail.is_null()).then(|| detail.to_string());
            tx.execute(
                "INSERT INTO history (seq, op, at, sha, trigger, outcome, steps_applied, steps_total, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&seq, &op, &now(), &sha, &trigger, &outcome, &steps.0, &steps.1, &detail_text],
            )?;
            // A commit moves up the list by what happens to it, not by being superseded.
            tx.execute(
                "INSERT INTO configurations (sha, status, seen_at, seq) VALUES ($1, 'pending', $2, $3)
                 ON CONFLICT (sha) DO UPDATE SET seq = CASE WHEN $4 THEN configurations.seq ELSE excluded.seq END",
                &[&sha, &now(), &seq, &(outcome == "superseded")],
            )?;
            let status: String =
                tx.query_one("SELECT status FROM configurations WHERE sha = $1 FOR UPDATE", &[&sha])?.get(0);
            match transition(&outcome, &status, &detail) {
                Transition::Applied => {
                    tx.execute(
                        "UPDATE configurations SET status = 'applied', applied_at = $2, superseded_by = NULL, errors = '[]' WHERE sha = $1",
                        &[&sha, &now()],
                    )?;
                }
                Transition::Attempt { errors } => {
                    tx.execute(
                        "UPDATE configurations SET status = $2, errors = COALESCE($3, errors), superseded_by = NULL WHERE sha = $1",
                        &[&sha, &outcome, &errors],
                    )?;
                }
                Transition::Pending => {
                    tx.execute("UPDATE configurations SET status = 'pending' WHERE sha = $1", &[&sha])?;
                }
                Transition::Superseded { by } => {
                    let touched: i64 = tx
                        .query_one("SELECT COALESCE(MAX(steps_applied), 0) FROM history WHERE sha = $1", &[&sha])?
                        .get(0);
                    let status = if touched > 0 { "partial" } else { "superseded" };
                    tx.execute(
                        "UPDATE configurations SET status = $2, superseded_by = $3 WHERE sha = $1",
                        &[&sha, &status, &by],
                    )?;
                }
                Transition::None => {}
            }
            tx.commit()
        })
    }

    fn open_commits(&self, except: &str) -> anyhow::Result<Vec<String>> {
        let except = except.to_string();
        self.call(move |c| {
            let rows = c.query(
                "SELECT sha FROM configurations WHERE sha != $1 AND status IN ('pending', 'applying') ORDER BY seq",
                &[&except],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn applied_before(&self, sha: &str) -> anyhow::Result<bool> {
        let sha = sha.to_string();
        self.call(move |c| {
            let n: i64 = c
                .query_one(
                    "SELECT (SELECT COUNT(*) FROM history WHERE sha = $1 AND outcome = 'applied') + (SELECT COUNT(*) FROM configurations WHERE sha = $1 AND status = 'applied')",
                    &[&sha],
                )?
                .get(0);
            Ok(n > 0)
        })
    }

    fn history(&self, sha: Option<&str>, limit: usize) -> anyhow::Result<Vec<Entry>> {
        let sha = sha.map(str::to_string);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let rows = c.query(
                "SELECT seq, at, sha, trigger, outcome, steps_applied, steps_total, detail FROM history
                 WHERE $1::TEXT IS NULL OR sha = $1 ORDER BY seq DESC LIMIT $2",
                &[&sha, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| Entry {
                    seq: r.get(0),
                    at: r.get(1),
                    sha: r.get(2),
                    trigger: r.get(3),
                    outcome: r.get(4),
                    steps_applied: r.get::<_, i64>(5) as usize,
                    steps_total: r.get::<_, i64>(6) as usize,
                    detail: super::json_or_null(r.get(7)),
                })
                .collect())
        })
    }

    fn set_rendered(&self, sha: &str, rendered: &str) -> anyhow::Result<()> {
        self.update("UPDATE configurations SET rendered = $2 WHERE sha = $1", sha, rendered)
    }

    fn set_errors(&self, sha: &str, errors: &str) -> anyhow::Result<()> {
        self.update("UPDATE configurations SET errors = $2 WHERE sha = $1", sha, errors)
    }

    fn set_outcome(&self, sha: &str, outcome: &str) -> anyhow::Result<()> {
        self.update("UPDATE configurations SET outcome = $2 WHERE sha = $1", sha, outcome)
    }

    fn set_plan(&self, sha: &str, text: &str) -> anyhow::Result<()> {
        self.update("UPDATE configurations SET plan = $2 WHERE sha = $1 AND plan IS NULL", sha, text)
    }

    fn plan(&self, sha: &str) -> anyhow::Result<Option<String>> {
        self.text("SELECT plan FROM configurations WHERE sha = $1", sha)
    }

    fn configuration(&self, sha: &str) -> anyhow::Result<Option<Configuration>> {
        let sha = sha.to_string();
        self.call(move |c| {
            let row = c.query_opt(
                "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations WHERE sha = $1",
                &[&sha],
            )?;
            Ok(row.as_ref().map(configuration))
        })
    }

    fn errors(&self, sha: &str) -> anyhow::Result<Option<String>> {
        self.text("SELECT errors FROM configurations WHERE sha = $1", sha)
    }

    fn status(&self, sha: &str) -> anyhow::Result<Option<String>> {
        self.text("SELECT status FROM configurations WHERE sha = $1", sha)
    }

    fn summaries(&self) -> anyhow::Result<Vec<Summary>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT c.sha, c.status, c.seen_at, c.applied_at, c.superseded_by, h.outcome, h.trigger FROM configurations c
                 LEFT JOIN history h ON h.seq = (SELECT MAX(seq) FROM history WHERE sha = c.sha AND outcome != 'seen')
                 ORDER BY c.seq DESC",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| Summary {
                    sha: r.get(0),
                    status: CommitStatus::parse(r.get(1)),
                    seen_at: r.get(2),
                    applied_at: r.get(3),
                    superseded_by: r.get(4),
                    last_outcome: r.get(5),
                    last_trigger: r.get(6),
                })
                .collect())
        })
    }

    fn list(&self) -> anyhow::Result<Vec<Configuration>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT sha, status, seen_at, applied_at, rendered, errors, outcome, superseded_by FROM configurations ORDER BY seq DESC",
                &[],
            )?;
            Ok(rows.iter().map(configuration).collect())
        })
    }

    fn get_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.text("SELECT value FROM kv WHERE key = $1", key)
    }

    fn set_value(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.update(
            "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )
    }
}

impl Postgres {
    /// A statement of two text parameters (each such write is idempotent).
    fn update(&self, sql: &'static str, a: &str, b: &str) -> anyhow::Result<()> {
        let (a, b) = (a.to_string(), b.to_string());
        self.call(move |c| c.execute(sql, &[&a, &b]).map(drop))
    }

    /// The one nullable text a query of one text parameter reads, if it found a row.
    fn text(&self, sql: &'static str, a: &str) -> anyhow::Result<Option<String>> {
        let a = a.to_string();
        self.call(move |c| Ok(c.query_opt(sql, &[&a])?.and_then(|r| r.get::<_, Option<String>>(0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_migrated_from_its_version_to_the_newest() {
        assert_eq!(migrations_from(0, "s").unwrap().len(), MIGRATIONS.len());
        assert!(migrations_from(SCHEMA_VERSION, "s").unwrap().is_empty());
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_store_newer_than_the_binary_is_refused_with_both_versions() {
        let e = migrations_from(SCHEMA_VERSION + 1, "postgres://127.0.0.1/x").unwrap_err().to_string();
        assert!(e.contains(&format!("schema version {}", SCHEMA_VERSION + 1)), "{e}");
        assert!(e.contains(&format!("({SCHEMA_VERSION})")), "{e}");
        assert!(e.contains("postgres://127.0.0.1/x"), "{e}");
        assert!(migrations_from(-1, "s").is_err(), "a negative version is not one this binary wrote");
    }

    #[test]
    fn every_migration_creates_and_never_drops() {
        // Migrations add; a DROP in one would lose history a daemon wrote.
        for sql in MIGRATIONS {
            assert!(!sql.to_uppercase().contains("DROP "), "{sql}");
        }
    }
}
