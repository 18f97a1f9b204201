//! A scheduler as the admin router finds it: started when a task of its Marathon app's
//! configuration runs, started again (its plans rebuilt) when that configuration changes or
//! its app comes back from no tasks, gone with its app. It keeps its configurations (the
//! target, and those pods still run), its pods, and its plans.

use super::FailStep;
use super::plan::{Clock, Event, Phase, Plan, State, Step, Strategy, Work, new_id};
use super::spec::{self, Kind, Spec};
use crate::sandbox::marathon::AppView;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

/// Everything the emulated cluster holds besides Marathon's own state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    /// Service name → its scheduler.
    pub services: BTreeMap<String, Service>,
    /// Backups legacy Cassandra services made, `<external_location>/<backup_name>` → nodes.
    pub backups: BTreeMap<String, u64>,
}

/// One pod instance (one task, `server`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pod {
    pub pod_type: String,
    pub index: u64,
    pub task_id: String,
    /// The agent it is on (its address is `agent_ip`).
    pub agent: u32,
    /// The fingerprint of the pod spec it was last launched with to completion.
    pub runs: Option<String>,
    /// The configuration id its task is labelled with.
    pub config_id: Option<String>,
    /// Its task runs (false from the moment a step relaunches it until that step completes).
    pub running: bool,
    /// When its task last started or was relaunched, in Unix ms.
    pub since: u64,
}

impl Pod {
    pub fn task_name(name: &str) -> String {
        format!("{name}-server")
    }
}

/// `10.0.1.11`, … : a pretend agent's address.
pub fn agent_ip(agent: u32) -> String {
    format!("10.0.{}.{}", 1 + agent / 250, agent % 250 + 1)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub kind: Kind,
    /// Its scheduler's Marathon app.
    pub app: String,
    /// The app configuration (`lastConfigChangeAt`) the scheduler started with; empty until it
    /// first starts.
    pub started_with: String,
    /// A task of its app runs.
    pub up: bool,
    pub framework_id: String,
    /// The environment it started with.
    pub env: Map<String, Value>,
    pub target: Option<String>,
    /// Configuration id → specification, oldest first.
    pub configs: IndexMap<String, Spec>,
    /// Pod instance name (`node-0`) → pod, for every pod ever launched.
    pub pods: BTreeMap<String, Pod>,
    pub deploy: Plan,
    pub recovery: Plan,
    /// Legacy Cassandra: `backup`, `restore`, `cleanup`, `repair` → the last one of each.
    #[serde(default)]
    pub ops: BTreeMap<String, Op>,
    pub next_agent: u32,
}

impl Service {
    pub fn new(name: &str, kind: Kind, app: &str) -> Service {
        Service {
            name: name.to_string(),
            kind,
            app: app.to_string(),
            started_with: String::new(),
            up: false,
            framework_id: format!("{}-0000", new_id()),
            env: Map::new(),
            target: None,
            configs: IndexMap::new(),
            pods: BTreeMap::new(),
            deploy: Plan::new("deploy", Strategy::Serial, Vec::new()),
            recovery: Plan::new("recovery", Strategy::Parallel, Vec::new()),
            ops: BTreeMap::new(),
            next_agent: 10,
        }
    }

    /// Whether the admin router reaches it: its app has a task running and it has started.
    pub fn serving(&self) -> bool {
        self.up && !self.started_with.is_empty()
    }

    pub fn target_spec(&self) -> Option<&Spec> {
        self.configs.get(self.target.as_deref()?)
    }

    /// The scheduler starts (again) with `env`: a valid specification that differs from the
    /// target becomes the new target; an invalid one leaves the target as it was and its
    /// errors on the deploy plan. The deploy plan is built anew: a step per pod of the target,
    /// complete where the pod runs its pod type's configuration already.
    pub fn boot(&mut self, env: &Map<String, Value>, started_with: &str) {
        self.env = env.clone();
        self.started_with = started_with.to_string();
        let errors = match spec::from_env(env, self.kind) {
            Err(errors) => errors,
            Ok(candidate) => {
                let errors = spec::validate(self.target_spec(), &candidate);
                if errors.is_empty() && self.target_spec() != Some(&candidate) {
                    let id = new_id();
                    self.configs.insert(id.clone(), candidate);
                    self.target = Some(id);
                }
                errors
            }
        };
        self.relabel();
        self.deploy = self.deploy_plan();
        self.deploy.errors = errors;
        // Recoveries under way go on; finished ones are forgotten with the old scheduler.
        self.recovery.phases.retain(|p| !p.complete());
        self.recovery.interrupted = false;
    }

    /// Pods that run the target's configuration are labelled with it; configurations that
    /// are neither the target nor any pod's are dropped (upstream's config cleanup).
    fn relabel(&mut self) {
        let Some(target) = self.target.clone() else { return };
        if let Some(spec) = self.configs.get(&target) {
            for pod in self.pods.values_mut() {
                if spec.pod(&pod.pod_type).is_some_and(|p| pod.runs.as_deref() == Some(&p.fingerprint())) {
                    pod.config_id = Some(target.clone());
                }
            }
        }
        let used: HashSet<String> = self.pods.values().filter_map(|p| p.config_id.clone()).collect();
        self.configs.retain(|id, _| *id == target || used.contains(id));
    }

    fn deploy_plan(&self) -> Plan {
        let Some(spec) = self.target_spec() else { return Plan::new("deploy", Strategy::Serial, Vec::new()) };
        let done = |pod: &str, fingerprint: &str| {
            if self.pods.get(pod).and_then(|p| p.runs.as_deref()) == Some(fingerprint) {
                State::Complete
            } else {
                State::Pending
            }
        };
        let mut phases = Vec::new();
        if self.kind == Kind::Legacy {
            let reconcile = Step::new("Reconciliation", "", Work::Nothing, State::Complete);
            phases.push(Phase::new("Reconciliation", Strategy::Serial, vec![reconcile]));
        }
        for p in &spec.pods {
            let fingerprint = p.fingerprint();
            let steps = (0..p.count)
                .map(|i| {
                    let pod = format!("{}-{i}", p.pod_type);
                    let name = match self.kind {
                        Kind::Sdk => format!("{pod}:[server]"),
                        Kind::Legacy => pod.clone(),
                    };
                    let state = done(&pod, &fingerprint);
                    Step::new(name, pod, Work::Deploy, state)
                })
                .collect();
            let name = match self.kind {
                Kind::Sdk => p.pod_type.clone(),
                Kind::Legacy => "Deploy".into(),
            };
            phases.push(Phase::new(name, Strategy::Serial, steps));
        }
        Plan::new("deploy", Strategy::Serial, phases)
    }

    /// `pod replace|restart`: a recovery phase for the pod, in place of any earlier one; its
    /// task is killed now and relaunched by the recovery plan. None: no such pod.
    pub fn recover(&mut self, pod: &str, replace: bool) -> Option<Vec<String>> {
        let p = self.pods.get_mut(pod)?;
        p.running = false;
        self.recovery.phases.retain(|ph| ph.steps.iter().all(|s| s.pod != pod));
        let name = format!("{pod}:[server]");
        let work = if replace { Work::Replace } else { Work::Restart };
        let step = Step::new(name.clone(), pod, work, State::Pending);
        self.recovery.phases.push(Phase::new(name, Strategy::Parallel, vec![step]));
        Some(vec![Pod::task_name(pod)])
    }

    /// Move its plans on to the clock. Returns whether anything changed, and the backups
    /// that just finished (`<location>/<name>`, nodes).
    pub fn advance(&mut self, clock: &Clock, fault: Option<&FailStep>) -> (bool, Vec<(String, u64)>) {
        if !self.serving() {
            return (false, Vec::new());
        }
        let name = self.name.clone();
        let fail = |step: &str| fault.filter(|f| f.service == name && f.step == step).map(FailStep::message);
        let in_deploy: HashSet<String> = self.deploy.busy().map(str::to_string).collect();
        let mut events = self.recovery.advance(clock, &|p| in_deploy.contains(p), &fail);
        let in_recovery: HashSet<String> = self.recovery.busy().map(str::to_string).collect();
        events.extend(self.deploy.advance(clock, &|p| in_recovery.contains(p), &fail));
        let mut changed = !events.is_empty();
        for event in events {
            self.apply(event);
        }
        let mut backups = Vec::new();
        for op in self.ops.values_mut() {
            changed |= !op.plan.advance(clock, &|_| false, &fail).is_empty();
            if let Some(done) = op.finished_backup(clock) {
                backups.push(done);
                changed = true;
            }
        }
        (changed, backups)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Started { pod, work: work @ (Work::Deploy | Work::Restart | Work::Replace), at } => {
                let new_agent = !self.pods.contains_key(&pod) || work == Work::Replace;
                let agent = if new_agent {
                    self.next_agent = self.next_agent.wrapping_add(1);
                    Some(self.next_agent)
                } else {
                    None
                };
                let (pod_type, index) = split_pod(&pod);
                let p = self.pods.entry(pod.clone()).or_insert_with(|| Pod {
                    pod_type,
                    index,
                    task_id: String::new(),
                    agent: 0,
                    runs: None,
                    config_id: None,
                    running: false,
                    since: at,
                });
                if let Some(a) = agent {
                    p.agent = a;
                }
                p.task_id = format!("{}__{}", Pod::task_name(&pod), new_id());
                p.running = false;
                p.since = at;
            }
            Event::Completed { pod, work: Work::Deploy, at } => {
                let fingerprint = self
                    .pods
                    .get(&pod)
                    .and_then(|p| self.target_spec().and_then(|s| s.pod(&p.pod_type)).map(spec::PodSpec::fingerprint));
                if let Some(p) = self.pods.get_mut(&pod) {
                    p.runs = fingerprint;
                    p.config_id = self.target.clone();
                    p.running = true;
                    p.since = at;
                }
            }
            Event::Completed { pod, work: Work::Restart | Work::Replace, at } => {
                if let Some(p) = self.pods.get_mut(&pod) {
                    p.running = true;
                    p.since = at;
                }
            }
            _ => {}
        }
    }

    /// When something of it is next due.
    pub fn next_due(&self, step_ms: u64) -> Option<u64> {
        [self.deploy.next_due(step_ms), self.recovery.next_due(step_ms)]
            .into_iter()
            .chain(self.ops.values().map(|o| o.plan.next_due(step_ms)))
            .flatten()
            .min()
    }

    /// A step of its pod is under way.
    pub fn launching(&self, pod: &str) -> bool {
        self.deploy.busy().chain(self.recovery.busy()).any(|p| p == pod)
    }
}

/// `data-node-3` → (`data-node`, 3).
fn split_pod(pod: &str) -> (String, u64) {
    match pod.rsplit_once('-') {
        Some((t, i)) => (t.to_string(), i.parse().unwrap_or(0)),
        None => (pod.to_string(), 0),
    }
}

/// Bring the schedulers in line with Marathon's apps. A name is served by the app that
/// already serves it while that app still claims it, else by the claiming app first in id
/// order; a scheduler whose app is gone (or no longer claims its name as the same kind) is
/// removed with its pods. Returns whether anything changed.
pub fn sync(data: &mut Data, apps: &[AppView]) -> bool {
    let mut claims: BTreeMap<String, (&AppView, Kind)> = BTreeMap::new();
    for app in apps {
        let Some((name, kind)) = spec::classify(&app.labels) else { continue };
        let incumbent = data.services.get(&name).is_some_and(|s| s.app == app.id);
        if incumbent || !claims.contains_key(&name) {
            claims.insert(name, (app, kind));
        }
    }
    let before = data.services.len();
    data.services.retain(|name, s| claims.get(name).is_some_and(|(app, kind)| app.id == s.app && *kind == s.kind));
    let mut changed = data.services.len() != before;
    for (name, (app, kind)) in claims {
        let service = data.services.entry(name.clone()).or_insert_with(|| {
            changed = true;
            Service::new(&name, kind, &app.id)
        });
        let was_up = service.up;
        if service.up != app.running_any {
            service.up = app.running_any;
            changed = true;
        }
        if app.running_current && (service.started_with != app.config_changed_at || !was_up) {
            service.boot(&app.env, &app.config_changed_at);
            changed = true;
        }
    }
    changed
}

/// The last cleanup, repair, backup or restore of a service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    pub kind: String,
    pub plan: Plan,
    /// The backup it makes or restores, `<external_location>/<backup_name>` (never its keys).
    pub backup: Option<String>,
    pub nodes: u64,
    /// Stopped with `/stop`: it stays where it was.
    pub stopped: bool,
    /// A finished backup has been recorded as restorable.
    pub recorded: bool,
}

impl Op {
    pub fn in_progress(&self, clock: &Clock) -> bool {
        !self.stopped && !self.plan.complete(clock) && self.plan.all_errors().is_empty()
    }

    /// A backup that has just finished: recorded once.
    pub fn finished_backup(&mut self, clock: &Clock) -> Option<(String, u64)> {
        if self.kind != "backup" || self.recorded || !self.plan.complete(clock) {
            return None;
        }
        self.recorded = true;
        Some((self.backup.clone()?, self.nodes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(id: &str, labels: Value, env: Value, changed_at: &str) -> AppView {
        AppView {
            id: id.into(),
            labels: labels.as_object().unwrap().clone(),
            env: env.as_object().unwrap().clone(),
            config_changed_at: changed_at.into(),
            running_current: true,
            running_any: true,
        }
    }

    fn sdk(name: &str) -> Value {
        json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": name})
    }

    fn run(data: &mut Data, now: u64) {
        let clock = Clock { now, step_ms: 10 };
        for s in data.services.values_mut() {
            s.advance(&clock, None);
        }
    }

    fn statuses(s: &Service) -> Vec<String> {
        let clock = Clock { now: 0, step_ms: 10 };
        s.deploy.phases.iter().flat_map(|p| &p.steps).map(|st| st.status(&clock).as_str().to_string()).collect()
    }

    #[test]
    fn a_change_reruns_only_what_changed() {
        let mut data = Data::default();
        assert!(sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "2", "WEB_COUNT": "1"}), "v1")]));
        run(&mut data, 0);
        run(&mut data, 1000);
        let s = &data.services["db"];
        assert!(s.deploy.complete(&Clock { now: 1000, step_ms: 10 }));
        let first = s.target.clone().unwrap();
        // A node-only variable: only nodes re-run; the count grows: only the new node is added.
        sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "3", "WEB_COUNT": "1", "NODE_HEAP": "2g"}), "v2")]);
        let s = &data.services["db"];
        assert_ne!(s.target.as_deref(), Some(first.as_str()));
        assert_eq!(statuses(s), ["PENDING", "PENDING", "PENDING", "COMPLETE"]);
        assert_eq!(s.pods["web-0"].config_id, s.target, "relabelled: its configuration did not change");
        run(&mut data, 2000);
        run(&mut data, 3000);
        sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "5", "WEB_COUNT": "1", "NODE_HEAP": "2g"}), "v3")]);
        assert_eq!(
            statuses(&data.services["db"]),
            ["COMPLETE", "COMPLETE", "COMPLETE", "PENDING", "PENDING", "COMPLETE"]
        );
        // The running nodes' task specification did not change (only the count): they are
        // relabelled with the new target and the old configuration is cleaned up (upstream's
        // `DefaultConfigurationUpdater`).
        assert_eq!(data.services["db"].configs.len(), 1, "only the target: every pod was relabelled");
        // The same configuration again restarts the scheduler but changes nothing.
        run(&mut data, 4000);
        run(&mut data, 5000);
        let target = data.services["db"].target.clone();
        sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "5", "WEB_COUNT": "1", "NODE_HEAP": "2g"}), "v4")]);
        assert_eq!(data.services["db"].target, target);
        assert!(statuses(&data.services["db"]).iter().all(|s| s == "COMPLETE"));
        assert_eq!(data.services["db"].configs.len(), 1);
    }

    #[test]
    fn a_shrink_is_refused_on_the_plan_and_nothing_is_lost() {
        let mut data = Data::default();
        sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "3"}), "v1")]);
        run(&mut data, 0);
        run(&mut data, 1000);
        let target = data.services["db"].target.clone();
        sync(&mut data, &[app("/db", sdk("db"), json!({"NODES": "1"}), "v2")]);
        let s = &data.services["db"];
        assert_eq!(s.target, target);
        assert_eq!(statuses(s), ["COMPLETE", "COMPLETE", "COMPLETE"]);
        assert_eq!(s.deploy.all_errors().len(), 1);
        assert_eq!(s.pods.len(), 3);
    }

    #[test]
    fn names_stay_with_their_app_and_go_with_it() {
        let mut data = Data::default();
        sync(&mut data, &[app("/b", sdk("db"), json!({}), "v1")]);
        assert_eq!(data.services["db"].app, "/b");
        // An app earlier in id order claims the name too: the incumbent keeps it.
        sync(&mut data, &[app("/a", sdk("db"), json!({}), "v1"), app("/b", sdk("db"), json!({}), "v1")]);
        assert_eq!(data.services["db"].app, "/b");
        sync(&mut data, &[app("/a", sdk("db"), json!({}), "v1")]);
        assert_eq!(data.services["db"].app, "/a", "the other app's scheduler, started afresh");
        assert!(sync(&mut data, &[]));
        assert!(data.services.is_empty());
    }

    #[test]
    fn a_scheduler_starts_once_a_task_of_its_configuration_runs() {
        let mut data = Data::default();
        let mut a = app("/db", sdk("db"), json!({"NODES": "1"}), "v1");
        a.running_current = false;
        a.running_any = false;
        sync(&mut data, std::slice::from_ref(&a));
        assert!(!data.services["db"].serving());
        a.running_current = true;
        a.running_any = true;
        sync(&mut data, std::slice::from_ref(&a));
        assert!(data.services["db"].serving());
        // A new configuration whose task does not run yet: the old one keeps serving.
        a.config_changed_at = "v2".into();
        a.env = json!({"NODES": "2"}).as_object().unwrap().clone();
        a.running_current = false;
        sync(&mut data, std::slice::from_ref(&a));
        assert_eq!(data.services["db"].started_with, "v1");
        assert!(data.services["db"].serving());
    }
}
