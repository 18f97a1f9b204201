//! An SDK scheduler's pods and endpoints (seed 000's Nodes and Connection APIs; upstream
//! `PodQueries`, `EndpointsQueries`). A pod is listed from the moment its first step starts
//! (upstream lists the tasks in its state store), in name order; each pod type has one
//! endpoint, named after it.

use super::scheduler::{Outcome, Req, empty, not_allowed, not_found};
use super::service::{Pod, Service, agent_ip};
use super::{Ctx, json_reply, text_reply};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

pub fn route(s: &mut Service, ctx: &Ctx, req: &Req) -> Outcome {
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    match req.segments().as_slice() {
        ["v1", "pod"] if get => Outcome::read(json_reply(StatusCode::OK, &json!(s.pods.keys().collect::<Vec<_>>()))),
        ["v1", "pod", "status"] if get => Outcome::read(json_reply(StatusCode::OK, &statuses(s))),
        ["v1", "pod", name, "status"] if get => Outcome::read(match s.pods.get(*name) {
            Some(pod) => json_reply(StatusCode::OK, &instance_status(s, name, pod)),
            None => pod_not_found(name),
        }),
        ["v1", "pod", name, "info"] if get => Outcome::read(match s.pods.get(*name) {
            Some(pod) => json_reply(StatusCode::OK, &json!([info(s, name, pod, ctx)])),
            None => pod_not_found(name),
        }),
        ["v1", "pod", name, action @ ("replace" | "restart")] if post => match s.recover(name, *action == "replace") {
            Some(tasks) => Outcome::wrote(json_reply(StatusCode::OK, &json!({"pod": name, "tasks": tasks}))),
            None => Outcome::read(pod_not_found(name)),
        },
        ["v1", "endpoints"] if get => Outcome::read(json_reply(StatusCode::OK, &json!(endpoint_names(s)))),
        ["v1", "endpoints", name] if get => Outcome::read(match endpoint(s, name) {
            Some(e) => json_reply(StatusCode::OK, &e),
            None => empty(StatusCode::NOT_FOUND),
        }),
        ["v1", "pod"] | ["v1", "pod", "status"] | ["v1", "pod", _, "status" | "info" | "replace" | "restart"] => {
            Outcome::read(not_allowed())
        }
        ["v1", "endpoints"] | ["v1", "endpoints", _] => Outcome::read(not_allowed()),
        _ => Outcome::read(not_found()),
    }
}

fn pod_not_found(name: &str) -> axum::response::Response {
    text_reply(StatusCode::NOT_FOUND, &format!("Pod {name} not found"))
}

/// A task's state without `TASK_`, as upstream's pod status shows it.
fn task_state(s: &Service, name: &str, pod: &Pod) -> &'static str {
    if pod.running {
        "RUNNING"
    } else if s.launching(name) {
        "STARTING"
    } else {
        "KILLED"
    }
}

fn instance_status(s: &Service, name: &str, pod: &Pod) -> Value {
    json!({
        "name": name,
        "tasks": [{"id": pod.task_id, "name": Pod::task_name(name), "status": task_state(s, name, pod)}],
    })
}

/// `GET /v1/pod/status`: the pods grouped by type, then by instance.
fn statuses(s: &Service) -> Value {
    let mut by_type: Vec<(&str, Vec<(&String, &Pod)>)> = Vec::new();
    for (name, pod) in &s.pods {
        match by_type.iter_mut().find(|(t, _)| *t == pod.pod_type) {
            Some((_, list)) => list.push((name, pod)),
            None => by_type.push((&pod.pod_type, vec![(name, pod)])),
        }
    }
    by_type.sort_by(|a, b| a.0.cmp(b.0));
    let pods: Vec<Value> = by_type
        .into_iter()
        .map(|(t, mut list)| {
            list.sort_by_key(|(_, p)| p.index);
            let instances: Vec<Value> = list.into_iter().map(|(n, p)| instance_status(s, n, p)).collect();
            json!({"name": t, "instances": instances})
        })
        .collect();
    json!({"service": s.name, "pods": pods})
}

/// `GET /v1/pod/<name>/info`: the task's Mesos TaskInfo and TaskStatus, as far as the sandbox
/// models them.
fn info(s: &Service, name: &str, pod: &Pod, ctx: &Ctx) -> Value {
    let spec = s.configs.get(pod.config_id.as_deref().unwrap_or_default()).or(s.target_spec());
    let pod_spec = spec.and_then(|sp| sp.pod(&pod.pod_type));
    let variables: Vec<Value> =
        pod_spec.map(|p| p.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect()).unwrap_or_default();
    let port = pod_spec.map(|p| p.port).unwrap_or_default();
    let ip = agent_ip(pod.agent);
    let task = Pod::task_name(name);
    let label = |k: &str, v: &str| json!({"key": k, "value": v});
    let state = format!("TASK_{}", task_state(s, name, pod));
    json!({
        "info": {
            "name": task,
            "taskId": {"value": pod.task_id},
            "slaveId": {"value": format!("{}-S{}", s.framework_id.trim_end_matches("-0000"), pod.agent)},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024.0}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}},
            ],
            "command": {"value": "./server", "environment": {"variables": variables}},
            "labels": {"labels": [
                label("target_configuration", pod.config_id.as_deref().unwrap_or_default()),
                label("task_type", &pod.pod_type),
                label("index", &pod.index.to_string()),
                label("goal_state", "RUNNING"),
                label("offer_hostname", &ip),
            ]},
            "discovery": {
                "visibility": "CLUSTER",
                "name": task,
                "ports": {"ports": [{"number": port, "name": pod.pod_type, "protocol": "tcp"}]},
            },
        },
        "status": {
            "taskId": {"value": pod.task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "timestamp": pod.since.min(ctx.clock.now) as f64 / 1000.0,
            "containerStatus": {"networkInfos": [{"ipAddresses": [{"ipAddress": ip}]}]},
        },
    })
}

fn endpoint_names(s: &Service) -> Vec<String> {
    let mut names: Vec<String> = s.pods.values().map(|p| p.pod_type.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// `{"address": [ip:port…], "dns": [autoip name:port…], "vip": …}` of a pod type's pods.
fn endpoint(s: &Service, name: &str) -> Option<Value> {
    let port = s.target_spec()?.pod(name)?.port;
    let mut pods: Vec<(&String, &Pod)> = s.pods.iter().filter(|(_, p)| p.pod_type == name).collect();
    if pods.is_empty() {
        return None;
    }
    pods.sort_by_key(|(_, p)| p.index);
    let domain = s.name.replace('/', "");
    let address: Vec<String> = pods.iter().map(|(_, p)| format!("{}:{port}", agent_ip(p.agent))).collect();
    let dns: Vec<String> = pods
        .iter()
        .map(|(n, _)| format!("{}.{domain}.autoip.dcos.thisdcos.directory:{port}", Pod::task_name(n)))
        .collect();
    Some(json!({
        "address": address,
        "dns": dns,
        "vip": format!("{name}.{domain}.l4lb.thisdcos.directory:{port}"),
    }))
}
