//! `/v2/apps/{id}/tasks` and `/v2/tasks` (seed 004 L374-581, L1113-1301): list (JSON or
//! text), kill with or without scaling.

use super::api::Api;
use super::deploy::{self, Change, Put};
use super::http::{Fail, Req, deployed, path_id, reply};
use super::ids::{parent, unix_ms};
use super::launch::{kill_where, launch};
use super::model::{App, HOST, Task, instances, safe_id, service_ports};
use super::views::task_json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The app a task id belongs to (`a_b.<uuid>` → `/a/b`; `_` cannot be in an id).
fn app_of(task: &str) -> Option<String> {
    let (prefix, _) = task.rsplit_once('.')?;
    Some(format!("/{}", prefix.replace('_', "/")))
}

/// The text form: per app and service port, the running tasks' `host:port`.
fn text_lines(out: &mut String, app: &App, tasks: &[Task], now: u64) {
    let id = safe_id(app.def["id"].as_str().unwrap_or_default());
    let running: Vec<&Task> = tasks.iter().filter(|t| t.running(now)).collect();
    let ports = service_ports(&app.def);
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
        let plan = deploy::plan(&data, &change)?;
        let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
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
        let plan = deploy::plan(&data, &change)?;
        deploy::commit(&mut data, &ctx, change, plan, force)?;
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
