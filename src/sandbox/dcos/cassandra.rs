//! The pre-SDK DC/OS Apache Cassandra scheduler's API (seed 001; upstream
//! mesosphere/dcos-cassandra-service of 2016 on dcos-commons 0.7): its one plan at
//! `/v1/plan` with `?cmd=`, connection, nodes, and cleanup, repair, backup and restore, each
//! a small plan of its own whose `/status` shows it progress node by node.

use super::scheduler::{Outcome, Req, empty, not_allowed, not_found};
use super::plan::{Element, Phase, Plan, State, Step, Strategy, Work};
use super::service::{Op, Pod, Service, agent_ip};
use super::{Ctx, command_result, json_reply};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

const OPS: [&str; 4] = ["cleanup", "repair", "backup", "restore"];

pub fn route(s: &mut Service, backups: &BTreeMap<String, u64>, ctx: &Ctx, req: &Req) -> Outcome {
    let get = req.method == Method::GET;
    match req.segments().as_slice() {
        ["v1", "plan"] if get => Outcome::read(plan_response(s)),
        ["v1", "plan"] if req.command() => match req.param("cmd") {
            Some("interrupt") => interrupt(s, ctx),
            Some("proceed" | "continue") => proceed(s),
            other => Outcome::read(message(
                StatusCode::BAD_REQUEST,
                &format!("unknown cmd {:?}: expected interrupt or proceed", other.unwrap_or_default()),
            )),
        },
        // dcos-commons 0.7 had these as paths.
        ["v1", "plan", "interrupt"] if req.command() => interrupt(s, ctx),
        ["v1", "plan", "continue"] if req.command() => proceed(s),
        ["v1", "connection"] if get => Outcome::read(json_reply(StatusCode::OK, &json!({"nodes": connection(s)}))),
        ["v1", "nodes", "list"] if get => {
            Outcome::read(json_reply(StatusCode::OK, &json!(s.pods.keys().collect::<Vec<_>>())))
        }
        ["v1", "nodes", node, what @ ("status" | "info")] if get => Outcome::read(match s.pods.get(*node) {
            Some(pod) if *what == "status" => json_reply(StatusCode::OK, &node_status(s, pod)),
            Some(pod) => json_reply(StatusCode::OK, &node_info(s, node, pod)),
            None => empty(StatusCode::NOT_FOUND),
        }),
        ["v1", op, "start"] if OPS.contains(op) && req.method == Method::PUT => start(s, op, backups, ctx, req),
        ["v1", op, "stop"] if OPS.contains(op) && req.method == Method::PUT => stop(s, op, ctx),
        ["v1", op, "status"] if OPS.contains(op) && get => Outcome::read(match s.ops.get(*op) {
            Some(o) => json_reply(StatusCode::OK, &o.plan.legacy_json(&block_message)),
            None => empty(StatusCode::NOT_FOUND),
        }),
        ["v1", "plan", ..] | ["v1", "connection"] | ["v1", "nodes", ..] => Outcome::read(not_allowed()),
        ["v1", op, "start" | "stop" | "status"] if OPS.contains(op) => Outcome::read(not_allowed()),
        _ => Outcome::read(not_found()),
    }
}

/// `GET /v1/plan`: 200 when complete, else 503, with the plan as the body either way
/// (dcos-commons 0.7's `PlanResource`, which Marathon's readiness check read).
fn plan_response(s: &Service) -> Response {
    let body = s.deploy.legacy_json(&block_message);
    let status = if body["status"] == "COMPLETE" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_reply(status, &body)
}

fn block_message(step: &Step, status: &str) -> String {
    if let Some(e) = step.error() {
        return e.to_string();
    }
    match step.work {
        Work::Nothing => "Reconciliation complete".into(),
        Work::Deploy => {
            let mode = match status {
                "COMPLETE" => "NORMAL",
                "IN_PROGRESS" => "STARTING",
                _ => "UNKNOWN",
            };
            format!("Deploying Cassandra node {} mode: {mode}", step.pod)
        }
        _ => format!("{} on {}: {status}", step.name, step.pod),
    }
}

/// Upstream answered every command 200, whatever the plan was doing.
fn interrupt(s: &mut Service, ctx: &Ctx) -> Outcome {
    s.deploy.interrupt(Element::Plan, &ctx.clock);
    Outcome::wrote(command_result("interrupt"))
}

fn proceed(s: &mut Service) -> Outcome {
    s.deploy.interrupted = false;
    Outcome::wrote(command_result("continue"))
}

fn message(status: StatusCode, m: &str) -> Response {
    json_reply(status, &json!({ "message": m }))
}

/// The running nodes' native transport addresses (seed 001's shape).
fn connection(s: &Service) -> Vec<String> {
    let port = s.target_spec().and_then(|sp| sp.pod("node")).map(|p| p.port).unwrap_or(9042);
    let mut nodes: Vec<&Pod> = s.pods.values().filter(|p| p.running).collect();
    nodes.sort_by_key(|p| p.index);
    nodes.iter().map(|p| format!("{}:{port}", agent_ip(p.agent))).collect()
}

fn node_status(s: &Service, pod: &Pod) -> Value {
    let up = pod.running;
    let host_id = pod.task_id.rsplit("__").next().unwrap_or_default();
    let version = s.env.get("CASSANDRA_VERSION").and_then(Value::as_str).unwrap_or("3.0.10");
    json!({
        "mode": if up { "NORMAL" } else { "STARTING" },
        "joined": up,
        "rpc_running": up,
        "native_transport_running": up,
        "gossip_initialized": up,
        "gossip_running": up,
        "host_id": host_id,
        "endpoint": agent_ip(pod.agent),
        "token_count": 256,
        "data_center": "dc1",
        "rack": "rac1",
        "version": version,
    })
}

fn node_info(s: &Service, name: &str, pod: &Pod) -> Value {
    json!({
        "name": name,
        "id": pod.task_id,
        "hostname": agent_ip(pod.agent),
        "slave_id": format!("{}-S{}", s.framework_id.trim_end_matches("-0000"), pod.agent),
        "state": if pod.running { "TASK_RUNNING" } else { "TASK_STAGING" },
        "operating_mode": if pod.running { "NORMAL" } else { "STARTING" },
    })
}

fn titled(op: &str) -> String {
    let mut c = op.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

fn strings(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("{key} must be a list of strings")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{key} must be a list of strings")),
    }
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// `PUT /v1/<op>/start` with seed 001's body (its JSON whatever the Content-Type says).
fn start(s: &mut Service, op: &str, backups: &BTreeMap<String, u64>, ctx: &Ctx, req: &Req) -> Outcome {
    let body: Map<String, Value> = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Outcome::read(message(StatusCode::BAD_REQUEST, "the body must be a JSON object")),
        Err(e) => return Outcome::read(message(StatusCode::BAD_REQUEST, &format!("the body is not JSON: {e}"))),
    };
    if s.ops.get(op).is_some_and(|o| o.in_progress(&ctx.clock)) {
        return Outcome::read(match op {
            "backup" | "restore" => json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"status": "already_running", "message": format!("An existing {op} is already in progress")}),
            ),
            _ => message(StatusCode::BAD_REQUEST, &format!("{} already in progress", titled(op))),
        });
    }
    let mut all: Vec<&Pod> = s.pods.values().collect();
    all.sort_by_key(|p| p.index);
    let all: Vec<String> = all.iter().map(|p| format!("{}-{}", p.pod_type, p.index)).collect();
    let (nodes, backup) = match op {
        "cleanup" | "repair" => {
            let asked = match (strings(&body, "nodes"), strings(&body, "key_spaces"), strings(&body, "column_families"))
            {
                (Ok(Some(n)), Ok(_), Ok(_)) if !n.is_empty() => n,
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    return Outcome::read(message(StatusCode::BAD_REQUEST, &e));
                }
                _ => return Outcome::read(message(StatusCode::BAD_REQUEST, "nodes must list the nodes, or [\"*\"]")),
            };
            let nodes = if asked == ["*"] { all.clone() } else { asked.clone() };
            if nodes.is_empty() || nodes.iter().any(|n| !all.contains(n)) {
                return Outcome::read(message(StatusCode::BAD_REQUEST, &format!("Invalid node list {asked:?}")));
            }
            (nodes, None)
        }
        _ => {
            let (Some(name), Some(location)) = (text(&body, "backup_name"), text(&body, "external_location")) else {
                return Outcome::read(message(
                    StatusCode::BAD_REQUEST,
                    "backup_name and external_location are required",
                ));
            };
            let s3 = ["s3:", "http:", "https:"].iter().any(|p| location.starts_with(p));
            let keys = if location.starts_with("azure:") {
                text(&body, "azure_account").is_some() && text(&body, "azure_key").is_some()
            } else {
                s3 && text(&body, "s3_access_key").is_some() && text(&body, "s3_secret_key").is_some()
            };
            if !keys {
                return Outcome::read(message(
                    StatusCode::BAD_REQUEST,
                    "external_location must be s3://, http(s):// or azure:// with its access and secret keys",
                ));
            }
            let key = format!("{}/{name}", location.trim_end_matches('/'));
            if op == "restore" {
                match backups.get(&key) {
                    None => {
                        return Outcome::read(message(
                            StatusCode::BAD_REQUEST,
                            &format!("no backup {name:?} at {location}"),
                        ));
                    }
                    Some(&n) if n != all.len() as u64 => {
                        return Outcome::read(message(
                            StatusCode::BAD_REQUEST,
                            &format!(
                                "backup {name:?} has {n} nodes and this cluster {}: restore into a cluster of the same size",
                                all.len()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            if all.is_empty() {
                return Outcome::read(message(StatusCode::BAD_REQUEST, "the cluster has no nodes yet"));
            }
            (all.clone(), Some(key))
        }
    };
    let phases: &[(&str, &str)] = match op {
        "backup" => &[("Snapshot", "snapshot"), ("Upload", "upload")],
        "restore" => &[("Download", "download"), ("Restore", "restore")],
        "cleanup" => &[("Cleanup", "cleanup")],
        _ => &[("Repair", "repair")],
    };
    let phases = phases
        .iter()
        .map(|(phase, prefix)| {
            let steps = nodes
                .iter()
                .map(|n| Step::new(format!("{prefix}-{n}"), n.clone(), Work::Task, State::Pending))
                .collect();
            Phase::new(*phase, Strategy::Serial, steps)
        })
        .collect();
    let plan = Plan::new(op, Strategy::Serial, phases);
    s.ops.insert(
        op.to_string(),
        Op { kind: op.to_string(), plan, backup, nodes: nodes.len() as u64, stopped: false, recorded: false },
    );
    Outcome::wrote(match op {
        "backup" | "restore" => json_reply(StatusCode::OK, &json!({"status": "started", "message": ""})),
        _ => empty(StatusCode::ACCEPTED),
    })
}

fn stop(s: &mut Service, op: &str, ctx: &Ctx) -> Outcome {
    match s.ops.get_mut(op) {
        Some(o) if o.in_progress(&ctx.clock) => {
            o.stopped = true;
            o.plan.interrupted = true;
            Outcome::wrote(empty(StatusCode::ACCEPTED))
        }
        _ => Outcome::read(message(StatusCode::BAD_REQUEST, &format!("{} already not running.", titled(op)))),
    }
}
