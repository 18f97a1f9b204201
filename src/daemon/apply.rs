//! Applying a cleared plan and recording what became of it: the history, the current plan's
//! live statuses, events and metrics; refusals, invalid commits and a locked target too.

use super::*;

impl Unit {
    /// The target is locked by someone else: say so once per holder, and let `run` retry.
    pub(super) fn locked(&self, sha: &str, message: String) -> Reconciled {
        let first = {
            let mut st = self.status.lock().unwrap();
            let first = st.locked_by.as_deref() != Some(message.as_str());
            st.locked_by = Some(message.clone());
            first
        };
        tracing::debug!("cannot apply {}: {message}", short(sha));
        if first {
            self.events.publish(Event::TargetLocked { sha: sha.to_string(), message });
        }
        Reconciled::TargetLocked
    }

    /// A plan that is not to be applied: nothing is changed; the commit is recorded as refused
    /// (when `record`), and the world is told why.
    pub(super) fn refuse(&self, sha: &str, reason: Reason, deletes: usize, why: Redacted, record: bool) -> Reconciled {
        self.refuse_as(sha, reason, "mass_delete", deletes, why, record)
    }

    /// Refuse a commit for a guard's reason (`mass_delete`, a failed check's kind).
    pub(super) fn refuse_as(
        &self,
        sha: &str,
        reason: Reason,
        guard: &str,
        deletes: usize,
        why: Redacted,
        record: bool,
    ) -> Reconciled {
        if record {
            let detail = json!({ "errors": [{ "reason": guard, "message": why }] });
            self.stored(self.store.record(sha, reason.trigger(), "refused", (0, 0), &detail));
        }
        tracing::warn!("not applying {}: {why}", short(sha));
        self.events.publish(Event::PlanRefused { sha: sha.to_string(), reason: guard.into(), deletes, message: why });
        Reconciled::Refused
    }

    /// Record a commit that cannot be applied, and tell the world why.
    pub(super) fn invalid(&self, sha: &str, reason: Reason, errors: Vec<Value>) -> Reconciled {
        self.stored(self.store.record(sha, reason.trigger(), "invalid", (0, 0), &json!({ "errors": errors })));
        self.events.publish(Event::RenderFailed { sha: sha.to_string(), errors });
        Reconciled::Invalid
    }

    pub(super) async fn apply(&self, sha: &str, reason: Reason, planned: Cleared, session: Session<'_>) -> Reconciled {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Reconciled::Stopped;
        }
        let Planned { rendered, changes, plan: fresh, .. } = &*planned;
        let pending = StepOutcome::pending();
        // After `continue` the plan was made again against the newest commit. When it is what
        // was left of the interrupted one (same commit, same steps), that one carries on, so its
        // completed steps stay shown; otherwise the new plan replaces it, and the events say so.
        let (plan, start, total) = {
            // Held until the new plan is in place: a reader never finds no plan in between.
            let mut current = self.current.lock().unwrap();
            let previous = current.take();
            let (plan, start) = match previous {
                Some(prev) if reason == Reason::Continue && prev.sha == sha && same_rest(&prev, fresh) => {
                    let steps = prev
                        .outcome
                        .steps
                        .iter()
                        .map(|o| if o.status == Status::Complete { o.clone() } else { pending.clone() })
                        .collect();
                    (prev.plan, Outcome { steps })
                }
                prev => {
                    if reason == Reason::Continue
                        && let Some(p) = &prev
                    {
                        self.events.publish(Event::PlanReplanned {
                            sha: sha.to_string(),
                            from: p.sha.clone(),
                            steps: fresh.steps.len(),
                        });
                    }
                    let n = fresh.steps.len();
                    (fresh.clone(), Outcome { steps: vec![pending.clone(); n] })
                }
            };
            if reason == Reason::Continue {
                self.events.publish(Event::PlanContinued { sha: sha.to_string() });
            }
            let total = plan.steps.len();
            *current = Some(CurrentPlan {
                sha: sha.to_string(),
                plan: plan.clone(),
                redactor: rendered.redactor.clone(),
                outcome: start.clone(),
            });
            (plan, start, total)
        };
        if start.converged() {
            return self.converged(sha, reason, &start);
        }
        let trigger = reason.trigger();
        self.stored(self.store.record(sha, trigger, "applying", (start.count(Status::Complete), total), &Value::Null));
        self.set_phase(Phase::Applying);
        self.share_shown();
        self.events.publish(Event::PlanStarted {
            sha: sha.to_string(),
            reason: serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            steps: plan.steps.len(),
            summary: crate::view::summary_line(changes),
        });
        let observer = Steps { daemon: self, sha, started: AtomicBool::new(false) };
        let opts = ApplyOptions {
            parallelism: self.opts.parallelism,
            interrupt: self.interrupt.clone(),
            paused: Some(self.interrupted.clone()),
            fence: None,
        };
        let (outcome, verified) = match session.apply(&planned, &plan, &start, &opts, &observer).await {
            Ok(Applied::Finished { outcome, verified, .. }) => (outcome, verified),
            Ok(Applied::Fenced { outcome, why }) => return self.lease_lost(sha, trigger, &outcome, why),
            Ok(Applied::Stopped(outcome)) => {
                let applied = (outcome.count(Status::Complete), total);
                self.record_outcome(sha, &outcome);
                if self.shutting_down.load(Ordering::SeqCst) && !self.is_interrupted() {
                    // Stopped part way by a shutdown: the rest is for the next start.
                    self.stored(self.store.record(sha, trigger, "stopped", applied, &Value::Null));
                    return Reconciled::Stopped;
                }
                // Interrupted: the rest waits for `continue`, which plans again first (and may
                // already have come: then it is queued). The lock is kept meanwhile, so no apply
                // changes the target under the plan.
                self.stored(self.store.record(sha, trigger, "interrupted", applied, &Value::Null));
                *self.paused.lock().unwrap() = Some((sha.to_string(), session.into_lock()));
                self.events.publish(Event::PlanInterrupted { sha: sha.to_string() });
                self.set_phase(Phase::Interrupted);
                return Reconciled::Interrupted;
            }
            Err(e) => {
                tracing::error!("cannot open the journal: {e:#}");
                return Reconciled::JournalFailed;
            }
        };
        let applied = (outcome.count(Status::Complete), total);
        self.record_outcome(sha, &outcome);
        if let Err(why) = verified {
            let message = rendered.redactor.redact(&why);
            tracing::warn!("{} did not converge: {message}", short(sha));
            let errors = json!({ "errors": [{ "step": "verify", "message": message }] });
            self.stored(self.store.record(sha, trigger, "failed", applied, &errors));
            self.events.publish(Event::ApplyFailed {
                sha: sha.to_string(),
                failed: 0,
                not_started: 0,
                message: Some(message),
            });
            Reconciled::ApplyFailed
        } else if outcome.converged() {
            self.converged(sha, reason, &outcome)
        } else {
            let failed = outcome.count(Status::Error);
            let errors: Vec<Value> = outcome
                .steps
                .iter()
                .zip(&plan.steps)
                .filter(|(o, _)| o.status == Status::Error)
                .map(|(o, s)| json!({ "step": s.name, "message": rendered.redactor.text(&o.message) }))
                .collect();
            self.stored(self.store.record(sha, trigger, "failed", applied, &json!({ "errors": errors })));
            self.events.publish(Event::ApplyFailed {
                sha: sha.to_string(),
                failed,
                not_started: outcome.steps.len() - failed - outcome.count(Status::Complete),
                message: None,
            });
            Reconciled::ApplyFailed
        }
    }

    pub(super) fn record_outcome(&self, sha: &str, outcome: &Outcome) {
        let json = self.current.lock().unwrap().as_mut().map(|c| {
            c.outcome = outcome.clone();
            c.json()
        });
        if let Some(j) = json {
            self.stored(self.store.set_outcome(sha, &j));
            self.share_plan(sha);
        }
    }

    pub(super) fn converged(&self, sha: &str, reason: Reason, outcome: &Outcome) -> Reconciled {
        self.record_outcome(sha, outcome);
        let steps = (outcome.count(Status::Complete), outcome.steps.len());
        self.stored(self.store.record(sha, reason.trigger(), "applied", steps, &Value::Null));
        self.stored(self.store.set_value("last_applied", sha));
        self.stored(self.store.set_value("live", sha));
        self.metrics.applied_in(self.label.as_deref(), store::now() as f64);
        self.metrics.drifted_in(self.label.as_deref(), 0);
        {
            let mut st = self.status.lock().unwrap();
            st.last_applied = Some(sha.to_string());
            st.drifted.clear();
        }
        // Older commits that never got applied will not be.
        self.stored(self.store.supersede_pending(sha, sha));
        self.events.publish(Event::Converged { sha: sha.to_string() });
        tracing::info!("converged to {}", short(sha));
        Reconciled::Converged
    }
}

/// Publishes every step's start and end, and keeps the current plan's statuses live.
struct Steps<'a> {
    daemon: &'a Unit,
    sha: &'a str,
    /// Whether a step has started: from then on the platform is this commit's (`live`).
    started: AtomicBool,
}

impl Observer for Steps<'_> {
    fn step_started(&self, plan: &Plan, step: usize) {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.daemon.stored(self.daemon.store.set_value("live", self.sha));
        }
        if let Some(c) = self.daemon.current.lock().unwrap().as_mut() {
            c.outcome.steps[step].status = Status::InProgress;
        }
        let s = &plan.steps[step];
        self.daemon.events.publish(Event::StepStarted {
            sha: self.sha.into(),
            step: s.id.clone(),
            name: s.name.clone(),
        });
    }

    fn step_progress(&self, plan: &Plan, step: usize, substeps: &[crate::model::SubStep]) {
        // Redacted where they entered (`apply::Report`).
        let substeps = substeps.to_vec();
        if let Some(c) = self.daemon.current.lock().unwrap().as_mut() {
            c.outcome.steps[step].substeps = substeps.clone();
        }
        let s = &plan.steps[step];
        let (sha, step, name) = (self.sha.to_string(), s.id.clone(), s.name.clone());
        self.daemon.events.publish(Event::StepProgress { sha, step, name, substeps });
    }

    fn step_finished(&self, plan: &Plan, step: usize, outcome: &StepOutcome) {
        if let Some(c) = self.daemon.current.lock().unwrap().as_mut() {
            c.outcome.steps[step] = outcome.clone();
        }
        let s = &plan.steps[step];
        let (sha, id, name) = (self.sha.to_string(), s.id.clone(), s.name.clone());
        match outcome.status {
            Status::Complete => {
                self.daemon.metrics.step_in(self.daemon.label.as_deref(), "complete");
                self.daemon.events.publish(Event::StepFinished {
                    sha,
                    step: id,
                    name,
                    duration_ms: outcome.duration.as_millis() as u64,
                });
            }
            _ => {
                self.daemon.metrics.step_in(self.daemon.label.as_deref(), "error");
                let message = outcome.message.clone();
                self.daemon.events.publish(Event::StepFailed { sha, step: id, name, message });
            }
        }
    }
}

/// Whether a new plan's steps are exactly the steps an interrupted plan had left to do (step
/// ids are hashes of their content).
fn same_rest(prev: &CurrentPlan, fresh: &Plan) -> bool {
    let left: std::collections::BTreeSet<&str> = prev
        .plan
        .steps
        .iter()
        .zip(&prev.outcome.steps)
        .filter(|(_, o)| o.status != Status::Complete)
        .map(|(s, _)| s.id.as_str())
        .collect();
    let fresh_ids: std::collections::BTreeSet<&str> = fresh.steps.iter().map(|s| s.id.as_str()).collect();
    !left.is_empty() && left == fresh_ids
}
