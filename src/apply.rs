//! Apply: run a plan's steps against the platform.
//!
//! A step starts as soon as every step it depends on is complete (no waiting for the rest of
//! its phase, no fixed sleeps), up to `parallelism` steps at a time. Steps that become ready
//! together start as one wave, journalled with one durable write. A failed step stops the
//! steps that depend on it, directly or not; independent steps still run to the end. Every step
//! ends in the outcome with its status, so a partial apply says exactly what happened.

use crate::journal::Journal;
use crate::model::{DesiredState, LiveState};
use crate::plan::Plan;
use crate::providers::{Operation, Provider};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A step's status, with the names of seed 000's plan API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    pub message: String,
    #[serde(skip)]
    pub duration: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub steps: Vec<StepOutcome>,
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
}

pub struct NoObserver;
impl Observer for NoObserver {}

#[derive(Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
    /// Set to stop starting new steps; running ones finish.
    pub interrupt: Arc<AtomicBool>,
    /// Where each step's intent is written before it is sent, and its outcome after.
    pub journal: Option<Arc<Journal>>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { parallelism: 8, interrupt: Arc::new(AtomicBool::new(false)), journal: None }
    }
}

pub async fn apply(
    provider: &dyn Provider,
    plan: &Plan,
    desired: &DesiredState,
    live: &LiveState,
    opts: &ApplyOptions,
    observer: &dyn Observer,
) -> Outcome {
    let pending = StepOutcome { status: Status::Pending, message: String::new(), duration: Duration::ZERO };
    resume(provider, plan, desired, live, opts, observer, &Outcome { steps: vec![pending; plan.steps.len()] }).await
}

/// Carry on with a plan: steps complete in `previous` are not run again, every other step runs
/// once its dependencies are complete.
pub async fn resume(
    provider: &dyn Provider,
    plan: &Plan,
    desired: &DesiredState,
    live: &LiveState,
    opts: &ApplyOptions,
    observer: &dyn Observer,
    previous: &Outcome,
) -> Outcome {
    let n = plan.steps.len();
    let dependents = plan.dependents();
    let mut outcomes: Vec<StepOutcome> = previous
        .steps
        .iter()
        .map(|o| match o.status {
            Status::Complete => o.clone(),
            _ => StepOutcome { status: Status::Pending, message: String::new(), duration: Duration::ZERO },
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
    let mut unjournalled: Vec<(usize, bool, String)> = Vec::new();
    loop {
        let mut wave = Vec::new();
        while running.len() + wave.len() < parallelism && !opts.interrupt.load(Ordering::SeqCst) {
            let Some(i) = ready.pop_front() else { break };
            wave.push(i);
        }
        // Nothing is sent that the journal does not know about first.
        if let Some(j) = &opts.journal
            && !wave.is_empty()
        {
            let intents: Vec<(usize, &str, &str)> =
                wave.iter().map(|&i| (i, plan.steps[i].id.as_str(), plan.steps[i].name.as_str())).collect();
            match j.record(&unjournalled, &intents) {
                Ok(()) => unjournalled.clear(),
                Err(e) => {
                    for i in std::mem::take(&mut wave) {
                        outcomes[i].status = Status::Error;
                        outcomes[i].message = format!("not started: cannot write the journal: {e:#}");
                        block_dependents(plan, &dependents, i, &mut outcomes);
                        observer.step_finished(plan, i, &outcomes[i]);
                    }
                }
            }
        }
        for i in wave {
            let step = &plan.steps[i];
            outcomes[i].status = Status::InProgress;
            observer.step_started(plan, i);
            let op = Operation {
                verb: step.verb,
                id: &step.resource,
                desired: desired.resources.get(&step.resource),
                live: live.get(&step.resource),
            };
            running.push(async move {
                let started = Instant::now();
                let result = provider.execute(op, live).await;
                (i, result, started.elapsed())
            });
        }
        let Some(first) = running.next().await else {
            break;
        };
        // Every step that has ended by now, so the next wave is as wide as it can be.
        let mut ended = vec![first];
        while let Some(Some(more)) = running.next().now_or_never() {
            ended.push(more);
        }
        for (i, result, duration) in ended {
            outcomes[i].duration = duration;
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
                    outcomes[i].message = e.to_string();
                    block_dependents(plan, &dependents, i, &mut outcomes);
                }
            }
            if opts.journal.is_some() {
                unjournalled.push((i, outcomes[i].status == Status::Complete, outcomes[i].message.clone()));
            }
            observer.step_finished(plan, i, &outcomes[i]);
        }
    }
    if let Some(j) = &opts.journal
        && !unjournalled.is_empty()
        && let Err(e) = j.record(&unjournalled, &[])
    {
        tracing::warn!("cannot write the last outcomes to the journal: {e:#}");
    }
    if opts.interrupt.load(Ordering::SeqCst) {
        for o in outcomes.iter_mut().filter(|o| o.status == Status::Pending && o.message.is_empty()) {
            o.status = Status::Waiting;
            o.message = "not started: the plan was interrupted".into();
        }
    }
    Outcome { steps: outcomes }
}

/// Mark every step that depends on a failed one, transitively, as not to be started.
fn block_dependents(plan: &Plan, dependents: &[Vec<usize>], failed: usize, outcomes: &mut [StepOutcome]) {
    let mut stack = dependents[failed].clone();
    while let Some(j) = stack.pop() {
        if outcomes[j].status == Status::Pending && outcomes[j].message.is_empty() {
            outcomes[j].message = format!("not started: {} failed", plan.steps[failed].name);
            stack.extend(dependents[j].iter().copied());
        }
    }
}
