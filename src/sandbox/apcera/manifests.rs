//! Multi-resource manifests and their expansion, and the tasks that track asynchronous work
//! (seed 003 L2052-2242, L4135-4147).
//!
//! Expansion, as the seed specifies it for `POST /v1/manifests/expansion`: `${NAME}` is
//! replaced in every key and string value, at any depth, except inside `variables` (and the
//! `default_namespace` value); an unknown variable becomes the empty string with the warning
//! `no value found for variable NAME` (once per name, first-occurrence order, joined with a
//! newline). Then every key and string value of the form `type::::rest` takes the default
//! namespace: `type::<default_namespace>::rest`. `variables` and `default_namespace` are echoed;
//! `expanded_json` is the result with two-space indentation and the request's key order. An
//! unterminated `${`, an invalid name, a variable whose value is a collection, or two keys
//! expanding to the same one is an APIError whose `error_details` carry `errors`,
//! `expanded_json` (the input, references left as written) and `warnings`.

use super::{Api, api_error, error_body, new_uuid, now, parse, unix_ms};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Task {
    pub uuid: String,
    pub created_at: String,
    /// Unix milliseconds at which the work is done.
    pub done_at: u64,
    pub failed: bool,
    pub events: Vec<TaskEvent>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskEvent {
    /// Unix nanoseconds.
    pub time: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[derive(Deserialize)]
pub struct TaskQuery {
    time: Option<u64>,
}

pub async fn task(State(api): State<Api>, Path(uuid): Path<String>, Query(q): Query<TaskQuery>) -> Response {
    let data = api.lock();
    let Some(t) = data.tasks.get(&uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no task {uuid}"));
    };
    let done = unix_ms() >= t.done_at;
    let mut events = t.events.clone();
    if done {
        let time = events.last().map(|e| e.time + 1).unwrap_or_else(unix_nanos).max(t.done_at * 1_000_000);
        events.push(TaskEvent {
            time,
            kind: if t.failed { "error".into() } else { "done".into() },
            message: if t.failed { "the manifest failed".into() } else { "the manifest is deployed".into() },
        });
    }
    let since = q.time.unwrap_or(0);
    let events: Vec<&TaskEvent> = events.iter().filter(|e| e.time > since).collect();
    let state = match (done, t.failed) {
        (false, _) => "running",
        (true, false) => "done",
        (true, true) => "failed",
    };
    axum::Json(json!({ "uuid": t.uuid, "state": state, "created_at": t.created_at, "events": events })).into_response()
}

/// `POST /v1/manifests`: create (or update) and start the manifest's jobs, answered with a task.
pub async fn deploy(State(api): State<Api>, body: Bytes) -> Response {
    let manifest: Value = match parse(&body) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let Some(obj) = manifest.as_object() else {
        return api_error(StatusCode::BAD_REQUEST, "a manifest is a JSON object");
    };
    let mut events = Vec::new();
    let mut failed = false;
    let note = |kind: &str, message: String, events: &mut Vec<TaskEvent>| {
        events.push(TaskEvent { time: unix_nanos(), kind: kind.into(), message });
    };
    for key in obj.keys().filter(|k| !["jobs", "variables", "default_namespace"].contains(&k.as_str())) {
        note("progress", format!("warning: {key} is not deployed by this sandbox; ignored"), &mut events);
    }
    for (fqn, spec) in obj.get("jobs").and_then(Value::as_object).into_iter().flatten() {
        match deploy_job(&api, fqn, spec).await {
            Ok(msg) => note("progress", msg, &mut events),
            Err(msg) => {
                failed = true;
                note("error", msg, &mut events);
            }
        }
    }
    let uuid = new_uuid();
    let task = Task {
        uuid: uuid.clone(),
        created_at: now(),
        done_at: unix_ms() + api.shared.rollout().as_millis() as u64,
        failed,
        events,
    };
    api.lock().tasks.insert(uuid.clone(), task);
    api.changed();
    axum::Json(json!({
        "location": format!("{}/v1/tasks/{uuid}", api.shared.base_url),
        "expanded_manifest": {},
        "expanded_json": "",
        "warnings": "",
    }))
    .into_response()
}

/// One manifest job: the manifest's shorthands (`packages[].fqn`, `start.cmd`, `ssh`) turned into
/// a Job, then created (or updated) and started through the same code as the REST calls.
async fn deploy_job(api: &Api, fqn: &str, spec: &Value) -> Result<String, String> {
    let Some((_, _, local)) = super::split_fqn(fqn).filter(|(k, _, _)| *k == "job") else {
        return Err(format!("{fqn:?} is not a job FQN"));
    };
    let mut packages = Vec::new();
    {
        let data = api.lock();
        for p in spec.get("packages").and_then(Value::as_array).into_iter().flatten() {
            let uuid = match (p.get("uuid").and_then(Value::as_str), p.get("fqn").and_then(Value::as_str)) {
                (Some(u), _) => u.to_string(),
                (None, Some(f)) => data
                    .packages
                    .values()
                    .find(|x| x["fqn"] == f)
                    .and_then(|x| x["uuid"].as_str().map(str::to_string))
                    .ok_or_else(|| format!("{fqn}: no package {f}"))?,
                _ => continue,
            };
            packages.push(super::jobs::PackageRef { uuid, ..Default::default() });
        }
    }
    let mut job: super::Job = serde_json::from_value(spec.clone()).unwrap_or_default();
    job.fqn = fqn.to_string();
    job.name = local.to_string();
    job.packages = packages;
    if let Some(cmd) = spec.pointer("/start/cmd").and_then(Value::as_str) {
        job.processes.entry("app".into()).or_default().start_command = cmd.to_string();
    }
    if spec.get("ssh") == Some(&Value::Bool(true)) && !job.ports.iter().any(|p| p.number == 222) {
        job.ports.push(super::jobs::Port { number: 222, optional: false, routes: Vec::new() });
    }
    let state = std::mem::take(&mut job.state);
    let existed = api.job_uuid_by_fqn(fqn);
    let answer = match &existed {
        Some(uuid) => {
            let current = api.lock().jobs[uuid].clone();
            job.uuid = uuid.clone();
            job.version_id = current.version_id;
            job.state = current.state;
            let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
            super::jobs::update(State(api.clone()), Path(uuid.clone()), Bytes::from(body)).await
        }
        None => {
            let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
            super::jobs::create(State(api.clone()), Bytes::from(body)).await
        }
    };
    if !answer.status().is_success() {
        return Err(format!("{fqn}: the job could not be {}", if existed.is_some() { "updated" } else { "created" }));
    }
    if !state.is_empty() {
        let mut j = api.lock().job_by_fqn(fqn).cloned().ok_or("the job vanished")?;
        if j.state != state {
            j.state = state;
            let uuid = j.uuid.clone();
            let body = serde_json::to_vec(&j).map_err(|e| e.to_string())?;
            super::jobs::update(State(api.clone()), Path(uuid), Bytes::from(body)).await;
        }
    }
    Ok(format!("{} {fqn}", if existed.is_some() { "updated" } else { "created" }))
}

/// `POST /v1/manifests/expansion`.
pub async fn expansion(body: Bytes) -> Response {
    let manifest: Value = match parse(&body) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match expand(&manifest) {
        Ok((expanded, warnings)) => axum::Json(json!({
            "location": "",
            "expanded_manifest": expanded,
            "expanded_json": serde_json::to_string_pretty(&expanded).unwrap_or_default(),
            "warnings": warnings.join("\n"),
        }))
        .into_response(),
        Err((errors, warnings)) => error_body(
            StatusCode::BAD_REQUEST,
            &errors.join("\n"),
            false,
            Some(json!({
                "errors": errors.join("\n"),
                "expanded_json": serde_json::to_string_pretty(&manifest).unwrap_or_default(),
                "warnings": warnings.join("\n"),
            })),
        ),
    }
}

type Expanded = (Value, Vec<String>);

/// The expansion itself; Err carries (errors, warnings).
pub fn expand(manifest: &Value) -> Result<Expanded, (Vec<String>, Vec<String>)> {
    let Some(obj) = manifest.as_object() else {
        return Err((vec!["a manifest is a JSON object".into()], vec![]));
    };
    let mut errors = Vec::new();
    let mut vars: Map<String, Value> = Map::new();
    if let Some(v) = obj.get("variables") {
        match v.as_object() {
            Some(m) => {
                for (k, x) in m {
                    match x {
                        Value::String(_) => {
                            vars.insert(k.clone(), x.clone());
                        }
                        Value::Number(n) => {
                            vars.insert(k.clone(), Value::String(n.to_string()));
                        }
                        Value::Bool(b) => {
                            vars.insert(k.clone(), Value::String(b.to_string()));
                        }
                        _ => errors.push(format!("variable {k} must be a string")),
                    }
                }
            }
            None => errors.push("variables must be an object".into()),
        }
    }
    let namespace = obj.get("default_namespace").and_then(Value::as_str);
    let mut ctx = Ctx { vars: &vars, warnings: Vec::new(), errors };
    let mut out = Map::new();
    for (k, v) in obj {
        if k == "variables" || k == "default_namespace" {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let key = ctx.string(k);
        let value = ctx.value(v);
        if out.insert(key.clone(), value).is_some() {
            ctx.errors.push(format!("two keys expand to {key}"));
        }
    }
    let mut expanded = Value::Object(out);
    if let Some(ns) = namespace {
        for (k, v) in expanded.as_object_mut().unwrap().iter_mut() {
            if k != "variables" && k != "default_namespace" {
                default_namespace(v, ns, &mut ctx.errors);
            }
        }
    }
    if ctx.errors.is_empty() { Ok((expanded, ctx.warnings)) } else { Err((ctx.errors, ctx.warnings)) }
}

struct Ctx<'a> {
    vars: &'a Map<String, Value>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

impl Ctx<'_> {
    fn value(&mut self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    let key = self.string(k);
                    let value = self.value(x);
                    if out.insert(key.clone(), value).is_some() {
                        self.errors.push(format!("two keys expand to {key}"));
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    fn string(&mut self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                self.errors.push(format!("unterminated variable reference in {s:?}"));
                out.push_str(&rest[i..]);
                return out;
            };
            let name = &after[..end];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.errors.push(format!("invalid variable name {name:?}"));
                out.push_str(&rest[i..i + 3 + end]);
            } else {
                match self.vars.get(name) {
                    Some(Value::String(v)) => out.push_str(v),
                    _ => {
                        let w = format!("no value found for variable {name}");
                        if !self.warnings.contains(&w) {
                            self.warnings.push(w);
                        }
                    }
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// `type::::rest` → `type::<ns>::rest`, in keys and string values at any depth.
fn default_namespace(v: &mut Value, ns: &str, errors: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(n) = fill(s, ns) {
                *s = n;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| default_namespace(x, ns, errors)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                default_namespace(&mut x, ns, errors);
                let key = fill(&k, ns).unwrap_or(k);
                if m.insert(key.clone(), x).is_some() {
                    errors.push(format!("two keys expand to {key}"));
                }
            }
        }
        _ => {}
    }
}

fn fill(s: &str, ns: &str) -> Option<String> {
    let (ty, rest) = s.split_once("::::")?;
    let mut chars = ty.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*');
    ok.then(|| format!("{ty}::{ns}::{rest}"))
}
