//! Tasks: launched by deployment steps, staged until their step is done, then running; the
//! `/v2/apps/{id}/tasks` and `/v2/tasks` endpoints (seed 004 L374-581, L1113-1301).

use super::apps::{App, instances, path_id};
use super::deployments::{self, Change, Put};
use super::events::emit;
use super::{Api, Ctx, Data, Fail, Req, deployed, iso, new_uuid, parent, reply, unix_ms};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const HOST: &str = "127.0.0.1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub app: String,
    pub version: String,
    pub host_ports: Vec<u32>,
    pub service_ports: Vec<u32>,
    pub staged_at: u64,
    /// When it runs (Unix ms); None until the step that launched it is done.
    pub running_at: Option<u64>,
    /// The deployment that launched it.
    pub launched_by: Option<String>,
}

impl Task {
    pub fn running(&self, now: u64) -> bool {
        self.running_at.is_some_and(|t| now >= t)
    }
}

/// `/a/b` → `a_b`, as task ids and the text forms show an app.
pub fn safe_id(app: &str) -> String {
    app.trim_start_matches('/').replace('/', "_")
}

/// The app a task id belongs to (`a_b.<uuid>` → `/a/b`; `_` cannot be in an id).
fn app_of(task: &str) -> Option<String> {
    let (prefix, _) = task.rsplit_once('.')?;
    Some(format!("/{}", prefix.replace('_', "/")))
}

/// Launch `n` tasks of `app` at its current version.
pub fn launch(data: &mut Data, app: &str, n: usize, launched_by: Option<&str>, at: u64, running_at: Option<u64>) {
    let Some(a) = data.apps.get(app) else { return };
    let version = a.version.clone();
    let service_ports = super::apps::service_ports(&a.def);
    let mut new = Vec::with_capacity(n);
    for _ in 0..n {
        let host_ports = service_ports
            .iter()
            .map(|_| {
                if !(31000..33000).contains(&data.next_host_port) {
                    data.next_host_port = 31000;
                }
                let p = data.next_host_port;
                data.next_host_port += 1;
                p
            })
            .collect();
        new.push(Task {
            id: format!("{}.{}", safe_id(app), new_uuid()),
            app: app.to_string(),
            version: version.clone(),
            host_ports,
            service_ports: service_ports.clone(),
            staged_at: at,
            running_at,
            launched_by: launched_by.map(str::to_string),
        });
    }
    data.tasks.entry(app.to_string()).or_default().extend(new);
}

/// Kill the tasks of `app` that `which` picks; answers them.
pub fn kill_where(data: &mut Data, ctx: &Ctx, app: &str, which: impl Fn(&Task) -> bool, at: u64) -> Vec<Task> {
    let Some(list) = data.tasks.get_mut(app) else { return Vec::new() };
    let (killed, kept): (Vec<Task>, Vec<Task>) = std::mem::take(list).into_iter().partition(|t| which(t));
    *list = kept;
    if list.is_empty() {
        data.tasks.remove(app);
    }
    for t in &killed {
        status_event(ctx, t, "TASK_KILLED", at);
    }
    killed
}

/// Scale down: the youngest go first (staged before running).
pub fn kill_youngest(data: &mut Data, ctx: &Ctx, app: &str, n: usize, at: u64) {
    let Some(list) = data.tasks.get(app) else { return };
    let mut order: Vec<&Task> = list.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse((t.running_at.is_none(), t.staged_at)));
    let doomed: Vec<String> = order.into_iter().take(n).map(|t| t.id.clone()).collect();
    kill_where(data, ctx, app, |t| doomed.contains(&t.id), at);
}

pub fn status_event(ctx: &Ctx, t: &Task, status: &str, at: u64) {
    emit(ctx, at, "status_update_event", || {
        let mut m = Map::new();
        m.insert("slaveId".into(), json!("capstan-sandbox-agent"));
        m.insert("taskId".into(), json!(t.id));
        m.insert("taskStatus".into(), json!(status));
        m.insert("message".into(), json!(""));
        m.insert("appId".into(), json!(t.app));
        m.insert("host".into(), json!(HOST));
        m.insert("ipAddresses".into(), json!([{"ipAddress": HOST, "protocol": "IPv4"}]));
        m.insert("ports".into(), json!(t.host_ports));
        m.insert("version".into(), json!(t.version));
        m
    });
}

/// A task as the API shows it (the keys marathon-python's task model takes).
pub fn task_json(app: &App, t: &Task, now: u64) -> Value {
    let running = t.running(now);
    let started = if running { t.running_at.map(iso).map(Value::String).unwrap_or(Value::Null) } else { Value::Null };
    let checks = app.def.get("healthChecks").and_then(Value::as_array).map_or(0, Vec::len);
    let results: Vec<Value> = if running {
        let at = t.running_at.map(iso);
        (0..checks)
            .map(|_| {
                json!({"alive": true, "consecutiveFailures": 0, "firstSuccess": at, "lastFailure": null,
                       "lastSuccess": at, "taskId": t.id})
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": t.id,
        "appId": t.app,
        "host": HOST,
        "ports": t.host_ports,
        "servicePorts": t.service_ports,
        "slaveId": "capstan-sandbox-agent",
        "state": if running { "TASK_RUNNING" } else { "TASK_STAGING" },
        "stagedAt": iso(t.staged_at),
        "startedAt": started,
        "version": t.version,
        "ipAddresses": [{"ipAddress": HOST, "protocol": "IPv4"}],
        "healthCheckResults": results,
        "localVolumes": [],
    })
}

/// The text form: per app and service port, the running tasks' `host:port`.
fn text_lines(out: &mut String, app: &App, tasks: &[Task], now: u64) {
    let id = safe_id(app.def["id"].as_str().unwrap_or_default());
    let running: Vec<&Task> = tasks.iter().filter(|t| t.running(now)).collect();
    let ports = super::apps::service_ports(&app.def);
    if ports.is_empty() {
        out.push_str(&format!("{id}\t \t"));
        for _ in &running {
            out.push_str(&format!("{HOST}\t"));
        }
        out.push('\n');
        return;
    }
    for (i, p) in ports.iter().enumerate() {
        out.push_str(&format!("{id}\t{p}\t"));
        for t in &running {
            if let Some(hp) = t.host_ports.get(i) {
                out.push_str(&format!("{HOST}:{hp}\t"));
            }
        }
        out.push('\n');
    }
}

fn text(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `GET /v2/apps/{id}/tasks`.
pub fn app_tasks(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let data = api.lock();
    let app = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?;
    let tasks = data.tasks.get(&id).map(Vec::as_slice).unwrap_or(&[]);
    let now = unix_ms();
    if req.wants_text() {
        let mut out = String::new();
        text_lines(&mut out, app, tasks, now);
        return Ok(text(out));
    }
    let list: Vec<Value> = tasks.iter().map(|t| task_json(app, t, now)).collect();
    Ok(reply(StatusCode::OK, &json!({ "tasks": list })))
}

/// `GET /v2/tasks[?status=running|staging]`.
pub fn list_all(api: &Api, req: &Req) -> Result<Response, Fail> {
    let status = req.param("status").map(str::to_ascii_lowercase);
    if let Some(s) = &status
        && s != "running"
        && s != "staging"
    {
        return Err(Fail::status(StatusCode::BAD_REQUEST, format!("unknown task status {s:?}: running or staging")));
    }
    let data = api.lock();
    let now = unix_ms();
    let sorted: BTreeMap<&String, &Vec<Task>> = data.tasks.iter().collect();
    if req.wants_text() {
        let mut out = String::new();
        for (id, app) in &data.apps {
            text_lines(&mut out, app, sorted.get(id).map(|v| v.as_slice()).unwrap_or(&[]), now);
        }
        return Ok(text(out));
    }
    let mut list = Vec::new();
    for (app_id, tasks) in sorted {
        let Some(app) = data.apps.get(app_id) else { continue };
        for t in tasks {
            let keep = match status.as_deref() {
                Some("running") => t.running(now),
                Some("staging") => !t.running(now),
                _ => true,
            };
            if keep {
                list.push(task_json(app, t, now));
            }
        }
    }
    Ok(reply(StatusCode::OK, &json!({ "tasks": list })))
}

/// `scale` and `force`; `wipe` (persistent volumes, which the sandbox has none of) is only
/// possible without `scale` (seed L482, L541, L1267).
fn scale_and_wipe(req: &Req) -> Result<(bool, bool), Fail> {
    let scale = req.flag("scale")?;
    if scale && req.flag("wipe")? {
        return Err(Fail::status(StatusCode::BAD_REQUEST, "wipe=true is only possible with scale=false"));
    }
    Ok((scale, req.flag("force")?))
}

/// Kill tasks of one app. Without `scale` Marathon starts replacements (staged for the
/// rollout time) and answers the killed tasks; with it the app is scaled down by as many in
/// a deployment, and the answer is that deployment.
fn kill(api: &Api, req: &Req, id: &str, pick: impl Fn(&Task) -> bool, one: Option<&str>) -> Result<Response, Fail> {
    let (scale, force) = scale_and_wipe(req)?;
    let mut data = api.lock();
    let ctx = api.ctx();
    let app = data.apps.get(id).ok_or_else(|| Fail::no_app(id))?;
    let chosen: Vec<String> =
        data.tasks.get(id).map(|l| l.iter().filter(|t| pick(t)).map(|t| t.id.clone()).collect()).unwrap_or_default();
    if let Some(task) = one
        && chosen.is_empty()
    {
        return Err(Fail::status(StatusCode::NOT_FOUND, format!("Task '{task}' does not exist")));
    }
    if scale {
        let mut def = app.def.clone();
        let left = instances(&def).saturating_sub(chosen.len() as u64);
        def.insert("instances".into(), json!(left));
        let change = Change {
            puts: vec![Put { id: id.to_string(), def, restart: false, bump: true }],
            locked: vec![id.to_string()],
            kills: chosen.iter().map(|t| (id.to_string(), t.clone())).collect(),
            group_id: parent(id).to_string(),
            ..Default::default()
        };
        let plan = deployments::plan(&data, &change)?;
        let (deployment, version) = deployments::commit(&mut data, &ctx, change, plan, force)?;
        drop(data);
        api.changed();
        return Ok(deployed(StatusCode::OK, &deployment, &version, None));
    }
    let app = app.clone();
    let killed = kill_where(&mut data, &ctx, id, |t| chosen.contains(&t.id), ctx.now);
    launch(&mut data, id, killed.len(), None, ctx.now, Some(ctx.now + ctx.rollout));
    drop(data);
    api.changed();
    let now = ctx.now;
    Ok(match one {
        Some(_) => reply(StatusCode::OK, &json!({ "task": task_json(&app, &killed[0], now) })),
        None => {
            let list: Vec<Value> = killed.iter().map(|t| task_json(&app, t, now)).collect();
            reply(StatusCode::OK, &json!({ "tasks": list }))
        }
    })
}

/// `DELETE /v2/apps/{id}/tasks[?host=&scale=]`.
pub fn kill_app_tasks(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let host = req.param("host").map(str::to_string);
    kill(api, req, &id, |_| host.as_deref().is_none_or(|h| h == HOST), None)
}

/// `DELETE /v2/apps/{id}/tasks/{taskId}[?scale=]`.
pub fn kill_one(api: &Api, req: &Req, raw: &str, task: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    kill(api, req, &id, |t| t.id == task, Some(task))
}

/// `POST /v2/tasks/delete[?scale=]` with `{"ids": […]}`: ids it does not know are ignored;
/// 200 with no body.
pub fn delete_many(api: &Api, req: &Req) -> Result<Response, Fail> {
    let (scale, force) = scale_and_wipe(req)?;
    let body = req.object()?;
    let ids: Vec<String> = match body.get("ids") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => return Err(Fail::invalid("/ids", "error.path.missing")),
    };
    let mut by_app: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut data = api.lock();
    let ctx = api.ctx();
    for t in ids {
        if let Some(app) = app_of(&t)
            && data.tasks.get(&app).is_some_and(|l| l.iter().any(|x| x.id == t))
        {
            by_app.entry(app).or_default().push(t);
        }
    }
    if scale && !by_app.is_empty() {
        let mut change = Change { group_id: "/".into(), ..Default::default() };
        for (app, tasks) in &by_app {
            let Some(a) = data.apps.get(app) else { continue };
            let mut def = a.def.clone();
            def.insert("instances".into(), json!(instances(&def).saturating_sub(tasks.len() as u64)));
            change.puts.push(Put { id: app.clone(), def, restart: false, bump: true });
            change.locked.push(app.clone());
            change.kills.extend(tasks.iter().map(|t| (app.clone(), t.clone())));
        }
        let plan = deployments::plan(&data, &change)?;
        deployments::commit(&mut data, &ctx, change, plan, force)?;
    } else {
        for (app, tasks) in &by_app {
            let killed = kill_where(&mut data, &ctx, app, |t| tasks.contains(&t.id), ctx.now);
            launch(&mut data, app, killed.len(), None, ctx.now, Some(ctx.now + ctx.rollout));
        }
    }
    drop(data);
    api.changed();
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json"), (header::CONTENT_LENGTH, "0")]).into_response())
}
