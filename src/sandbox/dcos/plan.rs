//! Plans, phases and steps as an SDK scheduler keeps and runs them: the statuses it reports,
//! the order its strategies start steps in, and the commands of `/v1/plans` (upstream
//! dcos-commons `PlansQueries`, `PlanUtils.getAggregateStatus`, `SerialStrategy`,
//! `ParallelStrategy`, `DeploymentStep`). The legacy Cassandra API shows the same plans in its
//! older shape (`blocks`).
//!
//! A step is pending, active (since a time), complete or in error. An active step is shown as
//! PREPARED for the first half of the step time and STARTING for the second, then completes;
//! nothing else moves a plan but the clock and the commands.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Serial,
    Parallel,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Serial => "serial",
            Strategy::Parallel => "parallel",
        }
    }
}

/// What a step does to its pod when it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Work {
    /// Launch the pod on the target configuration (deploy plan).
    Deploy,
    /// Relaunch the pod where it is (recovery plan, `pod restart`).
    Restart,
    /// Relaunch the pod on another agent (recovery plan, `pod replace`).
    Replace,
    /// A legacy Cassandra operation's work on one node (backup, restore, cleanup, repair).
    Task,
    /// Nothing (legacy Cassandra's reconciliation block).
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum State {
    Pending,
    Active { since: u64 },
    Complete,
    Error { message: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub name: String,
    /// The pod instance (`node-0`) or node it works on.
    pub pod: String,
    pub work: Work,
    pub state: State,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phase {
    pub id: String,
    pub name: String,
    pub strategy: Strategy,
    pub steps: Vec<Step>,
    #[serde(default)]
    pub interrupted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub strategy: Strategy,
    pub phases: Vec<Phase>,
    /// The plan's own errors (a configuration that failed validation); steps add theirs.
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub interrupted: bool,
    /// What `start` was given (kept, shown nowhere, as upstream passes them to tasks' env).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// The time, and how long a step takes.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: u64,
    pub step_ms: u64,
}

/// A status as the SDK reports it (`plan/Status.java`; STARTED and DELAYED never occur here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Error,
    Waiting,
    Pending,
    Prepared,
    Starting,
    Complete,
    InProgress,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Error => "ERROR",
            Status::Waiting => "WAITING",
            Status::Pending => "PENDING",
            Status::Prepared => "PREPARED",
            Status::Starting => "STARTING",
            Status::Complete => "COMPLETE",
            Status::InProgress => "IN_PROGRESS",
        }
    }

    /// Upstream's `Status.isRunning` (PENDING is not running).
    pub fn running(self) -> bool {
        matches!(self, Status::Prepared | Status::Starting | Status::InProgress)
    }
}

/// Something a plan did to a pod, for the service to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Started {
        pod: String,
        work: Work,
        at: u64,
    },
    Completed {
        pod: String,
        work: Work,
        at: u64,
    },
    /// A step failed as it started (an injected fault).
    Failed {
        pod: String,
    },
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Step {
    pub fn new(name: impl Into<String>, pod: impl Into<String>, work: Work, state: State) -> Step {
        Step { id: new_id(), name: name.into(), pod: pod.into(), work, state }
    }

    pub fn status(&self, clock: &Clock) -> Status {
        match &self.state {
            State::Pending => Status::Pending,
            State::Active { since } if clock.now.saturating_sub(*since).saturating_mul(2) < clock.step_ms => {
                Status::Prepared
            }
            State::Active { .. } => Status::Starting,
            State::Complete => Status::Complete,
            State::Error { .. } => Status::Error,
        }
    }

    pub fn complete(&self) -> bool {
        self.state == State::Complete
    }

    pub fn active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    pub fn error(&self) -> Option<&str> {
        match &self.state {
            State::Error { message } => Some(message),
            _ => None,
        }
    }
}

impl Phase {
    pub fn new(name: impl Into<String>, strategy: Strategy, steps: Vec<Step>) -> Phase {
        Phase { id: new_id(), name: name.into(), strategy, steps, interrupted: false }
    }

    pub fn complete(&self) -> bool {
        self.steps.iter().all(Step::complete)
    }

    fn has_errors(&self) -> bool {
        self.steps.iter().any(|s| s.error().is_some())
    }

    /// Whether the plan's strategy may work on it (upstream `PlanUtils.isEligible`).
    fn eligible(&self) -> bool {
        !self.complete() && !self.has_errors() && !self.interrupted
    }

    /// The steps the phase's strategy works on next: the first unfinished one (serial), or
    /// every unfinished one (parallel); none while interrupted.
    fn candidates(&self) -> Vec<usize> {
        if self.interrupted {
            return Vec::new();
        }
        let eligible = |s: &Step| !s.complete() && s.error().is_none();
        match self.strategy {
            Strategy::Serial => match self.steps.iter().position(|s| !s.complete()) {
                Some(i) if eligible(&self.steps[i]) => vec![i],
                _ => Vec::new(),
            },
            Strategy::Parallel => (0..self.steps.len()).filter(|&i| eligible(&self.steps[i])).collect(),
        }
    }

    pub fn status(&self, clock: &Clock) -> Status {
        let children: Vec<Status> = self.steps.iter().map(|s| s.status(clock)).collect();
        let candidates: Vec<Status> = self.candidates().into_iter().map(|i| children[i]).collect();
        aggregate(&children, &candidates, self.has_errors(), self.interrupted)
    }

    /// The legacy (pre-SDK) status: no PREPARED or STARTING, an active block is IN_PROGRESS.
    fn legacy_status(&self) -> &'static str {
        let statuses: Vec<&str> = self.steps.iter().map(legacy_step_status).collect();
        legacy_aggregate(&statuses, false, self.interrupted)
    }
}

impl Plan {
    pub fn new(name: impl Into<String>, strategy: Strategy, phases: Vec<Phase>) -> Plan {
        Plan {
            name: name.into(),
            strategy,
            phases,
            errors: Vec::new(),
            interrupted: false,
            parameters: BTreeMap::new(),
        }
    }

    fn steps(&self) -> impl Iterator<Item = &Step> {
        self.phases.iter().flat_map(|p| p.steps.iter())
    }

    fn steps_mut(&mut self) -> impl Iterator<Item = &mut Step> {
        self.phases.iter_mut().flat_map(|p| p.steps.iter_mut())
    }

    /// The plan's errors and its steps' (upstream `ParentElement.getErrors`).
    pub fn all_errors(&self) -> Vec<String> {
        let mut errors = self.errors.clone();
        errors.extend(self.steps().filter_map(Step::error).map(str::to_string));
        errors
    }

    /// The pods its active steps work on.
    pub fn busy(&self) -> impl Iterator<Item = &str> {
        self.steps().filter(|s| s.active()).map(|s| s.pod.as_str())
    }

    /// When its next active step is due.
    pub fn next_due(&self, step_ms: u64) -> Option<u64> {
        self.steps()
            .filter_map(|s| match s.state {
                State::Active { since } => Some(since.saturating_add(step_ms)),
                _ => None,
            })
            .min()
    }

    fn candidates(&self) -> Vec<usize> {
        if self.interrupted {
            return Vec::new();
        }
        match self.strategy {
            Strategy::Serial => match self.phases.iter().position(|p| !p.complete()) {
                Some(i) if self.phases[i].eligible() => vec![i],
                _ => Vec::new(),
            },
            Strategy::Parallel => (0..self.phases.len()).filter(|&i| self.phases[i].eligible()).collect(),
        }
    }

    pub fn status(&self, clock: &Clock) -> Status {
        let children: Vec<Status> = self.phases.iter().map(|p| p.status(clock)).collect();
        let candidates: Vec<Status> = self.candidates().into_iter().map(|i| children[i]).collect();
        aggregate(&children, &candidates, !self.all_errors().is_empty(), self.interrupted)
    }

    pub fn complete(&self, clock: &Clock) -> bool {
        self.status(clock) == Status::Complete
    }

    /// Move on to `clock.now`: active steps whose time is up complete (at that time), and the
    /// strategy starts the next ones as of then; a step whose pod another plan works on
    /// (`busy`) waits, and one that `fail` names fails as it starts. Returns what happened,
    /// in order.
    pub fn advance(
        &mut self,
        clock: &Clock,
        busy: &dyn Fn(&str) -> bool,
        fail: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut at = clock.now;
        // Each turn completes one step, so this many turns always reach a fixed point.
        for _ in 0..self.steps().count() + 2 {
            self.start_ready(at, busy, fail, &mut events);
            let due = self
                .phases
                .iter_mut()
                .flat_map(|p| p.steps.iter_mut())
                .filter_map(|s| match s.state {
                    State::Active { since } => Some((since.saturating_add(clock.step_ms), s)),
                    _ => None,
                })
                .filter(|(due, _)| *due <= clock.now)
                .min_by_key(|(due, _)| *due);
            let Some((due, step)) = due else { break };
            step.state = State::Complete;
            events.push(Event::Completed { pod: step.pod.clone(), work: step.work, at: due });
            at = due;
        }
        events
    }

    fn start_ready(
        &mut self,
        at: u64,
        busy: &dyn Fn(&str) -> bool,
        fail: &dyn Fn(&str) -> Option<String>,
        events: &mut Vec<Event>,
    ) {
        for p in self.candidates() {
            let phase = &mut self.phases[p];
            for s in phase.candidates() {
                let step = &mut phase.steps[s];
                if step.state != State::Pending || busy(&step.pod) {
                    continue;
                }
                step.state = match fail(&step.name) {
                    Some(message) => {
                        events.push(Event::Failed { pod: step.pod.clone() });
                        State::Error { message }
                    }
                    None => {
                        events.push(Event::Started { pod: step.pod.clone(), work: step.work, at });
                        State::Active { since: at }
                    }
                };
            }
        }
    }

    /// The element `?phase=` and `?step=` name (by UUID or by name, as upstream looks them up).
    pub fn find(&self, phase: Option<&str>, step: Option<&str>) -> Result<Element, Refusal> {
        let phase = phase.filter(|p| !p.trim().is_empty());
        let step = step.filter(|s| !s.trim().is_empty());
        let Some(phase) = phase else {
            return match step {
                Some(_) => Err(Refusal::BadRequest("Missing phase".into())),
                None => Ok(Element::Plan),
            };
        };
        let by_id = uuid::Uuid::parse_str(phase).is_ok();
        let p = self
            .phases
            .iter()
            .position(|ph| if by_id { ph.id == phase } else { ph.name == phase })
            .ok_or_else(|| Refusal::NotFound(format!("Phase {phase} not found")))?;
        let Some(step) = step else { return Ok(Element::Phase(p)) };
        let by_id = uuid::Uuid::parse_str(step).is_ok();
        let matching: Vec<usize> = (0..self.phases[p].steps.len())
            .filter(|&i| {
                let s = &self.phases[p].steps[i];
                if by_id { s.id == step } else { s.name == step }
            })
            .collect();
        match matching.as_slice() {
            [i] => Ok(Element::Step(p, *i)),
            _ => Err(Refusal::NotFound(format!("Step {step} not found"))),
        }
    }

    fn element_status(&self, e: Element, clock: &Clock) -> Status {
        match e {
            Element::Plan => self.status(clock),
            Element::Phase(p) => self.phases[p].status(clock),
            Element::Step(p, s) => self.phases[p].steps[s].status(clock),
        }
    }

    fn element_steps(&mut self, e: Element) -> Vec<&mut Step> {
        match e {
            Element::Plan => self.steps_mut().collect(),
            Element::Phase(p) => self.phases[p].steps.iter_mut().collect(),
            Element::Step(p, s) => vec![&mut self.phases[p].steps[s]],
        }
    }

    /// `interrupt`: no step starts (the active one finishes). False: nothing to do (208).
    pub fn interrupt(&mut self, e: Element, clock: &Clock) -> bool {
        match e {
            Element::Phase(p) => {
                let phase = &mut self.phases[p];
                if phase.interrupted || phase.complete() {
                    return false;
                }
                phase.interrupted = true;
            }
            _ => {
                if self.interrupted || self.complete(clock) {
                    return false;
                }
                self.interrupted = true;
            }
        }
        true
    }

    /// `continue`: steps start again. False when the element runs already or is complete.
    pub fn proceed(&mut self, e: Element, clock: &Clock) -> bool {
        let status = self.element_status(e, clock);
        if status.running() || status == Status::Complete {
            return false;
        }
        match e {
            Element::Phase(p) => self.phases[p].interrupted = false,
            _ => self.interrupted = false,
        }
        true
    }

    /// `forceComplete`: the element's steps are complete without their work being done.
    pub fn force_complete(&mut self, e: Element, clock: &Clock) -> bool {
        if self.element_status(e, clock) == Status::Complete {
            return false;
        }
        for step in self.element_steps(e) {
            step.state = State::Complete;
        }
        true
    }

    /// `restart`: the element proceeds and its steps (errors too) are pending again.
    pub fn restart(&mut self, e: Element, clock: &Clock) -> bool {
        if self.element_status(e, clock) == Status::Pending {
            return false;
        }
        match e {
            Element::Plan => self.interrupted = false,
            Element::Phase(p) => self.phases[p].interrupted = false,
            Element::Step(..) => {}
        }
        for step in self.element_steps(e) {
            step.state = State::Pending;
        }
        true
    }

    /// `start`: keeps the parameters; a complete plan starts over; the plan proceeds.
    pub fn start(&mut self, parameters: BTreeMap<String, String>, clock: &Clock) {
        self.parameters = parameters;
        if self.complete(clock) {
            self.steps_mut().for_each(|s| s.state = State::Pending);
        }
        self.interrupted = false;
    }

    /// `stop`: interrupted, and every step pending again.
    pub fn stop(&mut self) {
        self.interrupted = true;
        self.steps_mut().for_each(|s| s.state = State::Pending);
    }

    /// The plan as the SDK answers it (`PlanInfo`: phases, strategy, errors, status).
    pub fn sdk_json(&self, clock: &Clock) -> Value {
        let status = self.status(clock);
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|phase| {
                let status = phase.status(clock);
                let steps: Vec<Value> = phase
                    .steps
                    .iter()
                    .map(|s| {
                        let status = s.status(clock).as_str();
                        let class = match s.work {
                            Work::Restart | Work::Replace => "com.mesosphere.sdk.scheduler.recovery.RecoveryStep",
                            _ => "com.mesosphere.sdk.scheduler.plan.DeploymentStep",
                        };
                        json!({
                            "id": s.id,
                            "status": status,
                            "name": s.name,
                            "message": format!("{class}: '{} [{}]' has status: '{status}'.", s.name, s.id),
                        })
                    })
                    .collect();
                json!({
                    "id": phase.id,
                    "name": phase.name,
                    "steps": steps,
                    "strategy": phase.strategy.name(),
                    "status": status.as_str(),
                })
            })
            .collect();
        json!({
            "phases": phases,
            "strategy": self.strategy.name(),
            "errors": self.all_errors(),
            "status": status.as_str(),
        })
    }

    /// The plan as the pre-SDK Cassandra scheduler answers it (dcos-commons 0.7's `StageInfo`:
    /// phases of `blocks`, statuses without PREPARED or STARTING).
    pub fn legacy_json(&self, message: &dyn Fn(&Step, &str) -> String) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|phase| {
                let blocks: Vec<Value> = phase
                    .steps
                    .iter()
                    .map(|s| {
                        let status = legacy_step_status(s);
                        json!({
                            "id": s.id,
                            "status": status,
                            "name": s.name,
                            "message": message(s, status),
                            "has_decision_point": false,
                        })
                    })
                    .collect();
                json!({"id": phase.id, "name": phase.name, "blocks": blocks, "status": phase.legacy_status()})
            })
            .collect();
        json!({"phases": phases, "errors": self.all_errors(), "status": self.legacy_status()})
    }

    pub fn legacy_status(&self) -> &'static str {
        let statuses: Vec<&str> = self.phases.iter().map(Phase::legacy_status).collect();
        legacy_aggregate(&statuses, !self.all_errors().is_empty(), self.interrupted)
    }
}

/// A plan, one of its phases, or one of a phase's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    Plan,
    Phase(usize),
    Step(usize, usize),
}

/// Why a command names nothing: 400 or 404, as text.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    BadRequest(String),
    NotFound(String),
}

/// Upstream's `PlanUtils.getAggregateStatus`, without STARTED and DELAYED (never set here).
fn aggregate(children: &[Status], candidates: &[Status], errors: bool, interrupted: bool) -> Status {
    let any = |list: &[Status], s: Status| list.contains(&s);
    if errors || any(children, Status::Error) {
        Status::Error
    } else if children.iter().all(|&s| s == Status::Complete) {
        Status::Complete
    } else if interrupted {
        Status::Waiting
    } else if any(children, Status::Prepared) {
        Status::InProgress
    } else if any(candidates, Status::Waiting) {
        Status::Waiting
    } else if any(candidates, Status::InProgress)
        || (any(children, Status::Complete) && (any(candidates, Status::Pending) || any(candidates, Status::Starting)))
    {
        Status::InProgress
    } else if any(candidates, Status::Pending) {
        Status::Pending
    } else if any(children, Status::Waiting) {
        Status::Waiting
    } else if any(candidates, Status::Starting) {
        Status::Starting
    } else {
        Status::Error
    }
}

fn legacy_step_status(s: &Step) -> &'static str {
    match s.state {
        State::Pending => "PENDING",
        State::Active { .. } => "IN_PROGRESS",
        State::Complete => "COMPLETE",
        State::Error { .. } => "ERROR",
    }
}

/// dcos-commons 0.7's statuses: ERROR, WAITING, PENDING, IN_PROGRESS, COMPLETE.
fn legacy_aggregate(children: &[&str], errors: bool, interrupted: bool) -> &'static str {
    let any = |s: &str| children.contains(&s);
    if errors || any("ERROR") {
        "ERROR"
    } else if children.iter().all(|&s| s == "COMPLETE") {
        "COMPLETE"
    } else if interrupted || any("WAITING") {
        "WAITING"
    } else if any("IN_PROGRESS") || any("COMPLETE") {
        "IN_PROGRESS"
    } else {
        "PENDING"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(counts: &[usize]) -> Plan {
        let phases = counts
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                let steps = (0..n)
                    .map(|i| Step::new(format!("p{t}-{i}:[server]"), format!("p{t}-{i}"), Work::Deploy, State::Pending))
                    .collect();
                Phase::new(format!("p{t}"), Strategy::Serial, steps)
            })
            .collect();
        Plan::new("deploy", Strategy::Serial, phases)
    }

    fn at(now: u64) -> Clock {
        Clock { now, step_ms: 10 }
    }

    fn none(_: &str) -> bool {
        false
    }

    fn ok(_: &str) -> Option<String> {
        None
    }

    fn statuses(p: &Plan, c: &Clock) -> Vec<&'static str> {
        p.phases.iter().flat_map(|ph| ph.steps.iter()).map(|s| s.status(c).as_str()).collect()
    }

    #[test]
    fn one_step_at_a_time_in_order_and_catching_up() {
        let mut p = plan(&[2, 1]);
        let c = at(100);
        p.advance(&c, &none, &ok);
        assert_eq!(statuses(&p, &c), ["PREPARED", "PENDING", "PENDING"]);
        assert_eq!(p.status(&c), Status::InProgress, "a child PREPARED");
        assert_eq!(statuses(&p, &at(106)), ["STARTING", "PENDING", "PENDING"]);
        assert_eq!(p.status(&at(106)), Status::Starting);
        // Long after: each step started when the one before it completed.
        let events = p.advance(&at(125), &none, &ok);
        assert_eq!(
            events,
            [
                Event::Completed { pod: "p0-0".into(), work: Work::Deploy, at: 110 },
                Event::Started { pod: "p0-1".into(), work: Work::Deploy, at: 110 },
                Event::Completed { pod: "p0-1".into(), work: Work::Deploy, at: 120 },
                Event::Started { pod: "p1-0".into(), work: Work::Deploy, at: 120 },
            ]
        );
        assert_eq!(p.status(&at(125)), Status::InProgress);
        p.advance(&at(130), &none, &ok);
        assert_eq!(p.status(&at(130)), Status::Complete);
        assert!(p.advance(&at(1000), &none, &ok).is_empty());
    }

    #[test]
    fn zero_step_time_finishes_at_once() {
        let mut p = plan(&[3, 2]);
        let c = Clock { now: 5, step_ms: 0 };
        assert_eq!(p.advance(&c, &none, &ok).len(), 10);
        assert!(p.complete(&c));
    }

    #[test]
    fn interrupt_lets_the_active_step_finish_and_starts_no_other() {
        let mut p = plan(&[3]);
        p.advance(&at(0), &none, &ok);
        assert!(p.interrupt(Element::Plan, &at(1)));
        assert!(!p.interrupt(Element::Plan, &at(1)), "already interrupted: 208");
        assert_eq!(p.status(&at(1)), Status::Waiting);
        p.advance(&at(500), &none, &ok);
        assert_eq!(statuses(&p, &at(500)), ["COMPLETE", "PENDING", "PENDING"]);
        assert_eq!(p.status(&at(500)), Status::Waiting);
        assert!(p.proceed(Element::Plan, &at(500)));
        p.advance(&at(500), &none, &ok);
        assert_eq!(statuses(&p, &at(500)), ["COMPLETE", "PREPARED", "PENDING"]);
        assert!(!p.proceed(Element::Plan, &at(500)), "running: 208");
        p.advance(&at(600), &none, &ok);
        assert!(p.complete(&at(600)));
        assert!(!p.interrupt(Element::Plan, &at(600)), "complete: 208");
        assert!(!p.proceed(Element::Plan, &at(600)), "complete: 208");
    }

    #[test]
    fn a_failing_step_stops_a_serial_plan_with_its_message() {
        let mut p = plan(&[3]);
        let fail = |name: &str| (name == "p0-1:[server]").then(|| "disk full".to_string());
        p.advance(&at(0), &none, &fail);
        p.advance(&at(100), &none, &fail);
        assert_eq!(statuses(&p, &at(100)), ["COMPLETE", "ERROR", "PENDING"]);
        assert_eq!(p.status(&at(100)), Status::Error);
        assert_eq!(p.all_errors(), ["disk full"]);
        // Restarted without the fault, it goes on.
        assert!(p.restart(Element::Step(0, 1), &at(100)));
        p.advance(&at(200), &none, &ok);
        p.advance(&at(300), &none, &ok);
        assert!(p.complete(&at(300)));
    }

    #[test]
    fn commands_find_elements_by_name_or_id() {
        let mut p = plan(&[2]);
        let id = p.phases[0].steps[1].id.clone();
        assert_eq!(p.find(Some("p0"), Some(&id)), Ok(Element::Step(0, 1)));
        assert_eq!(p.find(Some("p0"), Some("p0-0:[server]")), Ok(Element::Step(0, 0)));
        assert_eq!(p.find(None, Some("x")), Err(Refusal::BadRequest("Missing phase".into())));
        assert_eq!(p.find(Some("nope"), None), Err(Refusal::NotFound("Phase nope not found".into())));
        assert_eq!(p.find(Some("p0"), Some("nope")), Err(Refusal::NotFound("Step nope not found".into())));
        assert!(!p.restart(Element::Plan, &at(0)), "pending: 208");
        assert!(p.force_complete(Element::Phase(0), &at(0)));
        assert!(p.complete(&at(0)));
        assert!(!p.force_complete(Element::Plan, &at(0)));
    }

    #[test]
    fn a_busy_pod_waits_for_the_other_plan() {
        let mut p = plan(&[1]);
        p.advance(&at(0), &|pod| pod == "p0-0", &ok);
        assert_eq!(statuses(&p, &at(0)), ["PENDING"]);
        p.advance(&at(1), &none, &ok);
        assert_eq!(statuses(&p, &at(1)), ["PREPARED"]);
    }

    #[test]
    fn the_legacy_shape_has_blocks() {
        let mut p = plan(&[2]);
        p.advance(&at(0), &none, &ok);
        let v = p.legacy_json(&|s, status| format!("{} {status}", s.name));
        assert_eq!(v["status"], "IN_PROGRESS");
        assert_eq!(v["phases"][0]["blocks"][0]["status"], "IN_PROGRESS");
        assert_eq!(v["phases"][0]["blocks"][1]["message"], "p0-1:[server] PENDING");
        assert_eq!(v["phases"][0]["blocks"][1]["has_decision_point"], false);
        p.interrupt(Element::Plan, &at(0));
        assert_eq!(p.legacy_status(), "WAITING");
    }
}
