//! The daemon's state as its API shows it: what it is doing (`Phase`), what its last reconcile
//! came to (`Reconciled`), its status, and the plan running or last run.

use super::*;

/// What the daemon is doing (`/v1/status`'s `phase`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Starting,
    Idle,
    /// A reconcile found the target locked by an apply and is tried again shortly.
    WaitingForLock,
    /// A reconcile could not fetch the repository and is tried again shortly.
    WaitingToFetch,
    Fetching,
    Planning,
    Applying,
    Interrupted,
    Stopped,
}

/// What a reconcile came to (`/v1/status`'s `last_result`, the metrics' `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconciled {
    Converged,
    ApplyFailed,
    TargetLocked,
    FetchFailed,
    Refused,
    Invalid,
    Interrupted,
    Stopped,
    JournalFailed,
    Unchanged,
    InSync,
    DriftReported,
    ObserveFailed,
    /// Another daemon holds the unit's lease (PostgreSQL store): nothing was done.
    Standby,
    /// The unit's lease was lost while applying: nothing further was sent.
    LeaseLost,
}

impl Reconciled {
    /// The wire name (`apply_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reconciled::Converged => "converged",
            Reconciled::ApplyFailed => "apply_failed",
            Reconciled::TargetLocked => "target_locked",
            Reconciled::FetchFailed => "fetch_failed",
            Reconciled::Refused => "refused",
            Reconciled::Invalid => "invalid",
            Reconciled::Interrupted => "interrupted",
            Reconciled::Stopped => "stopped",
            Reconciled::JournalFailed => "journal_failed",
            Reconciled::Unchanged => "unchanged",
            Reconciled::InSync => "in_sync",
            Reconciled::DriftReported => "drift_reported",
            Reconciled::ObserveFailed => "observe_failed",
            Reconciled::Standby => "standby",
            Reconciled::LeaseLost => "lease_lost",
        }
    }
}

/// What the daemon is doing, for `GET /v1/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DaemonStatus {
    pub phase: Phase,
    /// The commit being converged to.
    pub target: Option<String>,
    /// The commit the followed branch is at.
    pub branch_head: Option<String>,
    /// The last commit applied completely.
    pub last_applied: Option<String>,
    pub last_result: Option<Reconciled>,
    pub last_reconcile: Option<String>,
    pub interrupted: bool,
    pub drifted: Vec<String>,
    pub ready: bool,
    /// Who holds the target's lock, while that keeps the daemon from applying.
    pub locked_by: Option<String>,
}

/// What the API shows of a unit besides the store's records, as its holder knows it: with a
/// shared store the holder keeps it in the unit's store (`Unit::share_shown`) and every other
/// daemon answers from there (`Unit::shown`), so each answers the same. What a daemon's own
/// loop did (`last_result`, `last_reconcile`: `standby` on a daemon without the lease, `ready`)
/// stays its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shown {
    pub phase: Phase,
    pub target: Option<String>,
    pub branch_head: Option<String>,
    pub last_applied: Option<String>,
    pub interrupted: bool,
    pub drifted: Vec<String>,
    pub locked_by: Option<String>,
    /// The commit of a plan an interrupt stopped part way.
    pub paused_commit: Option<String>,
    /// The commit a rollback keeps to.
    pub pinned: Option<String>,
}

/// The plan running or last run, with its step statuses.
pub struct CurrentPlan {
    pub sha: String,
    pub plan: Plan,
    pub redactor: Redactor,
    pub outcome: Outcome,
}

impl CurrentPlan {
    /// The plan in seed 000's JSON shape, with live statuses.
    pub fn json(&self) -> Value {
        let mut p = PhasesView::new(&self.plan, &self.redactor, Some(&self.outcome));
        p.commit = Some(self.sha.clone());
        serde_json::to_value(p).unwrap_or(Value::Null)
    }
}
