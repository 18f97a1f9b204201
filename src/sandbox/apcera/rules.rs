//! Semantic pipeline rules (seed 003 L3308-3484): `GET/POST /v1/rules`,
//! `GET/DELETE /v1/rules/{uuid}`.
//!
//! Choices where the seed is silent: a rule names exactly one of `service`, `provider` or `job`
//! (the seed's second example names a provider and a service: that pair is accepted too, the
//! service being the one governed), and what it names must exist (404 otherwise), so a rule is
//! made after its service; `action.inline` is `allow` or `deny` and `action.commands` is not
//! empty; the FQN is `sempiperule::/ns::name` and unique (409); there is no update (the seed has
//! none). A rule does not stop its service from being deleted (the seed does not say it does).

use super::{Api, api_error, check_identity, new_uuid, now, null_body, parse};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub async fn list(State(api): State<Api>) -> Response {
    axum::Json(api.lock().rules.values().cloned().collect::<Vec<_>>()).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().rules.get(&uuid) {
        Some(r) => axum::Json(r.clone()).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no rule {uuid}")),
    }
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let rule: Value = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let fqn = rule["fqn"].as_str().unwrap_or_default().to_string();
    let local = match check_identity(&fqn, rule["name"].as_str(), "sempiperule") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let inline = rule["action"]["inline"].as_str().unwrap_or_default();
    let commands: Vec<&str> =
        rule["action"]["commands"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !matches!(inline, "allow" | "deny") || commands.is_empty() {
        return api_error(StatusCode::BAD_REQUEST, "a rule's action needs inline allow or deny and at least one command");
    }
    let target = |k: &str| rule[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let (service, provider, job) = (target("service"), target("provider"), target("job"));
    let named = [&service, &provider, &job].iter().filter(|t| t.is_some()).count();
    if named == 0 || job.is_some() && named > 1 {
        return api_error(StatusCode::BAD_REQUEST, "a rule names one service, provider or job");
    }
    let principal = api.shared.principal.clone();
    let mut data = api.lock();
    let exists = |list: &indexmap::IndexMap<String, Value>, f: &str| list.values().any(|v| v["fqn"] == f);
    for (kind, f) in [("service", &service), ("provider", &provider)] {
        let found = match (kind, f) {
            (_, None) => true,
            ("service", Some(f)) => exists(&data.services, f),
            (_, Some(f)) => exists(&data.providers, f),
        };
        if !found {
            return api_error(StatusCode::NOT_FOUND, &format!("no {kind} {}", f.as_deref().unwrap_or_default()));
        }
    }
    if let Some(j) = &job
        && data.job_by_fqn(j).is_none()
    {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {j}"));
    }
    if data.rules.values().any(|r| r["fqn"] == fqn.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("a rule {fqn} already exists"));
    }
    let uuid = new_uuid();
    let stored = json!({
        "action": { "commands": commands, "inline": inline },
        "created_at": now(),
        "created_by": principal,
        "fqn": fqn,
        "job": job,
        "name": local,
        "provider": provider,
        "service": service,
        "type": 0,
        "uuid": uuid,
        "version_id": 1,
    });
    data.rules.insert(uuid, stored.clone());
    drop(data);
    api.changed();
    axum::Json(stored).into_response()
}

pub async fn remove(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    if api.lock().rules.shift_remove(&uuid).is_none() {
        return api_error(StatusCode::NOT_FOUND, &format!("no rule {uuid}"));
    }
    api.changed();
    null_body()
}
