//! Apps: definitions with the server's defaults, views with counts, tasks and deployments,
//! and the `/v2/apps` endpoints (seed 004 L56-581; create, list and show from the upstream
//! fragments the seed includes).

use super::deployments::{self, Change, Put};
use super::{Api, Data, Fail, HISTORY, Req, ancestors, deployed, is_under, parent, raw_json, reply, resolve};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

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

/// Fields of a definition with the server's defaults, in the order answers list them.
const FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "user",
    "env",
    "instances",
    "cpus",
    "mem",
    "disk",
    "executor",
    "constraints",
    "uris",
    "fetch",
    "storeUrls",
    "ports",
    "portDefinitions",
    "requirePorts",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "container",
    "healthChecks",
    "dependencies",
    "upgradeStrategy",
    "labels",
];

/// Later-version fields marathon-python knows: kept as given, absent when not given.
const OPTIONAL: &[&str] = &[
    "acceptedResourceRoles",
    "gpus",
    "role",
    "killSelection",
    "unreachableStrategy",
    "taskKillGracePeriodSeconds",
    "ipAddress",
    "readinessChecks",
    "secrets",
    "residency",
    "networks",
    "taskRateLimit",
];

/// What a GET answers with besides the definition; accepted in a body and ignored.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

const BAD_COMMAND: &str = "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.";

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

/// A number, or a string holding one (the seed sends `"cpus": "0.3"`).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

fn integer(v: &Value) -> Option<i64> {
    let f = number(v)?;
    (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

/// Collects a definition's problems as `(path, error)`.
struct Checker<'a> {
    at: &'a str,
    errors: Vec<(String, String)>,
}

impl Checker<'_> {
    fn fail(&mut self, field: &str, error: impl Into<String>) {
        self.errors.push((format!("{}/{field}", self.at), error.into()));
    }

    fn string(&mut self, field: &str, v: Option<&Value>, default: Value) -> Value {
        match v {
            None => default,
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(_) => {
                self.fail(field, "error.expected.jsstring");
                default
            }
        }
    }

    fn strings(&mut self, field: &str, v: Option<&Value>) -> Value {
        match v {
            None => json!([]),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Value::Array(a.clone()),
            Some(_) => {
                self.fail(field, "error.expected.jsarray of strings");
                json!([])
            }
        }
    }

    fn float(&mut self, field: &str, v: Option<&Value>, default: f64, min: f64) -> Value {
        let Some(v) = v else { return json!(default) };
        match number(v) {
            Some(f) if f >= min => json!(f),
            Some(_) => {
                self.fail(field, format!("must be greater than or equal to {min}"));
                json!(default)
            }
            None => {
                self.fail(field, "error.expected.jsnumber");
                json!(default)
            }
        }
    }

    fn int(&mut self, field: &str, v: Option<&Value>, default: i64) -> Value {
        let Some(v) = v else { return json!(default) };
        match integer(v) {
            Some(i) if i >= 0 => json!(i),
            Some(_) => {
                self.fail(field, "must be greater than or equal to 0");
                json!(default)
            }
            None => {
                self.fail(field, "error.expected.jsnumber (an integer)");
                json!(default)
            }
        }
    }

    fn object(&mut self, field: &str, v: Option<&Value>) -> Option<Map<String, Value>> {
        match v {
            None => Some(Map::new()),
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => {
                self.fail(field, "error.expected.jsobject");
                None
            }
        }
    }
}

/// Normalise an app definition for `id`: `input` over `base` when `partial`, defaults filled,
/// numbers parsed, ids resolved. `base` (the app as it is) also lends its service ports to
/// ports given as 0. Errors are `(path, message)` with paths under `at`.
pub fn normalize(
    input: &Map<String, Value>,
    id: &str,
    base: Option<&Map<String, Value>>,
    partial: bool,
    at: &str,
) -> Result<Map<String, Value>, Vec<(String, String)>> {
    let mut c = Checker { at, errors: Vec::new() };
    for k in input.keys() {
        if k != "id"
            && !FIELDS.contains(&k.as_str())
            && !OPTIONAL.contains(&k.as_str())
            && !READ_ONLY.contains(&k.as_str())
        {
            c.fail(k, format!("unknown property '{k}'"));
        }
    }
    let merge_base = if partial { base } else { None };
    let src = |k: &str| -> Option<&Value> {
        match input.get(k) {
            Some(Value::Null) => None,
            Some(v) => Some(v),
            None => merge_base.and_then(|b| b.get(k)).filter(|v| !v.is_null()),
        }
    };
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    let cmd = c.string("cmd", src("cmd"), Value::Null);
    out.insert("cmd".into(), cmd);
    let args = match src("args") {
        None => Value::Null,
        v => c.strings("args", v),
    };
    out.insert("args".into(), args);
    let user = c.string("user", src("user"), Value::Null);
    out.insert("user".into(), user);
    let env = match c.object("env", src("env")) {
        Some(m) => {
            for (k, v) in &m {
                if !(v.is_string() || v.is_object()) {
                    c.fail(&format!("env/{k}"), "error.expected.jsstring");
                }
            }
            Value::Object(m)
        }
        None => json!({}),
    };
    out.insert("env".into(), env);
    let instances = c.int("instances", src("instances"), 1);
    out.insert("instances".into(), instances);
    let cpus = c.float("cpus", src("cpus"), 1.0, 0.0);
    out.insert("cpus".into(), cpus);
    let mem = c.float("mem", src("mem"), 128.0, 0.0);
    out.insert("mem".into(), mem);
    let disk = c.float("disk", src("disk"), 0.0, 0.0);
    out.insert("disk".into(), disk);
    let executor = c.string("executor", src("executor"), json!(""));
    out.insert("executor".into(), executor);
    let constraints = constraints(&mut c, src("constraints"));
    out.insert("constraints".into(), constraints);
    let uris = c.strings("uris", src("uris"));
    out.insert("uris".into(), uris);
    let fetch = match src("fetch") {
        None => json!([]),
        Some(Value::Array(a)) => Value::Array(
            a.iter()
                .map(|f| match f {
                    Value::String(s) => json!({ "uri": s }),
                    Value::Object(_) => f.clone(),
                    _ => {
                        c.fail("fetch", "error.expected.jsobject");
                        Value::Null
                    }
                })
                .collect(),
        ),
        Some(_) => {
            c.fail("fetch", "error.expected.jsarray");
            json!([])
        }
    };
    out.insert("fetch".into(), fetch);
    let store_urls = c.strings("storeUrls", src("storeUrls"));
    out.insert("storeUrls".into(), store_urls);
    let container = match src("container") {
        None => Value::Null,
        Some(Value::Object(m)) => {
            let mut m = m.clone();
            match m.get("type") {
                None | Some(Value::Null) => {
                    m.insert("type".into(), json!("DOCKER"));
                }
                Some(Value::String(t)) if t == "DOCKER" || t == "MESOS" => {}
                Some(_) => c.fail("container/type", "must be DOCKER or MESOS"),
            }
            if m.get("volumes").is_none_or(Value::is_null) {
                m.insert("volumes".into(), json!([]));
            }
            Value::Object(m)
        }
        Some(_) => {
            c.fail("container", "error.expected.jsobject");
            Value::Null
        }
    };
    let definitions = port_definitions(&mut c, input, base, partial, &container);
    let ports: Vec<Value> = definitions.iter().map(|d| d["port"].clone()).collect();
    out.insert("ports".into(), Value::Array(ports));
    out.insert("portDefinitions".into(), Value::Array(definitions));
    let require_ports = match src("requirePorts") {
        None => json!(false),
        Some(Value::Bool(b)) => json!(b),
        Some(_) => {
            c.fail("requirePorts", "error.expected.jsboolean");
            json!(false)
        }
    };
    out.insert("requirePorts".into(), require_ports);
    let backoff = c.int("backoffSeconds", src("backoffSeconds"), 1);
    out.insert("backoffSeconds".into(), backoff);
    let factor = c.float("backoffFactor", src("backoffFactor"), 1.15, 1.0);
    out.insert("backoffFactor".into(), factor);
    let max_delay = c.int("maxLaunchDelaySeconds", src("maxLaunchDelaySeconds"), 3600);
    out.insert("maxLaunchDelaySeconds".into(), max_delay);
    out.insert("container".into(), container.clone());
    let checks = match src("healthChecks") {
        None => json!([]),
        Some(Value::Array(a)) => Value::Array(a.iter().enumerate().map(|(i, h)| health_check(&mut c, i, h)).collect()),
        Some(_) => {
            c.fail("healthChecks", "error.expected.jsarray");
            json!([])
        }
    };
    out.insert("healthChecks".into(), checks);
    let dependencies = match src("dependencies") {
        None => json!([]),
        Some(Value::Array(a)) => {
            let mut deps = Vec::new();
            for (i, d) in a.iter().enumerate() {
                match d.as_str().map(|s| resolve(parent(id), s)) {
                    Some(Ok(p)) => deps.push(json!(p)),
                    Some(Err(e)) => c.fail(&format!("dependencies({i})"), e),
                    None => c.fail(&format!("dependencies({i})"), "error.expected.jsstring"),
                }
            }
            Value::Array(deps)
        }
        Some(_) => {
            c.fail("dependencies", "error.expected.jsarray");
            json!([])
        }
    };
    out.insert("dependencies".into(), dependencies);
    let strategy = match c.object("upgradeStrategy", src("upgradeStrategy")) {
        Some(m) => {
            let mut s = Map::new();
            for (k, default) in [("minimumHealthCapacity", 1.0), ("maximumOverCapacity", 1.0)] {
                let v = c.float(&format!("upgradeStrategy/{k}"), m.get(k).filter(|v| !v.is_null()), default, 0.0);
                if v.as_f64().is_some_and(|f| f > 1.0) {
                    c.fail(&format!("upgradeStrategy/{k}"), "must be less than or equal to 1");
                }
                s.insert(k.into(), v);
            }
            for k in m.keys() {
                if k != "minimumHealthCapacity" && k != "maximumOverCapacity" {
                    c.fail(&format!("upgradeStrategy/{k}"), format!("unknown property '{k}'"));
                }
            }
            Value::Object(s)
        }
        None => json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}),
    };
    out.insert("upgradeStrategy".into(), strategy);
    let labels = match c.object("labels", src("labels")) {
        Some(m) => {
            for (k, v) in &m {
                if !v.is_string() {
                    c.fail(&format!("labels/{k}"), "error.expected.jsstring");
                }
            }
            Value::Object(m)
        }
        None => json!({}),
    };
    out.insert("labels".into(), labels);
    for k in OPTIONAL {
        if let Some(v) = src(k) {
            out.insert((*k).into(), v.clone());
        }
    }
    let has = |k: &str| !out[k].is_null();
    if (has("cmd") && has("args")) || !(has("cmd") || has("args") || has("container")) {
        c.errors.push((if at.is_empty() { "/".to_string() } else { at.to_string() }, BAD_COMMAND.to_string()));
    }
    if c.errors.is_empty() { Ok(out) } else { Err(c.errors) }
}

fn constraints(c: &mut Checker, v: Option<&Value>) -> Value {
    let Some(v) = v else { return json!([]) };
    let Some(list) = v.as_array() else {
        c.fail("constraints", "error.expected.jsarray");
        return json!([]);
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        match item.as_array() {
            Some(parts) if (2..=3).contains(&parts.len()) => out.push(Value::Array(
                parts
                    .iter()
                    .map(|p| match p {
                        Value::Number(n) => json!(n.to_string()),
                        other => other.clone(),
                    })
                    .collect(),
            )),
            _ => c.fail(&format!("constraints({i})"), "a constraint is [field, operator] or [field, operator, value]"),
        }
    }
    Value::Array(out)
}

fn health_check(c: &mut Checker, i: usize, v: &Value) -> Value {
    let Some(m) = v.as_object() else {
        c.fail(&format!("healthChecks({i})"), "error.expected.jsobject");
        return Value::Null;
    };
    let protocol = m.get("protocol").and_then(Value::as_str).unwrap_or("HTTP").to_string();
    let mut out = Map::new();
    let command = if protocol == "COMMAND" {
        match m.get("command") {
            Some(Value::String(s)) => json!({ "value": s }),
            Some(Value::Object(o)) => Value::Object(o.clone()),
            _ => {
                c.fail(&format!("healthChecks({i})/command"), "a COMMAND health check needs a command");
                Value::Null
            }
        }
    } else {
        Value::Null
    };
    out.insert("command".into(), command);
    for (k, default) in [("gracePeriodSeconds", 15), ("intervalSeconds", 10), ("maxConsecutiveFailures", 3)] {
        let v = c.int(&format!("healthChecks({i})/{k}"), m.get(k).filter(|v| !v.is_null()), default);
        out.insert(k.into(), v);
    }
    if matches!(protocol.as_str(), "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS") {
        let path = m.get("path").and_then(Value::as_str).unwrap_or("/");
        out.insert("path".into(), json!(path));
    }
    if protocol != "COMMAND" && m.get("port").is_none_or(Value::is_null) {
        let v = c.int(&format!("healthChecks({i})/portIndex"), m.get("portIndex").filter(|v| !v.is_null()), 0);
        out.insert("portIndex".into(), v);
    }
    out.insert("protocol".into(), json!(protocol));
    let v = c.int(&format!("healthChecks({i})/timeoutSeconds"), m.get("timeoutSeconds").filter(|v| !v.is_null()), 20);
    out.insert("timeoutSeconds".into(), v);
    for (k, v) in m {
        if !out.contains_key(k) && k != "command" {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// The port definitions an app ends up with (see the module docs for `ports` against
/// `portDefinitions`); ports given as 0 take the port `base` has at the same index.
fn port_definitions(
    c: &mut Checker,
    input: &Map<String, Value>,
    base: Option<&Map<String, Value>>,
    partial: bool,
    container: &Value,
) -> Vec<Value> {
    let base_defs: Vec<Value> =
        base.and_then(|b| b.get("portDefinitions")).and_then(Value::as_array).cloned().unwrap_or_default();
    let base_ports: Vec<Option<i64>> = base_defs.iter().map(|d| d.get("port").and_then(integer)).collect();
    let from_ports = |c: &mut Checker, v: &Value| -> Vec<Value> {
        match v.as_array() {
            Some(a) => a
                .iter()
                .enumerate()
                .map(|(i, p)| match integer(p) {
                    // The definition at the same index keeps its protocol, name and labels.
                    Some(n) if (0..=65535).contains(&n) => match base_defs.get(i).and_then(Value::as_object) {
                        Some(d) => {
                            let mut d = d.clone();
                            d.insert("port".into(), json!(n));
                            Value::Object(d)
                        }
                        None => json!({ "port": n }),
                    },
                    _ => {
                        c.fail(&format!("ports({i})"), "a port is an integer from 0 to 65535");
                        json!({ "port": 0 })
                    }
                })
                .collect(),
            None => {
                c.fail("ports", "error.expected.jsarray");
                Vec::new()
            }
        }
    };
    let from_definitions = |c: &mut Checker, v: &Value| -> Vec<Value> {
        match v.as_array() {
            Some(a) => a.to_vec(),
            None => {
                c.fail("portDefinitions", "error.expected.jsarray");
                Vec::new()
            }
        }
    };
    let numbers =
        |defs: &[Value]| -> Vec<Option<i64>> { defs.iter().map(|d| d.get("port").and_then(integer)).collect() };
    let given_ports = input.get("ports").filter(|v| !v.is_null());
    let given_defs = input.get("portDefinitions").filter(|v| !v.is_null());
    let chosen: Vec<Value> = match (given_ports, given_defs) {
        (Some(p), Some(d)) => {
            let p = from_ports(c, p);
            let d = from_definitions(c, d);
            if numbers(&d) == base_ports && numbers(&p) != base_ports { p } else { d }
        }
        (Some(p), None) => from_ports(c, p),
        (None, Some(d)) => from_definitions(c, d),
        (None, None) if partial && base.is_some() => base_defs.clone(),
        (None, None) => {
            let mapped =
                container.get("portMappings").or_else(|| container.get("docker").and_then(|d| d.get("portMappings")));
            if mapped.and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
                Vec::new()
            } else {
                vec![json!({ "port": 0 })]
            }
        }
    };
    let mut out = Vec::new();
    for (i, d) in chosen.iter().enumerate() {
        let Some(m) = d.as_object() else {
            c.fail(&format!("portDefinitions({i})"), "error.expected.jsobject");
            continue;
        };
        let mut port = match m.get("port").map(integer) {
            None => 0,
            Some(Some(n)) if (0..=65535).contains(&n) => n,
            Some(_) => {
                c.fail(&format!("portDefinitions({i})/port"), "a port is an integer from 0 to 65535");
                0
            }
        };
        if port == 0
            && let Some(Some(p)) = base_ports.get(i)
        {
            port = *p;
        }
        let mut def = Map::new();
        def.insert("port".into(), json!(port));
        let protocol = m.get("protocol").and_then(Value::as_str).unwrap_or("tcp");
        def.insert("protocol".into(), json!(protocol));
        if let Some(name) = m.get("name").filter(|v| !v.is_null()) {
            def.insert("name".into(), name.clone());
        }
        def.insert("labels".into(), m.get("labels").filter(|v| v.is_object()).cloned().unwrap_or(json!({})));
        for k in m.keys() {
            if !matches!(k.as_str(), "port" | "protocol" | "name" | "labels") {
                c.fail(&format!("portDefinitions({i})/{k}"), format!("unknown property '{k}'"));
            }
        }
        out.push(Value::Object(def));
    }
    out
}

/// Give every port 0 a free service port (from 10000 up, unique among the apps).
pub fn assign_ports(def: &mut Map<String, Value>, data: &mut Data) {
    let Some(Value::Array(defs)) = def.get_mut("portDefinitions") else { return };
    for d in defs.iter_mut() {
        if d["port"].as_u64() == Some(0) {
            let port = next_service_port(data);
            d["port"] = json!(port);
        }
    }
    let ports: Vec<Value> = defs.iter().map(|d| d["port"].clone()).collect();
    for p in &ports {
        if let Some(p) = p.as_u64() {
            data.used_service_ports.insert(p as u32);
        }
    }
    def.insert("ports".into(), Value::Array(ports));
}

fn next_service_port(data: &mut Data) -> u32 {
    if data.next_service_port < 10000 {
        data.next_service_port = 10000;
    }
    for _ in 0..10001 {
        let p = data.next_service_port;
        data.next_service_port = if p >= 20000 { 10000 } else { p + 1 };
        if !data.used_service_ports.contains(&p) {
            data.used_service_ports.insert(p);
            return p;
        }
    }
    0
}

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
        let list: Vec<Value> = tasks.iter().map(|t| super::tasks::task_json(app, t, now)).collect();
        m.insert("tasks".into(), Value::Array(list));
    }
    if embed.readiness {
        m.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.task_stats {
        let stats = if tasks.is_empty() {
            json!({})
        } else {
            let running: Vec<&super::tasks::Task> = tasks.iter().filter(|t| t.running(now)).collect();
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

/// An id from a URL path: relative to the root; invalid is 422.
pub fn path_id(raw: &str) -> Result<String, Fail> {
    let id = resolve("/", raw).map_err(|e| Fail::invalid("/id", e))?;
    if id == "/" {
        return Err(Fail::invalid("/id", "an app id cannot be the root"));
    }
    Ok(id)
}

/// An app may not be where a group is, nor below another app.
pub fn check_placement(data: &Data, id: &str) -> Result<(), Fail> {
    if data.groups.contains_key(id) {
        return Err(Fail::status(StatusCode::CONFLICT, format!("A group with id [{id}] already exists.")));
    }
    for a in ancestors(id) {
        if data.apps.contains_key(a) {
            return Err(Fail::status(
                StatusCode::CONFLICT,
                format!("An app with id [{a}] already exists, so it cannot contain [{id}]."),
            ));
        }
    }
    Ok(())
}

/// `/v2/apps/{id}` and what is below it.
pub fn sub(api: &Api, req: &Req, rest: &str) -> Result<Response, Fail> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let head = |k: usize| segs[..k].join("/");
    let last = segs[n - 1];
    let m = &req.method;
    if n >= 2 && last == "restart" {
        return if *m == Method::POST { restart(api, req, &head(n - 1)) } else { Err(super::not_allowed()) };
    }
    if n >= 2 && last == "tasks" {
        return match *m {
            Method::GET => super::tasks::app_tasks(api, req, &head(n - 1)),
            Method::DELETE => super::tasks::kill_app_tasks(api, req, &head(n - 1)),
            _ => Err(super::not_allowed()),
        };
    }
    if n >= 3 && segs[n - 2] == "tasks" {
        return if *m == Method::DELETE {
            super::tasks::kill_one(api, req, &head(n - 2), last)
        } else {
            Err(super::not_allowed())
        };
    }
    if n >= 2 && last == "versions" {
        return if *m == Method::GET { versions(api, &head(n - 1)) } else { Err(super::not_allowed()) };
    }
    if n >= 3 && segs[n - 2] == "versions" {
        return if *m == Method::GET { version(api, &head(n - 2), last) } else { Err(super::not_allowed()) };
    }
    if last == "*" {
        return if *m == Method::GET { group_apps(api, &head(n - 1)) } else { Err(super::not_allowed()) };
    }
    match *m {
        Method::GET => show(api, req, rest),
        Method::PUT => put_one(api, req, rest),
        Method::DELETE => delete(api, req, rest),
        _ => Err(super::not_allowed()),
    }
}

/// Label selectors: `key`, `key==value`, `key!=value`, `key in (a, b)`, `key notin (a, b)`,
/// comma-separated, all of which must hold.
fn label_matches(labels: &Map<String, Value>, selector: &str) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in selector.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).all(|t| {
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        let set = |s: &str| -> Vec<String> {
            s.trim().trim_start_matches('(').trim_end_matches(')').split(',').map(|x| x.trim().to_string()).collect()
        };
        if let Some((k, v)) = t.split_once("!=") {
            get(k) != Some(v.trim())
        } else if let Some((k, v)) = t.split_once("==") {
            get(k) == Some(v.trim())
        } else if let Some((k, v)) = t.split_once(" notin ") {
            get(k).is_none_or(|x| !set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = t.split_once(" in ") {
            get(k).is_some_and(|x| set(v).iter().any(|s| s == x))
        } else if let Some((k, v)) = t.split_once('=') {
            get(k) == Some(v.trim())
        } else {
            get(t).is_some()
        }
    })
}

/// `GET /v2/apps`: always with counts and deployments.
pub fn list(api: &Api, req: &Req) -> Result<Response, Fail> {
    let mut embed = Embed::parse(&req.params("embed"), &["app.", "apps."]);
    embed.counts = true;
    embed.deployments = true;
    let id_filter = req.param("id");
    let cmd_filter = req.param("cmd");
    let label = req.param("label");
    let data = api.lock();
    let now = super::unix_ms();
    let index = deployment_index(&data);
    let apps = data
        .apps
        .iter()
        .filter(|(id, _)| id_filter.is_none_or(|f| id.contains(f)))
        .filter(|(_, a)| cmd_filter.is_none_or(|f| a.def["cmd"].as_str().is_some_and(|c| c.contains(f))))
        .filter(|(_, a)| label.is_none_or(|l| a.def["labels"].as_object().is_some_and(|m| label_matches(m, l))));
    Ok(app_list(&data, &index, apps, embed, now))
}

/// `{"apps": […]}`.
fn app_list<'a>(
    data: &Data,
    index: &DeploymentIndex,
    apps: impl Iterator<Item = (&'a String, &'a App)>,
    embed: Embed,
    now: u64,
) -> Response {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("{\"apps\":[");
    for (i, (id, a)) in apps.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_view(&mut out, data, index, id, a, embed, now);
    }
    out.push_str("]}");
    raw_json(StatusCode::OK, out.into_bytes())
}

/// `GET /v2/apps/{group}/*`: the apps below a group.
fn group_apps(api: &Api, raw: &str) -> Result<Response, Fail> {
    let gid = resolve("/", raw).map_err(|e| Fail::invalid("/id", e))?;
    let data = api.lock();
    let now = super::unix_ms();
    let embed = Embed { counts: true, deployments: true, ..Default::default() };
    let index = deployment_index(&data);
    Ok(app_list(&data, &index, data.apps.iter().filter(|(id, _)| is_under(id, &gid)), embed, now))
}

/// `GET /v2/apps/{id}`: always with counts, deployments and tasks.
fn show(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let mut embed = Embed::parse(&req.params("embed"), &["app.", "apps."]);
    embed.counts = true;
    embed.deployments = true;
    embed.tasks = true;
    let data = api.lock();
    let app = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?;
    let index = deployment_index(&data);
    let mut out = String::from("{\"app\":");
    write_view(&mut out, &data, &index, &id, app, embed, super::unix_ms());
    out.push('}');
    Ok(raw_json(StatusCode::OK, out.into_bytes()))
}

fn invalid(errors: Vec<(String, String)>) -> Fail {
    Fail::Invalid(errors)
}

/// `POST /v2/apps`: 201 with the app, its defaults and the deployment that starts it.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    let body = req.object()?;
    let raw = match body.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Fail::invalid("/id", "error.path.missing")),
    };
    let id = path_id(&raw)?;
    let mut data = api.lock();
    if data.apps.contains_key(&id) {
        return Err(Fail::Body(
            StatusCode::CONFLICT,
            json!({"id": raw, "message": format!("An app with id [{id}] already exists.")}),
        ));
    }
    check_placement(&data, &id)?;
    let def = normalize(&body, &id, None, false, "").map_err(invalid)?;
    let change = Change::app_write(&id, def);
    let ctx = api.ctx();
    let plan = deployments::plan(&data, &change)?;
    let (deployment, _) = deployments::commit(&mut data, &ctx, change, plan, false)?;
    let app = &data.apps[&id];
    let mut body = definition(app);
    body.insert("deployments".into(), json!([{ "id": deployment }]));
    drop(data);
    api.changed();
    let mut r = reply(StatusCode::CREATED, &Value::Object(body));
    let location = format!("{}{}/v2/apps{id}", api.shared.base_url, req.prefix);
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = deployment.parse() {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    Ok(r)
}

/// `partialUpdate`, true unless said otherwise.
fn partial(req: &Req) -> Result<bool, Fail> {
    match req.param("partialUpdate") {
        None => Ok(true),
        Some(_) => req.flag("partialUpdate"),
    }
}

/// The definition an app had at `version` (its current incarnation only).
pub fn at_version<'a>(data: &'a Data, id: &str, version: &str) -> Option<&'a Map<String, Value>> {
    let app = data.apps.get(id)?;
    data.app_history.get(id)?.iter().rev().find(|v| v.version == version && v.version >= app.created).map(|v| &v.def)
}

/// The new definition a PUT asks for, or None for an unknown app that is to be created.
fn updated(
    data: &Data,
    id: &str,
    body: &Map<String, Value>,
    partial: bool,
    at: &str,
) -> Result<Map<String, Value>, Fail> {
    if let Some(v) = body.get("version").filter(|v| !v.is_null()) {
        let v = v.as_str().unwrap_or_default();
        if !data.apps.contains_key(id) {
            return Err(Fail::no_app(id));
        }
        return at_version(data, id, v)
            .cloned()
            .ok_or_else(|| Fail::status(StatusCode::NOT_FOUND, format!("Version '{v}' of app '{id}' does not exist")));
    }
    let existing = data.apps.get(id);
    if existing.is_none() {
        check_placement(data, id)?;
    }
    normalize(body, id, existing.map(|a| &a.def), partial && existing.is_some(), at).map_err(invalid)
}

/// `PUT /v2/apps/{id}`: update, create, or roll back.
fn put_one(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let partial = partial(req)?;
    let body = req.object()?;
    let mut data = api.lock();
    let created = !data.apps.contains_key(&id);
    let def = updated(&data, &id, &body, partial, "")?;
    let change = Change::app_write(&id, def);
    let ctx = api.ctx();
    let plan = deployments::plan(&data, &change)?;
    let (deployment, version) = deployments::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(if created {
        let location = format!("{}{}/v2/apps{id}", api.shared.base_url, req.prefix);
        deployed(StatusCode::CREATED, &deployment, &version, Some(location))
    } else {
        deployed(StatusCode::OK, &deployment, &version, None)
    })
}

/// `PUT /v2/apps`: many apps, created or updated, in one deployment.
pub fn put_many(api: &Api, req: &Req) -> Result<Response, Fail> {
    let force = req.flag("force")?;
    let partial = partial(req)?;
    let Value::Array(items) = req.json()? else {
        return Err(Fail::invalid("/", "error.expected.jsarray"));
    };
    let mut data = api.lock();
    let mut puts: Vec<Put> = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("/({i})");
        let Some(body) = item.as_object() else {
            errors.push((at, "error.expected.jsobject".to_string()));
            continue;
        };
        let id = match body.get("id").and_then(Value::as_str).map(|s| resolve("/", s)) {
            Some(Ok(id)) if id != "/" => id,
            Some(Err(e)) => {
                errors.push((format!("{at}/id"), e));
                continue;
            }
            _ => {
                errors.push((format!("{at}/id"), "error.path.missing".to_string()));
                continue;
            }
        };
        if puts.iter().any(|p| p.id == id) {
            errors.push((format!("{at}/id"), format!("app {id} is given more than once")));
            continue;
        }
        match updated(&data, &id, body, partial, &at) {
            Ok(def) => puts.push(Put { id, def, restart: false, bump: true }),
            Err(Fail::Invalid(e)) => errors.extend(e),
            Err(other) => return Err(other),
        }
    }
    if !errors.is_empty() {
        return Err(Fail::Invalid(errors));
    }
    let locked = puts.iter().map(|p| p.id.clone()).collect();
    let change = Change { puts, locked, group_id: "/".into(), post: Some("/v2/apps".into()), ..Default::default() };
    let ctx = api.ctx();
    let plan = deployments::plan(&data, &change)?;
    let (deployment, version) = deployments::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// `DELETE /v2/apps/{id}`.
fn delete(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    if !data.apps.contains_key(&id) {
        return Err(Fail::no_app(&id));
    }
    let change = Change {
        removes: vec![id.clone()],
        locked: vec![id.clone()],
        group_id: parent(&id).to_string(),
        ..Default::default()
    };
    let ctx = api.ctx();
    let plan = deployments::plan(&data, &change)?;
    let (deployment, version) = deployments::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    let mut r = deployed(StatusCode::OK, &deployment, &version, None);
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate".parse().unwrap());
    h.insert(header::EXPIRES, "0".parse().unwrap());
    h.insert(header::PRAGMA, "no-cache".parse().unwrap());
    Ok(r)
}

/// `POST /v2/apps/{id}/restart`: a new version of the same definition, every task replaced.
fn restart(api: &Api, req: &Req, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let force = req.flag("force")?;
    let mut data = api.lock();
    let def = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?.def.clone();
    let change = Change {
        puts: vec![Put { id: id.clone(), def, restart: true, bump: true }],
        locked: vec![id.clone()],
        group_id: parent(&id).to_string(),
        ..Default::default()
    };
    let ctx = api.ctx();
    let plan = deployments::plan(&data, &change)?;
    let (deployment, version) = deployments::commit(&mut data, &ctx, change, plan, force)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}

/// `GET /v2/apps/{id}/versions`, newest first.
fn versions(api: &Api, raw: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let data = api.lock();
    let app = data.apps.get(&id).ok_or_else(|| Fail::no_app(&id))?;
    let list: Vec<&str> = data
        .app_history
        .get(&id)
        .map(|h| h.iter().rev().filter(|v| v.version >= app.created).map(|v| v.version.as_str()).collect())
        .unwrap_or_default();
    Ok(reply(StatusCode::OK, &json!({ "versions": list })))
}

/// `GET /v2/apps/{id}/versions/{version}`: the bare definition at that version.
fn version(api: &Api, raw: &str, version: &str) -> Result<Response, Fail> {
    let id = path_id(raw)?;
    let data = api.lock();
    if !data.apps.contains_key(&id) {
        return Err(Fail::no_app(&id));
    }
    let def = at_version(&data, &id, version).ok_or_else(|| {
        Fail::status(StatusCode::NOT_FOUND, format!("Version '{version}' of app '{id}' does not exist"))
    })?;
    let body = serde_json::to_vec(&versioned(def, version)).unwrap_or_default();
    Ok(raw_json(StatusCode::OK, body).into_response())
}

/// Keep an app's history short.
pub fn remember(data: &mut Data, id: &str, version: &str, def: &Map<String, Value>) {
    let h = data.app_history.entry(id.to_string()).or_default();
    h.push(AppVersion { version: version.to_string(), def: def.clone() });
    if h.len() > HISTORY {
        let extra = h.len() - HISTORY;
        h.drain(..extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_app() {
        let input = json!({"id": "x", "cmd": "sleep 1"});
        let def = normalize(input.as_object().unwrap(), "/x", None, false, "").unwrap();
        assert_eq!(def["cpus"], json!(1.0));
        assert_eq!(def["mem"], json!(128.0));
        assert_eq!(def["instances"], json!(1));
        assert_eq!(def["ports"], json!([0]));
        assert_eq!(def["upgradeStrategy"], json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}));
        assert_eq!(def["args"], Value::Null);
    }

    #[test]
    fn numeric_strings_become_numbers_and_bad_input_is_listed() {
        let input = json!({"cmd": "x", "cpus": "0.3", "instances": "2", "mem": "9"});
        let def = normalize(input.as_object().unwrap(), "/x", None, false, "").unwrap();
        assert_eq!(
            (def["cpus"].clone(), def["instances"].clone(), def["mem"].clone()),
            (json!(0.3), json!(2), json!(9.0))
        );
        let bad = json!({"cpus": "lots", "bogus": 1});
        let errors = normalize(bad.as_object().unwrap(), "/x", None, false, "").unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"/cpus") && paths.contains(&"/bogus") && paths.contains(&"/"), "{errors:?}");
    }

    #[test]
    fn labels_select() {
        let labels = json!({"env": "prod", "team": "a"});
        let l = labels.as_object().unwrap();
        assert!(label_matches(l, "env==prod"));
        assert!(label_matches(l, "env in (dev, prod),team"));
        assert!(!label_matches(l, "env!=prod"));
        assert!(label_matches(l, "owner notin (x)"));
        assert!(!label_matches(l, "owner"));
    }
}
