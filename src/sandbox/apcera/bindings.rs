//! Service bindings and job links (seed 003 L278-347, L4149-4200).

use super::{Api, api_error, empty_body, new_uuid, parse};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct NewBinding {
    job_fqn: String,
    name: String,
    service_fqn: String,
    provider_fqn: String,
    target_job_fqn: String,
    target_job_port: u64,
}

/// `HTTP_URI`, `MY_BINDING_URI`: upper case, keeping letters, digits and `_` (seed L311-313,
/// L655-658: `outside-dns-http` → `OUTSIDEDNSHTTP_URI`).
fn env_var(text: &str) -> String {
    let mut s: String = text.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    s.make_ascii_uppercase();
    format!("{s}_URI")
}

/// A job's bindings and links share one name space: a second of either with a name the job
/// already uses is refused.
fn name_taken(job: &super::Job, name: &str) -> Option<Response> {
    job.bindings.values().any(|b| b["name"] == name).then(|| {
        api_error(
            StatusCode::CONFLICT,
            &format!(
                "{} already has a binding or link named {name:?}: bindings and links of a job share one name space",
                job.fqn
            ),
        )
    })
}

fn local(fqn: &str) -> &str {
    fqn.rsplit("::").next().unwrap_or(fqn)
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let req: NewBinding = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.job_fqn.is_empty() {
        return api_error(StatusCode::BAD_REQUEST, "a binding needs job_fqn");
    }
    let mut data = api.lock();
    let Some(job_uuid) = api.job_uuid_by_fqn(&req.job_fqn) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {}", req.job_fqn));
    };
    // Binding FQNs live in the root namespace with an upper-case uuid of their own (seed L315).
    let fqn = format!("binding::/::{}", uuid::Uuid::new_v4().to_string().to_uppercase());
    let (stored, answer) =
        if !req.target_job_fqn.is_empty() {
            if api.job_uuid_by_fqn(&req.target_job_fqn).is_none() {
                return api_error(StatusCode::NOT_FOUND, &format!("no job {}", req.target_job_fqn));
            }
            let name = if req.name.is_empty() { local(&req.target_job_fqn).to_string() } else { req.name.clone() };
            let job = &data.jobs[&job_uuid];
            if job.bindings.values().any(|b| {
                b["target_job_fqn"] == req.target_job_fqn.as_str() && b["target_job_port"] == req.target_job_port
            }) {
                return api_error(StatusCode::CONFLICT, "the link already exists");
            }
            if let Some(r) = name_taken(job, &name) {
                return r;
            }
            let stored = json!({
                "fqn": fqn,
                "name": name,
                "job_fqn": req.job_fqn,
                "target_job_fqn": req.target_job_fqn,
                "target_job_port": req.target_job_port,
            });
            (stored, json!({ "fqn": fqn, "name": name, "target_job_fqn": req.target_job_fqn }))
        } else {
            let (field, target) = match (req.service_fqn.is_empty(), req.provider_fqn.is_empty()) {
                (false, _) => ("service_fqn", req.service_fqn.clone()),
                (true, false) => ("provider_fqn", req.provider_fqn.clone()),
                (true, true) => {
                    return api_error(
                        StatusCode::BAD_REQUEST,
                        "a binding needs service_fqn or provider_fqn, or target_job_fqn for a job link",
                    );
                }
            };
            let found: Option<Value> = if field == "service_fqn" {
                data.services.values().find(|s| s["fqn"] == target.as_str()).cloned()
            } else {
                data.providers.values().find(|p| p["fqn"] == target.as_str()).cloned()
            };
            let Some(found) = found else {
                return api_error(StatusCode::NOT_FOUND, &format!("no {} {target}", &field[..field.len() - 4]));
            };
            let name = if req.name.is_empty() { local(&target).to_string() } else { req.name.clone() };
            let job = &data.jobs[&job_uuid];
            if job.bindings.values().any(|b| b[field] == target.as_str() && b["name"] == name.as_str()) {
                return api_error(StatusCode::CONFLICT, "the binding already exists");
            }
            if let Some(r) = name_taken(job, &name) {
                return r;
            }
            let kind = found["type"].as_str().unwrap_or("service");
            let mut stored = json!({
                "uuid": new_uuid(),
                "name": name,
                "fqn": fqn,
                "job_fqn": req.job_fqn,
                "env_var": [env_var(kind), env_var(&name)],
                field: target,
            });
            if let Some(p) = found.get("parameters") {
                stored["parameters"] = p.clone();
            }
            let mut answer = stored.clone();
            answer.as_object_mut().map(|o| o.remove("parameters"));
            (stored, answer)
        };
    let job = data.jobs.get_mut(&job_uuid).expect("found above");
    job.bindings.insert(fqn, stored);
    job.touched(&api.shared.principal);
    drop(data);
    api.changed();
    axum::Json(answer).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Unbind {
    job: String,
    service: String,
}

pub async fn unbind(State(api): State<Api>, body: Bytes) -> Response {
    let req: Unbind = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    let Some(uuid) = api.job_uuid_by_fqn(&req.job) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {}", req.job));
    };
    let job = data.jobs.get_mut(&uuid).expect("indexed");
    let before = job.bindings.len();
    // The seed documents unbind for a job and a service (L4151-4170): a binding to a provider
    // is not one it removes.
    job.bindings.retain(|_, b| b["service_fqn"] != req.service.as_str());
    if job.bindings.len() == before {
        let provider = job.bindings.values().any(|b| b["provider_fqn"] == req.service.as_str());
        let why =
            if provider { ": unbind removes a binding to a service, and this is a binding to a provider" } else { "" };
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("{} is not bound to a service {}{why}", req.job, req.service),
        );
    }
    job.touched(&api.shared.principal);
    drop(data);
    api.changed();
    empty_body()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Unlink {
    from_job: String,
    to_job: String,
    port: u64,
}

pub async fn unlink(State(api): State<Api>, body: Bytes) -> Response {
    let req: Unlink = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    let Some(uuid) = api.job_uuid_by_fqn(&req.from_job) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {}", req.from_job));
    };
    let job = data.jobs.get_mut(&uuid).expect("indexed");
    let before = job.bindings.len();
    job.bindings.retain(|_, b| !(b["target_job_fqn"] == req.to_job.as_str() && b["target_job_port"] == req.port));
    if job.bindings.len() == before {
        return api_error(
            StatusCode::NOT_FOUND,
            &format!("no link from {} to {} port {}", req.from_job, req.to_job, req.port),
        );
    }
    job.touched(&api.shared.principal);
    drop(data);
    api.changed();
    empty_body()
}
