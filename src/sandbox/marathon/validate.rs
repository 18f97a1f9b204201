//! An app definition as a request gives it, checked and normalised: unknown fields refused,
//! numeric strings parsed, ids resolved, the server's defaults filled in (see the module docs
//! of `marathon` for which), and `ports` against `portDefinitions` settled.

use super::ids::{parent, resolve};
use serde_json::{Map, Value, json};

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
}
