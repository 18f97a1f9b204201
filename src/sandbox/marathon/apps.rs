//! `/v2/apps` (seed 004 L56-581; create, list and show from the upstream fragments the seed
//! includes): list with label selectors, show, create, update one or many, restart, delete,
//! versions; `/v2/apps/{id}/tasks` is handed to `tasks`.

use super::api::Api;
use super::deploy::{self, Change, Put};
use super::http::{Fail, Req, deployed, not_allowed, path_id, raw_json, reply};
use super::ids::{ancestors, is_under, parent, resolve, unix_ms};
use super::model::{App, Data, definition, versioned};
use super::tasks;
use super::validate::normalize;
use super::views::{DeploymentIndex, Embed, deployment_index, write_view};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// An app may not be where a group is, nor below another app.
pub fn check_placement(data: &Data, id: &str) -> Result<(), Fail> {
    if data.groups.contains_key(id) {
        return Err(Fail::status(StatusCode::CONFLICT, format!("A group with id [{id}] already exists.")));
    }
    for a in ancestors(id) {
        if data.apps.contains_key(a) {
            return Err(Fail::status(
                StatusCode::CONFLICT,
                format!("An app with id [{a}] already exists, so it cannot contain [{id}]."),
            ));
        }
    }
    Ok(())
}

/// `/v2/apps/{id}` and what is below it.
pub fn sub(api: &Api, req: &Req, rest: &str) -> Result<Response, Fail> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let head = |k: usize| segs[..k].join("/");
    let last = segs[n - 1];
    let m = &req.method;
    if n >= 2 && last == "restart" {
        return if *m == Method::POST { restart(api, req, &head(n - 1)) } else { Err(not_allowed()) };
    }
    if n >= 2 && last == "tasks" {
        return match *m {
            Method::GET => tasks::app_tasks(api, req, &head(n - 1)),
            Method::DELETE => tasks::kill_app_tasks(api, req, &head(n - 1)),
            _ => Err(not_allowed()),
        };
    }
    if n >= 3 && segs[n - 2] == "tasks" {
        return if *m == Method::DELETE {
            tasks::kill_one(api, req, &head(n - 2), last)
        } else {
            Err(not_allowed())
        };
    }
    if n >= 2 && last == "versions" {
        return if *m == Method::GET { versions(api, &head(n - 1)) } else { Err(not_allowed()) };
    }
    if n >= 3 && segs[n - 2] == "versions" {
        return if *m == Method::GET { version(api, &head(n - 2), last) } else { Err(not_allowed()) };
    }
    if last == "*" {
        return if *m == Method::GET { group_apps(api, &head(n - 1)) } else { Err(not_allowed()) };
    }
    match *m {
        Method::GET => show(api, req, rest),
        Method::PUT => put_one(api, req, rest),
        Method::DELETE => delete(api, req, rest),
        _ => Err(not_allowed()),
    }
}

/// Label selectors: `key`, `key==value`, `key!=value`, `key in (a, b)`, `key notin (a, b)`,
/// comma-separated, all of which must hold.
fn label_matches(labels: &Map<String, Value>, selector: &str) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in selector.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).all(|t| {
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        let set = |s: &str| -> Vec<String> {
            s.trim().trim_start_matches('(').trim_end_matches(')').split(',').map(|x| x.trim().to_string()).collect()
        };
        if let Some((k, v)) = t.split_once("!=") {
            get(k) != Some(v.trim())
        } else if let Some((k, v)) = t.split_once("==") {
            get(k) == Some(v.trim())
        } else if let Some((k, v)) = t.split_once(" notin ") {
            get(k).is_none_or(|x| !set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = t.split_once(" in ") {
            get(k).is_some_and(|x| set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = t.split_once('=') {
            get(k) == Some(v.trim())
        } else {
            get(t).is_some()
        }
    })
}

/// `GET /v2/apps`: always with counts and deployments.
pub fn list(api: &Api, req: &Req) -> Result<Response, Fail> {
    let mut embed = Embed::parse(&req.params("embed"), &["app.", "apps."]);
    embed.counts = true;
    embed.deployments = true;
    let id_filter = req.param("id");
    let cmd_filter = req.param("cmd");
    let label = req.param("label");
    let data = api.lock();
    let now = unix_ms();
    let index = deployment_index(&data);
    let apps = data
        .apps
        .iter()
        .filter(|(id, _)| id_filter.is_none_or(|f| id.contains(f)))
        .filter(|(_, a)| cmd_filter.is_none_or(|f| a.def["cmd"].as_str().is_some_and(|c| c.contains(f))))
        .filter(|(_, a)| label.is_none_or(|l| a.def["labels"].as_object().is_some_and(|m| label_matches(m, l))));
    Ok(app_list(&data, &index, apps, embed, now))
}

/// `{"apps": […]}`.
fn app_list<'a>(
    data: &Data,
    index: &DeploymentIndex,
    apps: impl Iterator<Item = (&'a String, &'a App)>,
    embed: Embed,
    now: u64,
) -> Response {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("{\"apps\":[");
    for (i, (id, a)) in apps.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_view(&mut out, data, index, id, a, embed, now);
    }
    out.push_str("]}");
    raw_json(StatusCode::OK, out.into_bytes())
}

/// `GET /v2/apps/{group}/*`: the apps below a group.
fn group_apps(api: &Api, raw: &str) -> Result<Response, Fail> {
    let gid = resolve("/", raw).map_err(|e| Fail::invalid("/id", e))?;
    let data = api.lock();
    let now = unix_ms();
    let embed = Embed { counts: true, deployments: true, ..Default::default() };
    let index = deployment_index(&data);
    Ok(app_list(&data, &index, data.apps.iter().filter(|(id, _)| is_under(id, &gid)), embed, now))
}

/// `GET /v2/apps/{id}`: always with counts, deployments and tasks.
fn show(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let mut embed = Embed::parse(&req.params("embed"), &["app.", "apps."]);
    embed.counts = true;
    embed.deployments = true;
    embed.tasks = true;
    let data = api.lock();
    let app = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?;
    let index = deployment_index(&data);
    let mut out = String::from("{\"app\":");
    write_view(&mut out, &data, &index, &id, app, embed, unix_ms());
    out.push('}');
    Ok(raw_json(StatusCode::OK, out.into_bytes()))
}

fn invalid(errors: Vec<(String, String)>) -> Fail {
    Fail::Invalid(errors)
}

/// `POST /v2/apps`: 201 with the app, its defaults and the deployment that starts it.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    let body = req.object()?;
    let raw = match body.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Fail::invalid("/id", "error.path.missing")),
    };
    let id = path_id(&raw)?;
    let mut data = api.lock();
    if data.apps.contains_key(&id) {
        return Err(Fail::Body(
            StatusCode::CONFLICT,
            json!({"id": raw, "message": format!("An app with id [{id}] already exists.")}),
        ));
    }
    check_placement(&data, &id)?;
    let def = normalize(&body, &id, None, false, "").map_err(invalid)?;
    let change = Change::app_write(&id, def);
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, _) = deploy::commit(&mut data, &ctx, change, plan, false)?;
    let app = &data.apps[&id];
    let mut body = definition(app);
    body.insert("deployments".into(), json!([{ "id": deployment }]));
    drop(data);
    api.changed();
    let mut r = reply(StatusCode::CREATED, &Value::Object(body));
    let location = format!("{}{}/v2/apps{id}", api.shared.base_url, req.prefix);
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = deployment.parse() {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    Ok(r)
}

/// `partialUpdate`, true unless said otherwise.
fn partial(req: &Req) -> Result<bool, Fail> {
    match req.param("partialUpdate") {
        None => Ok(true),
        Some(_) => req.flag("partialUpdate"),
    }
}

/// The definition an app had at `version` (its current incarnation only).
pub fn at_version<'a>(data: &'a Data, id: &str, version: &str) -> Option<&'a Map<String, Value>> {
    let app = data.apps.get(id)?;
    data.app_history.get(id)?.iter().rev().find(|v| v.version == version && v.version >= app.created).map(|v| &v.def)
}

/// The new definition a PUT asks for, or None for an unknown app that is to be created.
fn updated(
    data: &Data,
    id: &str,
    body: &Map<String, Value>,
    partial: bool,
    at: &str,
) -> Result<Map<String, Value>, Fail> {
    if let Some(v) = body.get("version").filter(|v| !v.is_null()) {
        let v = v.as_str().unwrap_or_default();
        if !data.apps.contains_key(id) {
            return Err(Fail::no_app(id));
        }
        return at_version(data, id, v)
            .cloned()
            .ok_or_else(|| Fail::status(StatusCode::NOT_FOUND, format!("Version '{v}' of app '{id}' does not exist")));
    }
    let existing = data.apps.get(id);
    if existing.is_none() {
        check_placement(data, id)?;
    }
    normalize(body, id, existing.map(|a| &a.def), partial && existing.is_some(), at).map_err(invalid)
}

/// `PUT /v2/apps/{id}`: update, create, or roll back.
fn put_one(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let partial = partial(req)?;
    let body = req.object()?;
    let mut data = api.lock();
    let created = !data.apps.contains_key(&id);
    let def = updated(&data, &id, &body, partial, "")?;
    let change = Change::app_write(&id, def);
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(if created {
        let location = format!("{}{}/v2/apps{id}", api.shared.base_url, req.prefix);
        deployed(StatusCode::CREATED, &deployment, &version, Some(location))
    } else {
        deployed(StatusCode::OK, &deployment, &version, None)
    })
}

/// `PUT /v2/apps`: many apps, created or updated, in one deployment.
pub fn put_many(api: &Api, req: &Req) -> Result<Response, Fail> {
    let force = req.flag("force")?;
    let partial = partial(req)?;
    let Value::Array(items) = req.json()? else {
        return Err(Fail::invalid("/", "error.expected.jsarray"));
    };
    let mut data = api.lock();
    let mut puts: Vec<Put> = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("/({i})");
        let Some(body) = item.as_object() else {
            errors.push((at, "error.expected.jsobject".to_string()));
            continue;
        };
        let id = match body.get("id").and_then(Value::as_str).map(|s| resolve("/", s)) {
            Some(Ok(id)) if id != "/" => id,
            Some(Err(e)) => {
                errors.push((format!("{at}/id"), e));
                continue;
            }
            _ => {
                errors.push((format!("{at}/id"), "error.path.missing".to_string()));
                continue;
            }
        };
        if puts.iter().any(|p| p.id == id) {
            errors.push((format!("{at}/id"), format!("app {id} is given more than once")));
            continue;
        }
        match updated(&data, &id, body, partial, &at) {
            Ok(def) => puts.push(Put { id, def, restart: false, bump: true }),
            Err(Fail::Invalid(e)) => errors.extend(e),
            Err(other) => return Err(other),
        }
    }
    if !errors.is_empty() {
        return Err(Fail::Invalid(errors));
    }
    let locked = puts.iter().map(|p| p.id.clone()).collect();
    let change = Change { puts, locked, group_id: "/".into(), post: Some("/v2/apps".into()), ..Default::default() };
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// `DELETE /v2/apps/{id}`.
fn delete(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    if !data.apps.contains_key(&id) {
        return Err(Fail::no_app(&id));
    }
    let change = Change {
        removes: vec![id.clone()],
        locked: vec![id.clone()],
        group_id: parent(&id).to_string(),
        ..Default::default()
    };
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    let mut r = deployed(StatusCode::OK, &deployment, &version, None);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate".parse().unwrap());
    h.insert(header::EXPIRES, "0".parse().unwrap());
    h.insert(header::PRAGMA, "no-cache".parse().unwrap());
    Ok(r)
}

/// `POST /v2/apps/{id}/restart`: a new version of the same definition, every task replaced.
fn restart(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    let def = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?.def.clone();
    let change = Change {
        puts: vec![Put { id: id.clone(), def, restart: true, bump: true }],
        locked: vec![id.clone()],
        group_id: parent(&id).to_string(),
        ..Default::default()
    };
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// `GET /v2/apps/{id}/versions`, newest first.
fn versions(api: &Api, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let data = api.lock();
    let app = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?;
    let list: Vec<&str> = data
        .app_history
        .get(&id)
        .map(|h| h.iter().rev().filter(|v| v.version >= app.created).map(|v| v.version.as_str()).collect())
        .unwrap_or_default();
    Ok(reply(StatusCode::OK, &json!({ "versions": list })))
}

/// `GET /v2/apps/{id}/versions/{version}`: the bare definition at that version.
fn version(api: &Api, raw: &str, version: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let data = api.lock();
    if !data.apps.contains_key(&id) {
        return Err(Fail::no_app(&id));
    }
    let def = at_version(&data, &id, version).ok_or_else(|| {
        Fail::status(StatusCode::NOT_FOUND, format!("Version '{version}' of app '{id}' does not exist"))
    })?;
    let body = serde_json::to_vec(&versioned(def, version)).unwrap_or_default();
    Ok(raw_json(StatusCode::OK, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_select() {
        let labels = json!({"env": "prod", "team": "a"});
        let l = labels.as_object().unwrap();
        assert!(label_matches(l, "env==prod"));
        assert!(label_matches(l, "env in (dev, prod),team"));
        assert!(!label_matches(l, "env!=prod"));
        assert!(label_matches(l, "owner notin (x)"));
        assert!(!label_matches(l, "owner"));
    }
}
