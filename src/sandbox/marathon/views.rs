//! Apps and tasks as the API shows them: what a view embeds (`Embed`), the index of running
//! deployments by app, and the writer that puts an app's cached definition and its embedded
//! keys into an answer.

use super::ids::iso;
use super::model::{App, Data, HOST, Task};
use serde_json::{Map, Value, json};

/// What a view of an app embeds besides the definition.
#[derive(Clone, Copy, Debug, Default)]
pub struct Embed {
    pub counts: bool,
    pub deployments: bool,
    pub tasks: bool,
    pub readiness: bool,
    pub task_stats: bool,
}

impl Embed {
    /// From `embed` values with one of the `prefixes` (`app.` and `apps.` for the app
    /// resources, `group.apps.` for groups).
    pub fn parse(values: &[&str], prefixes: &[&str]) -> Embed {
        let mut e = Embed::default();
        for v in values {
            let Some(what) = prefixes.iter().find_map(|p| v.strip_prefix(p)) else { continue };
            match what {
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "tasks" => e.tasks = true,
                "readiness" => e.readiness = true,
                "taskStats" => e.task_stats = true,
                _ => {}
            }
        }
        e
    }
}

/// App id → the running deployments affecting it, built once per answer.
pub type DeploymentIndex<'a> = std::collections::HashMap<&'a str, Vec<&'a str>>;

pub fn deployment_index(data: &Data) -> DeploymentIndex<'_> {
    let mut index: DeploymentIndex = Default::default();
    for d in data.deployments.values() {
        for a in &d.affected {
            index.entry(a.as_str()).or_default().push(d.id.as_str());
        }
    }
    index
}

/// What a view embeds besides the definition, by key.
fn extras(data: &Data, index: &DeploymentIndex, id: &str, app: &App, embed: Embed, now: u64) -> Map<String, Value> {
    let mut m = Map::new();
    let tasks = data.tasks.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let healthy_when_running = app.def.get("healthChecks").and_then(Value::as_array).is_some_and(|h| !h.is_empty());
    if embed.counts {
        let running = tasks.iter().filter(|t| t.running(now)).count();
        m.insert("tasksStaged".into(), json!(tasks.len() - running));
        m.insert("tasksRunning".into(), json!(running));
        m.insert("tasksHealthy".into(), json!(if healthy_when_running { running } else { 0 }));
        m.insert("tasksUnhealthy".into(), json!(0));
    }
    if embed.deployments {
        let ids: Vec<Value> = index.get(id).map(|l| l.iter().map(|d| json!({ "id": d })).collect()).unwrap_or_default();
        m.insert("deployments".into(), Value::Array(ids));
    }
    if embed.tasks {
        let list: Vec<Value> = tasks.iter().map(|t| task_json(app, t, now)).collect();
        m.insert("tasks".into(), Value::Array(list));
    }
    if embed.readiness {
        m.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.task_stats {
        let stats = if tasks.is_empty() {
            json!({})
        } else {
            let running: Vec<&Task> = tasks.iter().filter(|t| t.running(now)).collect();
            let mut lives: Vec<f64> =
                running.iter().filter_map(|t| t.running_at).map(|r| now.saturating_sub(r) as f64 / 1000.0).collect();
            lives.sort_by(f64::total_cmp);
            let average = if lives.is_empty() { 0.0 } else { lives.iter().sum::<f64>() / lives.len() as f64 };
            let median = lives.get(lives.len() / 2).copied().unwrap_or(0.0);
            json!({"totalSummary": {"stats": {
                "counts": {"staged": tasks.len() - running.len(), "running": running.len(),
                           "healthy": if healthy_when_running { running.len() } else { 0 }, "unhealthy": 0},
                "lifeTime": {"averageSeconds": average, "medianSeconds": median}
            }}})
        };
        m.insert("taskStats".into(), stats);
    }
    m
}

/// Write the app as the API shows it, with what `embed` asks for: its cached definition and
/// then the embedded keys.
pub fn write_view(out: &mut String, data: &Data, index: &DeploymentIndex, id: &str, app: &App, embed: Embed, now: u64) {
    let def = app.definition_json();
    let extras = extras(data, index, id, app, embed, now);
    if extras.is_empty() {
        out.push_str(def);
        return;
    }
    out.push_str(def.strip_suffix('}').unwrap_or(def));
    for (k, v) in &extras {
        out.push_str(",\"");
        out.push_str(k);
        out.push_str("\":");
        out.push_str(&serde_json::to_string(v).unwrap_or_default());
    }
    out.push('}');
}

/// A task as the API shows it (the keys marathon-python's task model takes).
pub fn task_json(app: &App, t: &Task, now: u64) -> Value {
    let running = t.running(now);
    let started = if running { t.running_at.map(iso).map(Value::String).unwrap_or(Value::Null) } else { Value::Null };
    let checks = app.def.get("healthChecks").and_then(Value::as_array).map_or(0, Vec::len);
    let results: Vec<Value> = if running {
        let at = t.running_at.map(iso);
        (0..checks)
            .map(|_| {
                json!({"alive": true, "consecutiveFailures": 0, "firstSuccess": at, "lastFailure": null,
                       "lastSuccess": at, "taskId": t.id})
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({
        "id": t.id,
        "appId": t.app,
        "host": HOST,
        "ports": t.host_ports,
        "servicePorts": t.service_ports,
        "slaveId": "capstan-sandbox-agent",
        "state": if running { "TASK_RUNNING" } else { "TASK_STAGING" },
        "stagedAt": iso(t.staged_at),
        "startedAt": started,
        "version": t.version,
        "ipAddresses": [{"ipAddress": HOST, "protocol": "IPv4"}],
        "healthCheckResults": results,
        "localVolumes": [],
    })
}
