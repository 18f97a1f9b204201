//! Jobs: list with the seed's filters, create, get, full-object update, delete, instances,
//! health and routes (seed 003 L607-1834).

use super::{Api, api_error, check_identity, empty_body, fqn_matches, new_uuid, now, parse, query_pairs, unix_ms};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

/// The Job object, with the fields of seed 003's examples and Go's zero-value semantics.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    pub uuid: String,
    pub fqn: String,
    pub name: String,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
    pub version_id: u64,
    pub state: String,
    pub num_instances: u64,
    pub ports: Vec<Port>,
    pub logs: Vec<LogChannel>,
    pub packages: Vec<PackageRef>,
    pub processes: IndexMap<String, Process>,
    pub resources: Resources,
    pub rollout: Rollout,
    pub restart: Restart,
    pub hard_scheduling_tags: Map<String, Value>,
    pub soft_scheduling_tags: Map<String, Value>,
    pub tags: IndexMap<String, String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub labels: IndexMap<String, String>,
    pub weight: u64,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub bindings: IndexMap<String, Value>,
    pub network_ref: Option<NetworkRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drains: Vec<Value>,
}

impl Job {
    /// Record a change the server made to the job itself: a binding or link made or removed, a
    /// network joined or left. The seed shows a job with two bindings at `version_id` 3
    /// (L636-749) and a join as a change of the job's `network_ref` (L166-205), so each of these
    /// is a new version, and a full-object `PUT` read before it is stale.
    pub fn touched(&mut self, by: &str) {
        self.version_id += 1;
        self.updated_at = now();
        self.updated_by = by.to_string();
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    pub number: u64,
    pub optional: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Route {
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: String,
    pub weight: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogChannel {
    pub file: String,
    pub channel: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PackageRef {
    pub uuid: String,
    pub state: String,
    pub source: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    pub start_command: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub start_command_raw: Vec<String>,
    pub start_command_timeout: u64,
    pub stop_command: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub stop_command_raw: Vec<String>,
    pub stop_timeout: u64,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub environment: IndexMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Resources {
    pub cpu: u64,
    pub memory: u64,
    pub disk: u64,
    pub network: u64,
    pub netmax: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rollout {
    pub force_stop_old_instances_after: u64,
    pub flapping_minimum_restarts: u64,
    pub flapping_percent: f64,
    pub flapping_window: u64,
    pub errored_state_window: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Restart {
    pub restart_mode: String,
    pub maximum_attempts: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkRef {
    pub uuid: String,
}

/// A running (or starting) copy of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    pub uuid: String,
    pub created_time: String,
    pub job_version_id: u64,
    /// Unix milliseconds at which it is running.
    pub running_at: u64,
}

impl Instance {
    pub fn state(&self) -> &'static str {
        if unix_ms() >= self.running_at { "RUNNING" } else { "STARTING" }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The documented server defaults (seed L1088-1244) and the sandbox's own (module docs).
fn apply_defaults(job: &mut Job) {
    if job.num_instances == 0 {
        job.num_instances = 1;
    }
    if job.state.is_empty() {
        job.state = "ready".into();
    }
    if job.logs.is_empty() {
        job.logs = vec![
            LogChannel { file: "/logs/stdout.*.log".into(), channel: "job.$JOB_UUID.stdout".into() },
            LogChannel { file: "/logs/stderr.*.log".into(), channel: "job.$JOB_UUID.stderr".into() },
        ];
    }
    if job.ports.is_empty() {
        job.ports = vec![Port::default()];
    }
    if job.processes.is_empty() {
        job.processes.insert("app".into(), Process::default());
    }
    if job.resources == Resources::default() {
        job.resources = Resources { cpu: 0, memory: 268_435_456, disk: 1_073_741_824, network: 5_000_000, netmax: 0 };
    }
    let r = &mut job.rollout;
    if r.force_stop_old_instances_after == 0 {
        r.force_stop_old_instances_after = 120;
    }
    if r.flapping_minimum_restarts == 0 {
        r.flapping_minimum_restarts = 3;
    }
    if r.flapping_percent == 0.0 {
        r.flapping_percent = 0.5;
    }
    if r.flapping_window == 0 {
        r.flapping_window = 300;
    }
    if job.restart.restart_mode.is_empty() {
        job.restart.restart_mode = "always".into();
    }
    // User packages as the server reports them, then the resolved ("system") packages, which
    // the server owns: whatever a client sent as system is recomputed. Without a dependency
    // resolver, each user package resolves to itself (A18).
    let user: Vec<String> =
        job.packages.iter().filter(|p| p.source.is_empty() || p.source == "user").map(|p| p.uuid.clone()).collect();
    let system: Vec<PackageRef> =
        user.iter().map(|u| PackageRef { uuid: u.clone(), state: "ready".into(), source: "system".into() }).collect();
    job.packages = user
        .into_iter()
        .map(|uuid| PackageRef { uuid, state: "unknown".into(), source: "user".into() })
        .chain(system)
        .collect();
}

fn check_state(state: &str) -> Result<(), super::Refusal> {
    match state {
        "" | "ready" | "started" | "stopped" => Ok(()),
        other => Err(super::Refusal(
            StatusCode::BAD_REQUEST,
            format!("invalid job state {other:?}: expected ready, started or stopped"),
        )),
    }
}

/// Start, stop or restart a job's instances after a change to it.
fn reconcile_instances(api: &Api, data: &mut super::Data, job: &Job, changed: bool) {
    let wanted = if job.state == "started" { job.num_instances as usize } else { 0 };
    let rollout = api.shared.rollout().as_millis() as u64;
    let list = data.instances.entry(job.uuid.clone()).or_default();
    if changed && wanted > 0 {
        list.clear();
    }
    list.truncate(wanted);
    while list.len() < wanted {
        list.push(Instance {
            uuid: new_uuid(),
            created_time: now(),
            job_version_id: job.version_id,
            running_at: unix_ms() + rollout,
        });
    }
}

fn job_json(job: &Job) -> Value {
    serde_json::to_value(job).unwrap_or(Value::Null)
}

pub async fn list(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let params = query_pairs(q.as_deref());
    if params.is_empty() {
        let body =
            api.job_list(|| serde_json::to_vec(&api.lock().jobs.values().collect::<Vec<_>>()).unwrap_or_default());
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let get = |k: &str| params.iter().find(|(p, _)| p.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let partial = get("matchPartialFQN") == Some("true");
    let fqn = params.iter().find(|(k, _)| k == "FQN" || k == "fqn").map(|(_, v)| v.as_str());
    let ids: Option<Vec<&str>> = get("ids").map(|s| s.split(',').collect());
    let tags: Vec<&str> = params.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.as_str()).collect();
    let labels: Vec<&str> = params.iter().filter(|(k, _)| k == "label").map(|(_, v)| v.as_str()).collect();
    let data = api.lock();
    let mut out: Vec<&Job> = Vec::new();
    for job in data.jobs.values() {
        if let Some(f) = fqn
            && !fqn_matches(&job.fqn, f, partial)
        {
            continue;
        }
        if get("name").is_some_and(|n| n != job.name)
            || ids.as_ref().is_some_and(|ids| !ids.contains(&job.uuid.as_str()))
            || get("package_id").is_some_and(|p| !job.packages.iter().any(|x| x.uuid == p))
            || !tags.iter().all(|t| job.tags.contains_key(*t))
            || !labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => job.labels.get(k).is_some_and(|x| x == v),
                None => job.labels.contains_key(*l),
            })
            || get("BindingFQN").is_some_and(|b| !job.bindings.contains_key(b))
            || get("ServiceFQN").is_some_and(|s| !job.bindings.values().any(|b| b["service_fqn"] == s))
            || get("ProviderFQN").is_some_and(|p| !job.bindings.values().any(|b| b["provider_fqn"] == p))
        {
            continue;
        }
        out.push(job);
    }
    // page / count: `count` jobs per page, pages from 1.
    if let Some(count) = get("count").and_then(|c| c.parse::<usize>().ok()).filter(|c| *c > 0) {
        let page = get("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
        out = out.into_iter().skip((page - 1) * count).take(count).collect();
    }
    let body = serde_json::to_vec(&out).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let mut job: Job = match parse(&body) {
        Ok(j) => j,
        Err(r) => return r.into_response(),
    };
    let local = match check_identity(&job.fqn, Some(&job.name), "job") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_state(&job.state) {
        return r.into_response();
    }
    let mut data = api.lock();
    if api.job_uuid_by_fqn(&job.fqn).is_some() {
        return api_error(StatusCode::CONFLICT, &format!("a job {} already exists", job.fqn));
    }
    for p in &job.packages {
        if !data.packages.contains_key(&p.uuid) {
            return api_error(StatusCode::NOT_FOUND, &format!("no package {}", p.uuid));
        }
    }
    let t = now();
    job.name = local;
    job.uuid = new_uuid();
    job.created_at = t.clone();
    job.updated_at = t;
    job.created_by = api.shared.principal.clone();
    job.updated_by = String::new();
    job.version_id = 1;
    // A new job is not running: it is started with a PUT (seed L1235, L1547).
    job.state = "ready".into();
    job.bindings.clear();
    job.network_ref = None;
    job.drains.clear();
    apply_defaults(&mut job);
    data.jobs.insert(job.uuid.clone(), job.clone());
    api.index_job(&job.fqn, Some(&job.uuid));
    drop(data);
    api.changed();
    let location = format!("{}/v1/jobs/{}", api.shared.base_url, job.uuid);
    (StatusCode::OK, [(header::LOCATION, location)], axum::Json(job_json(&job))).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().jobs.get(&uuid) {
        Some(j) => axum::Json(job_json(j)).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}")),
    }
}

pub async fn update(State(api): State<Api>, Path(uuid): Path<String>, body: Bytes) -> Response {
    let mut job: Job = match parse(&body) {
        Ok(j) => j,
        Err(r) => return r.into_response(),
    };
    let sent_version =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("version_id").and_then(Value::as_u64));
    if let Err(r) = check_state(&job.state) {
        return r.into_response();
    }
    let mut data = api.lock();
    let Some(current) = data.jobs.get(&uuid).cloned() else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    };
    if !job.uuid.is_empty() && job.uuid != uuid {
        return api_error(StatusCode::BAD_REQUEST, "the body's uuid differs from the path's");
    }
    if let Some(v) = sent_version
        && v != current.version_id
    {
        return api_error(
            StatusCode::CONFLICT,
            &format!("version_id {v} is stale: the job is at version {}; read it again", current.version_id),
        );
    }
    if job.fqn.is_empty() {
        job.fqn = current.fqn.clone();
    }
    if job.fqn != current.fqn {
        return api_error(StatusCode::BAD_REQUEST, "a job's FQN cannot be changed");
    }
    if let Err(r) = check_identity(&job.fqn, Some(&job.name), "job") {
        return r.into_response();
    }
    for p in job.packages.iter().filter(|p| p.source != "system") {
        if !data.packages.contains_key(&p.uuid) {
            return api_error(StatusCode::NOT_FOUND, &format!("no package {}", p.uuid));
        }
    }
    // Server-owned fields come from the stored job, whatever the body says.
    job.uuid = uuid.clone();
    job.name = current.name.clone();
    job.created_at = current.created_at.clone();
    job.created_by = current.created_by.clone();
    job.updated_at = now();
    job.updated_by = api.shared.principal.clone();
    job.version_id = current.version_id + 1;
    job.bindings = current.bindings.clone();
    job.network_ref = current.network_ref.clone();
    job.drains = current.drains.clone();
    apply_defaults(&mut job);
    let was_started = current.state == "started";
    let spec_changed = {
        let strip = |j: &Job| {
            let mut v = job_json(j);
            for k in ["updated_at", "updated_by", "version_id", "state"] {
                v.as_object_mut().map(|o| o.remove(k));
            }
            v
        };
        strip(&current) != strip(&job)
    };
    data.jobs.insert(uuid.clone(), job.clone());
    // Starting a job, or changing a started one, brings up new instances.
    reconcile_instances(&api, &mut data, &job, spec_changed || !was_started);
    drop(data);
    api.changed();
    axum::Json(job_json(&job)).into_response()
}

pub async fn remove(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let mut data = api.lock();
    let Some(job) = data.jobs.get(&uuid).cloned() else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    };
    if data.providers.values().any(|p| p["backing_job_fqn"] == job.fqn.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("{} backs a provider; delete the provider first", job.fqn));
    }
    // Cascades (A10): its bindings and links go with it, links to it too, and its membership.
    data.jobs.shift_remove(&uuid);
    data.instances.remove(&uuid);
    let principal = api.shared.principal.clone();
    for other in data.jobs.values_mut() {
        let before = other.bindings.len();
        other.bindings.retain(|_, b| b["target_job_fqn"] != job.fqn.as_str());
        if other.bindings.len() != before {
            other.touched(&principal);
        }
    }
    for net in data.networks.values_mut() {
        net.members.retain(|m| m.job_fqn != job.fqn);
    }
    api.index_job(&job.fqn, None);
    drop(data);
    api.changed();
    empty_body()
}

pub async fn instances(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let data = api.lock();
    if !data.jobs.contains_key(&uuid) {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    }
    let list: Vec<Value> = data
        .instances
        .get(&uuid)
        .into_iter()
        .flatten()
        .map(|i| {
            json!({
                "announced_routes": i.state() == "RUNNING",
                "created_time": i.created_time,
                "exit_code": 0,
                "exited": false,
                "failed": false,
                "host": "sandbox-im-1",
                "instance_manager_uuid": "73c1d458-415f-4e5c-bfc5-2ea637914bbf",
                "job_version_id": i.job_version_id,
                "state": i.state(),
                "uuid": i.uuid,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

pub async fn stop_instance(State(api): State<Api>, Path((uuid, instance)): Path<(String, String)>) -> Response {
    let mut data = api.lock();
    let Some(list) = data.instances.get_mut(&uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    };
    let before = list.len();
    list.retain(|i| i.uuid != instance);
    if list.len() == before {
        return api_error(StatusCode::NOT_FOUND, &format!("no instance {instance}"));
    }
    drop(data);
    api.changed();
    super::null_body()
}

pub async fn health(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let params = query_pairs(q.as_deref());
    let ids: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "ids")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let data = api.lock();
    let mut out = Vec::new();
    for id in ids {
        let Some(job) = data.jobs.get(&id) else { continue };
        let mut counts: IndexMap<&str, u64> = IndexMap::new();
        for i in data.instances.get(&id).into_iter().flatten() {
            *counts.entry(i.state()).or_default() += 1;
        }
        let running = counts.get("RUNNING").copied().unwrap_or(0);
        let wanted = if job.state == "started" { job.num_instances } else { 0 };
        let score = if wanted == 0 { if running == 0 { 1.0 } else { 0.0 } } else { running as f64 / wanted as f64 };
        out.push(json!({ "uuid": id, "flapping": false, "score": score, "instance_state_count": counts }));
    }
    axum::Json(out).into_response()
}

fn route_map(data: &super::Data) -> IndexMap<String, Vec<String>> {
    let mut routes: IndexMap<String, Vec<String>> = IndexMap::new();
    for job in data.jobs.values() {
        for r in job.ports.iter().flat_map(|p| &p.routes) {
            routes.entry(r.endpoint.clone()).or_default().push(job.uuid.clone());
        }
    }
    routes
}

pub async fn routes(State(api): State<Api>) -> Response {
    axum::Json(route_map(&api.lock())).into_response()
}

pub async fn route(State(api): State<Api>, Path(endpoint): Path<String>) -> Response {
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(endpoint.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(endpoint.trim_end_matches('=').as_bytes()))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some(endpoint) = decoded else {
        return api_error(StatusCode::BAD_REQUEST, "the endpoint must be URL-safe base64");
    };
    let map = route_map(&api.lock());
    match map.get(&endpoint) {
        Some(uuids) => axum::Json(json!({ endpoint: uuids })).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no route {endpoint}")),
    }
}
