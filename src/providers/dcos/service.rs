//! `capstan service …` on DC/OS: a service's pods, endpoints and configurations (seed 000;
//! legacy Cassandra's nodes and connection, seed 001), a pod replaced or restarted and followed
//! through the service's `recovery` plan, and legacy Cassandra's cleanup, repair, backup and
//! restore started with seed 001's bodies and followed through their `/status` until done.
//!
//! Which API a service speaks is read from its scheduler's Marathon labels, as for deploying
//! (`plan::service_of`). Choices where the seeds are silent: a pod's recovery is done when the
//! recovery plan's step of that pod that was not there before the request (a new id) is
//! COMPLETE; an operation's status 404 is an operation not registered yet.

use super::plan::{self, Api};
use crate::http::{HttpClient, Idempotent};
use crate::model::{ServiceOp, SubStep};
use crate::providers::ApiError;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// How often a running plan or operation is read again.
const POLL: Duration = Duration::from_millis(50);

/// Carry out `op` on `service`: what to show, once any plan it started is done.
pub async fn run(
    http: &HttpClient,
    service: &str,
    op: &ServiceOp,
    timeout: Duration,
    progress: &(dyn Fn(Vec<SubStep>) + Send + Sync),
) -> Result<Value, ApiError> {
    plan::check_name("service", service, true)?;
    let api = api_of(http, service).await?;
    let base = &format!("/service/{service}/v1");
    let get = |path: String| async move {
        http.call(Method::GET, &format!("{base}{path}"), None, Idempotent::Yes).await.map(Option::unwrap_or_default)
    };
    let each = |list: Value, path: fn(&str) -> String| async move {
        let mut out = Map::new();
        for name in list.as_array().into_iter().flatten().filter_map(Value::as_str) {
            out.insert(name.to_string(), get(path(name)).await?);
        }
        Ok::<Value, ApiError>(Value::Object(out))
    };
    let unsupported = |what: &str| {
        let kind = if api == Api::Sdk { "an SDK service (seed 000)" } else { "a legacy Cassandra (seed 001)" };
        Err(ApiError::plain(format!("service {service} is {kind}, whose API has no {what}")))
    };
    match (op, api) {
        (ServiceOp::Pods, Api::Sdk) => each(get("/pod".into()).await?, |p| format!("/pod/{p}/info")).await,
        (ServiceOp::Pods, Api::LegacyCassandra) => {
            each(get("/nodes/list".into()).await?, |n| format!("/nodes/{n}/info")).await
        }
        (ServiceOp::Endpoints, Api::Sdk) => each(get("/endpoints".into()).await?, |e| format!("/endpoints/{e}")).await,
        (ServiceOp::Endpoints, Api::LegacyCassandra) => get("/connection".into()).await,
        (ServiceOp::Config, Api::Sdk) => {
            let configurations = each(get("/configurations".into()).await?, |c| format!("/configurations/{c}")).await?;
            Ok(json!({
                "target": get("/configurations/target".into()).await?,
                "configurations": configurations,
                "suppressed": get("/state/properties/suppressed".into()).await?,
            }))
        }
        (ServiceOp::PodReplace(pod) | ServiceOp::PodRestart(pod), Api::Sdk) => {
            plan::check_name("pod", pod, false)?;
            let action = if matches!(op, ServiceOp::PodReplace(_)) { "replace" } else { "restart" };
            let recovery = format!("{base}/plans/recovery");
            // The pod's recovery steps before: the one to follow is a new one.
            let before = read_plan(http, &recovery).await.unwrap_or_default();
            let old: Vec<String> = pod_steps(&before, pod).into_iter().map(|(id, _)| id).collect();
            let path = format!("{base}/pod/{pod}/{action}");
            // Not sent again on a lost answer: a second replace would move the pod twice.
            let answer = http.call(Method::POST, &path, None, Idempotent::No).await?.unwrap_or_default();
            let status_of_new = |plan: &Value| {
                pod_steps(plan, pod).into_iter().find(|(id, _)| !old.contains(id)).map(|(_, status)| status)
            };
            let what = format!("the recovery of pod {pod} of service {service}");
            let done = follow(http, &recovery, &what, timeout, progress, status_of_new).await?;
            Ok(json!({ action: answer, "recovery": done }))
        }
        (ServiceOp::Maintenance { op: name, body }, Api::LegacyCassandra) => {
            if !["cleanup", "repair", "backup", "restore"].contains(&name.as_str()) {
                return Err(ApiError::plain(format!("no operation {name:?}: cleanup, repair, backup or restore")));
            }
            let start = format!("{base}/{name}/start");
            let answer = http.call(Method::PUT, &start, Some(body), Idempotent::No).await?.unwrap_or_default();
            let what = format!("the {name} of service {service}");
            let status = |plan: &Value| plan.get("status").and_then(Value::as_str).map(String::from);
            let done = follow(http, &format!("{base}/{name}/status"), &what, timeout, progress, status).await?;
            Ok(json!({ "start": answer, "status": done }))
        }
        (ServiceOp::Config, _) => unsupported("configuration API"),
        (ServiceOp::PodReplace(_) | ServiceOp::PodRestart(_), _) => unsupported("pod replace or restart"),
        (ServiceOp::Maintenance { op, .. }, _) => unsupported(&format!("{op} operation")),
    }
}

/// The API the service speaks, from the labels of the Marathon app that is its scheduler.
async fn api_of(http: &HttpClient, service: &str) -> Result<Api, ApiError> {
    let apps = http.call(Method::GET, "/service/marathon/v2/apps", None, Idempotent::Yes).await?.unwrap_or_default();
    apps["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(plan::service_of)
        .find(|(name, _)| name == service.trim_start_matches('/'))
        .map(|(_, api)| api)
        .ok_or_else(|| {
            ApiError::plain(format!("no service {service} on this cluster: no Marathon app carries its scheduler's labels"))
        })
}

/// The steps of `pod` in a plan: (id, status).
fn pod_steps(plan: &Value, pod: &str) -> Vec<(String, String)> {
    let prefix = format!("{pod}:");
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    plan.get("phases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|p| p.get("steps").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|s| text(s, "name").starts_with(&prefix))
        .map(|s| (text(&s, "id"), text(&s, "status")))
        .collect()
}

/// A plan as its API answers it (417 and legacy's 503 carry it as their body); Null for 404.
async fn read_plan(http: &HttpClient, path: &str) -> Result<Value, ApiError> {
    match http.call(Method::GET, path, None, Idempotent::Yes).await {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(e) if matches!(e.status, Some(417 | 503)) => Ok(e.document.map(|d| *d).unwrap_or_default()),
        Err(e) if e.status == Some(404) => Ok(Value::Null),
        Err(e) => Err(e),
    }
}

/// Read a plan (or an operation's status, in the same shape) until `status` of it (the part
/// followed) is COMPLETE (Ok, the plan), ERROR (the failing steps' messages), or `timeout`
/// passes.
async fn follow(
    http: &HttpClient,
    path: &str,
    what: &str,
    timeout: Duration,
    progress: &(dyn Fn(Vec<SubStep>) + Send + Sync),
    status: impl Fn(&Value) -> Option<String>,
) -> Result<Value, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        let plan = read_plan(http, path).await?;
        if plan.get("phases").is_some() && plan != last {
            progress(plan::substeps(&plan));
            last = plan.clone();
        }
        match status(&plan).as_deref() {
            Some("COMPLETE") => return Ok(plan),
            Some("ERROR") => {
                return Err(ApiError::other("GET", path, format!("{what} failed: {}", plan::why(&plan))));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            let status = status(&plan).unwrap_or_else(|| "not started".into());
            return Err(ApiError::plain(format!(
                "{what} is not COMPLETE after {}s (capstan.yaml `timeouts`: app): {status}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::plan::check_name;

    #[test]
    fn names_that_would_leave_the_services_path_are_refused() {
        for ok in ["cassandra", "prod/cassandra", "hdfs-2", "db.v1"] {
            assert!(check_name("service", ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "../marathon", "a//b", "a/../b", "x?cmd=interrupt", "x#y", "A", "a b", "/"] {
            assert!(check_name("service", bad, true).is_err(), "{bad:?}");
        }
        assert!(check_name("pod", "node-0", false).is_ok());
        assert!(check_name("pod", "node-0/../x", false).is_err());
    }
}
