//! Log drains of a job (seed 003 L1887-1990): `GET/POST /v1/jobs/{uuid}/logs/drains`,
//! `DELETE /v1/jobs/{uuid}/logs/drains/{drain_uuid}`.
//!
//! Choices where the seed is silent: a drain is stored in the job's `drains` field (the seed's
//! DELETE answers with the job, which carries them), so it goes with its job; adding or removing
//! one is a change of the job (a new `version_id`, so a full-object `PUT` read before it is
//! stale, as for bindings); a `url` is required and must have a scheme (`syslog://host:port`);
//! missing `max_size` and `conf` fields take Go's zero values; the POST answers with the drain
//! made (the seed shows an empty 200); the same URL twice on one job is a 409.

use super::{Api, api_error, new_uuid, parse};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Drain {
    pub conf: Conf,
    pub max_size: u64,
    pub url: String,
    pub uuid: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Conf {
    pub priority: i64,
    pub protocol: String,
}

pub async fn list(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().jobs.get(&uuid) {
        Some(j) => axum::Json(&j.drains).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}")),
    }
}

pub async fn create(State(api): State<Api>, Path(uuid): Path<String>, body: Bytes) -> Response {
    let mut drain: Drain = match parse(&body) {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    if !drain.url.split_once("://").is_some_and(|(s, rest)| !s.is_empty() && !rest.is_empty()) {
        return api_error(StatusCode::BAD_REQUEST, "a drain needs a url with a scheme (syslog://host:port)");
    }
    let principal = api.shared.principal.clone();
    let mut data = api.lock();
    let Some(job) = data.jobs.get_mut(&uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    };
    if job.drains.iter().any(|d| d["url"] == drain.url.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("job {} already drains to {}", job.fqn, drain.url));
    }
    drain.uuid = new_uuid();
    let value = serde_json::to_value(&drain).unwrap_or(Value::Null);
    job.drains.push(value.clone());
    job.touched(&principal);
    drop(data);
    api.changed();
    axum::Json(value).into_response()
}

pub async fn remove(State(api): State<Api>, Path((uuid, drain)): Path<(String, String)>) -> Response {
    let principal = api.shared.principal.clone();
    let mut data = api.lock();
    let Some(job) = data.jobs.get_mut(&uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {uuid}"));
    };
    let before = job.drains.len();
    job.drains.retain(|d| d["uuid"] != drain.as_str());
    if job.drains.len() == before {
        return api_error(StatusCode::NOT_FOUND, &format!("job {} has no drain {drain}", job.fqn));
    }
    job.touched(&principal);
    let answer = serde_json::to_value(&*job).unwrap_or(Value::Null);
    drop(data);
    api.changed();
    axum::Json(answer).into_response()
}
