//! Server info, leader, ping, metrics, help, logging and the launch queue (seed 004
//! L1498-1822).

use super::api::{Api, host_port};
use super::http::{Fail, Req, path_id, raw_json, reply};
use super::ids::{iso, unix_ms};
use super::model::definition;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `GET /v2/info`: the seed's shape (L1617-1655), about this sandbox.
pub fn info(api: &Api) -> Result<Response, Fail> {
    let leader = host_port(api);
    let port: u64 = leader.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let subscriptions = api.lock().subscriptions.clone();
    Ok(reply(
        StatusCode::OK,
        &json!({
            "name": "marathon",
            "version": "1.3.0",
            "buildref": "capstan-sandbox",
            "elected": true,
            "leader": leader,
            "frameworkId": "capstan-sandbox-0000",
            "http_config": {"assets_path": null, "http_port": port, "https_port": 8443},
            "event_subscriber": {"type": "http_callback", "http_endpoints": subscriptions},
            "marathon_config": {
                "checkpoint": false,
                "executor": "//cmd",
                "failover_timeout": 604800,
                "ha": false,
                "hostname": "127.0.0.1",
                "local_port_max": 49151,
                "local_port_min": 32767,
                "master": "local",
                "mesos_leader_ui_url": null,
                "mesos_role": null,
                "mesos_user": "root",
                "reconciliation_initial_delay": 30000,
                "reconciliation_interval": 30000,
                "task_launch_timeout": 60000
            },
            "zookeeper_config": {
                "zk": "zk://localhost:2181/marathon",
                "zk_timeout": 10000,
                "zk_session_timeout": 1800000,
                "zk_max_versions": 50
            }
        }),
    ))
}

/// `GET /v2/leader`: the sandbox is always the leader.
pub fn leader(api: &Api) -> Result<Response, Fail> {
    Ok(reply(StatusCode::OK, &json!({ "leader": host_port(api) })))
}

/// `DELETE /v2/leader`: answered as the seed does (L1711-1713); the sandbox stays leader.
pub fn abdicate() -> Result<Response, Fail> {
    Ok(reply(StatusCode::OK, &json!({"message": "Leadership abdicated"})))
}

/// `GET /ping`: `pong` as text (seed L1728-1751), or the JSON string `"pong"` to a client
/// that asks for JSON, as Marathon 1.x's SystemResource answers.
pub fn ping(req: &Req) -> Result<Response, Fail> {
    let accept = req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/json") && !accept.contains("text/plain") {
        return Ok(raw_json(StatusCode::OK, b"\"pong\"".to_vec()));
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain;charset=ISO-8859-1"),
            (header::CACHE_CONTROL, "must-revalidate,no-cache,no-store"),
            (header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"),
        ],
        "pong\n",
    )
        .into_response())
}

/// `GET /metrics`: the seed's shape (L1806-1821) with a few real gauges.
pub fn metrics(api: &Api) -> Result<Response, Fail> {
    let data = api.lock();
    let now = unix_ms();
    let tasks: usize = data.tasks.values().map(Vec::len).sum();
    let running: usize = data.tasks.values().flatten().filter(|t| t.running(now)).count();
    let gauge = |v: usize| json!({ "value": v });
    Ok(reply(
        StatusCode::OK,
        &json!({
            "version": "3.0.0",
            "counters": {},
            "gauges": {
                "service.mesosphere.marathon.app.count": gauge(data.apps.len()),
                "service.mesosphere.marathon.group.count": gauge(data.groups.len()),
                "service.mesosphere.marathon.task.count": gauge(tasks),
                "service.mesosphere.marathon.task.running.count": gauge(running),
                "service.mesosphere.marathon.deployments.active": gauge(data.deployments.len())
            },
            "histograms": {},
            "meters": {},
            "timers": {}
        }),
    ))
}

fn html(title: &str, body: &str) -> Response {
    let page = format!("<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>{body}</body></html>\n");
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html;charset=UTF-8")], page).into_response()
}

pub fn help() -> Result<Response, Fail> {
    Ok(html(
        "Marathon API",
        "<h1>Marathon API (capstan sandbox)</h1><p>The v2 REST API: /v2/apps, /v2/groups, /v2/tasks, \
         /v2/deployments, /v2/events, /v2/eventSubscriptions, /v2/queue, /v2/info, /v2/leader, /ping, /metrics.</p>",
    ))
}

pub fn logging() -> Result<Response, Fail> {
    Ok(html("Logging", "<h1>Logging</h1><p>Log levels cannot be changed in the capstan sandbox.</p>"))
}

/// `GET /v2/queue`: apps with tasks still staged.
pub fn queue(api: &Api) -> Result<Response, Fail> {
    let data = api.lock();
    let now = unix_ms();
    let mut queue = Vec::new();
    for (id, app) in &data.apps {
        let staged: Vec<u64> = data
            .tasks
            .get(id)
            .map(|l| l.iter().filter(|t| !t.running(now)).map(|t| t.staged_at).collect())
            .unwrap_or_default();
        if staged.is_empty() {
            continue;
        }
        let since = staged.iter().min().copied().unwrap_or(now);
        queue.push(json!({
            "count": staged.len(),
            "delay": {"timeLeftSeconds": 0, "overdue": true},
            "since": iso(since),
            "app": Value::Object(definition(app)),
        }));
    }
    Ok(reply(StatusCode::OK, &json!({ "queue": queue })))
}

/// `DELETE /v2/queue/{id}/delay`: 204.
pub fn reset_delay(api: &Api, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    if !api.lock().apps.contains_key(&id) {
        return Err(Fail::no_app(&id));
    }
    Ok((
        StatusCode::NO_CONTENT,
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::EXPIRES, "0"),
            (header::PRAGMA, "no-cache"),
        ],
    )
        .into_response())
}
