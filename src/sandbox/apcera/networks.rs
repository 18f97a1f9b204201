//! Virtual networks and job membership (seed 003 L1996-2050, L2267-2431).

use super::{Api, Data, api_error, check_identity, new_uuid, now, null_body, parse};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    pub uuid: String,
    pub fqn: String,
    pub name: String,
    pub description: String,
    pub subnet: String,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    pub uuid: String,
    pub job_fqn: String,
    /// The member's address on the network, used while its job is started.
    pub host: u32,
}

/// A network as the API shows it: `network_end_points` null when empty, and an interface
/// only for members whose job is started.
fn network_json(net: &Network, data: &Data) -> Value {
    let points: Vec<Value> = net
        .members
        .iter()
        .map(|m| {
            let mut p = json!({ "uuid": m.uuid, "job_fqn": m.job_fqn, "network_fqn": net.fqn });
            if data.job_by_fqn(&m.job_fqn).is_some_and(|j| j.state == "started") {
                let base = net.subnet.split('/').next().unwrap_or("192.168.1.0").rsplit_once('.').map(|(a, _)| a).unwrap_or("192.168.1");
                p["end_point_interface"] = json!([{
                    "hardware_addr": format!("6a:4f:33:{:02x}:{:02x}:{:02x}", (m.host >> 16) & 0xff, (m.host >> 8) & 0xff, m.host & 0xff),
                    "ipv4_addr": format!("{base}.{}/24", m.host),
                }]);
            }
            p
        })
        .collect();
    json!({
        "fqn": net.fqn,
        "name": net.name,
        "description": net.description,
        "uuid": net.uuid,
        "subnet_info": { "Subnet": net.subnet },
        "updated_by": net.updated_by,
        "created_by": net.created_by,
        "updated_at": net.updated_at,
        "created_at": net.created_at,
        "network_end_points": if points.is_empty() { Value::Null } else { Value::Array(points) },
        "version_id": 0,
    })
}

pub async fn list(State(api): State<Api>) -> Response {
    let data = api.lock();
    let list: Vec<Value> = data.networks.values().map(|n| network_json(n, &data)).collect();
    axum::Json(list).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let data = api.lock();
    match data.networks.get(&uuid) {
        Some(n) => axum::Json(network_json(n, &data)).into_response(),
        None => api_error(StatusCode::NOT_FOUND, &format!("no network {uuid}")),
    }
}

#[derive(Deserialize)]
struct NewNetwork {
    #[serde(default)]
    fqn: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
}

pub async fn create(State(api): State<Api>, body: Bytes) -> Response {
    let req: NewNetwork = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let local = match check_identity(&req.fqn, Some(&req.name), "network") {
        Ok(l) => l,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    if data.networks.values().any(|n| n.fqn == req.fqn) {
        return api_error(StatusCode::CONFLICT, &format!("a network {} already exists", req.fqn));
    }
    // Unique /24s (the seed shows two networks with the same subnet, G8).
    data.next_subnet += 1;
    let t = now();
    let net = Network {
        uuid: new_uuid(),
        fqn: req.fqn,
        name: local,
        description: req.description,
        subnet: format!("192.168.{}.0/24", data.next_subnet % 256),
        created_at: t.clone(),
        created_by: api.shared.principal.clone(),
        updated_at: t,
        updated_by: String::new(),
        members: Vec::new(),
    };
    let out = network_json(&net, &data);
    data.networks.insert(net.uuid.clone(), net);
    drop(data);
    api.changed();
    axum::Json(out).into_response()
}

pub async fn remove(State(api): State<Api>, Path(uuid): Path<String>) -> Response {
    let mut data = api.lock();
    let Some(net) = data.networks.get(&uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no network {uuid}"));
    };
    if !net.members.is_empty() {
        return api_error(
            StatusCode::CONFLICT,
            &format!("network {} still has {} member job(s); remove them first", net.fqn, net.members.len()),
        );
    }
    data.networks.shift_remove(&uuid);
    drop(data);
    api.changed();
    null_body()
}

#[derive(Deserialize)]
struct Join {
    #[serde(default)]
    job_fqn: String,
    #[serde(default)]
    network_fqn: String,
}

pub async fn join(State(api): State<Api>, Path(job_uuid): Path<String>, body: Bytes) -> Response {
    let req: Join = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut data = api.lock();
    let Some(job) = data.jobs.get(&job_uuid).cloned() else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {job_uuid}"));
    };
    if !req.job_fqn.is_empty() && req.job_fqn != job.fqn {
        return api_error(StatusCode::BAD_REQUEST, "job_fqn does not name the job of the path");
    }
    let Some(net_uuid) = data.networks.values().find(|n| n.fqn == req.network_fqn).map(|n| n.uuid.clone()) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no network {}", req.network_fqn));
    };
    if let Some(current) = &job.network_ref {
        // A second join is refused like any other: the job already has a network_ref.
        let which = if current.uuid == net_uuid { "this" } else { "another" };
        return api_error(StatusCode::CONFLICT, &format!("{} is already on {which} network; leave it first", job.fqn));
    }
    let net = data.networks.get_mut(&net_uuid).expect("found above");
    let host = net.members.iter().map(|m| m.host).max().unwrap_or(0) + 1;
    net.members.push(Member { uuid: new_uuid(), job_fqn: job.fqn.clone(), host });
    net.updated_at = now();
    if let Some(j) = data.jobs.get_mut(&job_uuid) {
        j.network_ref = Some(super::jobs::NetworkRef { uuid: net_uuid });
        j.touched(&api.shared.principal);
    }
    drop(data);
    api.changed();
    axum::Json(json!({ "job_fqn": job.fqn, "network_fqn": req.network_fqn })).into_response()
}

pub async fn leave(State(api): State<Api>, Path((job_uuid, net_uuid)): Path<(String, String)>) -> Response {
    let mut data = api.lock();
    let Some(job_fqn) = data.jobs.get(&job_uuid).map(|j| j.fqn.clone()) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no job {job_uuid}"));
    };
    let Some(net) = data.networks.get_mut(&net_uuid) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no network {net_uuid}"));
    };
    let before = net.members.len();
    net.members.retain(|m| m.job_fqn != job_fqn);
    if net.members.len() == before {
        return api_error(StatusCode::NOT_FOUND, &format!("{job_fqn} is not on network {}", net.fqn));
    }
    net.updated_at = now();
    if let Some(j) = data.jobs.get_mut(&job_uuid) {
        j.network_ref = None;
        j.touched(&api.shared.principal);
    }
    drop(data);
    api.changed();
    null_body()
}
