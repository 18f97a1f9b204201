//! Services and providers (seed 003 L3188-3306, L3575-3706). Neither can be updated.

use super::{Api, Data, api_error, check_identity, new_uuid, now, null_body, parse};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The seed's system services and providers.
pub fn preload(data: &mut Data) {
    let service = |uuid: &str, fqn: &str, kind: &str, description: &str, parameters: Option<Value>| {
        let mut s = json!({
            "created_at": "2015-10-15T00:07:24.690477526Z",
            "created_by": "stagehand@apcera.me",
            "description": description,
            "fqn": fqn,
            "name": fqn.rsplit("::").next().unwrap_or(fqn),
            "provider_fqn": null,
            "type": kind,
            "uuid": uuid,
        });
        if let Some(p) = parameters {
            s["parameters"] = p;
        }
        (uuid.to_string(), s)
    };
    for (uuid, s) in [
        service("443dda0c-5fd8-44d3-9946-2988ef66911d", "service::/apcera::http", "http", "", None),
        service(
            "2dd826ce-efb5-4b19-95e7-4f256662a4af",
            "service::/apcera::bash-package-sources",
            "network",
            "Continuum network service to outside package sources for bash",
            Some(json!({ "ipnet": "any", "portrange": "all", "protocol": "tcp" })),
        ),
        service(
            "5b0c6a5e-1d2f-4a3b-8c4d-5e6f7a8b9c01",
            "service::/apcera::outside-http",
            "network",
            "",
            Some(json!({ "ipnet": "any", "portrange": "80", "protocol": "tcp" })),
        ),
        service(
            "5b0c6a5e-1d2f-4a3b-8c4d-5e6f7a8b9c02",
            "service::/apcera::outside-dns",
            "network",
            "",
            Some(json!({ "ipnet": "any", "portrange": "53", "protocol": "udp" })),
        ),
    ] {
        data.services.insert(uuid, s);
    }
    for (uuid, fqn, kind, at) in [
        (
            "02bf9cd3-7dd6-444b-8de8-c9c594d06db6",
            "provider::/apcera/providers::mysql",
            "mysql",
            "2014-11-25T19:20:32.087954895Z",
        ),
        (
            "0ee194a9-e020-4fed-91c0-2a81e5c577aa",
            "provider::/apcera/providers::postgres",
            "postgres",
            "2014-09-18T19:13:46.632301919Z",
        ),
        ("d03314a3-80ec-4f20-9000-9beafc01512a", "provider::/apcera::ipm", "ipm", "2015-03-04T01:18:06.90176187Z"),
    ] {
        data.providers.insert(
            uuid.to_string(),
            json!({ "created_at": at, "created_by": "", "description": "", "fqn": fqn, "name": "", "type": kind, "uuid": uuid }),
        );
    }
}

pub async fn list_services(State(api): State<Api>) -> Response {
    let data = api.lock();
    let list: Vec<&Value> = data.services.values().collect();
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&list).unwrap_or_default()).into_response()
}

pub async fn get_service(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().services.get(&uuid) {
        Some(s) => axum::Json(s.clone()).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no service {uuid}")),
    }
}

pub async fn create_service(State(api): State<Api>, body: Bytes) -> Response {
    let req: Value = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let fqn = req["fqn"].as_str().unwrap_or_default().to_string();
    let local = match check_identity(&fqn, req["name"].as_str(), "service") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let Some(kind) = req["type"].as_str().filter(|t| !t.is_empty()) else {
        return api_error(StatusCode::BAD_REQUEST, "a service needs a type");
    };
    let mut data = api.lock();
    if data.services.values().any(|s| s["fqn"] == fqn.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("a service {fqn} already exists"));
    }
    let provider = req["provider_fqn"].as_str().filter(|p| !p.is_empty());
    if let Some(p) = provider
        && !data.providers.values().any(|x| x["fqn"] == p)
    {
        return api_error(StatusCode::NOT_FOUND, &format!("no provider {p}"));
    }
    let uuid = new_uuid();
    let mut svc = json!({
        "uuid": uuid,
        "fqn": fqn,
        "provider_fqn": provider,
        "type": kind,
        "name": local,
        "description": req["description"].as_str().unwrap_or_default(),
        "created_by": api.shared.principal,
        "created_at": now(),
    });
    if let Some(p) = req.get("parameters").filter(|p| p.is_object()) {
        svc["parameters"] = p.clone();
    }
    data.services.insert(uuid, svc.clone());
    drop(data);
    api.changed();
    // The create answer also carries the service's status (seed L3668-3684).
    svc["status"] = json!("created");
    svc["extended_status"] = json!({});
    axum::Json(svc).into_response()
}

pub async fn delete_service(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let mut data = api.lock();
    let Some(fqn) = data.services.get(&uuid).map(|s| s["fqn"].as_str().unwrap_or_default().to_string()) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no service {uuid}"));
    };
    let bound = data.jobs.values().filter(|j| j.bindings.values().any(|b| b["service_fqn"] == fqn.as_str())).count();
    if bound > 0 {
        return api_error(StatusCode::CONFLICT, &format!("{fqn} is bound to {bound} job(s); unbind them first"));
    }
    data.services.shift_remove(&uuid);
    drop(data);
    api.changed();
    null_body()
}

pub async fn list_providers(State(api): State<Api>) -> Response {
    let data = api.lock();
    let list: Vec<&Value> = data.providers.values().collect();
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&list).unwrap_or_default()).into_response()
}

pub async fn create_provider(State(api): State<Api>, body: Bytes) -> Response {
    let req: Value = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let fqn = req["fqn"].as_str().unwrap_or_default().to_string();
    let local = match check_identity(&fqn, req["name"].as_str(), "provider") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    if data.providers.values().any(|p| p["fqn"] == fqn.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("a provider {fqn} already exists"));
    }
    if let Some(j) = req["backing_job_fqn"].as_str().filter(|j| !j.is_empty())
        && api.job_uuid_by_fqn(j).is_none()
    {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {j} to back the provider"));
    }
    let uuid = new_uuid();
    // backing_job_port is a string on the wire (seed L3262).
    let port = match &req["backing_job_port"] {
        Value::Number(n) => json!(n.to_string()),
        Value::Null => json!(""),
        other => other.clone(),
    };
    let provider = json!({
        "backing_job_fqn": req["backing_job_fqn"],
        "backing_job_port": port,
        "created_at": now(),
        "created_by": api.shared.principal,
        "description": req["description"].as_str().unwrap_or_default(),
        "fqn": fqn,
        "name": local,
        "type": req["type"].as_str().unwrap_or_default(),
        "uuid": uuid,
    });
    data.providers.insert(uuid.clone(), provider.clone());
    // Write-only: kept for the provider's own use, never shown.
    data.provider_parameters.insert(uuid.clone(), req["parameters"].clone());
    drop(data);
    api.changed();
    let location = format!("{}/v1/providers/{uuid}", api.shared.base_url);
    (StatusCode::OK, [(header::LOCATION, location)], axum::Json(provider)).into_response()
}

pub async fn delete_provider(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let mut data = api.lock();
    let Some(fqn) = data.providers.get(&uuid).map(|p| p["fqn"].as_str().unwrap_or_default().to_string()) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no provider {uuid}"));
    };
    let backed = data.services.values().filter(|s| s["provider_fqn"] == fqn.as_str()).count();
    if backed > 0 {
        return api_error(StatusCode::CONFLICT, &format!("{fqn} backs {backed} service(s); delete them first"));
    }
    data.providers.shift_remove(&uuid);
    data.provider_parameters.remove(&uuid);
    drop(data);
    api.changed();
    null_body()
}
