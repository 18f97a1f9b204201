//! Packages (seed 003 L2433-2918): list with the seed's filters, get, create, delete, and the
//! packages the seed's examples name, preloaded.

use super::{Api, Data, api_error, check_identity, fqn_matches, new_uuid, now, null_body, parse, query_pairs};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Packages named in seed 003 (with their uuids where the seed gives them), and runtimes the
/// examples use. The uuids the seed's jobs reference without naming a package get a package
/// each, so those job examples can be created as they stand.
const PRELOAD: &[(&str, &str, &str)] = &[
    ("d45ccbfd-8fc7-43e8-8941-bf713b4ad9b6", "package::/apcera/pkg/os::ubuntu-14.04-apc3", "os"),
    ("aed90e91-9a98-43e2-9240-2067f0d20c80", "package::/sandbox/user::myapp", "package"),
    ("a9f343ec-6b4e-44ba-8ffa-b3da56b79786", "package::/sandbox/user::myapp-2", "package"),
    ("f93d73e2-9047-46b2-82b5-255f12013d2f", "package::/test::staticsite", "package"),
    ("20468f8b-7824-48f1-8349-976a79e5abbc", "package::/apcera/semantic-pipelines::sp", "package"),
    ("379e2d21-81f6-4af1-953c-9cb118e186d6", "package::/apcera::continuum-guide", "package"),
    ("9a2ef589-cd27-45d0-84b1-06b5fc6e4ab3", "package::/apcera::lucid", "package"),
    ("11d3244f-b9e9-4ee0-9ebe-079c082acfd4", "package::/apcera/pkg/runtimes::static-site", "runtime"),
    ("d77faf56-e38b-41e3-8280-be9c99b65992", "package::/apcera/pkg/os::ubuntu-14.04", "os"),
    ("6c1c9a6e-3f4b-4d5e-9a70-1b2c3d4e5f01", "package::/apcera/pkg/os::ubuntu-16.04", "os"),
    ("6c1c9a6e-3f4b-4d5e-9a70-1b2c3d4e5f02", "package::/apcera/pkg/runtimes::node-6.9.1", "runtime"),
    ("6c1c9a6e-3f4b-4d5e-9a70-1b2c3d4e5f03", "package::/apcera/pkg/runtimes::python-3.6", "runtime"),
    ("6c1c9a6e-3f4b-4d5e-9a70-1b2c3d4e5f04", "package::/apcera/pkg/runtimes::go-1.9", "runtime"),
    ("6c1c9a6e-3f4b-4d5e-9a70-1b2c3d4e5f05", "package::/apcera/pkg/runtimes::openjdk-1.8", "runtime"),
];

pub fn preload(data: &mut Data) {
    for (uuid, fqn, provides) in PRELOAD {
        let name = fqn.rsplit("::").next().unwrap_or(fqn);
        data.packages.insert(
            uuid.to_string(),
            json!({
                "created_at": "2016-03-22T20:26:06.413379481Z",
                "created_by": "admin@apcera.me",
                "fqn": fqn,
                "name": name,
                "provides": [{ "name": name, "type": provides }],
                "resources": [],
                "state": "ready",
                "updated_at": "2016-03-22T20:26:08.392506152Z",
                "updated_by": "",
                "uuid": uuid,
                "version_id": 1,
            }),
        );
    }
}

pub async fn list(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let params = query_pairs(q.as_deref());
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    let partial = get("matchPartialFQN") == Some("true");
    let ids: Option<Vec<&str>> = get("ids").map(|s| s.split(',').collect());
    let data = api.lock();
    let list: Vec<&Value> = data
        .packages
        .values()
        .filter(|p| {
            let fqn = p["fqn"].as_str().unwrap_or_default();
            get("fqn").is_none_or(|f| fqn_matches(fqn, f, partial))
                && get("name").is_none_or(|n| p["name"] == n)
                && ids.as_ref().is_none_or(|ids| ids.contains(&p["uuid"].as_str().unwrap_or_default()))
                && get("provides_type")
                    .is_none_or(|t| p["provides"].as_array().into_iter().flatten().any(|x| x["type"] == t))
                && get("provides_name").is_none_or(|n| {
                    p["provides"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|x| x["name"].as_str().is_some_and(|v| v.contains(n)))
                })
        })
        .collect();
    let body = serde_json::to_vec(&list).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    match api.lock().packages.get(&uuid) {
        Some(p) => axum::Json(p.clone()).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no package {uuid}")),
    }
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let mut pkg: Value = match parse(&body) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let fqn = pkg["fqn"].as_str().unwrap_or_default().to_string();
    let local = match check_identity(&fqn, pkg["name"].as_str(), "package") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    if data.packages.values().any(|p| p["fqn"] == fqn.as_str()) {
        return api_error(StatusCode::CONFLICT, &format!("a package {fqn} already exists"));
    }
    let uuid = new_uuid();
    let t = now();
    if let Some(resources) = pkg["resources"].as_array_mut() {
        for r in resources.iter_mut() {
            r["uuid"] = json!(new_uuid());
        }
    }
    pkg["uuid"] = json!(uuid);
    pkg["name"] = json!(local);
    pkg["created_at"] = json!(t);
    pkg["updated_at"] = json!(t);
    pkg["created_by"] = json!(api.shared.principal);
    pkg["updated_by"] = json!("");
    pkg["version_id"] = json!(1);
    let has_resources = pkg["resources"].as_array().is_some_and(|r| !r.is_empty());
    pkg["state"] = json!(if has_resources { "uploading" } else { "ready" });
    if let Some(first) = pkg["resources"].get(0).cloned() {
        pkg["resource"] = first;
    }
    data.packages.insert(uuid.clone(), pkg.clone());
    drop(data);
    api.changed();
    let location = format!("{}/v1/packages/{uuid}", api.shared.base_url);
    (StatusCode::OK, [(header::LOCATION, location)], axum::Json(pkg)).into_response()
}

pub async fn remove(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let mut data = api.lock();
    if !data.packages.contains_key(&uuid) {
        return api_error(StatusCode::NOT_FOUND, &format!("no package {uuid}"));
    }
    if data.jobs.values().any(|j| j.packages.iter().any(|p| p.uuid == uuid)) {
        return api_error(StatusCode::CONFLICT, "the package is used by a job");
    }
    data.packages.shift_remove(&uuid);
    drop(data);
    api.changed();
    null_body()
}
