//! `/v2/groups` (seed 004 L583-1111): show, create, update to exactly a subtree, scale, roll
//! back, dry-run, delete.

use super::api::Api;
use super::deploy::{self, Change, Put, steps_json};
use super::http::{Fail, Req, deployed, not_allowed, raw_json, reply};
use super::ids::{ancestors, parent, resolve, unix_ms, valid_segment};
use super::model::{Data, Group, instances};
use super::validate::normalize;
use super::views::{DeploymentIndex, Embed, deployment_index, write_view};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// The ids of the apps at or below `gid`, in order.
fn apps_under<'a>(data: &'a Data, gid: &str) -> Vec<&'a String> {
    if gid == "/" {
        return data.apps.keys().collect();
    }
    let prefix = format!("{gid}/");
    data.apps.range(prefix.clone()..).map(|(k, _)| k).take_while(|k| k.starts_with(&prefix)).collect()
}

fn groups_under<'a>(data: &'a Data, gid: &str) -> Vec<&'a String> {
    let prefix = if gid == "/" { "/".to_string() } else { format!("{gid}/") };
    data.groups
        .range(prefix.clone()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(&prefix))
        .filter(|k| *k != "/")
        .collect()
}

/// What `GET` embeds.
#[derive(Clone, Copy)]
struct GroupEmbed {
    groups: bool,
    apps: bool,
    app: Embed,
}

impl GroupEmbed {
    fn parse(req: &Req) -> GroupEmbed {
        let values = req.params("embed");
        if values.is_empty() {
            return GroupEmbed { groups: true, apps: true, app: Embed::default() };
        }
        GroupEmbed {
            groups: values.contains(&"group.groups"),
            apps: values.iter().any(|v| v.starts_with("group.apps")),
            app: Embed::parse(&values, &["group.apps."]),
        }
    }
}

/// Write a group and, as `embed` says, its apps and groups (the seed's keys, in its order).
fn write_group(
    out: &mut String,
    data: &Data,
    index: &DeploymentIndex,
    gid: &str,
    g: &Group,
    embed: GroupEmbed,
    now: u64,
) {
    out.push('{');
    if embed.apps {
        out.push_str("\"apps\":[");
        let mut first = true;
        for a in &g.apps {
            if let Some(x) = data.apps.get(a) {
                if !first {
                    out.push(',');
                }
                first = false;
                write_view(out, data, index, a, x, embed.app, now);
            }
        }
        out.push_str("],");
    }
    out.push_str("\"dependencies\":");
    out.push_str(&json(&g.dependencies));
    if embed.groups {
        out.push_str(",\"groups\":[");
        let mut first = true;
        for c in &g.groups {
            if let Some(x) = data.groups.get(c) {
                if !first {
                    out.push(',');
                }
                first = false;
                write_group(out, data, index, c, x, embed, now);
            }
        }
        out.push(']');
    }
    out.push_str(",\"id\":");
    out.push_str(&json(gid));
    out.push_str(",\"version\":");
    out.push_str(&json(&g.version));
    out.push('}');
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn group_id(raw: &str) -> Result<String, Fail> {
    resolve("/", raw).map_err(|e| Fail::invalid("/id", e))
}

/// `/v2/groups/{id}` and what is below it.
pub fn sub(api: &Api, req: &Req, rest: &str) -> Result<Response, Fail> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let head = |k: usize| segs[..k].join("/");
    let last = segs[n - 1];
    // `…/versions/<timestamp>`: a timestamp is no id segment, so there is no ambiguity.
    if n >= 2 && segs[n - 2] == "versions" && !valid_segment(last) {
        return match req.method {
            Method::PUT => rollback(api, req, &head(n - 2), last),
            _ => Err(not_allowed()),
        };
    }
    if last == "versions" && req.method == Method::GET {
        let gid = group_id(rest)?;
        if !api.lock().groups.contains_key(&gid) {
            return versions(api, &head(n - 1));
        }
    }
    match req.method {
        Method::GET => get(api, req, rest),
        Method::PUT => update(api, req, rest),
        Method::DELETE => delete(api, req, rest),
        Method::POST => create_in(api, req, rest),
        _ => Err(not_allowed()),
    }
}

/// `GET /v2/groups[/{id}]`.
pub fn get(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let gid = group_id(raw)?;
    let embed = GroupEmbed::parse(req);
    let data = api.lock();
    let g = data.groups.get(&gid).ok_or_else(|| Fail::no_group(&gid))?;
    let index = if embed.app.deployments { deployment_index(&data) } else { Default::default() };
    let mut out = String::with_capacity(64 * 1024);
    write_group(&mut out, &data, &index, &gid, g, embed, unix_ms());
    Ok(raw_json(StatusCode::OK, out.into_bytes()))
}

/// `GET /v2/groups/{id}/versions`: a bare array, newest first.
fn versions(api: &Api, raw: &str) -> Result<Response, Fail> {
    let gid = group_id(raw)?;
    let data = api.lock();
    if !data.groups.contains_key(&gid) {
        return Err(Fail::no_group(&gid));
    }
    let list: Vec<&str> =
        data.group_history.get(&gid).map(|h| h.iter().rev().map(|r| r.version.as_str()).collect()).unwrap_or_default();
    Ok(reply(StatusCode::OK, &json!(list)))
}

/// A group tree as a request (or a rollback) describes it, ids absolute, apps normalised.
pub struct Spec {
    pub id: String,
    pub dependencies: Vec<String>,
    pub apps: Vec<(String, Map<String, Value>)>,
    pub groups: Vec<Spec>,
    /// Which of `dependencies`, `apps` and `groups` the body had: an absent one keeps what the
    /// group has (Marathon's group update; the seed's scale body, L953, has only `scaleBy`).
    pub given: Given,
}

#[derive(Clone, Copy, Debug)]
pub struct Given {
    pub dependencies: bool,
    pub apps: bool,
    pub groups: bool,
}

impl Given {
    const ALL: Given = Given { dependencies: true, apps: true, groups: true };
}

const GROUP_KEYS: &[&str] = &["id", "apps", "groups", "dependencies", "version", "scaleBy", "pods"];

/// Read a group body for `gid`; problems go to `errors` with paths under `at`.
fn parse_spec(data: &Data, body: &Map<String, Value>, gid: &str, at: &str, errors: &mut Vec<(String, String)>) -> Spec {
    let given = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    let mut spec = Spec {
        id: gid.to_string(),
        dependencies: Vec::new(),
        apps: Vec::new(),
        groups: Vec::new(),
        given: Given { dependencies: given("dependencies"), apps: given("apps"), groups: given("groups") },
    };
    for k in body.keys() {
        if !GROUP_KEYS.contains(&k.as_str()) {
            errors.push((format!("{at}/{k}"), format!("unknown property '{k}'")));
        }
    }
    if let Some(p) = body.get("pods").filter(|p| !p.is_null())
        && p.as_array().is_none_or(|a| !a.is_empty())
    {
        errors.push((format!("{at}/pods"), "pods are not supported by this Marathon".to_string()));
    }
    match body.get("dependencies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, d) in a.iter().enumerate() {
                match d.as_str().map(|s| resolve(gid, s)) {
                    Some(Ok(p)) => spec.dependencies.push(p),
                    Some(Err(e)) => errors.push((format!("{at}/dependencies({i})"), e)),
                    None => errors.push((format!("{at}/dependencies({i})"), "error.expected.jsstring".into())),
                }
            }
        }
        Some(_) => errors.push((format!("{at}/dependencies"), "error.expected.jsarray".into())),
    }
    let mut seen: HashSet<String> = HashSet::new();
    let child = |v: &Value, what: &str, i: usize, errors: &mut Vec<(String, String)>| -> Option<(String, String)> {
        let here = format!("{at}/{what}({i})");
        let Some(raw) = v.get("id").and_then(Value::as_str) else {
            errors.push((format!("{here}/id"), "error.path.missing".into()));
            return None;
        };
        match resolve(gid, raw) {
            Ok(id) if parent(&id) == gid && id != "/" => Some((id, here)),
            Ok(id) => {
                errors.push((format!("{here}/id"), format!("{id} is not a direct child of the group {gid}")));
                None
            }
            Err(e) => {
                errors.push((format!("{here}/id"), e));
                None
            }
        }
    };
    for (what, list) in [("apps", body.get("apps")), ("groups", body.get("groups"))] {
        match list {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(obj) = item.as_object() else {
                        errors.push((format!("{at}/{what}({i})"), "error.expected.jsobject".into()));
                        continue;
                    };
                    let Some((id, here)) = child(item, what, i, errors) else { continue };
                    if !seen.insert(id.clone()) {
                        errors.push((format!("{here}/id"), format!("{id} is given more than once")));
                        continue;
                    }
                    if what == "apps" {
                        let base = data.apps.get(&id).map(|a| &a.def);
                        match normalize(obj, &id, base, false, &here) {
                            Ok(def) => spec.apps.push((id, def)),
                            Err(e) => errors.extend(e),
                        }
                    } else {
                        let sub = parse_spec(data, obj, &id, &here, errors);
                        spec.groups.push(sub);
                    }
                }
            }
            Some(_) => errors.push((format!("{at}/{what}"), "error.expected.jsarray".into())),
        }
    }
    spec
}

/// The change that makes `gid` what `spec` says: the apps and subgroups of a group whose body
/// lists them become exactly those; a group whose body does not list them keeps its own.
fn spec_change(data: &Data, spec: Spec) -> Change {
    let gid = spec.id.clone();
    let mut change = Change { group_id: gid.clone(), ..Default::default() };
    let mut stack = vec![spec];
    let direct = |id: &str, under: &str| parent(id) == under && id != under;
    while let Some(s) = stack.pop() {
        let listed_apps: HashSet<&str> = s.apps.iter().map(|(id, _)| id.as_str()).collect();
        let listed_groups: HashSet<&str> = s.groups.iter().map(|g| g.id.as_str()).collect();
        if s.given.apps {
            change.removes.extend(
                apps_under(data, &s.id)
                    .into_iter()
                    .filter(|a| direct(a, &s.id) && !listed_apps.contains(a.as_str()))
                    .cloned(),
            );
        }
        if s.given.groups {
            for g in groups_under(data, &s.id)
                .into_iter()
                .filter(|g| direct(g, &s.id) && !listed_groups.contains(g.as_str()))
            {
                change.removes.extend(apps_under(data, g).into_iter().cloned());
                change.groups_remove.extend(groups_under(data, g).into_iter().cloned());
                change.groups_remove.push(g.clone());
            }
        }
        change.groups_put.push((s.id.clone(), s.given.dependencies.then_some(s.dependencies)));
        for (id, def) in s.apps {
            change.puts.push(Put { id, def, restart: false, bump: false });
        }
        stack.extend(s.groups.into_iter().rev());
    }
    // Parents before children, so a group is created before what it holds.
    change.groups_put.sort_by_key(|(g, _)| g.matches('/').count());
    change
}

/// The spec of `gid` as it was at `version`.
fn spec_at(data: &Data, gid: &str, version: &str) -> Result<Spec, Fail> {
    let rec =
        data.group_history.get(gid).and_then(|h| h.iter().rev().find(|r| r.version == version)).ok_or_else(|| {
            Fail::status(StatusCode::NOT_FOUND, format!("Group '{gid}' does not exist in version {version}"))
        })?;
    let mut spec = Spec {
        id: gid.to_string(),
        dependencies: rec.dependencies.clone(),
        apps: Vec::new(),
        groups: Vec::new(),
        given: Given::ALL,
    };
    for (app, v) in &rec.apps {
        let def =
            data.app_history.get(app).and_then(|h| h.iter().rev().find(|x| x.version == *v)).ok_or_else(|| {
                Fail::status(StatusCode::NOT_FOUND, format!("Version {v} of app {app} is no longer kept"))
            })?;
        spec.apps.push((app.clone(), def.def.clone()));
    }
    for (g, v) in &rec.groups {
        spec.groups.push(spec_at(data, g, v)?);
    }
    Ok(spec)
}

/// Neither `gid` nor a group above it may be an app.
fn check_group_placement(data: &Data, gid: &str) -> Result<(), Fail> {
    for g in std::iter::once(gid).chain(ancestors(gid)) {
        if data.apps.contains_key(g) {
            return Err(Fail::status(StatusCode::CONFLICT, format!("An app with id [{g}] already exists.")));
        }
    }
    Ok(())
}

/// `POST /v2/groups`.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    create_in(api, req, "")
}

/// `POST /v2/groups[/{base}]`: the body's id is relative to `base`.
fn create_in(api: &Api, req: &Req, base: &str) -> Result<Response, Fail> {
    let base = group_id(base)?;
    let body = req.object()?;
    let Some(raw) = body.get("id").and_then(Value::as_str) else {
        return Err(Fail::invalid("/id", "error.path.missing"));
    };
    let gid = resolve(&base, raw).map_err(|e| Fail::invalid("/id", e))?;
    let mut data = api.lock();
    if data.groups.contains_key(&gid) {
        return Err(Fail::status(
            StatusCode::CONFLICT,
            format!("Group {gid} is already created. Use PUT to change this group."),
        ));
    }
    check_group_placement(&data, &gid)?;
    let mut errors = Vec::new();
    let spec = parse_spec(&data, &body, &gid, "", &mut errors);
    if !errors.is_empty() {
        return Err(Fail::Invalid(errors));
    }
    let change = spec_change(&data, spec);
    let ctx = api.ctx();
    let plan = deploy::plan(&data, &change)?;
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, false)?;
    drop(data);
    api.changed();
    let location = format!("{}{}/v2/groups{gid}", api.shared.base_url, req.prefix);
    let mut r = reply(StatusCode::CREATED, &json!({"version": version, "deploymentId": deployment}));
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    if let Ok(v) = deployment.parse() {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    Ok(r)
}

/// `PUT /v2/groups/{id}`: update to exactly the body, scale by `scaleBy`, roll back to
/// `version`, or (`dryRun=true`) answer the plan and change nothing.
pub fn update(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let gid = group_id(raw)?;
    let force = req.flag("force")?;
    let dry_run = req.flag("dryRun")?;
    let body = req.object()?;
    let scale_by = match body.get("scaleBy").filter(|v| !v.is_null()) {
        Some(v) => Some(v.clone()),
        None => req.param("scaleBy").map(|s| json!(s)),
    };
    let mut data = api.lock();
    check_group_placement(&data, &gid)?;
    let version = body.get("version").filter(|v| !v.is_null()).and_then(Value::as_str);
    let rollback = version.is_some() && ["apps", "groups", "dependencies"].iter().all(|k| body.get(*k).is_none());
    let change = if let Some(f) = scale_by {
        scale_change(&data, &gid, &f)?
    } else if rollback {
        spec_change(&data, spec_at(&data, &gid, version.unwrap_or_default())?)
    } else {
        let mut errors = Vec::new();
        let spec = parse_spec(&data, &body, &gid, "", &mut errors);
        if !errors.is_empty() {
            return Err(Fail::Invalid(errors));
        }
        spec_change(&data, spec)
    };
    let plan = deploy::plan(&data, &change)?;
    if dry_run {
        return Ok(reply(StatusCode::OK, &json!({ "steps": steps_json(&plan.steps, "type") })));
    }
    let ctx = api.ctx();
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// Every app below `gid` times `factor`, rounded up.
fn scale_change(data: &Data, gid: &str, factor: &Value) -> Result<Change, Fail> {
    let f = match factor {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite() && *f >= 0.0)
    .ok_or_else(|| Fail::invalid("/scaleBy", "must be a number greater than or equal to 0"))?;
    if !data.groups.contains_key(gid) {
        return Err(Fail::no_group(gid));
    }
    let mut change = Change { group_id: gid.to_string(), ..Default::default() };
    change.groups_put.push((gid.to_string(), None));
    for id in apps_under(data, gid) {
        let app = &data.apps[id];
        let n = instances(&app.def);
        let scaled = (n as f64 * f).ceil() as u64;
        if scaled != n {
            let mut def = app.def.clone();
            def.insert("instances".into(), json!(scaled));
            change.puts.push(Put { id: id.clone(), def, restart: false, bump: true });
        }
    }
    Ok(change)
}

/// `PUT /v2/groups/{id}/versions/{version}` (marathon-python's `rollback_group`).
fn rollback(api: &Api, req: &Req, raw: &str, version: &str) -> Result<Response, Fail> {
    let gid = group_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    let change = spec_change(&data, spec_at(&data, &gid, version)?);
    let plan = deploy::plan(&data, &change)?;
    let ctx = api.ctx();
    let (deployment, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// `DELETE /v2/groups/{id}`: the group, its groups and all their apps, in one deployment whose
/// stops take the rollout.
pub fn delete(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let gid = group_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    let Some(g) = data.groups.get(&gid) else { return Err(Fail::no_group(&gid)) };
    let groups_remove = if gid == "/" { g.groups.iter().cloned().collect() } else { vec![gid.clone()] };
    let removes: Vec<String> = apps_under(&data, &gid).into_iter().cloned().collect();
    let change = Change {
        locked: removes.clone(),
        removes,
        groups_remove,
        groups_put: if gid == "/" { vec![("/".into(), None)] } else { Vec::new() },
        group_id: gid.clone(),
        ..Default::default()
    };
    let plan = deploy::plan(&data, &change)?;
    let ctx = api.ctx();
    let (_, version) = deploy::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    // As the seed answers it (L1106-1110): the version alone; its end is signalled by
    // `group_change_success` (or `_failed`) for that version.
    Ok(reply(StatusCode::OK, &json!({ "version": version })))
}
