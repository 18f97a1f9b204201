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
//!
//! Two engines keep it, behind one [`Engine`] trait: SQLite in the state directory (the
//! default, nothing to install: [`sqlite`]) and PostgreSQL (`--store postgres://…`, shared by
//! daemons on several machines: [`postgresql`]). [`Store`] is the same synchronous interface over
//! either; what a commit's status becomes is decided once, here ([`transition`]), and each
//! engine only writes it.

pub(crate) mod postgresql;
mod sqlite;

use serde::Serialize;
use serde_json::Value;
use std::path::Path;

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

    pub(crate) fn parse(s: &str) -> Self {
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

/// Where a daemon's units keep their histories: each its SQLite file, or one bounded pool of
/// PostgreSQL connections all units share (`--store-connections`), each unit in its schema.
pub enum Stores {
    Sqlite,
    Postgres(std::sync::Arc<postgresql::Pool>),
}

impl Stores {
    /// What `--store` names (as [`Store::open_at`] reads it), with at most `connections`
    /// connections to PostgreSQL for all units together; none is made here.
    pub fn open(store: Option<&str>, connections: usize) -> anyhow::Result<Stores> {
        match store.map(str::trim).filter(|s| !s.is_empty()) {
            None | Some("sqlite") => Ok(Stores::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Stores::Postgres(postgresql::Pool::open(url, connections)?))
            }
            Some(other) => anyhow::bail!(
                "--store takes a postgres:// URL, or sqlite for the database in the state directory; got {:?}",
                crate::redact::url(other)
            ),
        }
    }
}

/// The daemon's durable state, in whichever engine keeps it.
pub struct Store {
    engine: Box<dyn Engine>,
}

/// What an engine stores and reads. Texts are JSON as written (`rendered`, `errors`,
/// `outcome`); statuses are [`CommitStatus`]'s names.
trait Engine: Send + Sync {
    /// Append one history entry and apply its [`transition`] to the commit, in one transaction.
    fn record(
        &self,
        sha: &str,
        trigger: &str,
        outcome: &str,
        steps: (usize, usize),
        detail: &Value,
    ) -> anyhow::Result<()>;
    /// The commits pending or being applied, but `except`, oldest activity first.
    fn open_commits(&self, except: &str) -> anyhow::Result<Vec<String>>;
    fn applied_before(&self, sha: &str) -> anyhow::Result<bool>;
    fn history(&self, sha: Option<&str>, limit: usize) -> anyhow::Result<Vec<Entry>>;
    fn set_rendered(&self, sha: &str, rendered: &str) -> anyhow::Result<()>;
    fn set_errors(&self, sha: &str, errors: &str) -> anyhow::Result<()>;
    fn set_outcome(&self, sha: &str, outcome: &str) -> anyhow::Result<()>;
    /// Only the first plan made for a commit is kept.
    fn set_plan(&self, sha: &str, text: &str) -> anyhow::Result<()>;
    fn plan(&self, sha: &str) -> anyhow::Result<Option<String>>;
    /// A commit without its history.
    fn configuration(&self, sha: &str) -> anyhow::Result<Option<Configuration>>;
    fn errors(&self, sha: &str) -> anyhow::Result<Option<String>>;
    fn status(&self, sha: &str) -> anyhow::Result<Option<String>>;
    fn summaries(&self) -> anyhow::Result<Vec<Summary>>;
    /// Every commit without its history, newest activity first.
    fn list(&self) -> anyhow::Result<Vec<Configuration>>;
    fn get_value(&self, key: &str) -> anyhow::Result<Option<String>>;
    fn set_value(&self, key: &str, value: &str) -> anyhow::Result<()>;
}

/// What one history entry does to its commit's record, given the commit's status before it.
#[derive(Debug, PartialEq)]
enum Transition {
    /// `applied`: the commit is applied for good, its errors cleared.
    Applied,
    /// An attempt at a commit not applied: its status becomes the outcome, with these errors
    /// (none: the ones it has).
    Attempt { errors: Option<String> },
    /// An attempt stopped before it finished: pending again.
    Pending,
    /// A newer commit is applied instead (`superseded`, or `partial` when steps of it were).
    Superseded { by: Option<String> },
    /// Nothing changes (a commit once applied stays applied).
    None,
}

fn transition(outcome: &str, status: &str, detail: &Value) -> Transition {
    let applied = status == "applied";
    match outcome {
        "applied" => Transition::Applied,
        // Errors are the attempt's: given with it, or set by `set_errors`.
        "applying" if !applied => Transition::Attempt { errors: Some("[]".into()) },
        "failed" | "invalid" | "refused" if !applied => {
            Transition::Attempt { errors: detail.get("errors").map(|e| e.to_string()) }
        }
        "interrupted" | "stopped" if !applied => Transition::Pending,
        "superseded" if status == "pending" || status == "applying" => {
            Transition::Superseded { by: detail.get("superseded_by").and_then(Value::as_str).map(str::to_string) }
        }
        _ => Transition::None,
    }
}

fn json_or_null(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
}

/// A commit's record from its columns (`rendered`, `errors`, `outcome` as JSON texts).
fn configuration_from(
    sha: String,
    status: String,
    seen_at: i64,
    applied_at: Option<i64>,
    [rendered, errors, outcome]: [Option<String>; 3],
    superseded_by: Option<String>,
) -> Configuration {
    let parse = |s: Option<String>| s.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    Configuration {
        sha,
        status: CommitStatus::parse(&status),
        seen_at,
        applied_at,
        rendered: parse(rendered),
        errors: parse(errors).and_then(|v| v.as_array().cloned()).unwrap_or_default(),
        outcome: parse(outcome),
        superseded_by,
        history: Vec::new(),
    }
}

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
    /// The SQLite database in the state directory `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Ok(Store { engine: Box::new(sqlite::Sqlite::open(dir)?) })
    }

    /// The store `--store` names: none (or `sqlite`) is the SQLite database in the state
    /// directory `dir`; a `postgres://` or `postgresql://` URL is that PostgreSQL database,
    /// migrated to this capstan's schema first.
    pub fn open_at(store: Option<&str>, dir: &Path) -> anyhow::Result<Self> {
        match store.map(str::trim).filter(|s| !s.is_empty()) {
            None | Some("sqlite") => Self::open(dir),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Store { engine: Box::new(postgresql::Postgres::open(url)?) })
            }
            Some(other) => anyhow::bail!(
                "--store takes a postgres:// URL, or sqlite for the database in the state directory; got {:?}",
                crate::redact::url(other)
            ),
        }
    }

    /// The store of the unit `unit` of a daemon of several (`--path 'clusters/*'`), apart from
    /// every other unit's and found again by a daemon restarted on the same state directory or
    /// store: with SQLite, a database of its own in the unit's state directory `dir`
    /// (`units/<name>/capstan.db`); with PostgreSQL, the same tables in a schema of the unit's
    /// own (`capstan_unit_<hash of its name>`, migrated on open as the default one is), on the
    /// connections all the daemon's units share.
    pub fn open_unit(stores: &Stores, dir: &Path, unit: &str) -> anyhow::Result<Self> {
        match stores {
            Stores::Postgres(pool) => Ok(Store { engine: Box::new(postgresql::Postgres::open_unit(pool, unit)?) }),
            Stores::Sqlite => Self::open(dir),
        }
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
        self.engine.record(sha, trigger, outcome, steps, detail)
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
        for sha in self.engine.open_commits(except)? {
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
        self.engine.applied_before(sha)
    }

    /// The history, newest first: of one commit, or of all; at most `limit` entries.
    pub fn history(&self, sha: Option<&str>, limit: usize) -> anyhow::Result<Vec<Entry>> {
        self.engine.history(sha, limit)
    }

    pub fn set_rendered(&self, sha: &str, rendered: &Value) -> anyhow::Result<()> {
        self.engine.set_rendered(sha, &rendered.to_string())
    }

    pub fn set_errors(&self, sha: &str, errors: &[Value]) -> anyhow::Result<()> {
        self.engine.set_errors(sha, &serde_json::to_string(errors)?)
    }

    pub fn set_outcome(&self, sha: &str, outcome: &Value) -> anyhow::Result<()> {
        self.engine.set_outcome(sha, &outcome.to_string())
    }

    /// The plan made for a commit, exactly as `capstan plan --output json` prints it (the
    /// first one, made against the live state the commit found).
    pub fn set_plan(&self, sha: &str, text: &str) -> anyhow::Result<()> {
        self.engine.set_plan(sha, text)
    }

    pub fn plan(&self, sha: &str) -> anyhow::Result<Option<String>> {
        self.engine.plan(sha)
    }

    pub fn get(&self, sha: &str) -> anyhow::Result<Option<Configuration>> {
        let Some(mut c) = self.engine.configuration(sha)? else { return Ok(None) };
        c.history = self.history(Some(sha), 1000)?;
        c.history.reverse();
        Ok(Some(c))
    }

    /// The plan as last run for a commit, with its step statuses (`set_outcome`).
    pub fn outcome(&self, sha: &str) -> anyhow::Result<Option<Value>> {
        Ok(self.engine.configuration(sha)?.and_then(|c| c.outcome))
    }

    /// The errors that made a commit invalid, refused or failed, without its other records.
    pub fn errors(&self, sha: &str) -> anyhow::Result<Vec<Value>> {
        let text = self.engine.errors(sha)?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
    }

    /// What became of a commit, without reading its records.
    pub fn status(&self, sha: &str) -> anyhow::Result<Option<CommitStatus>> {
        Ok(self.engine.status(sha)?.map(|s| CommitStatus::parse(&s)))
    }

    /// Every commit seen, newest first, without the large fields (a daemon holding thousands
    /// of resources stores megabytes per commit).
    pub fn summaries(&self) -> anyhow::Result<Vec<Summary>> {
        self.engine.summaries()
    }

    /// Every commit seen, newest first.
    pub fn list(&self) -> anyhow::Result<Vec<Configuration>> {
        self.engine.list()
    }

    pub fn get_value(&self, key: &str) -> anyhow::Result<Option<String>> {
        self.engine.get_value(key)
    }

    pub fn set_value(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.engine.set_value(key, value)
    }
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

    #[test]
    fn a_commit_once_applied_stays_applied_whatever_a_later_attempt_does() {
        let none = Value::Null;
        for outcome in ["applying", "failed", "invalid", "refused", "interrupted", "stopped", "superseded"] {
            assert_eq!(transition(outcome, "applied", &none), Transition::None, "{outcome}");
        }
        assert_eq!(transition("applied", "failed", &none), Transition::Applied);
        let errors = serde_json::json!({ "errors": [{"message": "x"}] });
        assert_eq!(
            transition("failed", "applying", &errors),
            Transition::Attempt { errors: Some(r#"[{"message":"x"}]"#.into()) }
        );
        assert_eq!(transition("applying", "failed", &none), Transition::Attempt { errors: Some("[]".into()) });
        assert_eq!(transition("interrupted", "applying", &none), Transition::Pending);
        let by = serde_json::json!({ "superseded_by": "b" });
        assert_eq!(transition("superseded", "pending", &by), Transition::Superseded { by: Some("b".into()) });
        assert_eq!(transition("superseded", "failed", &by), Transition::None, "only open commits are superseded");
        assert_eq!(transition("drift_found", "pending", &none), Transition::None);
    }

    #[test]
    fn a_store_of_an_unknown_engine_is_refused_without_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open_at(Some("mysql://me:hunter2secret@db/x"), dir.path()).err().unwrap().to_string();
        assert!(e.contains("--store") && e.contains("mysql://db/x"), "{e}");
        assert!(!e.contains("hunter2secret"), "{e}");
        assert!(Store::open_at(Some("sqlite"), dir.path()).is_ok());
        assert!(Store::open_at(None, dir.path()).is_ok());
    }
}
