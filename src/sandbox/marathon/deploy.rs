//! Deployments: one planner for every change (dry runs included), the commit that applies a
//! change and starts its deployment (service ports and app versions kept as it goes), and the
//! clock that moves steps on.

use super::http::Fail;
use super::ids::{ancestors, is_under, new_uuid, parent};
use super::model::{Action, App, AppVersion, Ctx, Data, Deployment, HISTORY, Kind, definition, emit, instances, service_ports};
use super::{launch, tree};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

/// A new or changed definition.
#[derive(Clone, Debug)]
pub struct Put {
    pub id: String,
    pub def: Map<String, Value>,
    /// Replace the tasks even when the definition is unchanged.
    pub restart: bool,
    /// Give the app a new version even when nothing changes.
    pub bump: bool,
}

/// What a write asks for.
#[derive(Debug, Default)]
pub struct Change {
    pub puts: Vec<Put>,
    pub removes: Vec<String>,
    /// Groups to create if missing, with their new dependencies when Some.
    pub groups_put: Vec<(String, Option<Vec<String>>)>,
    pub groups_remove: Vec<String>,
    /// Apps the write names, locked even when nothing about them changes.
    pub locked: Vec<String>,
    /// Tasks killed before the deployment starts: (app, task id).
    pub kills: Vec<(String, String)>,
    pub group_id: String,
    /// The URI for `api_post_event`, for app writes.
    pub post: Option<String>,
}

impl Change {
    /// A write of one app's definition through `/v2/apps/{id}` (a create or an update).
    pub fn app_write(id: &str, def: Map<String, Value>) -> Change {
        Change {
            puts: vec![Put { id: id.to_string(), def, restart: false, bump: true }],
            locked: vec![id.to_string()],
            group_id: parent(id).to_string(),
            post: Some(format!("/v2/apps{id}")),
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    New,
    Config,
    Restart,
    Scale,
    Unchanged,
}

/// Whether two definitions differ in more than `instances`.
fn config_differs(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() != b.len() || a.iter().any(|(k, v)| k != "instances" && b.get(k) != Some(v))
}

fn classify(data: &Data, put: &Put) -> Class {
    match data.apps.get(&put.id) {
        None => Class::New,
        Some(app) if config_differs(&app.def, &put.def) => Class::Config,
        Some(_) if put.restart => Class::Restart,
        Some(app) if instances(&app.def) != instances(&put.def) => Class::Scale,
        Some(_) => Class::Unchanged,
    }
}

pub struct Plan {
    pub steps: Vec<Vec<Action>>,
    pub affected: Vec<String>,
}

/// The steps a change takes (the module docs of `marathon` say in what order).
pub fn plan(data: &Data, change: &Change) -> Result<Plan, Fail> {
    let stops: Vec<Action> = change
        .removes
        .iter()
        .filter(|id| data.apps.contains_key(*id))
        .map(|id| Action { kind: Kind::StopApplication, app: id.clone() })
        .collect();
    let mut starts = Vec::new();
    let mut ordered: Vec<(&str, Kind)> = Vec::new();
    for put in &change.puts {
        match classify(data, put) {
            Class::New => {
                starts.push(Action { kind: Kind::StartApplication, app: put.id.clone() });
                if instances(&put.def) > 0 {
                    ordered.push((&put.id, Kind::ScaleApplication));
                }
            }
            Class::Config | Class::Restart => ordered.push((&put.id, Kind::RestartApplication)),
            Class::Scale => ordered.push((&put.id, Kind::ScaleApplication)),
            Class::Unchanged => {}
        }
    }
    let (order, depth) = dependency_order(data, change, &ordered)?;
    let mut affected: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for a in stops.iter().chain(starts.iter()) {
        if seen.insert(a.app.clone()) {
            affected.push(a.app.clone());
        }
    }
    for (id, _) in &ordered {
        if seen.insert(id.to_string()) {
            affected.push(id.to_string());
        }
    }
    let mut steps = Vec::new();
    if !stops.is_empty() {
        steps.push(stops);
    }
    if !starts.is_empty() {
        steps.push(starts);
    }
    if data.grouped_steps {
        // Marathon 1.x: the apps at one dependency depth in one step, the old tasks of those it
        // restarted killed in the step after.
        let mut by_depth: BTreeMap<usize, (Vec<Action>, Vec<Action>)> = BTreeMap::new();
        for i in order {
            let (id, kind) = ordered[i];
            let (step, kills) = by_depth.entry(depth[i]).or_default();
            step.push(Action { kind, app: id.to_string() });
            if kind == Kind::RestartApplication {
                kills.push(Action { kind: Kind::KillAllOldTasksOf, app: id.to_string() });
            }
        }
        for (step, kills) in by_depth.into_values() {
            steps.push(step);
            if !kills.is_empty() {
                steps.push(kills);
            }
        }
        return Ok(Plan { steps, affected });
    }
    for i in order {
        let (id, kind) = ordered[i];
        steps.push(vec![Action { kind, app: id.to_string() }]);
        if kind == Kind::RestartApplication {
            steps.push(vec![Action { kind: Kind::KillAllOldTasksOf, app: id.to_string() }]);
        }
    }
    Ok(Plan { steps, affected })
}

/// The order of `ordered` with dependencies first (an app's own and its groups'), otherwise
/// as given, and each one's depth (0 for an app that waits for no other planned app, else one
/// more than the deepest it waits for). A dependency on a path means every planned app at or
/// below it.
fn dependency_order(data: &Data, change: &Change, ordered: &[(&str, Kind)]) -> Result<(Vec<usize>, Vec<usize>), Fail> {
    let n = ordered.len();
    let overlay: HashMap<&str, &Vec<String>> =
        change.groups_put.iter().filter_map(|(g, d)| d.as_ref().map(|d| (g.as_str(), d))).collect();
    let group_deps = |g: &str| -> Option<&Vec<String>> {
        overlay.get(g).copied().or_else(|| data.groups.get(g).map(|x| &x.dependencies)).filter(|d| !d.is_empty())
    };
    let defs: HashMap<&str, &Map<String, Value>> = change.puts.iter().map(|p| (p.id.as_str(), &p.def)).collect();
    let mut targets: Vec<Vec<String>> = Vec::with_capacity(n);
    let mut any = false;
    for (id, _) in ordered {
        let mut t: Vec<String> = defs
            .get(id)
            .copied()
            .or_else(|| data.apps.get(*id).map(|a| &a.def))
            .and_then(|d| d.get("dependencies"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        for g in ancestors(id) {
            if let Some(d) = group_deps(g) {
                t.extend(d.iter().cloned());
            }
        }
        // A dependency on what contains the app itself orders nothing.
        t.retain(|p| !is_under(id, p));
        any |= !t.is_empty();
        targets.push(t);
    }
    if !any {
        return Ok(((0..n).collect(), vec![0; n]));
    }
    let mut successors: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (i, t) in targets.iter().enumerate() {
        for (j, (other, _)) in ordered.iter().enumerate() {
            if j != i && t.iter().any(|p| is_under(other, p)) {
                successors[j].push(i);
                indegree[i] += 1;
            }
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|i| indegree[*i] == 0).map(std::cmp::Reverse).collect();
    let mut out = Vec::with_capacity(n);
    let mut depth = vec![0usize; n];
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        out.push(i);
        for &s in &successors[i] {
            depth[s] = depth[s].max(depth[i] + 1);
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.push(std::cmp::Reverse(s));
            }
        }
    }
    if out.len() != n {
        return Err(Fail::invalid("/", "Dependency graph has cyclic dependencies."));
    }
    Ok((out, depth))
}

/// The steps as JSON, each action's kind under `key` (`type` in a dry run, `action` in a
/// deployment).
pub fn steps_json(steps: &[Vec<Action>], key: &str) -> Value {
    Value::Array(steps.iter().map(|s| json!({ "actions": actions_json(s, key) })).collect())
}

fn actions_json(actions: &[Action], key: &str) -> Value {
    Value::Array(
        actions
            .iter()
            .map(|a| {
                let mut m = Map::new();
                m.insert(key.into(), json!(a.kind.name()));
                m.insert("app".into(), json!(a.app));
                Value::Object(m)
            })
            .collect(),
    )
}

/// Apply a planned change and start its deployment; answers its id and the new version.
/// Refused with 409 when a running deployment holds one of the apps, unless `force`.
pub fn commit(data: &mut Data, ctx: &Ctx, change: Change, plan: Plan, force: bool) -> Result<(String, String), Fail> {
    let lock: HashSet<&str> = plan.affected.iter().chain(change.locked.iter()).map(String::as_str).collect();
    let blockers: Vec<String> = data
        .deployments
        .values()
        .filter(|d| d.affected.iter().any(|a| lock.contains(a.as_str())))
        .map(|d| d.id.clone())
        .collect();
    if !blockers.is_empty() {
        if !force {
            return Err(Fail::Locked(blockers));
        }
        for b in &blockers {
            cancel(data, ctx, b);
        }
    }
    let version = data.next_version(ctx.now);
    let original: Vec<(String, Option<Map<String, Value>>)> =
        plan.affected.iter().map(|id| (id.clone(), data.apps.get(id).map(|a| a.def.clone()))).collect();
    let mut touched: Vec<String> = Vec::new();
    for id in &change.removes {
        if let Some(app) = data.apps.remove(id) {
            for p in service_ports(&app.def) {
                data.used_service_ports.remove(&p);
            }
            if let Some(g) = data.groups.get_mut(parent(id)) {
                g.apps.remove(id);
            }
            touched.push(parent(id).to_string());
        }
    }
    for gid in &change.groups_remove {
        tree::remove(data, gid);
        touched.push(parent(gid).to_string());
    }
    for (gid, deps) in &change.groups_put {
        tree::ensure(data, gid, &version);
        if let Some(d) = deps
            && let Some(g) = data.groups.get_mut(gid)
        {
            g.dependencies = d.clone();
        }
        touched.push(gid.clone());
    }
    for put in change.puts {
        let class = classify(data, &put);
        if class == Class::Unchanged && !put.bump {
            continue;
        }
        let mut def = put.def;
        assign_ports(&mut def, data);
        let old = data.apps.get(&put.id);
        let (scaling, config, created) = match old {
            None => (version.clone(), version.clone(), version.clone()),
            Some(o) => (
                if class == Class::Unchanged { o.last_scaling_at.clone() } else { version.clone() },
                if matches!(class, Class::Config | Class::Restart) {
                    version.clone()
                } else {
                    o.last_config_change_at.clone()
                },
                o.created.clone(),
            ),
        };
        if let Some(o) = old {
            // Ports given up go back to the pool.
            let kept = service_ports(&def);
            for p in service_ports(&o.def) {
                if !kept.contains(&p) {
                    data.used_service_ports.remove(&p);
                }
            }
        }
        remember(data, &put.id, &version, &def);
        let group = parent(&put.id).to_string();
        tree::ensure(data, &group, &version);
        if let Some(g) = data.groups.get_mut(&group) {
            g.apps.insert(put.id.clone());
        }
        let app = App::new(def, version.clone(), scaling, config, created);
        if let Some(uri) = &change.post {
            emit(ctx, ctx.now, "api_post_event", || {
                let mut m = Map::new();
                m.insert("clientIp".into(), json!("127.0.0.1"));
                m.insert("uri".into(), json!(uri));
                m.insert("appDefinition".into(), Value::Object(definition(&app)));
                m
            });
        }
        data.apps.insert(put.id.clone(), app);
        touched.push(group);
    }
    for (app, task) in &change.kills {
        launch::kill_where(data, ctx, app, |t| t.id == *task, ctx.now);
    }
    let mut all: BTreeSet<String> = BTreeSet::new();
    for g in &touched {
        all.insert(g.clone());
        all.extend(ancestors(g).map(str::to_string));
    }
    for g in &all {
        if let Some(group) = data.groups.get_mut(g) {
            group.version = version.clone();
        }
    }
    for g in &all {
        tree::record(data, g);
    }
    let target = plan.affected.iter().map(|id| (id.clone(), data.apps.get(id).map(|a| a.def.clone()))).collect();
    let deployment = Deployment {
        id: new_uuid(),
        version: version.clone(),
        affected: plan.affected,
        steps: plan.steps,
        current: 0,
        step_started: ctx.now,
        step_timed: false,
        original,
        target,
        group_id: if change.group_id.is_empty() { "/".into() } else { change.group_id },
    };
    let id = deployment.id.clone();
    start(data, ctx, deployment);
    Ok((id, version))
}

fn start(data: &mut Data, ctx: &Ctx, deployment: Deployment) {
    if deployment.steps.is_empty() {
        finish(ctx, &deployment, ctx.now, true);
        return;
    }
    let id = deployment.id.clone();
    data.deployments.insert(id.clone(), deployment);
    begin_step(data, ctx, &id, ctx.now, true);
    advance_one(data, ctx, &id);
}

/// Move every deployment on to where the clock says it is; true if anything happened.
pub fn advance(data: &mut Data, ctx: &Ctx) -> bool {
    let ids: Vec<String> = data.deployments.keys().cloned().collect();
    let mut changed = false;
    for id in ids {
        changed |= advance_one(data, ctx, &id);
    }
    changed
}

/// When the next step is due (Unix ms), if a deployment runs.
pub fn next_due(data: &Data, rollout: u64) -> Option<u64> {
    data.deployments.values().map(|d| d.step_started + if d.step_timed { rollout } else { 0 }).min()
}

fn advance_one(data: &mut Data, ctx: &Ctx, id: &str) -> bool {
    let mut changed = false;
    while let Some(d) = data.deployments.get(id) {
        let end = d.step_started + if d.step_timed { ctx.rollout } else { 0 };
        if end > ctx.now {
            break;
        }
        changed = true;
        if !next_step(data, ctx, id, end, true) {
            break;
        }
    }
    changed
}

/// End the step in progress at `at` and begin the next; false when the deployment is done.
fn next_step(data: &mut Data, ctx: &Ctx, id: &str, at: u64, loud: bool) -> bool {
    finish_step(data, ctx, id, at, loud);
    let Some(d) = data.deployments.get_mut(id) else { return false };
    d.current += 1;
    if d.current >= d.steps.len() {
        if let Some(d) = data.deployments.shift_remove(id)
            && loud
        {
            finish(ctx, &d, at, true);
        }
        return false;
    }
    begin_step(data, ctx, id, at, loud);
    true
}

/// Stop a deployment where it is, without rollback: what is left of it is done at once (as
/// Marathon's scale check would do later), and `deployment_failed` says it was cancelled.
pub fn cancel(data: &mut Data, ctx: &Ctx, id: &str) {
    let Some(d) = data.deployments.get(id).cloned() else { return };
    while next_step(data, ctx, id, ctx.now, false) {}
    finish(ctx, &d, ctx.now, false);
}

fn finish(ctx: &Ctx, d: &Deployment, at: u64, ok: bool) {
    let kind = if ok { "deployment_success" } else { "deployment_failed" };
    emit(ctx, at, kind, || {
        let mut m = Map::new();
        m.insert("id".into(), json!(d.id));
        m.insert("plan".into(), plan_json(d));
        if !ok {
            m.insert("reason".into(), json!("the deployment was cancelled"));
        }
        m
    });
    emit(ctx, at, if ok { "group_change_success" } else { "group_change_failed" }, || {
        let mut m = Map::new();
        m.insert("groupId".into(), json!(d.group_id));
        m.insert("version".into(), json!(d.version));
        if !ok {
            m.insert("reason".into(), json!("the deployment was cancelled"));
        }
        m
    });
}

fn begin_step(data: &mut Data, ctx: &Ctx, id: &str, at: u64, loud: bool) {
    let Some(actions) = data.deployments.get(id).map(|d| d.steps[d.current].clone()) else { return };
    let mut timed = false;
    for a in &actions {
        timed |= apply(data, ctx, id, a, at);
    }
    let Some(d) = data.deployments.get_mut(id) else { return };
    d.step_started = at;
    d.step_timed = timed;
    if loud {
        let d = &data.deployments[id];
        emit(ctx, at, "deployment_info", || {
            let mut m = Map::new();
            m.insert("plan".into(), plan_json(d));
            m.insert("currentStep".into(), json!({ "actions": actions_json(&actions, "action") }));
            m
        });
    }
}

/// What an action does as its step begins; true if it launched tasks.
fn apply(data: &mut Data, ctx: &Ctx, deployment: &str, a: &Action, at: u64) -> bool {
    match a.kind {
        Kind::StartApplication => false,
        Kind::StopApplication => {
            emit(ctx, at, "app_terminated_event", || {
                let mut m = Map::new();
                m.insert("appId".into(), json!(a.app));
                m
            });
            // Its tasks are killed as the step ends: stopping takes the rollout too.
            data.tasks.get(&a.app).is_some_and(|t| !t.is_empty())
        }
        Kind::ScaleApplication => {
            let Some(want) = data.apps.get(&a.app).map(|x| instances(&x.def) as usize) else { return false };
            let have = data.tasks.get(&a.app).map_or(0, Vec::len);
            if have < want {
                launch::launch(data, &a.app, want - have, Some(deployment), at, None);
                true
            } else {
                if have > want {
                    launch::kill_youngest(data, ctx, &a.app, have - want, at);
                }
                false
            }
        }
        Kind::RestartApplication => {
            let want = data.apps.get(&a.app).map_or(0, |x| instances(&x.def) as usize);
            if want > 0 {
                launch::launch(data, &a.app, want, Some(deployment), at, None);
            }
            want > 0
        }
        Kind::KillAllOldTasksOf => {
            launch::kill_where(data, ctx, &a.app, |t| t.launched_by.as_deref() != Some(deployment), at);
            false
        }
    }
}

/// The step in progress is done at `at`: its tasks run, those of apps it stops are killed.
fn finish_step(data: &mut Data, ctx: &Ctx, id: &str, at: u64, loud: bool) {
    let Some(actions) = data.deployments.get(id).map(|d| d.steps[d.current].clone()) else { return };
    for a in &actions {
        if a.kind == Kind::StopApplication {
            launch::kill_where(data, ctx, &a.app, |_| true, at);
            continue;
        }
        let Some(list) = data.tasks.get_mut(&a.app) else { continue };
        for t in list.iter_mut().filter(|t| t.launched_by.as_deref() == Some(id) && t.running_at.is_none()) {
            t.running_at = Some(at);
            launch::status_event(ctx, t, "TASK_RUNNING", at);
        }
    }
    if loud {
        let d = &data.deployments[id];
        emit(ctx, at, "deployment_step_success", || {
            let mut m = Map::new();
            m.insert("plan".into(), plan_json(d));
            m.insert("currentStep".into(), json!({ "actions": actions_json(&actions, "action") }));
            m
        });
    }
}

/// A deployment plan as events carry it (marathon-python needs `original` and `target`).
fn plan_json(d: &Deployment) -> Value {
    let side = |apps: &[(String, Option<Map<String, Value>>)]| {
        let list: Vec<Value> = apps.iter().filter_map(|(_, a)| a.clone().map(Value::Object)).collect();
        json!({"id": "/", "apps": list, "groups": [], "dependencies": [], "version": d.version})
    };
    json!({
        "id": d.id,
        "version": d.version,
        "original": side(&d.original),
        "target": side(&d.target),
        "steps": steps_json(&d.steps, "action"),
    })
}

/// Give every port 0 a free service port (from 10000 up, unique among the apps).
pub fn assign_ports(def: &mut Map<String, Value>, data: &mut Data) {
    let Some(Value::Array(defs)) = def.get_mut("portDefinitions") else { return };
    for d in defs.iter_mut() {
        if d["port"].as_u64() == Some(0) {
            let port = next_service_port(data);
            d["port"] = json!(port);
        }
    }
    let ports: Vec<Value> = defs.iter().map(|d| d["port"].clone()).collect();
    for p in &ports {
        if let Some(p) = p.as_u64() {
            data.used_service_ports.insert(p as u32);
        }
    }
    def.insert("ports".into(), Value::Array(ports));
}

fn next_service_port(data: &mut Data) -> u32 {
    if data.next_service_port < 10000 {
        data.next_service_port = 10000;
    }
    for _ in 0..10001 {
        let p = data.next_service_port;
        data.next_service_port = if p >= 20000 { 10000 } else { p + 1 };
        if !data.used_service_ports.contains(&p) {
            data.used_service_ports.insert(p);
            return p;
        }
    }
    0
}

/// Keep an app's history short.
pub fn remember(data: &mut Data, id: &str, version: &str, def: &Map<String, Value>) {
    let h = data.app_history.entry(id.to_string()).or_default();
    h.push(AppVersion { version: version.to_string(), def: def.clone() });
    if h.len() > HISTORY {
        let extra = h.len() - HISTORY;
        h.drain(..extra);
    }
}
