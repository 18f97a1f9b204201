//! Staging pipelines (seed 003 L3898-4100): `GET/POST /v1/stagingpipelines`,
//! `GET/PUT/DELETE /v1/stagingpipelines/{uuid}`.
//!
//! Choices where the seed is silent: every stager must be a job that exists (404 otherwise), so
//! a pipeline is made after its stagers, and there is at least one; the FQN is
//! `stagpipe::/ns::name` and unique (409); a `PUT` carrying a `version_id` other than the
//! stored one is refused (409, as for jobs), and one without is taken as is; the list filters
//! by exact `fqn`, or by prefix with `matchPartialFQN=true`. `GET` by uuid answers an array of
//! one, as the seed shows (L4029-4046).

use super::{Api, Refusal, api_error, check_identity, new_uuid, now, null_body, parse, query_pairs};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub async fn list(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let params = query_pairs(q.as_deref());
    let get = |k: &str| params.iter().find(|(p, _)| p.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let (fqn, partial) = (get("fqn"), get("matchPartialFQN").as_deref() == Some("true"));
    let all: Vec<Value> = api
        .lock()
        .pipelines
        .values()
        .filter(|p| {
            let f = p["fqn"].as_str().unwrap_or_default();
            fqn.as_deref().is_none_or(|want| if partial { f.starts_with(want) } else { f == want })
        })
        .cloned()
        .collect();
    axum::Json(all).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().pipelines.get(&uuid) {
        Some(p) => axum::Json(json!([p])).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no staging pipeline {uuid}")),
    }
}

/// The checked identity and stagers of a body, or the refusal.
fn checked(api: &Api, body: &Value, except: Option<&str>) -> Result<(String, String, Vec<Value>), Refusal> {
    let fqn = body["fqn"].as_str().unwrap_or_default().to_string();
    let local = check_identity(&fqn, body["name"].as_str(), "stagpipe")?;
    let stagers: Vec<String> =
        body["stagers"].as_array().into_iter().flatten().filter_map(|s| s["uuid"].as_str()).map(str::to_string).collect();
    if stagers.is_empty() {
        return Err(Refusal(StatusCode::BAD_REQUEST, "a staging pipeline needs at least one stager {uuid}".into()));
    }
    let data = api.lock();
    if let Some(missing) = stagers.iter().find(|s| !data.jobs.contains_key(*s)) {
        return Err(Refusal(StatusCode::NOT_FOUND, format!("no stager job {missing}")));
    }
    if data.pipelines.iter().any(|(u, p)| Some(u.as_str()) != except && p["fqn"] == fqn.as_str()) {
        return Err(Refusal(StatusCode::CONFLICT, format!("a staging pipeline {fqn} already exists")));
    }
    Ok((fqn, local, stagers.into_iter().map(|u| json!({ "uuid": u })).collect()))
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let body: Value = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let (fqn, name, stagers) = match checked(&api, &body, None) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let (uuid, t) = (new_uuid(), now());
    let stored = json!({
        "auto_id": 0,
        "created_at": t,
        "created_by": api.shared.principal,
        "fqn": fqn,
        "name": name,
        "stagers": stagers,
        "updated_at": t,
        "updated_by": "",
        "uuid": uuid,
        "version_id": 1,
    });
    api.lock().pipelines.insert(uuid, stored.clone());
    api.changed();
    axum::Json(stored).into_response()
}

pub async fn update(State(api): State<Api>, Path(uuid): Path<String>, body: Bytes) -> Response {
    let body: Value = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Some(current) = api.lock().pipelines.get(&uuid).cloned() else {
        return api_error(StatusCode::NOT_FOUND, &format!("no staging pipeline {uuid}"));
    };
    if let Some(v) = body["version_id"].as_u64()
        && Some(v) != current["version_id"].as_u64()
    {
        return api_error(StatusCode::CONFLICT, &format!("version_id {v} is stale: read the staging pipeline again"));
    }
    let (fqn, name, stagers) = match checked(&api, &body, Some(&uuid)) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let mut stored = current;
    stored["fqn"] = json!(fqn);
    stored["name"] = json!(name);
    stored["stagers"] = json!(stagers);
    stored["updated_at"] = json!(now());
    stored["updated_by"] = json!(api.shared.principal);
    stored["version_id"] = json!(stored["version_id"].as_u64().unwrap_or(0) + 1);
    api.lock().pipelines.insert(uuid, stored.clone());
    api.changed();
    axum::Json(stored).into_response()
}

pub async fn remove(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    if api.lock().pipelines.shift_remove(&uuid).is_none() {
        return api_error(StatusCode::NOT_FOUND, &format!("no staging pipeline {uuid}"));
    }
    api.changed();
    null_body()
}
