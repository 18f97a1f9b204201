//! Apps: `GET|POST /1.0/apps`, `GET|PUT|DELETE /1.0/apps/{app}` (seed L436-642).

use super::catalogue::{self, Override};
use super::model::App;
use super::metadata::Metadata;
use super::input::{Input, Node, process_tags};
use super::streams;
use super::units;
use super::{Api, Data, Fail, Req, need, reply, unix_ms};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `^[a-z][a-z0-9-]{0,39}$`: app and job names.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A platform name as tsuru checks it: `python` or `python:3`; `(name, version)`.
pub fn platform(value: &str) -> Result<(String, String), Fail> {
    let (name, version) = value.split_once(':').unwrap_or((value, "latest"));
    if !catalogue::PLATFORMS.contains(&name) {
        return Err(Fail::internal("Platform doesn't exist."));
    }
    Ok((name.to_string(), if version == "latest" { String::new() } else { version.to_string() }))
}

/// `planoverride` of an update.
fn parse_override(n: Node) -> Result<Option<Override>, Fail> {
    if !n.present() {
        return Ok(None);
    }
    Ok(Some(Override {
        cpumilli: n.get("cpumilli").int()?.unwrap_or(0),
        memory: n.get("memory").int()?.unwrap_or(0),
        cpu_burst: n.get("cpuBurst").float()?.unwrap_or(0.0),
    }))
}

/// `routeropts`: an object of strings.
fn router_opts(n: Node) -> Result<BTreeMap<String, String>, Fail> {
    let mut out = BTreeMap::new();
    for (k, v) in n.object()?.unwrap_or_default() {
        match v {
            Value::String(s) => {
                out.insert(k, s);
            }
            _ => return Err(Fail::bad(format!("unable to parse as json: routeropts.{k} is not a string"))),
        }
    }
    Ok(out)
}

/// `POST /apps`: 201 `{"status": "success", "ip": ...}`.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    let input = Input::parse(req)?;
    let n = input.node();
    let name = n.get("name").string()?;
    let mut tags = n.get("tags").strings()?.unwrap_or_default();
    tags.extend(input.values("tag"));
    let team_owner = n.get("teamOwner").string()?;
    let platform_in = n.get("platform").string()?;
    let plan_in = n.get("plan").string()?;
    let pool_in = n.get("pool").string()?;
    let router_in = n.get("router").string()?;
    let metadata = Metadata::parse(n.get("metadata"))?;
    let mut app = App {
        name: name.clone(),
        description: n.get("description").string()?,
        router_opts: router_opts(n.get("routeropts"))?,
        team_owner: if team_owner.is_empty() { api.team().to_string() } else { team_owner },
        owner: api.shared.principal.clone(),
        tags: process_tags(tags),
        metadata: Metadata {
            labels: metadata.labels.iter().filter(|i| !i.delete).cloned().collect(),
            annotations: metadata.annotations.iter().filter(|i| !i.delete).cloned().collect(),
        },
        ..App::default()
    };
    app.teams = vec![app.team_owner.clone()];
    if !platform_in.is_empty() {
        (app.platform, app.platform_version) = platform(&platform_in)?;
    }
    let mut data = api.lock();
    if data.apps.contains_key(&name) {
        return Err(Fail::new(
            StatusCode::CONFLICT,
            format!("tsuru failed to create the app {name:?}: there is already an app with this name"),
        ));
    }
    app.pool = if pool_in.is_empty() { catalogue::DEFAULT_POOL.to_string() } else { pool_in };
    if !catalogue::POOLS.contains(&app.pool.as_str()) {
        return Err(Fail::internal("Pool does not exist."));
    }
    app.plan = if plan_in.is_empty() { catalogue::default_plan().name.to_string() } else { plan_in };
    if catalogue::plan(&app.plan).is_none() {
        return Err(Fail::internal("plan not found"));
    }
    app.router = if router_in.is_empty() { catalogue::DEFAULT_ROUTER.to_string() } else { router_in };
    if !catalogue::ROUTERS.contains(&app.router.as_str()) {
        return Err(Fail::internal(format!("router {:?} not found", app.router)));
    }
    if !valid_name(&name) {
        return Err(Fail::bad(
            "Invalid app name, your app should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.",
        ));
    }
    app.metadata.validate()?;
    let ip = app.address();
    data.apps.insert(name, app);
    api.changed();
    Ok(reply(StatusCode::CREATED, &json!({"status": "success", "ip": ip})))
}

/// `PUT /apps/{app}`: a partial update, streamed.
pub fn update(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    need(api, &name)?;
    let input = Input::parse(req)?;
    let n = input.node();
    let description = n.get("description").string()?;
    let plan_in = n.get("plan").string()?;
    let team_owner = n.get("teamOwner").string()?;
    let pool_in = n.get("pool").string()?;
    let platform_in = input.value("platform");
    let platform_in = if platform_in.is_empty() { n.get("platform").string()? } else { platform_in };
    let image_reset = n.get("imageReset").bool()?.unwrap_or(false);
    let mut tags = n.get("tags").strings()?;
    let compat = input.values("tag");
    if !compat.is_empty() {
        tags.get_or_insert_with(Vec::new).extend(compat);
    }
    let over = parse_override(n.get("planoverride"))?;
    let metadata = Metadata::parse(n.get("metadata"))?;
    let router_given = !n.get("router").string()?.is_empty() || !router_opts(n.get("routeropts"))?.is_empty();
    let no_restart = input.flag("noRestart");
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        if router_given {
            return Err(Fail::bad(
                "updating router was deprecated, please add the wanted router and remove the old one",
            ));
        }
        if !pool_in.is_empty() && pool_in != app.pool {
            return Err(Fail::bad(
                "pool updates are no longer supported, create a new app in the desired pool instead",
            ));
        }
        let wanted = !description.is_empty()
            || tags.as_ref().is_some_and(|t| !t.is_empty())
            || !plan_in.is_empty()
            || over.as_ref().is_some_and(|o| *o != Override::default())
            || !team_owner.is_empty()
            || !platform_in.is_empty()
            || image_reset
            || !metadata.is_empty();
        if !wanted {
            return Err(Fail::bad(
                "Neither the description, tags, plan, pool, team owner or platform were set. You must define at least one.",
            ));
        }
        let new_platform = if platform_in.is_empty() { None } else { Some(platform(&platform_in)?) };
        if !plan_in.is_empty() && catalogue::plan(&plan_in).is_none() {
            return Err(Fail::bad("plan not found"));
        }
        metadata.validate()?;
        if !description.is_empty() {
            app.description = description;
        }
        let mut restart = false;
        if !plan_in.is_empty() && plan_in != app.plan {
            app.plan = plan_in;
            restart = true;
        }
        if let Some(o) = over {
            // tsuru's `MergeOverride`: a value replaces the override, 0 removes it.
            if o != app.plan_override {
                restart = true;
            }
            app.plan_override = o;
        }
        if !team_owner.is_empty() {
            if !app.teams.contains(&team_owner) {
                app.teams.push(team_owner.clone());
            }
            app.team_owner = team_owner;
        }
        if let Some(t) = tags {
            app.tags = process_tags(t);
        }
        let before = app.metadata.clone();
        app.metadata.merge(&metadata);
        restart |= app.metadata != before;
        if let Some((p, v)) = new_platform {
            app.platform = p;
            app.platform_version = v;
        }
        if restart && !no_restart {
            units::restart(app, None, stream, rollout);
        }
        Ok(())
    })
}

/// `DELETE /apps/{app}`: unbinds its instances, then removes it; streamed.
pub fn delete(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    need(api, &name)?;
    streams::run(api, req, move |data, stream| {
        if !data.apps.contains_key(&name) {
            return Err(Fail::no_app(&name));
        }
        stream.section(format!("Removing application {name:?}..."));
        for instance in data.instances.values_mut() {
            if instance.apps.contains(&name) {
                instance.apps.retain(|a| *a != name);
                stream.action(format!("Unbinding service instance {}/{}", instance.service, instance.name));
            }
        }
        data.apps.remove(&name);
        stream.action("Done removing application.");
        Ok(())
    })
}

/// `GET /apps/{app}`.
pub fn info(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let app = data.apps.get(req.param(0)).ok_or_else(|| Fail::no_app(req.param(0)))?;
    Ok(reply(StatusCode::OK, &info_json(&data, app, unix_ms())))
}

/// `GET /apps`: 204 when none matches.
pub fn list(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let now = unix_ms();
    let tags = req.queries("tag");
    let statuses = req.queries("status");
    let simplified = req.query_bool("simplified");
    let extended = req.query_bool("extended");
    let filter = |key: &str, value: &str| req.query(key).is_none_or(|want| want.is_empty() || want == value);
    let items = data
        .apps
        .values()
        .filter(|a| req.query("name").is_none_or(|n| a.name.contains(n)))
        .filter(|a| filter("platform", &a.platform) && filter("teamOwner", &a.team_owner))
        .filter(|a| filter("owner", &a.owner) && filter("pool", &a.pool))
        .filter(|a| tags.iter().all(|t| a.tags.iter().any(|x| x == t)))
        .filter(|a| statuses.is_empty() || a.units.iter().any(|u| statuses.contains(&u.status(now))))
        .map(|a| list_json(a, now, simplified, extended))
        .collect();
    Ok(super::list(items))
}

fn lock_json() -> Value {
    json!({"locked": false, "owner": "", "reason": "", "acquireDate": "0001-01-01T00:00:00Z"})
}

/// Binds of `app` (seed L581-583).
fn binds_json(data: &Data, app: &str) -> Vec<Value> {
    data.instances
        .values()
        .filter(|i| i.apps.iter().any(|a| a == app))
        .map(|i| json!({"service": i.service, "instance": i.name, "plan": i.plan}))
        .collect()
}

/// An item of `GET /apps` (seed L453-492; `extended` adds tsuru's three fields).
fn list_json(app: &App, now: u64, simplified: bool, extended: bool) -> Value {
    let units: Vec<Value> =
        if simplified { Vec::new() } else { app.units.iter().map(|u| u.to_json(app, now)).collect() };
    let mut v = json!({
        "name": app.name,
        "pool": app.pool,
        "teamOwner": app.team_owner,
        "plan": catalogue::plan_json(&app.plan, &app.plan_override),
        "units": units,
        "cname": app.cname,
        "ip": app.address(),
        "routers": [{"name": app.router, "opts": app.router_opts, "address": app.address(), "type": app.router,
                     "status": "ready", "status-detail": ""}],
        "lock": lock_json(),
        "tags": app.tags,
        "error": "",
    });
    if extended {
        v["platform"] = json!(app.platform_shown());
        v["description"] = json!(app.description);
        v["metadata"] = app.metadata.to_json();
    }
    v
}

/// `GET /apps/{app}` (seed L529-607).
pub fn info_json(data: &Data, app: &App, now: u64) -> Value {
    let mut processes: Vec<&str> = app.units.iter().map(|u| u.process.as_str()).collect();
    processes.dedup();
    processes.sort();
    processes.dedup();
    let internal: Vec<Value> = processes
        .iter()
        .map(|p| {
            json!({"Domain": format!("{}-{p}.{}.svc.cluster.local", app.name, app.pool), "Port": 8888,
                   "Process": p, "Protocol": "TCP", "Version": "1"})
        })
        .collect();
    json!({
        "name": app.name,
        "description": app.description,
        "platform": app.platform_shown(),
        "pool": app.pool,
        "provisioner": "kubernetes",
        "cluster": "sandbox",
        "teamOwner": app.team_owner,
        "owner": app.owner,
        "teams": app.teams,
        "tags": app.tags,
        "ip": app.address(),
        "cname": app.cname,
        "deploys": 0,
        "error": "",
        "router": app.router,
        "routeropts": app.router_opts,
        "routers": [{"name": app.router, "opts": app.router_opts, "addresses": [app.address()]}],
        "plan": catalogue::plan_json(&app.plan, &app.plan_override),
        "lock": lock_json(),
        "quota": {"inuse": app.units.len(), "limit": -1},
        "metadata": app.metadata.to_json(),
        "serviceInstanceBinds": binds_json(data, &app.name),
        "volumeBinds": [],
        "autoscale": [],
        "autoscaleRecommendation": [],
        "internalAddresses": internal,
        "unitsMetrics": app.units.iter().map(|u| json!({"id": u.id, "cpu": "0m", "memory": "0Mi"})).collect::<Vec<_>>(),
        "units": app.units.iter().map(|u| u.to_json(app, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::metadata::Item;
    use super::*;

    #[test]
    fn names_tags_and_metadata_as_tsuru_checks_them() {
        assert!(valid_name("shop-web"));
        assert!(!valid_name("Shop"));
        assert!(!valid_name("1app"));
        assert!(!valid_name(&"a".repeat(41)));
        assert_eq!(process_tags(vec![" a ".into(), "".into(), "a".into(), "b".into()]), ["a", "b"]);
        let mut m = Metadata {
            labels: vec![Item { name: "capstan.io/owner".into(), value: "ci".into(), delete: false }],
            annotations: vec![],
        };
        assert!(m.validate().is_ok());
        m.labels.push(Item { name: "tsuru.io/x".into(), value: "y".into(), delete: false });
        assert!(m.validate().is_err());
        let bad_value = Metadata {
            labels: vec![Item { name: "owner".into(), value: "has space".into(), delete: false }],
            annotations: vec![],
        };
        assert!(bad_value.validate().is_err());
        let mut merged =
            Metadata { labels: vec![Item { name: "a".into(), value: "1".into(), delete: false }], annotations: vec![] };
        merged.merge(&Metadata {
            labels: vec![
                Item { name: "a".into(), value: String::new(), delete: true },
                Item { name: "b".into(), value: "2".into(), delete: false },
            ],
            annotations: vec![],
        });
        assert_eq!(merged.labels, vec![Item { name: "b".into(), value: "2".into(), delete: false }]);
    }
}
