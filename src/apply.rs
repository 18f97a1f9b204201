//! Apply: run a plan's steps against the platform.
//!
//! A step starts as soon as every step it depends on is complete (no waiting for the rest of
//! its phase, no fixed sleeps), up to `parallelism` requests at a time. Steps that become ready
//! together start as one wave, journalled with one durable write; those of one batch (the
//! provider's `batch`) go to the provider together and take one place among the `parallelism`.
//! A failed step stops the steps that depend on it, directly or not; independent steps still run
//! to the end. Every step ends in the outcome with its status, so a partial apply says exactly
//! what happened. A plan that would delete something declared is never started (an internal
//! error: diff never makes one).

use crate::diff::ChangeSet;
use crate::http::ApiError;
use crate::journal::Journal;
use crate::model::{
    CheckReport, DesiredResource, DesiredState, LiveResource, LiveState, PlatformPreview, ResourceId, ServiceOp,
    SubStep, Verb,
};
use crate::plan::Plan;
use crate::redact::{Redacted, Redactor};
use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One step to carry out, with everything known about its resource.
pub struct Operation<'a> {
    pub verb: Verb,
    pub id: &'a ResourceId,
    pub desired: Option<&'a DesiredResource>,
    pub live: Option<&'a LiveResource>,
    /// [`ApplyOptions::paused`]: a step that follows a plan of the platform's own passes an
    /// interrupt and a continue on to it.
    pub paused: Option<&'a AtomicBool>,
    /// Where a step that follows a plan of the platform's own reports that plan's steps.
    pub report: Option<Report<'a>>,
}

/// Passes a step's sub-steps ([`SubStep`]) on to the observer as they change, and keeps the
/// last ones for the step's outcome.
#[derive(Clone, Copy)]
pub struct Report<'a> {
    observer: &'a dyn Observer,
    plan: &'a Plan,
    step: usize,
    latest: &'a Mutex<Vec<SubStep>>,
    /// Sub-steps are an API's text: redacted here, where they enter.
    redactor: &'a Redactor,
}

/// Sub-steps kept and told per step at most, and the longest message of one: a service of a
/// thousand pods must not make every event, and the daemon's plan, megabytes long.
pub const MAX_SUBSTEPS: usize = 200;
const MAX_SUBSTEP_MESSAGE: usize = 500;

impl Report<'_> {
    /// The platform's plan as it is now (told on only when something changed); beyond
    /// [`MAX_SUBSTEPS`], the last one kept says how many more there are.
    pub fn substeps(&self, mut now: Vec<SubStep>) {
        if now.len() > MAX_SUBSTEPS {
            let more = now.len() - (MAX_SUBSTEPS - 1);
            now.truncate(MAX_SUBSTEPS - 1);
            now.push(SubStep { step: format!("… and {more} more"), ..SubStep::default() });
        }
        for s in &mut now {
            s.step = self.redactor.redact(&s.step).to_string();
            s.message = self.redactor.redact(&s.message).to_string();
            if s.message.len() > MAX_SUBSTEP_MESSAGE {
                let cut = (0..=MAX_SUBSTEP_MESSAGE).rev().find(|&i| s.message.is_char_boundary(i)).unwrap_or(0);
                s.message.truncate(cut);
                s.message.push('…');
            }
        }
        let mut latest = self.latest.lock().unwrap();
        if *latest != now {
            *latest = now;
            self.observer.step_progress(self.plan, self.step, &latest);
        }
    }
}

/// What observing and applying need of a platform: the live state, and carrying out steps
/// until the platform says they are done. The platform's folder under `src/providers/`
/// implements it.
#[async_trait]
pub trait Drive: Send + Sync {
    /// The kinds whose changes this provider waits for within `Connection::ready_timeout`:
    /// the only keys capstan.yaml's `timeouts` may name for this platform.
    fn timed_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// List the live resources of these kinds (and of whatever they are derived from).
    /// `desired` is what the manifests declare: a provider may keep of a declared resource only
    /// what [`Provider::comparable`] will look at, so ten thousand live objects do not have to
    /// be held whole.
    async fn observe(&self, kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError>;

    /// Observe as [`Drive::observe`] does, but of the kinds the platform can read one
    /// resource at a time read only the resources `only` names (and what comes with them):
    /// the platform's cheapest call when a commit or an apply touched a few resources among
    /// thousands. None when the platform has no cheaper call than listing (the caller then
    /// observes everything). What is known is [`crate::model::Scoped::covers`].
    async fn observe_only(
        &self,
        kinds: &BTreeSet<String>,
        desired: &DesiredState,
        only: &[ResourceId],
    ) -> Result<Option<crate::model::Scoped>, ApiError> {
        let _ = (kinds, desired, only);
        Ok(None)
    }

    /// Carry out one step and wait until the platform reports it done.
    async fn execute(&self, op: Operation<'_>, live_state: &LiveState) -> Result<(), ApiError>;

    /// Steps whose operations share a key here and become ready together may be carried out in
    /// one request, through [`Provider::execute_batch`] (a Marathon group document's apps).
    fn batch(&self, op: &Operation<'_>, desired: &DesiredState) -> Option<String> {
        let _ = (op, desired);
        None
    }

    /// Carry out the steps of one batch and wait until they are done: one result per step, in
    /// order. By default each on its own, all at once.
    async fn execute_batch(&self, ops: Vec<Operation<'_>>, live_state: &LiveState) -> Vec<Result<(), ApiError>> {
        futures::future::join_all(ops.into_iter().map(|op| self.execute(op, live_state))).await
    }

    /// The platform's checks of these changes before they are applied (declared expectations
    /// it can answer now and as the plan would leave things); None when nothing is declared or
    /// changed that they concern. Reads only.
    async fn checks(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<CheckReport> {
        let _ = (changes, desired, live);
        None
    }

    /// An operation on a service the platform runs with an API of its own: what to show
    /// (JSON), after following any plan it starts to its end, each read of that plan given to
    /// `progress`. By default, there are no such services.
    async fn service(
        &self,
        service: &str,
        op: &ServiceOp,
        progress: &(dyn Fn(Vec<SubStep>) + Send + Sync),
    ) -> Result<serde_json::Value, ApiError> {
        let _ = (service, op, progress);
        Err(ApiError::plain("this platform runs no services with an API of their own (capstan service)"))
    }

    /// The platform's own preview of these changes, for platforms that have one. Reads only;
    /// must be deterministic for the same inputs (it is part of the plan).
    async fn preview(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<PlatformPreview> {
        let _ = (changes, desired, live);
        None
    }
}

/// A step's status, with the names of seed 000's plan API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Pending,
    InProgress,
    Complete,
    Error,
    /// Not started because the plan was interrupted.
    Waiting,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    pub status: Status,
    /// Why it failed or waits: through the redactor where it entered (an API's answer).
    pub message: Redacted,
    /// The platform's own plan steps this step followed, as last seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub substeps: Vec<SubStep>,
    #[serde(skip)]
    pub duration: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub steps: Vec<StepOutcome>,
}

impl StepOutcome {
    pub fn pending() -> Self {
        StepOutcome {
            status: Status::Pending,
            message: Redacted::default(),
            substeps: Vec::new(),
            duration: Duration::ZERO,
        }
    }
}

impl Outcome {
    pub fn converged(&self) -> bool {
        self.steps.iter().all(|s| s.status == Status::Complete)
    }

    pub fn count(&self, status: Status) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

/// Told about every step as it starts and ends (progress display, events, journal).
pub trait Observer: Send + Sync {
    fn step_started(&self, _plan: &Plan, _step: usize) {}
    fn step_finished(&self, _plan: &Plan, _step: usize, _outcome: &StepOutcome) {}
    /// A running step's sub-steps changed.
    fn step_progress(&self, _plan: &Plan, _step: usize, _substeps: &[SubStep]) {}
}

pub struct NoObserver;
impl Observer for NoObserver {}

/// How many requests run at once unless told otherwise: more than the widest level of the
/// plans capstan is measured on (a Marathon group document's apps go as one request; ten
/// to twenty-five apps of a group declared one by one each take one), so a level does not
/// wait in waves behind itself, and few enough not to swamp a platform's API.
pub const DEFAULT_PARALLELISM: usize = 32;

/// What must hold for this process to go on sending a unit's steps: consulted before each wave
/// of steps is sent (and before a run is journalled). A daemon sharing its store checks in the
/// database that it still holds the unit's lease with its generation and a margin
/// (`daemon::fleet`); Err says why not.
pub trait Fence: Send + Sync {
    fn check(&self) -> Result<(), String>;

    /// The cheap check consulted before every send of a mutating request inside a step (each
    /// retry too: `http::Hold`), so no resend outlives the lease. Must not block; by default
    /// the full check.
    fn held(&self) -> Result<(), String> {
        self.check()
    }
}

/// A [`Fence`] as one apply consults it: remembers why it stopped the apply, if it did.
#[derive(Clone)]
pub struct Gate {
    fence: Arc<dyn Fence>,
    tripped: Arc<Mutex<Option<String>>>,
}

impl Gate {
    pub fn new(fence: Arc<dyn Fence>) -> Self {
        Gate { fence, tripped: Arc::default() }
    }

    /// The fence's answer; a refusal is remembered.
    pub fn check(&self) -> Result<(), String> {
        let r = self.fence.check();
        if let Err(why) = &r {
            self.tripped.lock().unwrap().get_or_insert_with(|| why.clone());
        }
        r
    }

    /// The fence's cheap answer before a mutating request is sent (`Fence::held`); a refusal
    /// is remembered, and stops the apply as a refused check does.
    pub fn held(&self) -> Result<(), String> {
        let r = self.fence.held();
        if let Err(why) = &r {
            self.tripped.lock().unwrap().get_or_insert_with(|| why.clone());
        }
        r
    }

    /// The hold every mutating request of a step is sent past (`http::under`).
    pub fn hold(&self) -> crate::http::Hold {
        let gate = self.clone();
        Arc::new(move || gate.held())
    }

    /// Why the fence stopped the apply, if it did.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().unwrap().clone()
    }
}

#[derive(Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
    /// Set to stop starting new steps; running ones finish.
    pub interrupt: Arc<AtomicBool>,
    /// Set while a person has interrupted the plan, cleared by their continue (`interrupt` is
    /// set by a shutdown too, which must not reach the platform).
    pub paused: Option<Arc<AtomicBool>>,
    /// Consulted before every wave of steps is sent; once it refuses, nothing further is sent
    /// and the steps not started are `Waiting`. `converge::Session::apply` sets it from the
    /// session's lease, whatever the caller passed: a leased session cannot apply unfenced.
    pub fence: Option<Gate>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: DEFAULT_PARALLELISM,
            interrupt: Arc::new(AtomicBool::new(false)),
            paused: None,
            fence: None,
        }
    }
}

/// Every step pending: a plan not yet started.
pub fn not_started(plan: &Plan) -> Outcome {
    Outcome { steps: vec![StepOutcome::pending(); plan.steps.len()] }
}

/// Carry on with a plan: steps complete in `previous` are not run again, every other step runs
/// once its dependencies are complete. The journal is not optional: each step's intent is on
/// disk before it is sent, and its outcome after (callers get one from
/// [`crate::converge::Session::apply`]).
#[allow(clippy::too_many_arguments)]
pub async fn resume(
    provider: &dyn Drive,
    plan: &Plan,
    desired: &DesiredState,
    live: &LiveState,
    opts: &ApplyOptions,
    journal: &Journal,
    redactor: &Redactor,
    observer: &dyn Observer,
    previous: &Outcome,
) -> Outcome {
    let n = plan.steps.len();
    if let Err(why) = check_deletions(plan, desired, live) {
        tracing::error!("internal error, nothing applied: {why}");
        let refused = StepOutcome {
            status: Status::Error,
            message: redactor.redact(&format!("not started: internal error: {why}")),
            substeps: Vec::new(),
            duration: Duration::ZERO,
        };
        return Outcome { steps: vec![refused; n] };
    }
    let dependents = plan.dependents();
    let latest: Vec<Mutex<Vec<SubStep>>> = (0..n).map(|_| Mutex::default()).collect();
    let op = |i: usize| {
        let step = &plan.steps[i];
        Operation {
            verb: step.verb,
            id: &step.resource,
            desired: desired.resources.get(&step.resource),
            live: live.get(&step.resource),
            paused: opts.paused.as_deref(),
            report: Some(Report { observer, plan, step: i, latest: &latest[i], redactor }),
        }
    };
    let batch: Vec<Option<String>> = (0..n).map(|i| provider.batch(&op(i), desired)).collect();
    let mut outcomes: Vec<StepOutcome> = previous
        .steps
        .iter()
        .map(|o| match o.status {
            Status::Complete => o.clone(),
            _ => StepOutcome::pending(),
        })
        .collect();
    let mut waiting_on: Vec<usize> =
        plan.steps.iter().map(|s| s.deps.iter().filter(|&&d| outcomes[d].status != Status::Complete).count()).collect();
    // Ready steps in plan order, so runs are reproducible.
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| waiting_on[i] == 0 && outcomes[i].status == Status::Pending).collect();
    let mut running = FuturesUnordered::new();
    let parallelism = opts.parallelism.max(1);

    // Outcomes not yet in the journal: written with the next wave's intents, or at the end.
    let mut unjournalled: Vec<(usize, bool, Redacted)> = Vec::new();
    // Set once the fence refused: nothing further is sent.
    let mut fenced = false;
    loop {
        // Each unit is one request: a step, or the ready steps of one batch.
        let mut units: Vec<Vec<usize>> = Vec::new();
        while running.len() + units.len() < parallelism && !opts.interrupt.load(Ordering::SeqCst) && !fenced {
            let Some(i) = ready.pop_front() else { break };
            let mut unit = vec![i];
            if let Some(key) = &batch[i] {
                ready.retain(|&j| {
                    let mate = batch[j].as_ref() == Some(key);
                    if mate {
                        unit.push(j);
                    }
                    !mate
                });
            }
            units.push(unit);
        }
        let mut wave: Vec<usize> = units.iter().flatten().copied().collect();
        // Nothing is sent past the fence: the wave's steps stay not started.
        if !wave.is_empty()
            && let Some(gate) = &opts.fence
            && let Err(why) = gate.check()
        {
            tracing::warn!("not sending {} step(s), nor any after them: {why}", wave.len());
            fenced = true;
            wave.clear();
            units.clear();
        }
        // Nothing is sent that the journal does not know about first.
        if !wave.is_empty() {
            let intents: Vec<(usize, &str, &str)> =
                wave.iter().map(|&i| (i, plan.steps[i].id.as_str(), plan.steps[i].name.as_str())).collect();
            match journal.record(&unjournalled, &intents) {
                Ok(()) => unjournalled.clear(),
                Err(e) => {
                    for i in std::mem::take(&mut wave) {
                        outcomes[i].status = Status::Error;
                        outcomes[i].message = redactor.redact(&format!("not started: cannot write the journal: {e:#}"));
                        block_dependents(plan, &dependents, i, &mut outcomes, redactor);
                        observer.step_finished(plan, i, &outcomes[i]);
                    }
                    units.clear();
                }
            }
        }
        for unit in units {
            for &i in &unit {
                outcomes[i].status = Status::InProgress;
                observer.step_started(plan, i);
            }
            let ops: Vec<Operation> = unit.iter().map(|&i| op(i)).collect();
            // Every mutating request the step sends, each retry too, is sent past the fence.
            let hold = opts.fence.as_ref().map(Gate::hold);
            running.push(crate::http::under(hold, async move {
                let started = Instant::now();
                let results = if ops.len() == 1 {
                    let one = ops.into_iter().next().map(|o| provider.execute(o, live));
                    match one {
                        Some(f) => vec![f.await],
                        None => Vec::new(),
                    }
                } else {
                    provider.execute_batch(ops, live).await
                };
                let took = started.elapsed();
                unit.into_iter().zip(results).map(move |(i, r)| (i, r, took)).collect::<Vec<_>>()
            }));
        }
        let Some(first) = running.next().await else {
            break;
        };
        // Every step that has ended by now, so the next wave is as wide as it can be.
        let mut ended = first;
        while let Some(Some(more)) = running.next().now_or_never() {
            ended.extend(more);
        }
        for (i, result, duration) in ended {
            outcomes[i].duration = duration;
            outcomes[i].substeps = std::mem::take(&mut *latest[i].lock().unwrap());
            match result {
                Ok(()) => {
                    outcomes[i].status = Status::Complete;
                    for &j in &dependents[i] {
                        waiting_on[j] -= 1;
                        if waiting_on[j] == 0 && outcomes[j].status == Status::Pending {
                            ready.push_back(j);
                        }
                    }
                }
                Err(e) => {
                    outcomes[i].status = Status::Error;
                    // What the API answered enters capstan here: masked once, for every later use.
                    outcomes[i].message = redactor.redact(&e.to_string());
                    block_dependents(plan, &dependents, i, &mut outcomes, redactor);
                }
            }
            unjournalled.push((i, outcomes[i].status == Status::Complete, outcomes[i].message.clone()));
            observer.step_finished(plan, i, &outcomes[i]);
        }
        // A step's request the fence refused stops the apply as a refused wave does.
        if opts.fence.as_ref().is_some_and(|g| g.tripped().is_some()) {
            fenced = true;
        }
    }
    if !unjournalled.is_empty()
        && let Err(e) = journal.record(&unjournalled, &[])
    {
        tracing::warn!("cannot write the last outcomes to the journal: {e:#}");
    }
    if fenced || opts.interrupt.load(Ordering::SeqCst) {
        let why = if fenced {
            "not started: this process no longer holds the unit's lease"
        } else {
            "not started: the plan was interrupted"
        };
        for o in outcomes.iter_mut().filter(|o| o.status == Status::Pending && o.message.is_empty()) {
            o.status = Status::Waiting;
            o.message = redactor.redact(why);
        }
    }
    Outcome { steps: outcomes }
}

/// Err when a plan deletes something declared or marked to be kept (other than to create it
/// again: a replace), or something a deletion removes with it is. Diff never makes such a plan;
/// an executor that met one would lose what the manifests or a person say, so it refuses the
/// whole plan.
pub fn check_deletions(plan: &Plan, desired: &DesiredState, live: &LiveState) -> Result<(), String> {
    let recreated: std::collections::HashSet<&crate::model::ResourceId> =
        plan.steps.iter().filter(|s| s.verb == Verb::Create).map(|s| &s.resource).collect();
    for s in plan.steps.iter().filter(|s| s.verb == Verb::Delete) {
        if recreated.contains(&s.resource) {
            continue;
        }
        let kept = |r: &crate::model::ResourceId| live.get(r).is_some_and(|l| l.keep.is_some());
        if desired.resources.contains_key(&s.resource) || kept(&s.resource) {
            return Err(format!("the plan deletes {}, which is declared or marked to be kept", s.resource));
        }
        let removed = live.get(&s.resource).into_iter().flat_map(|l| &l.removes);
        if let Some(r) = removed.into_iter().find(|r| desired.resources.contains_key(*r) || kept(r)) {
            return Err(format!(
                "the plan deletes {}, and with it {r}, which is declared or marked to be kept",
                s.resource
            ));
        }
    }
    Ok(())
}

/// Mark every step that depends on a failed one, transitively, as not to be started.
fn block_dependents(
    plan: &Plan,
    dependents: &[Vec<usize>],
    failed: usize,
    outcomes: &mut [StepOutcome],
    redactor: &Redactor,
) {
    let mut stack = dependents[failed].clone();
    while let Some(j) = stack.pop() {
        if outcomes[j].status == Status::Pending && outcomes[j].message.is_empty() {
            outcomes[j].message = redactor.redact(&format!("not started: {} failed", plan.steps[failed].name));
            stack.extend(dependents[j].iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::diagnostic::Location;
    use crate::model::{DesiredResource, LiveResource, ResourceId};
    use crate::plan::Step;

    fn step(verb: Verb, id: &ResourceId) -> Step {
        Step {
            id: String::new(),
            name: format!("{verb:?} {id}"),
            verb,
            resource: id.clone(),
            deps: Vec::new(),
            phase: 0,
        }
    }

    fn declared(id: &ResourceId) -> DesiredResource {
        DesiredResource {
            id: id.clone(),
            spec: serde_json::Value::Null,
            origin: Location::new("m.json", 1, 1),
            references: Vec::new(),
            exclusive: None,
        }
    }

    fn live(id: &ResourceId, removes: Vec<ResourceId>) -> LiveResource {
        LiveResource {
            id: id.clone(),
            spec: serde_json::Value::Null,
            owned: true,
            owner: None,
            parent: None,
            depends_on: Vec::new(),
            exclusive: None,
            removes,
            keep: None,
        }
    }

    /// The executor never starts a plan that deletes something declared, directly or as part
    /// of what a deletion removes, and sends nothing of it; a replace (delete, then create) is
    /// not such a deletion.
    #[tokio::test]
    async fn a_plan_that_deletes_something_declared_is_an_internal_error_and_nothing_runs() {
        let group = ResourceId::new("group", "/bench");
        let app = ResourceId::new("app", "/bench/g00/a0");
        let other = ResourceId::new("app", "/other");
        let mut desired = DesiredState::default();
        desired.resources.insert(app.clone(), declared(&app));
        let mut state = LiveState::default();
        state.insert(live(&group, vec![app.clone()]));
        state.insert(live(&app, Vec::new()));
        state.insert(live(&other, Vec::new()));
        // An offline provider (any platform's): any step it were asked to run would fail.
        let provider = crate::providers::provider_for(crate::providers::default_platform(), None, "me").unwrap();
        let opts = ApplyOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::begin(dir.path(), &crate::lock::TargetKey::named("test"), &Plan::default()).unwrap();
        for doomed in [&group, &app] {
            let plan = Plan { steps: vec![step(Verb::Delete, &other), step(Verb::Delete, doomed)], phases: Vec::new() };
            let err = check_deletions(&plan, &desired, &state).unwrap_err();
            assert!(err.contains("/bench/g00/a0"), "{err}");
            let start = not_started(&plan);
            let redactor = Redactor::default();
            let outcome =
                resume(provider.as_ref(), &plan, &desired, &state, &opts, &journal, &redactor, &NoObserver, &start)
                    .await;
            for s in &outcome.steps {
                assert_eq!(s.status, Status::Error);
                assert!(s.message.starts_with("not started: internal error"), "{}", s.message);
            }
        }
        let replace = Plan { steps: vec![step(Verb::Delete, &app), step(Verb::Create, &app)], phases: Vec::new() };
        assert_eq!(check_deletions(&replace, &desired, &state), Ok(()));
        let prune = Plan { steps: vec![step(Verb::Delete, &other)], phases: Vec::new() };
        assert_eq!(check_deletions(&prune, &desired, &state), Ok(()));
        let mut marked = live(&other, Vec::new());
        marked.keep = Some("label capstan-prune: \"false\"".into());
        state.insert(marked);
        assert!(check_deletions(&prune, &desired, &state).unwrap_err().contains("/other"));
    }

    /// Once the fence refuses, nothing further is sent: the steps not started wait, with why,
    /// and the journal holds no intent for them (any step sent to this offline provider would
    /// have failed instead).
    #[tokio::test]
    async fn a_fence_that_refuses_stops_the_apply_before_anything_is_sent() {
        struct Lost(std::sync::atomic::AtomicUsize);
        impl Fence for Lost {
            fn check(&self) -> Result<(), String> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Err("the lease is lost".into())
            }
        }
        let provider = crate::providers::provider_for(crate::providers::default_platform(), None, "me").unwrap();
        let (a, b) = (ResourceId::new("app", "/a"), ResourceId::new("app", "/b"));
        let mut second = step(Verb::Create, &b);
        second.deps = vec![0];
        let plan = Plan { steps: vec![step(Verb::Create, &a), second], phases: Vec::new() };
        let fence = Arc::new(Lost(Default::default()));
        let gate = Gate::new(fence.clone());
        let opts = ApplyOptions { fence: Some(gate.clone()), ..ApplyOptions::default() };
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::begin(dir.path(), &crate::lock::TargetKey::named("test"), &plan).unwrap();
        let (desired, live, redactor) = (DesiredState::default(), LiveState::default(), Redactor::default());
        let outcome = resume(
            provider.as_ref(),
            &plan,
            &desired,
            &live,
            &opts,
            &journal,
            &redactor,
            &NoObserver,
            &not_started(&plan),
        )
        .await;
        for s in &outcome.steps {
            assert_eq!(s.status, Status::Waiting, "{}", s.message);
            assert!(s.message.contains("lease"), "{}", s.message);
        }
        assert_eq!(journal.step_state(0), None, "no intent journalled: nothing was to be sent");
        assert_eq!(fence.0.load(Ordering::SeqCst), 1, "consulted before the first wave, then nothing more was tried");
        assert_eq!(gate.tripped().as_deref(), Some("the lease is lost"));
    }

    /// The hold a step's requests are sent past asks the fence's cheap check (not the full
    /// one), and a refusal there trips the gate: the apply then ends fenced, as after a
    /// refused wave.
    #[test]
    fn a_refused_hold_trips_the_gate() {
        struct Lapsed(std::sync::atomic::AtomicUsize);
        impl Fence for Lapsed {
            fn check(&self) -> Result<(), String> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            fn held(&self) -> Result<(), String> {
                Err("the lease's deadline has passed".into())
            }
        }
        let fence = Arc::new(Lapsed(Default::default()));
        let gate = Gate::new(fence.clone());
        assert_eq!(gate.check(), Ok(()));
        assert_eq!(gate.tripped(), None);
        let hold = gate.hold();
        assert_eq!(hold().unwrap_err(), "the lease's deadline has passed");
        assert_eq!(gate.tripped().as_deref(), Some("the lease's deadline has passed"));
        assert_eq!(fence.0.load(Ordering::SeqCst), 1, "the hold made no full check");
    }

    #[test]
    fn sub_steps_are_told_only_when_they_change_and_kept_within_bounds() {
        struct Told(Mutex<Vec<Vec<SubStep>>>);
        impl Observer for Told {
            fn step_progress(&self, _plan: &Plan, _step: usize, substeps: &[SubStep]) {
                self.0.lock().unwrap().push(substeps.to_vec());
            }
        }
        let told = Told(Mutex::default());
        let (plan, latest, redactor) = (Plan::default(), Mutex::default(), Redactor::default());
        let report = Report { observer: &told, plan: &plan, step: 0, latest: &latest, redactor: &redactor };
        let sub = |i: usize, status: &str| SubStep {
            phase: "node".into(),
            step: format!("node-{i}"),
            status: status.into(),
            message: "é".repeat(400),
        };
        report.substeps(vec![sub(0, "PENDING")]);
        report.substeps(vec![sub(0, "PENDING")]);
        report.substeps(vec![sub(0, "COMPLETE")]);
        assert_eq!(told.0.lock().unwrap().len(), 2, "told twice: once per change");
        report.substeps((0..5000).map(|i| sub(i, "PENDING")).collect());
        let last = told.0.lock().unwrap().last().unwrap().clone();
        assert_eq!(last.len(), MAX_SUBSTEPS);
        assert_eq!(last[MAX_SUBSTEPS - 1].step, format!("… and {} more", 5000 - (MAX_SUBSTEPS - 1)));
        assert!(last[0].message.len() <= MAX_SUBSTEP_MESSAGE + '…'.len_utf8(), "{}", last[0].message.len());
        assert_eq!(*latest.lock().unwrap(), last, "the last ones are kept for the outcome");
    }
}
