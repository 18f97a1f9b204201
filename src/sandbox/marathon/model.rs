//! What the emulated Marathon holds (`Data`, the state file's contents) and the records in
//! it — apps and their versions, groups and theirs, tasks, deployments in flight — and the
//! context a change runs in (`Ctx`: the clock, the rollout time, the event bus). Types and
//! small reads only; the modules above change them.

use super::ids::iso;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many versions an app or a group keeps.
pub const HISTORY: usize = 50;

/// Everything the emulated Marathon holds; this is what the state file contains.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    /// Absolute app id → app.
    pub apps: BTreeMap<String, App>,
    /// Absolute app id → its versions, oldest first (kept after a delete, for group rollback).
    pub app_history: HashMap<String, Vec<AppVersion>>,
    /// Absolute group id → group; `/` is always there.
    pub groups: BTreeMap<String, Group>,
    pub group_history: HashMap<String, Vec<GroupRecord>>,
    /// Absolute app id → its tasks.
    pub tasks: HashMap<String, Vec<Task>>,
    pub deployments: indexmap::IndexMap<String, Deployment>,
    pub subscriptions: Vec<String>,
    /// The last version handed out, in Unix milliseconds.
    pub last_version_ms: u64,
    pub next_service_port: u32,
    pub next_host_port: u32,
    #[serde(skip)]
    pub used_service_ports: HashSet<u32>,
    /// Plan deployments as Marathon 1.x does (the `grouped_steps` knob, as of this request).
    #[serde(skip)]
    pub grouped_steps: bool,
}

impl Data {
    /// A new version, later than every one before it.
    pub fn next_version(&mut self, now: u64) -> String {
        let ms = now.max(self.last_version_ms + 1);
        self.last_version_ms = ms;
        iso(ms)
    }
}

/// What a handler needs besides the data: the clock, the rollout time, the event bus.
pub struct Ctx<'a> {
    pub now: u64,
    pub rollout: u64,
    pub events: &'a broadcast::Sender<Arc<Event>>,
}

/// One event, already serialised as the one line the stream sends.
#[derive(Debug)]
pub struct Event {
    pub kind: &'static str,
    pub line: String,
}

/// Publish an event to the attached streams; `build` runs only when someone listens.
pub fn emit(ctx: &Ctx, at: u64, kind: &'static str, build: impl FnOnce() -> Map<String, Value>) {
    if ctx.events.receiver_count() == 0 {
        return;
    }
    let mut m = build();
    m.insert("eventType".into(), json!(kind));
    m.insert("timestamp".into(), json!(iso(at)));
    if let Ok(line) = serde_json::to_string(&m) {
        let _ = ctx.events.send(Arc::new(Event { kind, line }));
    }
}

/// An app as the sandbox keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct App {
    /// The definition with every default filled in, `id` included; no server fields.
    pub def: Map<String, Value>,
    pub version: String,
    pub last_scaling_at: String,
    pub last_config_change_at: String,
    /// The version this app was created at; older versions belong to an earlier app of the
    /// same id.
    pub created: String,
    /// `definition` serialised, made on first use: lists of hundreds of apps are mostly these
    /// (an app is never changed in place; a change stores a new `App`).
    #[serde(skip)]
    pub cached: std::sync::OnceLock<String>,
}

impl App {
    pub fn new(def: Map<String, Value>, version: String, scaling: String, config: String, created: String) -> App {
        App {
            def,
            version,
            last_scaling_at: scaling,
            last_config_change_at: config,
            created,
            cached: Default::default(),
        }
    }

    /// The app with its version and version info, as JSON.
    pub fn definition_json(&self) -> &str {
        self.cached.get_or_init(|| serde_json::to_string(&definition(self)).unwrap_or_else(|_| "{}".into()))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppVersion {
    pub version: String,
    pub def: Map<String, Value>,
}

pub fn instances(def: &Map<String, Value>) -> u64 {
    def.get("instances").and_then(Value::as_u64).unwrap_or(0)
}

/// The service ports of a definition.
pub fn service_ports(def: &Map<String, Value>) -> Vec<u32> {
    def.get("ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).map(|p| p as u32).collect())
        .unwrap_or_default()
}

/// The definition as the versions endpoints show it: the definition and its version.
pub fn versioned(def: &Map<String, Value>, version: &str) -> Map<String, Value> {
    let mut m = def.clone();
    m.insert("version".into(), json!(version));
    m
}

/// The app with its version and version info.
pub fn definition(app: &App) -> Map<String, Value> {
    let mut m = versioned(&app.def, &app.version);
    m.insert(
        "versionInfo".into(),
        json!({"lastScalingAt": app.last_scaling_at, "lastConfigChangeAt": app.last_config_change_at}),
    );
    m
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    /// Absolute ids.
    pub dependencies: Vec<String>,
    pub version: String,
    /// Direct children.
    pub apps: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

/// A group as it was at one version: its children by id and version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRecord {
    pub version: String,
    pub dependencies: Vec<String>,
    pub apps: Vec<(String, String)>,
    pub groups: Vec<(String, String)>,
}

pub const HOST: &str = "127.0.0.1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub app: String,
    pub version: String,
    pub host_ports: Vec<u32>,
    pub service_ports: Vec<u32>,
    pub staged_at: u64,
    /// When it runs (Unix ms); None until the step that launched it is done.
    pub running_at: Option<u64>,
    /// The deployment that launched it.
    pub launched_by: Option<String>,
}

impl Task {
    pub fn running(&self, now: u64) -> bool {
        self.running_at.is_some_and(|t| now >= t)
    }
}

/// `/a/b` → `a_b`, as task ids and the text forms show an app.
pub fn safe_id(app: &str) -> String {
    app.trim_start_matches('/').replace('/', "_")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
    KillAllOldTasksOf,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::StartApplication => "StartApplication",
            Kind::StopApplication => "StopApplication",
            Kind::ScaleApplication => "ScaleApplication",
            Kind::RestartApplication => "RestartApplication",
            Kind::KillAllOldTasksOf => "KillAllOldTasksOf",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub kind: Kind,
    pub app: String,
}

/// A deployment in flight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: String,
    pub affected: Vec<String>,
    pub steps: Vec<Vec<Action>>,
    /// The step in progress (0-based).
    pub current: usize,
    /// When it started (Unix ms).
    pub step_started: u64,
    /// Whether it launches tasks, so takes the rollout time.
    pub step_timed: bool,
    /// The affected apps' definitions before and after (None: absent).
    pub original: Vec<(String, Option<Map<String, Value>>)>,
    pub target: Vec<(String, Option<Map<String, Value>>)>,
    /// The group `group_change_success` names.
    pub group_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_have_millis_and_z() {
        assert_eq!(iso(1_393_716_470_295), "2014-03-01T23:27:50.295Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        for ms in (0..4_102_444_800_000u64).step_by(86_399_999_937) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            assert_eq!(iso(ms), t.format(&format).unwrap(), "{ms}");
        }
        let mut d = Data::default();
        let a = d.next_version(1000);
        let b = d.next_version(1000);
        assert!(b > a, "{a} {b}");
    }
}
