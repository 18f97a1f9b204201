//! Which Marathon apps are schedulers, and the service specification a scheduler reads from
//! its app's environment: pod types and counts, and what each pod type's tasks run with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How many pod instances a service may have in all (hostile counts are refused, not built).
pub const MAX_PODS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A DC/OS SDK service (seed 000).
    Sdk,
    /// The pre-SDK DC/OS Apache Cassandra service (seed 001).
    Legacy,
}

/// The service an app's labels make it the scheduler of: `DCOS_COMMONS_API_VERSION: v1` and
/// `DCOS_SERVICE_NAME: <name>` is an SDK service; `DCOS_PACKAGE_FRAMEWORK_NAME: cassandra`
/// without `DCOS_COMMONS_API_VERSION` a legacy Cassandra one (named by `DCOS_SERVICE_NAME`,
/// else `cassandra`). A name must be path segments Marathon would accept as ids; `marathon`
/// is the admin router's own.
pub fn classify(labels: &Map<String, Value>) -> Option<(String, Kind)> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let (name, kind) = match label("DCOS_COMMONS_API_VERSION") {
        Some("v1") => (label("DCOS_SERVICE_NAME")?, Kind::Sdk),
        Some(_) => return None,
        None if label("DCOS_PACKAGE_FRAMEWORK_NAME") == Some("cassandra") => {
            (label("DCOS_SERVICE_NAME").unwrap_or("cassandra"), Kind::Legacy)
        }
        None => return None,
    };
    let name = name.trim_matches('/');
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(super::super::marathon::valid_segment)
        && name.split('/').next() != Some("marathon");
    valid.then(|| (name.to_string(), kind))
}

/// One pod type: how many instances, and what its tasks run with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    pub pod_type: String,
    pub count: u64,
    /// The environment its tasks get: every variable that is not a count, except those that
    /// start with another pod type's prefix.
    pub env: BTreeMap<String, Value>,
    /// The port of its one endpoint.
    pub port: u16,
}

impl PodSpec {
    /// What a pod of this type runs with, count aside: pods whose fingerprint does not change
    /// are not relaunched.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&json!({"type": self.pod_type, "env": self.env, "port": self.port})).unwrap_or_default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub pods: Vec<PodSpec>,
}

impl Spec {
    pub fn pod(&self, pod_type: &str) -> Option<&PodSpec> {
        self.pods.iter().find(|p| p.pod_type == pod_type)
    }

    /// The configuration as `/v1/configurations/<id>` shows it: upstream `ServiceSpec` field
    /// names, with only what the sandbox models.
    pub fn to_json(&self, service: &str) -> Value {
        let role = format!("{}-role", service.replace('/', "__"));
        let principal = format!("{}-principal", service.replace('/', "__"));
        let pods: Vec<Value> = self
            .pods
            .iter()
            .map(|p| {
                json!({
                    "type": p.pod_type,
                    "user": "nobody",
                    "count": p.count,
                    "task-specs": [{
                        "name": "server",
                        "goal": "RUNNING",
                        "command-spec": {"value": "./server", "environment": p.env},
                        "discovery-spec": {"prefix": null, "ports": [{"name": p.pod_type, "port": p.port}]},
                    }],
                })
            })
            .collect();
        json!({
            "name": service,
            "role": role,
            "principal": principal,
            "user": "nobody",
            "goal": "RUNNING",
            "pod-specs": pods,
            "replacement-failure-policy": null,
        })
    }
}

/// A configuration problem as upstream's `ConfigValidationError.toString` writes it.
fn value_error(field: &str, value: &str, message: &str) -> String {
    format!("Field: '{field}'; Value: '{value}'; Message: '{message}'; Fatal: false")
}

fn transition_error(field: &str, old: &str, new: &str, message: &str) -> String {
    format!("Field: '{field}'; Transition: '{old}' => '{new}'; Message: '{message}'; Fatal: false")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `NODES` → (`NODE`, `node`); `<X>_COUNT` → (`X`, x in lower case with `-` for `_`).
fn count_var(key: &str, env: &Map<String, Value>) -> Option<(String, String)> {
    let prefix = match key {
        "NODES" if !env.contains_key("NODE_COUNT") => "NODE",
        _ => key.strip_suffix("_COUNT")?,
    };
    let mut chars = prefix.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !prefix.ends_with('_');
    ok.then(|| (prefix.to_string(), prefix.to_ascii_lowercase().replace('_', "-")))
}

/// The specification an app's environment describes. SDK: a pod type per `<X>_COUNT` (and
/// `NODES`, the pod type `node`), in the environment's order; `<X>_PORT` is its endpoint's
/// port (default 8080). Legacy Cassandra: `NODES` nodes of the pod type `node`, on
/// `CASSANDRA_NATIVE_TRANSPORT_PORT` (default 9042). Errors in upstream's wording.
pub fn from_env(env: &Map<String, Value>, kind: Kind) -> Result<Spec, Vec<String>> {
    let counts: Vec<(&String, String, String)> = match kind {
        Kind::Sdk => env.keys().filter_map(|k| count_var(k, env).map(|(p, t)| (k, p, t))).collect(),
        Kind::Legacy => env.keys().filter(|k| *k == "NODES").map(|k| (k, "NODE".into(), "node".into())).collect(),
    };
    let mut errors = Vec::new();
    if kind == Kind::Legacy && counts.is_empty() {
        errors.push(value_error("NODES", "null", "the number of nodes (NODES) is not set"));
    }
    let is_count = |k: &str| counts.iter().any(|(c, _, _)| c.as_str() == k);
    let owner = |k: &str| {
        counts
            .iter()
            .filter(|(_, prefix, _)| kind == Kind::Sdk && k.starts_with(&format!("{prefix}_")))
            .max_by_key(|(_, prefix, _)| prefix.len())
            .map(|(_, _, t)| t.clone())
    };
    let mut pods = Vec::new();
    let mut total: u64 = 0;
    for (key, prefix, pod_type) in &counts {
        let raw = text(&env[key.as_str()]);
        let count = match raw.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                errors.push(value_error(key, &raw, &format!("{key} must be a whole number of pods")));
                continue;
            }
        };
        if pods.iter().any(|p: &PodSpec| &p.pod_type == pod_type) {
            errors.push(value_error("PodSpecs", "null", "Duplicate pod types detected."));
            continue;
        }
        total = total.saturating_add(count);
        let pod_env: BTreeMap<String, Value> = env
            .iter()
            .filter(|(k, _)| !is_count(k))
            .filter(|(k, _)| owner(k).is_none_or(|t| &t == pod_type))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let port_var = match kind {
            Kind::Sdk => format!("{prefix}_PORT"),
            Kind::Legacy => "CASSANDRA_NATIVE_TRANSPORT_PORT".into(),
        };
        let port = match env.get(&port_var).map(text) {
            None => match kind {
                Kind::Sdk => 8080,
                Kind::Legacy => 9042,
            },
            Some(p) => match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    errors.push(value_error(&port_var, &p, &format!("{port_var} must be a port number (1-65535)")));
                    continue;
                }
            },
        };
        pods.push(PodSpec { pod_type: pod_type.clone(), count, env: pod_env, port });
    }
    if total > MAX_PODS {
        errors.push(value_error("pods", &total.to_string(), &format!("a service has at most {MAX_PODS} pods")));
    }
    if errors.is_empty() { Ok(Spec { pods }) } else { Err(errors) }
}

/// Upstream's `PodSpecsCannotShrink`: a pod type may not disappear or lose instances.
pub fn validate(old: Option<&Spec>, new: &Spec) -> Vec<String> {
    let Some(old) = old else { return Vec::new() };
    let mut errors = Vec::new();
    for o in &old.pods {
        let field = format!("PodSpec[name:{}]", o.pod_type);
        match new.pod(&o.pod_type) {
            None => errors.push(transition_error(
                &field,
                &o.count.to_string(),
                "null",
                &format!(
                    "New config is missing PodSpec named '{}' (expected present with >= {} tasks)",
                    o.pod_type, o.count
                ),
            )),
            Some(n) if n.count < o.count => errors.push(transition_error(
                &field,
                &o.count.to_string(),
                &n.count.to_string(),
                &format!(
                    "New config's PodSpec named '{}' has {} tasks, expected >={} tasks",
                    o.pod_type, n.count, o.count
                ),
            )),
            Some(_) => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn labels_make_a_scheduler() {
        let l = |v: Value| env(v);
        assert_eq!(
            classify(&l(json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "cassandra"}))),
            Some(("cassandra".into(), Kind::Sdk))
        );
        assert_eq!(
            classify(&l(json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "/prod/db/"}))),
            Some(("prod/db".into(), Kind::Sdk))
        );
        assert_eq!(
            classify(&l(json!({"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra"}))),
            Some(("cassandra".into(), Kind::Legacy))
        );
        assert_eq!(
            classify(&l(json!({"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra", "DCOS_SERVICE_NAME": "c2"}))),
            Some(("c2".into(), Kind::Legacy))
        );
        for labels in [
            json!({"DCOS_COMMONS_API_VERSION": "v1"}),
            json!({"DCOS_COMMONS_API_VERSION": "v2", "DCOS_SERVICE_NAME": "x"}),
            json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "marathon"}),
            json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "../etc"}),
            json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "Big"}),
            json!({"DCOS_COMMONS_API_VERSION": "v1", "DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra"}),
            json!({"DCOS_PACKAGE_FRAMEWORK_NAME": "kafka"}),
            json!({}),
        ] {
            assert_eq!(classify(&l(labels.clone())), None, "{labels}");
        }
    }

    #[test]
    fn pod_types_come_from_counts_and_own_their_prefixed_variables() {
        let e = env(
            json!({"HELLO_COUNT": "2", "WORLD_COUNT": "1", "HELLO_CPUS": "0.5", "LOG": "debug", "WORLD_PORT": "9000"}),
        );
        let s = from_env(&e, Kind::Sdk).unwrap();
        assert_eq!(
            s.pods.iter().map(|p| (p.pod_type.as_str(), p.count)).collect::<Vec<_>>(),
            [("hello", 2), ("world", 1)]
        );
        assert_eq!(s.pods[0].env.keys().collect::<Vec<_>>(), ["HELLO_CPUS", "LOG"]);
        assert_eq!(s.pods[1].env.keys().collect::<Vec<_>>(), ["LOG", "WORLD_PORT"]);
        assert_eq!((s.pods[0].port, s.pods[1].port), (8080, 9000));
        let nodes = from_env(&env(json!({"NODES": "3", "NODE_MEM": "1024"})), Kind::Sdk).unwrap();
        assert_eq!((nodes.pods[0].pod_type.as_str(), nodes.pods[0].count), ("node", 3));
        assert_eq!(nodes.pods[0].env.keys().collect::<Vec<_>>(), ["NODE_MEM"]);
        let data =
            from_env(&env(json!({"DATA_NODE_COUNT": "1", "DATA_COUNT": "1", "DATA_NODE_X": "1"})), Kind::Sdk).unwrap();
        assert_eq!(data.pod("data-node").unwrap().env.keys().collect::<Vec<_>>(), ["DATA_NODE_X"], "longest prefix");
        assert!(data.pod("data").unwrap().env.is_empty());
    }

    #[test]
    fn bad_counts_are_errors_in_upstreams_words() {
        let e = from_env(&env(json!({"NODES": "three"})), Kind::Sdk).unwrap_err();
        assert_eq!(
            e,
            ["Field: 'NODES'; Value: 'three'; Message: 'NODES must be a whole number of pods'; Fatal: false"]
        );
        assert!(from_env(&env(json!({"NODES": "1000000000000"})), Kind::Sdk).is_err());
        assert!(from_env(&env(json!({"NODES": "2", "NODE_PORT": "70000"})), Kind::Sdk).is_err());
        assert!(from_env(&env(json!({"X": "1"})), Kind::Legacy).is_err(), "legacy needs NODES");
        assert!(from_env(&env(json!({"NODE_COUNT": "1", "node_COUNT": "2"})), Kind::Sdk).is_err(), "one type twice");
        let legacy = from_env(&env(json!({"NODES": "3", "HELLO_COUNT": "2"})), Kind::Legacy).unwrap();
        assert_eq!(legacy.pods.len(), 1);
        assert_eq!(legacy.pods[0].port, 9042);
        assert!(legacy.pods[0].env.contains_key("HELLO_COUNT"), "not a count for Cassandra");
    }

    #[test]
    fn pods_may_grow_but_not_shrink_or_vanish() {
        let spec = |v: Value| from_env(&env(v), Kind::Sdk).unwrap();
        let old = spec(json!({"NODES": "5", "WEB_COUNT": "1"}));
        assert!(validate(Some(&old), &spec(json!({"NODES": "6", "WEB_COUNT": "1"}))).is_empty());
        assert_eq!(
            validate(Some(&old), &spec(json!({"NODES": "3"}))),
            [
                "Field: 'PodSpec[name:node]'; Transition: '5' => '3'; Message: 'New config's PodSpec named 'node' has 3 tasks, expected >=5 tasks'; Fatal: false",
                "Field: 'PodSpec[name:web]'; Transition: '1' => 'null'; Message: 'New config is missing PodSpec named 'web' (expected present with >= 1 tasks)'; Fatal: false",
            ]
        );
        assert!(validate(None, &spec(json!({"NODES": "1"}))).is_empty());
    }
}
