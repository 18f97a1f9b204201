//! Following a DC/OS service's own plan: the readiness of an SDK service (seed 000, `GET
//! /v1/plans/deploy`) or of a legacy Cassandra service (seed 001, `GET /v1/plan`) after
//! Marathon has deployed its scheduler.

use crate::apply::Report;
use crate::http::{HttpClient, Idempotent};
use crate::model::SubStep;
use crate::providers::ApiError;
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a running plan is read again.
const POLL: Duration = Duration::from_millis(20);

/// Which plan API a service speaks, from its scheduler app's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// dcos-commons (seed 000): `/v1/plans/deploy`, 200 COMPLETE, 202 in progress, 417 error.
    Sdk,
    /// The pre-SDK DC/OS Apache Cassandra (seed 001): `/v1/plan`, 503 with the plan while in
    /// progress.
    LegacyCassandra,
}

/// The service an app's labels make it the scheduler of, if any (the pinned labels).
pub fn service_of(spec: &Value) -> Option<(String, Api)> {
    let labels = spec.get("labels")?;
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let name = label("DCOS_SERVICE_NAME").or_else(|| label("DCOS_PACKAGE_FRAMEWORK_NAME"));
    let api = match (label("DCOS_COMMONS_API_VERSION"), label("DCOS_PACKAGE_FRAMEWORK_NAME")) {
        (Some("v1"), _) => Api::Sdk,
        (None, Some("cassandra")) => Api::LegacyCassandra,
        _ => return None,
    };
    Some((name?.trim_start_matches('/').to_string(), api))
}

/// Names go into URL paths: lower-case letters, digits, `-`, `_`, `.`, and for a service `/`
/// between folders; never `..` or an empty part.
pub fn check_name(what: &str, name: &str, folders: bool) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c) || (folders && c == '/');
    let parts_ok = name.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if name.is_empty() || name.len() > 200 || !name.chars().all(ok_char) || !parts_ok {
        return Err(ApiError::plain(format!(
            "{what} name {name:?} is not one DC/OS allows (lower-case letters, digits, -, _, .)"
        )));
    }
    Ok(())
}

impl Api {
    fn path(self, service: &str) -> String {
        match self {
            Api::Sdk => format!("/service/{service}/v1/plans/deploy"),
            Api::LegacyCassandra => format!("/service/{service}/v1/plan"),
        }
    }

    /// Interrupt (`true`) or continue the plan: seed 000's `POST …/interrupt|continue`, seed
    /// 001's `POST ?cmd=interrupt` and `PUT ?cmd=proceed`. A 208 (nothing to do) is a success.
    async fn command(self, http: &HttpClient, service: &str, interrupt: bool) -> Result<(), ApiError> {
        let plan = self.path(service);
        let (method, path) = match (self, interrupt) {
            (Api::Sdk, true) => (Method::POST, format!("{plan}/interrupt")),
            (Api::Sdk, false) => (Method::POST, format!("{plan}/continue")),
            (Api::LegacyCassandra, true) => (Method::POST, format!("{plan}?cmd=interrupt")),
            (Api::LegacyCassandra, false) => (Method::PUT, format!("{plan}?cmd=proceed")),
        };
        // A 208's body is text, not JSON: only the status matters.
        match http.call(method, &path, None, Idempotent::Yes).await {
            Ok(_) => Ok(()),
            Err(e) if e.status.is_some_and(|s| (200..300).contains(&s)) || e.message.contains("not JSON") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A client whose reads of a plan are not retried: legacy's 503 is the answer "in progress",
/// and the loop around the read reads again (passing on an interrupt in between).
fn once(http: &HttpClient) -> HttpClient {
    let mut once = http.clone();
    once.retry.max_attempts = 1;
    once
}

/// The status of the service's plan, or None while its scheduler does not serve one.
pub async fn status(http: &HttpClient, service: &str, api: Api) -> Result<Option<String>, ApiError> {
    let path = api.path(service);
    let answer = match once(http).call(Method::GET, &path, None, Idempotent::Yes).await {
        // Not an answer with a plan (a connection reset, a 500): read again as every read is.
        Err(e) if e.transient && !matches!(e.status, Some(503)) => http.call(Method::GET, &path, None, Idempotent::Yes).await,
        other => other,
    };
    let plan = match answer {
        Ok(v) => v.unwrap_or_default(),
        Err(e) if matches!(e.status, Some(417 | 503)) => e.document.map(|d| *d).unwrap_or_default(),
        Err(e) if matches!(e.status, Some(404 | 502 | 503)) => Value::Null,
        Err(e) => return Err(e),
    };
    Ok(plan.get("status").and_then(Value::as_str).map(String::from))
}

/// Read the service's plan until it is COMPLETE (Ok), in ERROR (the failing step's message,
/// and the plan's errors), or `timeout` passes (time spent interrupted does not count). A
/// scheduler not serving yet (404, 503 without a plan) is a scheduler still starting. While
/// `paused` is set, the service's plan is interrupted; when it is cleared, continued. Every
/// read of the plan goes to `report` as the step's sub-steps.
pub async fn follow(
    http: &HttpClient,
    service: &str,
    api: Api,
    timeout: Duration,
    paused: Option<&AtomicBool>,
    report: Option<Report<'_>>,
) -> Result<(), ApiError> {
    let path = api.path(service);
    let reader = once(http);
    let mut deadline = Instant::now() + timeout;
    let mut last = String::from("the scheduler has not answered yet");
    let mut interrupted = false;
    let mut continued = false;
    loop {
        let want = paused.is_some_and(|p| p.load(Ordering::SeqCst));
        if want != interrupted {
            match api.command(http, service, want).await {
                Ok(()) => {
                    interrupted = want;
                    tracing::info!(%service, interrupted, "passed on to the service's plan");
                    if !want {
                        deadline = Instant::now() + timeout;
                    }
                }
                // A scheduler that is not serving yet is told on the next round.
                Err(e) if matches!(e.status, Some(404 | 502 | 503)) || e.status.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        let plan = match reader.call(Method::GET, &path, None, Idempotent::Yes).await {
            Ok(v) => v.unwrap_or_default(),
            // 417 (and legacy's 503) carry the plan as their body: the error's text is its JSON.
            // A 417 without one is still the service saying its plan failed.
            Err(e) if e.status == Some(417) => match e.document {
                Some(plan) if plan.get("status").is_some() => *plan,
                _ => {
                    let body: String = printable(&e.message).chars().take(500).collect();
                    let why = format!("the plan of service {service} failed: answered 417 without a plan: {body}");
                    return Err(ApiError::other("GET", &path, why));
                }
            },
            Err(e) if e.status == Some(503) => e.document.map(|d| *d).unwrap_or_default(),
            // Read again on the next round, until the deadline.
            Err(e) if matches!(e.status, Some(404 | 502 | 503)) || e.status.is_none() || e.transient => Value::Null,
            Err(e) => return Err(e),
        };
        if let Some(r) = report.filter(|_| plan.get("phases").is_some()) {
            r.substeps(substeps(&plan));
        }
        // Interrupted while capstan's own plan is not (an interrupt through capstan before the
        // daemon was restarted; its continue came after, with no memory of the service): the
        // declaration wants the plan COMPLETE, so it is continued, once. To hold a service,
        // interrupt through capstan (kept across restarts). Not from `apply`, which cannot be
        // interrupted itself: there a plan held out of band stays held.
        if paused.is_some() && !want && !interrupted && !continued && plan.get("status") == Some(&Value::from("WAITING")) {
            match api.command(http, service, false).await {
                Ok(()) => {
                    continued = true;
                    deadline = Instant::now() + timeout;
                    tracing::info!(%service, "the service's plan was interrupted and capstan's is not: continued");
                }
                Err(e) if matches!(e.status, Some(404 | 502 | 503)) || e.status.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        match plan.get("status").and_then(Value::as_str) {
            Some("COMPLETE") => return Ok(()),
            Some("ERROR") => return Err(ApiError::other("GET", &path, failure(service, &plan))),
            Some(status) => last = progress(status, &plan),
            None => {}
        }
        if !interrupted && Instant::now() >= deadline {
            return Err(ApiError::other(
                "GET",
                &path,
                format!(
                    "the plan of service {service} is not COMPLETE after {}s (capstan.yaml `timeouts`): {last}",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The steps of a plan, as `phase / step: STATUS` (SDK phases have `steps`; legacy ones
/// `blocks`).
pub fn steps(plan: &Value) -> Vec<(String, String, String, String)> {
    let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let text = |v: &Value, key: &str| printable(v.get(key).and_then(Value::as_str).unwrap_or_default());
    list(plan, "phases")
        .iter()
        .flat_map(|phase| {
            let steps = if phase.get("blocks").is_some() { list(phase, "blocks") } else { list(phase, "steps") };
            let name = text(phase, "name");
            steps
                .into_iter()
                .map(move |s| (name.clone(), text(&s, "name"), text(&s, "status"), text(&s, "message")))
        })
        .collect()
}

/// A service's text as capstan shows it: control characters (a terminal's escapes, a carriage
/// return that would write over the line, C1 controls) spelled out as `\u{1b}`, so a service
/// cannot make an ERROR look COMPLETE on a terminal, a status page or a report.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// The plan's steps as capstan's sub-steps.
pub fn substeps(plan: &Value) -> Vec<SubStep> {
    steps(plan).into_iter().map(|(phase, step, status, message)| SubStep { phase, step, status, message }).collect()
}

fn progress(status: &str, plan: &Value) -> String {
    let steps = steps(plan);
    let done = steps.iter().filter(|s| s.2 == "COMPLETE").count();
    format!("plan {status}, {done} of {} steps COMPLETE", steps.len())
}

/// Why a plan failed: its failing step and the plan's errors, in the service's own words.
fn failure(service: &str, plan: &Value) -> String {
    format!("the plan of service {service} failed: {}", why(plan))
}

/// A failed plan's failing steps (`phase / step: message`) and errors.
pub fn why(plan: &Value) -> String {
    let mut parts: Vec<String> = steps(plan)
        .into_iter()
        .filter(|s| s.2 == "ERROR")
        .map(|(phase, step, _, message)| format!("{phase} / {step}: {message}"))
        .collect();
    parts.extend(
        plan.get("errors").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(printable),
    );
    if parts.is_empty() {
        parts.push("(no step says why)".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_tell_an_sdk_service_from_a_legacy_cassandra_and_a_plain_app() {
        let sdk = json!({"labels": {"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "db"}});
        assert_eq!(service_of(&sdk), Some(("db".into(), Api::Sdk)));
        let legacy = json!({"labels": {"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra"}});
        assert_eq!(service_of(&legacy), Some(("cassandra".into(), Api::LegacyCassandra)));
        assert_eq!(service_of(&json!({"labels": {"DCOS_SERVICE_NAME": "db"}})), None);
        assert_eq!(service_of(&json!({"id": "/web"})), None);
    }

    #[test]
    fn a_services_control_characters_are_spelled_out() {
        let plan = json!({"status": "ERROR", "errors": ["\u{1b}[2K\rok"], "phases": [{"name": "p\u{9b}1", "steps": [
            {"name": "s\n", "status": "ERROR", "message": "\u{7}bad"}]}]});
        let text = why(&plan) + &format!("{:?}", substeps(&plan));
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(why(&plan).contains("\\u{1b}[2K\\u{d}ok"), "{}", why(&plan));
        assert_eq!(printable("node-0:[server] é"), "node-0:[server] é");
    }

    #[test]
    fn a_failed_plan_names_its_failing_step_and_errors() {
        let plan: Value = serde_json::from_str(include_str!("../../../tests/fixtures/dcos/dcos-plan-deploy-error.synth.json"))
            .unwrap();
        let text = failure("db", &plan);
        assert!(text.contains("node-deploy / node-1:[server]: "), "{text}");
        assert!(text.contains("The disk size of pod node cannot be changed"), "{text}");
    }
}
