//! Service instances: `GET /1.0/services/instances`, `POST /1.0/services/{service}/instances`,
//! `GET|PUT|DELETE /1.0/services/{service}/instances/{instance}` (seed L141-240). One stored
//! model, three spellings: the list's snake_case, the info's lower case, the update's `plan`
//! and `teamowner`.

use super::binds::key;
use super::input::{Input, process_tags};
use super::{Api, Data, Fail, Req, binds, catalogue, empty, reply, streams};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    pub id: u64,
    pub name: String,
    pub service: String,
    pub plan: String,
    pub team_owner: String,
    pub teams: Vec<String>,
    pub description: String,
    pub tags: Vec<String>,
    pub parameters: Map<String, Value>,
    pub pool: String,
    /// Bound apps and jobs, in the order they were bound.
    pub apps: Vec<String>,
    pub jobs: Vec<String>,
}

/// `^[A-Za-z][-a-zA-Z0-9_]+$`.
fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
}

/// The instance of the path, 404 for an unknown service or instance.
fn find<'d>(data: &'d Data, req: &Req) -> Result<&'d Instance, Fail> {
    if !data.services.contains_key(req.param(0)) {
        return Err(Fail::no_service());
    }
    data.instances.get(&key(req.param(0), req.param(1))).ok_or_else(Fail::no_instance)
}

/// An item of the list (seed L153-167).
fn list_item(i: &Instance) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "service_name": i.service,
        "plan_name": i.plan,
        "team_owner": i.team_owner,
        "teams": i.teams,
        "description": i.description,
        "tags": i.tags,
        "parameters": i.parameters,
        "pool": i.pool,
        "apps": i.apps,
        "jobs": i.jobs,
        "bound_units": [],
    })
}

/// One service's entry of `GET /services` and `GET /services/instances`: its instances that
/// `keep` keeps; `plans` and `service_instances` are `null` when there is none (a nil list in
/// Go); `with_plans` as `/services/instances` fills `plans` and `/services` does not.
pub fn service_entry(data: &Data, service: &str, keep: impl Fn(&Instance) -> bool, with_plans: bool) -> Value {
    let found: Vec<&Instance> = data.instances.values().filter(|i| i.service == service && keep(i)).collect();
    let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
    let plans = if found.is_empty() || !with_plans {
        Value::Null
    } else {
        json!(found.iter().map(|i| i.plan.as_str()).collect::<Vec<_>>())
    };
    let items =
        if found.is_empty() { Value::Null } else { json!(found.iter().map(|i| list_item(i)).collect::<Vec<_>>()) };
    json!({"service": service, "instances": names, "plans": plans, "service_instances": items})
}

/// `GET /services/instances[?app=][&tag=]`: one entry per service; 204 when there is no service.
pub fn list(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let app = req.query("app").filter(|a| !a.is_empty());
    let tags = req.queries("tag");
    let keep = |i: &Instance| {
        app.is_none_or(|a| i.apps.iter().any(|x| x == a)) && tags.iter().all(|t| i.tags.iter().any(|x| x == t))
    };
    let entries = data.services.keys().map(|s| service_entry(&data, s, keep, true)).collect();
    Ok(super::list(entries))
}

/// `POST /services/{service}/instances`: 201 with no body.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    let service_name = req.param(0).to_string();
    let input = Input::parse(req)?;
    let n = input.node();
    let name = n.get("name").string()?;
    // `plan` and `owner` first, as tsuru's compatibility keys, then the model's own fields.
    let plan = n.any(&["plan_name", "PlanName"]).str()?.unwrap_or_else(|| input.value("plan"));
    let owner = n.any(&["team_owner", "TeamOwner"]).str()?.unwrap_or_else(|| input.value("owner"));
    let mut tags = n.get("tags").strings()?.unwrap_or_default();
    tags.extend(input.values("tag"));
    let parameters = n.get("parameters").object()?.unwrap_or_default();
    let pool = n.get("pool").string()?;
    let description = n.get("description").string()?;
    let mut data = api.lock();
    let service = data.services.get(&service_name).ok_or_else(Fail::no_service)?;
    if !valid_name(&name) {
        return Err(Fail::bad("invalid service instance name"));
    }
    if data.instances.contains_key(&key(&service_name, &name)) {
        return Err(Fail::new(StatusCode::CONFLICT, "instance name already exists."));
    }
    if !plan.is_empty() && !service.plans.iter().any(|p| p.name == plan) {
        return Err(Fail::bad(format!("invalid plan {plan:?} for service {service_name:?}")));
    }
    if !pool.is_empty() && !catalogue::POOLS.contains(&pool.as_str()) {
        return Err(Fail::bad("Pool does not exist."));
    }
    let team_owner = if owner.is_empty() { api.team().to_string() } else { owner };
    let id = data.next_id();
    let instance = Instance {
        id,
        name: name.clone(),
        service: service_name.clone(),
        plan,
        teams: vec![team_owner.clone()],
        team_owner,
        description,
        tags: process_tags(tags),
        parameters,
        pool,
        apps: Vec::new(),
        jobs: Vec::new(),
    };
    data.instances.insert(key(&service_name, &name), instance);
    api.changed();
    Ok(empty(StatusCode::CREATED))
}

/// `GET /services/{service}/instances/{instance}` (seed L201-212, lower case).
pub fn info(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let i = find(&data, req)?;
    let plan_description = data
        .services
        .get(&i.service)
        .and_then(|s| s.plans.iter().find(|p| p.name == i.plan))
        .map(|p| p.description.clone())
        .unwrap_or_default();
    Ok(reply(
        StatusCode::OK,
        &json!({
            "apps": i.apps,
            "jobs": i.jobs,
            "teams": i.teams,
            "teamowner": i.team_owner,
            "description": i.description,
            "planname": i.plan,
            "plandescription": plan_description,
            "pool": i.pool,
            "custominfo": {},
            "tags": i.tags,
            "parameters": i.parameters,
        }),
    ))
}

/// `GET .../status`.
pub fn status(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let i = find(&data, req)?;
    let body = format!("Service instance {:?} is up", i.name);
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body)
        .into_response())
}

/// `PUT /services/{service}/instances/{instance}`: replaces `description`, `plan`,
/// `teamowner`, `tags` (kept when absent), `parameters`; 200 with no body.
pub fn update(api: &Api, req: &Req) -> Result<Response, Fail> {
    let input = Input::parse(req)?;
    let n = input.node();
    let description = n.get("description").string()?;
    let plan = n.get("plan").string()?;
    let team_owner = n.get("teamowner").string()?;
    let mut tags = n.get("tags").strings()?;
    let compat = input.values("tag");
    if !compat.is_empty() {
        tags.get_or_insert_with(Vec::new).extend(compat);
    }
    let parameters = n.get("parameters").object()?.unwrap_or_default();
    let mut data = api.lock();
    let current = find(&data, req)?.clone();
    let tags = tags.map(process_tags);
    let changed = current.description != description
        || current.team_owner != team_owner
        || current.plan != plan
        || tags.as_ref().is_some_and(|t| *t != current.tags)
        || current.parameters != parameters;
    if !changed {
        return Err(Fail::bad(
            "Neither description, team owner, tags, plan nor plan parameters were set. You must define at least one.",
        ));
    }
    if team_owner.is_empty() {
        return Err(Fail::internal("please specify the team that owns the service instance"));
    }
    let service = data.services.get(&current.service).ok_or_else(Fail::no_service)?;
    if !plan.is_empty() && !service.plans.iter().any(|p| p.name == plan) {
        return Err(Fail::bad(format!("invalid plan {plan:?} for service {:?}", current.service)));
    }
    let i = data.instances.get_mut(&key(&current.service, &current.name)).ok_or_else(Fail::no_instance)?;
    i.description = description;
    if !i.teams.contains(&team_owner) {
        i.teams.push(team_owner.clone());
    }
    i.team_owner = team_owner;
    i.plan = plan;
    if let Some(t) = tags {
        i.tags = t;
    }
    i.parameters = parameters;
    api.changed();
    Ok(empty(StatusCode::OK))
}

/// `DELETE /services/{service}/instances/{instance}[?unbindall=true]`, streamed: refused while
/// bound, unless `unbindall` unbinds first.
pub fn delete(api: &Api, req: &Req) -> Result<Response, Fail> {
    let k = {
        let data = api.lock();
        let i = find(&data, req)?;
        key(&i.service, &i.name)
    };
    let unbind_all = req.query_bool("unbindall");
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let i = data.instances.get(&k).ok_or_else(Fail::no_instance)?.clone();
        if !unbind_all && !i.apps.is_empty() {
            return Err(Fail::bad(format!(
                "Applications bound to the service {:?}: {:?}\n: This service instance is bound to at least one app. Unbind them before removing it",
                i.name,
                i.apps.join(",")
            )));
        }
        if !unbind_all && !i.jobs.is_empty() {
            return Err(Fail::bad(format!(
                "Jobs bound to the service {:?}: {:?}\n: This service instance is bound to at least one job. Unbind them before removing it",
                i.name,
                i.jobs.join(",")
            )));
        }
        for app in &i.apps {
            stream.msg(format!("Unbind app {app:?} ...\n"));
            binds::unbind_app_in(data, &k, app, true, stream, rollout);
            stream.msg(format!("\nInstance {:?} is not bound to the app {app:?} anymore.\n", i.name));
        }
        for job in &i.jobs {
            stream.msg(format!("Unbind job {job:?} ...\n"));
            binds::unbind_job_in(data, &k, job, stream);
        }
        data.instances.remove(&k);
        stream.msg("service instance successfully removed\n");
        Ok(())
    })
}

/// `GET /services`: one entry per service, with its instances.
pub fn list_services(api: &Api, _: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let entries = data.services.keys().map(|s| service_entry(&data, s, |_| true, false)).collect();
    Ok(super::list(entries))
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_names_as_tsuru_accepts_them() {
        assert!(super::valid_name("shop-db"));
        assert!(super::valid_name("Db_1"));
        assert!(!super::valid_name("d"));
        assert!(!super::valid_name("1db"));
        assert!(!super::valid_name("db.x"));
    }
}
