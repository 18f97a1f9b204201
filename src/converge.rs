//! The one path by which anything changes a target — `capstan apply`, `capstan rollback` and
//! the daemon alike: lock → settle an unfinished run → plan → guards → journal → apply →
//! verify → journal end. Each stage takes what the one before it returns, so none can be
//! skipped: only a [`Session`] (which holds the lock and has settled the journal) plans, only a
//! plan that passed the guards ([`Cleared`]) is applied, and applying always journals. What each
//! mode does between the stages (printing and asking for confirmation; the daemon's drift
//! check, events and history) stays with the mode.

use crate::apply::{self, ApplyOptions, Observer, Outcome, Status};
use crate::config::{Config, MassDelete};
use crate::engine::{self, PlanError, PlanFlags, Planned};
use crate::journal::{Journal, Place, Unfinished, postgres::SharedJournal};
use crate::lock::TargetLock;
use crate::plan::Plan;
use crate::redact::Redacted;
use crate::render::{RenderCache, RenderOptions};
use crate::source::Snapshot;
use crate::target::Connected;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A target held for converging: its lock, and the journal's earlier runs settled.
pub struct Session<'a> {
    target: &'a Connected,
    state_dir: &'a Path,
    lock: TargetLock,
    /// A unit's lease, when daemons share a store: every apply is fenced by it and journalled
    /// in the shared journal.
    leased: Option<Leased>,
}

/// What a unit's lease brings to a session: the fence every step is sent past, and the unit's
/// journal in the shared store.
#[derive(Clone)]
pub struct Leased {
    pub fence: Arc<dyn apply::Fence>,
    pub journal: SharedJournal,
}

/// Which guards a plan must pass before it is applied.
#[derive(Clone, Copy, Debug)]
pub struct Guards<'a> {
    pub mass_delete: &'a MassDelete,
    pub allow_mass_delete: bool,
    pub allow_check_failures: bool,
}

/// Why a plan is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It deletes more than capstan.yaml's `mass_delete` allows.
    MassDelete { deletes: usize, why: Redacted },
    /// One of the platform's pre-apply checks failed; `guard` names it (the JSON key), `why` is
    /// redacted.
    Check { guard: String, why: Redacted },
}

/// A plan that passed the guards: the only kind [`Session::apply`] takes.
pub struct Cleared(Planned);

impl std::ops::Deref for Cleared {
    type Target = Planned;
    fn deref(&self) -> &Planned {
        &self.0
    }
}

/// How an apply ended.
pub enum Applied {
    /// An interrupt or a shutdown stopped it with steps still to do (`Status::Waiting`); the
    /// journal says `interrupted` (a person's, set in `ApplyOptions::paused`) or `stopped`.
    Stopped(Outcome),
    /// The session's lease was lost (`why`): nothing further was sent; the steps not started
    /// are `Status::Waiting`. The journal says `fenced`.
    Fenced { outcome: Outcome, why: String },
    /// Every step ran or could not; when all succeeded, the platform was read back
    /// (`verified`, [`engine::verify`]). The journal says `done` or `failed`; `ended` is
    /// whether that could be written.
    Finished { outcome: Outcome, verified: Result<(), String>, ended: anyhow::Result<()> },
}

impl<'a> Session<'a> {
    /// Take the target's lock (or carry on under `held`, one an interrupted plan kept) and
    /// settle the runs a killed process left in the journal: the plan made next is made from
    /// live state, which settles their in-flight steps. Err: the lock is held by another.
    /// The runs settled (or why the journal could not be read) are for the caller to report.
    pub fn open(
        target: &'a Connected,
        state_dir: &'a Path,
        held: Option<TargetLock>,
    ) -> anyhow::Result<(Session<'a>, anyhow::Result<Vec<Unfinished>>)> {
        Self::open_leased(target, state_dir, held, None)
    }

    /// As [`Session::open`], under a unit's lease when there is one: the runs settled are the
    /// unit's in the shared journal (a dead daemon's too), and every apply is fenced.
    pub fn open_leased(
        target: &'a Connected,
        state_dir: &'a Path,
        held: Option<TargetLock>,
        leased: Option<Leased>,
    ) -> anyhow::Result<(Session<'a>, anyhow::Result<Vec<Unfinished>>)> {
        let lock = match held {
            Some(lock) => lock,
            None => TargetLock::acquire(&target.key)?,
        };
        let place = match &leased {
            Some(l) => Place::Shared(&l.journal),
            None => Place::Local(state_dir),
        };
        let settled = Journal::take_unfinished_in(place, &target.key);
        Ok((Session { target, state_dir, lock, leased }, settled))
    }

    fn place(&self) -> Place<'_> {
        match &self.leased {
            Some(l) => Place::Shared(&l.journal),
            None => Place::Local(self.state_dir),
        }
    }

    /// Plan under the lock, so nothing else changes the target between this plan and its apply.
    pub async fn plan(
        &self,
        snapshot: &Snapshot,
        config: &Config,
        render: &RenderOptions,
        flags: PlanFlags,
        cache: Option<&RenderCache>,
    ) -> Result<Planned, PlanError> {
        engine::plan(self.target.provider.as_ref(), snapshot, config, render, flags, cache).await
    }

    /// [`Session::plan`], incremental against `baseline` where it can be ([`engine::plan_since`]).
    pub async fn plan_since(
        &self,
        snapshot: &Snapshot,
        config: &Config,
        render: &RenderOptions,
        flags: PlanFlags,
        cache: Option<&RenderCache>,
        baseline: Option<&engine::Baseline>,
    ) -> Result<engine::Since, PlanError> {
        let provider = self.target.provider.as_ref();
        engine::plan_since(provider, snapshot, config, render, flags, cache, baseline).await
    }

    /// The guards every mode that changes a target passes: the mass-delete guard, then the
    /// platform's pre-apply checks.
    pub fn guard(&self, planned: Planned, guards: Guards<'_>) -> Result<Cleared, Refusal> {
        if !guards.allow_mass_delete
            && let Err(why) = engine::check_mass_delete(&planned, guards.mass_delete)
        {
            let deletes = planned.changes.changes.iter().filter(|c| c.action == crate::diff::Action::Delete).count();
            return Err(Refusal::MassDelete { deletes, why: planned.rendered.redactor.redact(&why) });
        }
        if !guards.allow_check_failures
            && let Err(why) = engine::check_checks(&planned)
        {
            let why = planned.rendered.redactor.redact(&why);
            let guard = planned.checks.as_ref().map(|c| c.reason()).unwrap_or_default();
            return Err(Refusal::Check { guard, why });
        }
        Ok(Cleared(planned))
    }

    /// Journal the run, apply `plan` (the cleared plan's, or what an interrupted run of the same
    /// commit had left of it, with `start` saying which steps are done), read the platform back
    /// when every step succeeded, and end the run in the journal. Err: the journal could not be
    /// opened, and nothing was sent.
    pub async fn apply(
        &self,
        cleared: &Cleared,
        plan: &Plan,
        start: &Outcome,
        opts: &ApplyOptions,
        observer: &dyn Observer,
    ) -> anyhow::Result<Applied> {
        // A leased session is fenced whatever the caller passed; the run is begun past the fence.
        let mut fenced_opts;
        let opts = match &self.leased {
            Some(l) => {
                fenced_opts = opts.clone();
                fenced_opts.fence = Some(apply::Gate::new(l.fence.clone()));
                &fenced_opts
            }
            None => opts,
        };
        if let Some(gate) = &opts.fence
            && let Err(why) = gate.check()
        {
            let mut outcome = start.clone();
            for o in outcome.steps.iter_mut().filter(|o| o.status != Status::Complete) {
                o.status = Status::Waiting;
                o.message =
                    cleared.rendered.redactor.redact("not started: this process no longer holds the unit's lease");
            }
            return Ok(Applied::Fenced { outcome, why });
        }
        let journal = Journal::begin_in(self.place(), &self.target.key, plan)?;
        let provider = self.target.provider.as_ref();
        let (desired, live) = (&cleared.rendered.desired, &cleared.live);
        let redactor = &cleared.rendered.redactor;
        let started = std::time::Instant::now();
        let outcome = apply::resume(provider, plan, desired, live, opts, &journal, redactor, observer, start).await;
        // The steps' time alone, without the read-back below (what benches/apply_levels reads).
        tracing::info!(
            steps = plan.steps.len(),
            phases = plan.phases.len(),
            apply_ms = started.elapsed().as_secs_f64() * 1e3,
            "applied"
        );
        if let Some(why) = opts.fence.as_ref().and_then(apply::Gate::tripped) {
            let _ = journal.end("fenced");
            return Ok(Applied::Fenced { outcome, why });
        }
        if outcome.steps.iter().any(|s| s.status == Status::Waiting) {
            let interrupted = opts.paused.as_ref().is_some_and(|p| p.load(Ordering::SeqCst));
            let _ = journal.end(if interrupted { "interrupted" } else { "stopped" });
            return Ok(Applied::Stopped(outcome));
        }
        // A step that said done and was not is caught by planning again what was touched.
        let started = std::time::Instant::now();
        let verified = match outcome.converged() {
            true => engine::verify(provider, cleared).await,
            false => Ok(()),
        };
        tracing::info!(verify_ms = started.elapsed().as_secs_f64() * 1e3, "read back");
        let ended = journal.end(if outcome.converged() && verified.is_ok() { "done" } else { "failed" });
        Ok(Applied::Finished { outcome, verified, ended })
    }

    /// Give the lock back to keep it past this session (an interrupted plan holds the target
    /// until it is continued).
    pub fn into_lock(self) -> TargetLock {
        self.lock
    }
}
