//! Marathon apps (seed 004 `/v2/apps`): an app object exactly as `POST /v2/apps` and
//! `PUT /v2/apps/{id}` take it.
//!
//! The comparable form is the app as declared, with its id and dependencies absolute, numbers
//! in one form (`"0.3"`, `1.0` and `1` are numbers; integral values are integers), and the
//! defaults Marathon applies to fields whose absence has a meaning (`instances` 1, `env` {},
//! `healthChecks` [], ...) written in, so removing a field from the manifest puts the default
//! back. Fields Marathon derives or assigns when they are not written (ports, `fetch` from
//! `uris`, `container` defaults) are left to it: the live app is projected onto the fields the
//! declaration writes, and a port written as 0 ("any") matches the port Marathon assigned.
//! Maps of user data (`env`, `labels`) are compared whole, so a variable added by hand is drift
//! (but not a person's `capstan-prune` label, which capstan keeps when it writes).
//!
//! The apps of one group document that become ready together are sent together when Marathon
//! would run them as capstan's plan does (`put_together`).

use super::kind::Kind;
use super::{Marathon, OWNER_LABEL, PRUNE_LABEL, path};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::Document;
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::ApiError;
use serde_json::{Map, Number, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

/// What Marathon fills in and reports about an app: never part of a declaration, and never sent
/// back (a `version` in an update body would roll the app back, seed 004 L214).
pub const SERVER_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// Fields Marathon sends as numbers that the seed's own requests write as strings (L189-191).
const NUMERIC_FIELDS: &[&str] = &[
    "cpus",
    "mem",
    "disk",
    "gpus",
    "instances",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "taskKillGracePeriodSeconds",
];

/// The values Marathon gives fields a declaration leaves out, for the fields whose absence has
/// a meaning (seed 004 L613-641, L1530-1559).
fn defaults() -> [(&'static str, Value); 13] {
    [
        ("cpus", json!(1)),
        ("mem", json!(128)),
        ("disk", json!(0)),
        ("instances", json!(1)),
        ("env", json!({})),
        ("labels", json!({})),
        ("constraints", json!([])),
        ("dependencies", json!([])),
        ("healthChecks", json!([])),
        ("backoffSeconds", json!(1)),
        ("backoffFactor", json!(1.15)),
        ("maxLaunchDelaySeconds", json!(3600)),
        ("requirePorts", json!(false)),
    ]
}

const UPGRADE_DEFAULTS: [(&str, i64); 2] = [("minimumHealthCapacity", 1), ("maximumOverCapacity", 1)];

/// One declared app: `value` is the app object at `pointer` in `doc`, inside group `group`.
pub fn decode(
    doc: &Document,
    pointer: &str,
    value: &Value,
    group: &str,
    diags: &mut Diagnostics,
) -> Option<DesiredResource> {
    let obj = value.as_object()?;
    let written = obj.get("id").and_then(Value::as_str).unwrap_or_default();
    let id = match path::resolve(group, written).and_then(|id| path::check(&id).map(|()| id)) {
        Ok(id) if id != "/" => id,
        Ok(_) => {
            diags.push(Diagnostic::error_at(
                doc.locate(&format!("{pointer}/id")),
                "an app cannot be the root group `/`",
            ));
            return None;
        }
        Err(e) => {
            diags.push(Diagnostic::error_at(doc.locate(&format!("{pointer}/id")), e));
            return None;
        }
    };
    let mut spec = Map::new();
    for (k, v) in obj {
        if SERVER_FIELDS.contains(&k.as_str()) {
            diags.push(Diagnostic::warning(
                Some(doc.locate_key(pointer, k)),
                format!("`{k}` is filled in by Marathon: ignored (capstan never sends it back)"),
            ));
            continue;
        }
        spec.insert(k.clone(), v.clone());
    }
    spec.insert("id".into(), Value::String(id.clone()));
    for field in NUMERIC_FIELDS {
        if let Some(Value::String(s)) = spec.get(*field) {
            match s.trim().parse::<f64>() {
                Ok(n) => {
                    spec.insert(field.to_string(), json!(n));
                }
                Err(_) => diags.push(Diagnostic::error_at(
                    doc.locate(&format!("{pointer}/{field}")),
                    format!("`{field}` is {s:?}: expected a number"),
                )),
            }
        }
    }
    let parent = path::parent(&id);
    let mut references = Vec::new();
    let mut deps = Vec::new();
    if let Some(Value::Array(list)) = obj.get("dependencies") {
        for (i, d) in list.iter().enumerate() {
            let Some(text) = d.as_str() else { continue };
            let at = doc.locate(&format!("{pointer}/dependencies/{i}"));
            match path::resolve(parent, text) {
                Ok(dep) => {
                    // Which kind it names is known once every file is read (see `link`).
                    references.push(Reference { target: ResourceId::new(Kind::Group.name(), dep.clone()), at });
                    deps.push(dep);
                }
                Err(e) => diags.push(Diagnostic::error_at(at, e)),
            }
        }
    }
    deps.sort();
    deps.dedup();
    spec.insert("dependencies".into(), json!(deps));
    for (k, v) in defaults() {
        spec.entry(k).or_insert(v);
    }
    if let Some(Value::Object(u)) = spec.get_mut("upgradeStrategy") {
        for (k, v) in UPGRADE_DEFAULTS {
            u.entry(k).or_insert(json!(v));
        }
    } else {
        spec.insert(
            "upgradeStrategy".into(),
            json!(Map::from_iter(UPGRADE_DEFAULTS.map(|(k, v)| (k.into(), json!(v))))),
        );
    }
    if let Some(Value::Object(labels)) = spec.get_mut("labels") {
        labels.remove(OWNER_LABEL);
    }
    let mut spec = Value::Object(spec);
    normalize_numbers(&mut spec);
    Some(DesiredResource {
        id: ResourceId::new(Kind::App.name(), id),
        spec,
        origin: doc.locate(pointer),
        references,
        exclusive: None,
    })
}

/// A live app in comparable form, with whether `owner` created it.
pub fn from_live(app: &Value, owner: &str) -> Option<(LiveResource, Vec<String>)> {
    let obj = app.as_object()?;
    let id = obj.get("id")?.as_str()?.to_string();
    let mut spec: Map<String, Value> =
        obj.iter().filter(|(k, _)| !SERVER_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut mark = None;
    if let Some(Value::Object(labels)) = spec.get_mut("labels")
        && let Some(m) = labels.remove(OWNER_LABEL)
    {
        mark = Some(m.as_str().map_or_else(|| m.to_string(), str::to_string));
    }
    let owned = mark.as_deref() == Some(owner);
    let keep = (spec.get("labels").and_then(|l| l.get(PRUNE_LABEL)).and_then(Value::as_str) == Some("false"))
        .then(|| format!("label {PRUNE_LABEL}: \"false\""));
    let mut deps: Vec<String> = spec
        .get("dependencies")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).filter_map(|d| path::resolve(path::parent(&id), d).ok()).collect())
        .unwrap_or_default();
    deps.sort();
    deps.dedup();
    spec.insert("dependencies".into(), json!(deps));
    let mut spec = Value::Object(spec);
    normalize_numbers(&mut spec);
    let live = LiveResource {
        id: ResourceId::new(Kind::App.name(), id),
        spec,
        owned,
        owner: mark,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep,
    };
    Some((live, deps))
}

/// Both sides as they are compared: ports written as 0 take the port Marathon assigned, and the
/// live app keeps only what the declaration writes.
pub fn comparable(desired: &Value, live: &Value) -> (Value, Value) {
    let mut d = desired.clone();
    fill_assigned_ports(&mut d, live);
    let mut l = project(live, &d, false);
    // A person's keep label is theirs, not drift, unless the manifest writes it too.
    if d.get("labels").is_some_and(|dl| dl.get(PRUNE_LABEL).is_none())
        && let Some(Value::Object(labels)) = l.get_mut("labels")
    {
        labels.remove(PRUNE_LABEL);
    }
    (d, l)
}

fn fill_assigned_ports(desired: &mut Value, live: &Value) {
    let zero_to = |d: &mut Value, l: Option<&Value>| {
        if d.as_u64() == Some(0)
            && let Some(l) = l.filter(|l| l.is_number())
        {
            *d = l.clone();
        }
    };
    if let (Some(Value::Array(d)), Some(Value::Array(l))) = (desired.get_mut("ports"), live.get("ports")) {
        d.iter_mut().zip(l).for_each(|(d, l)| zero_to(d, Some(l)));
    }
    for (list, field) in [("portDefinitions", "port")] {
        if let (Some(Value::Array(d)), Some(Value::Array(l))) = (desired.get_mut(list), live.get(list)) {
            for (d, l) in d.iter_mut().zip(l) {
                if let Some(p) = d.get_mut(field) {
                    zero_to(p, l.get(field));
                }
            }
        }
    }
    let mappings = |v: &Value| -> Option<Vec<Value>> {
        let c = v.get("container")?;
        c.get("docker").and_then(|d| d.get("portMappings")).or_else(|| c.get("portMappings"))?.as_array().cloned()
    };
    let Some(live_mappings) = mappings(live) else { return };
    let Some(container) = desired.get_mut("container") else { return };
    let list = if container.get("portMappings").is_some() {
        container.get_mut("portMappings")
    } else {
        container.get_mut("docker").and_then(|d| d.get_mut("portMappings"))
    };
    if let Some(Value::Array(d)) = list {
        for (d, l) in d.iter_mut().zip(&live_mappings) {
            if let Some(p) = d.get_mut("servicePort") {
                zero_to(p, l.get("servicePort"));
            }
        }
    }
}

/// `live` reduced to the keys `desired` has, recursively; maps of user data (`env`, `labels`)
/// and values of another shape are kept whole.
fn project(live: &Value, desired: &Value, whole: bool) -> Value {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) if !whole => Value::Object(
            d.iter()
                .filter_map(|(k, dv)| l.get(k).map(|lv| (k.clone(), project(lv, dv, k == "env" || k == "labels"))))
                .collect(),
        ),
        (Value::Array(l), Value::Array(d)) if l.len() == d.len() => {
            Value::Array(l.iter().zip(d).map(|(lv, dv)| project(lv, dv, whole)).collect())
        }
        _ => live.clone(),
    }
}

/// Integral numbers become integers, so `1.0` from the platform equals `1` from a file.
pub fn normalize_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                *n = Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// The body capstan sends: the declaration with the owner's mark among its labels.
pub fn body(provider: &Marathon, spec: &Value) -> Value {
    let mut body = spec.clone();
    if let Some(obj) = body.as_object_mut() {
        let labels = obj.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(OWNER_LABEL.into(), Value::String(provider.owner.clone()));
        }
    }
    body
}

/// What capstan writes for a declared app: the declaration, with ports written as 0 sent as
/// the ports Marathon assigned (so an update does not trade them for new ones), the owner's
/// mark, and a person's keep label carried over from the live app.
pub fn write_body(provider: &Marathon, spec: &Value, live: Option<&Value>) -> Value {
    let mut b = match live {
        Some(l) => body(provider, &comparable(spec, l).0),
        None => body(provider, spec),
    };
    if let Some(k) = live.and_then(|l| l.get("labels")).and_then(|l| l.get(PRUNE_LABEL))
        && let Some(labels) = b.get_mut("labels").and_then(Value::as_object_mut)
    {
        labels.entry(PRUNE_LABEL).or_insert_with(|| k.clone());
    }
    b
}

/// An app as Marathon answered it, without what Marathon fills in: what a group body sends for
/// an app capstan leaves alone, so Marathon sees no change to it.
pub fn as_read(app: &Value) -> Value {
    let mut a = app.clone();
    if let Some(obj) = a.as_object_mut() {
        obj.retain(|k, _| !SERVER_FIELDS.contains(&k.as_str()));
    }
    a
}

/// The app as an update of `body` leaves it: the app as read, with the fields the body writes
/// in place of its own (Marathon's partial update).
pub fn updated(read: Option<&Value>, body: &Value) -> Value {
    let mut a = read.map(as_read).unwrap_or_else(|| json!({}));
    if let (Some(obj), Some(b)) = (a.as_object_mut(), body.as_object()) {
        for (k, v) in b {
            obj.insert(k.clone(), v.clone());
        }
    }
    a
}

/// Create or update an app (`PUT /v2/apps/{id}` creates an app it does not know), then wait
/// for the deployment the change started.
pub async fn put(provider: &Marathon, id: &str, spec: &Value, live: Option<&Value>) -> Result<(), ApiError> {
    let body = write_body(provider, spec, live);
    let client = provider.client()?;
    provider.until_unlocked(Kind::App, id, || client.put("apps", id, &body, provider.force)).await
}

/// Create or update the apps of one group (`(id, declared spec, live spec)`) in one request,
/// `PUT /v2/apps` with all of them: one deployment (it names only these apps, so unlike a
/// group `PUT` it cannot remove one that someone adds meanwhile). Only when Marathon would
/// carry them out as capstan's plan does, in one step (they are independent: they became ready
/// together), which a dry run of the group with the apps so changed says the first time:
/// Marathon acts on no other app and runs these together. Otherwise None, and the caller sends
/// them one by one. What the dry run shows of how this Marathon plans is remembered.
pub async fn put_together(
    provider: &Marathon,
    group: &str,
    apps: &[(&str, &Value, Option<&Value>)],
) -> Option<Result<(), ApiError>> {
    let client = provider.client().ok()?;
    let bodies: Vec<Value> = apps.iter().map(|(_, spec, live)| write_body(provider, spec, *live)).collect();
    if provider.steps.load(Ordering::SeqCst) == super::STEPS_TOGETHER {
        return Some(provider.until_unlocked(Kind::App, group, || client.put_apps(&bodies, provider.force)).await);
    }
    let ours: BTreeMap<&str, &Value> = apps.iter().map(|(id, ..)| *id).zip(&bodies).collect();
    let read = match client.group(group).await {
        Ok(g) => g,
        Err(e) => return Some(Err(e)),
    };
    let mut listed: Vec<Value> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for a in read.as_ref().and_then(|g| g.get("apps")).and_then(Value::as_array).into_iter().flatten() {
        let Some(id) = a.get("id").and_then(Value::as_str) else { continue };
        match ours.get_key_value(id) {
            Some((k, body)) => {
                seen.insert(*k);
                listed.push(updated(Some(a), body));
            }
            None => listed.push(as_read(a)),
        }
    }
    listed.extend(ours.iter().filter(|(id, _)| !seen.contains(**id)).map(|(_, b)| (*b).clone()));
    let plan = match client.dry_run(group, &json!({ "id": group, "apps": listed })).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%group, %e, "no dry run of the group; its apps go one by one");
            return None;
        }
    };
    let mut steps_of_ours: HashSet<usize> = HashSet::new();
    let mut deployed: HashSet<String> = HashSet::new();
    for (i, step) in plan.get("steps").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for a in step.get("actions").and_then(Value::as_array).into_iter().flatten() {
            let kind = a.get("type").or_else(|| a.get("action")).and_then(Value::as_str).unwrap_or_default();
            let Some(name) = a.get("app").and_then(Value::as_str) else { continue };
            // Marathon names an app absolutely, or relative to the group.
            let id = path::resolve(group, name).unwrap_or_else(|_| name.to_string());
            if !ours.contains_key(id.as_str()) {
                tracing::debug!(%group, %id, kind, "the group's dry run acts on another app; its apps go one by one");
                return None;
            }
            if matches!(kind, "ScaleApplication" | "RestartApplication") {
                steps_of_ours.insert(i);
                deployed.insert(id);
            }
        }
    }
    if steps_of_ours.len() > 1 {
        tracing::debug!(%group, "Marathon runs independent apps one step each; apps go one by one");
        provider.steps.store(super::STEPS_ONE_EACH, Ordering::SeqCst);
        return None;
    }
    if deployed.len() > 1 {
        provider.steps.store(super::STEPS_TOGETHER, Ordering::SeqCst);
    }
    Some(provider.until_unlocked(Kind::App, group, || client.put_apps(&bodies, provider.force)).await)
}

pub async fn delete(provider: &Marathon, id: &str) -> Result<(), ApiError> {
    let client = provider.client()?;
    provider.until_unlocked(Kind::App, id, || client.delete("apps", id, provider.force)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn decoded(text: &str) -> (Option<DesiredResource>, Diagnostics) {
        let docs = crate::base::yaml::parse_documents(&Arc::from(Path::new("a.yaml")), text).unwrap();
        let value = docs[0].root.to_json();
        let mut diags = Diagnostics::default();
        (decode(&docs[0], "", &value, "/shop", &mut diags), diags)
    }

    #[test]
    fn declarations_get_absolute_ids_numbers_and_defaults() {
        let (app, diags) = decoded("id: web\ncmd: run\ncpus: \"0.5\"\nmem: 64.0\ndependencies: [../db, api]\n");
        assert!(!diags.has_errors(), "{diags:?}");
        let app = app.unwrap();
        assert_eq!(app.id, ResourceId::new("app", "/shop/web"));
        let s = &app.spec;
        assert_eq!(s["cpus"], json!(0.5));
        assert_eq!(s["mem"], json!(64));
        assert_eq!(s["instances"], json!(1));
        assert_eq!(s["dependencies"], json!(["/db", "/shop/api"]));
        assert_eq!(s["upgradeStrategy"], json!({"minimumHealthCapacity": 1, "maximumOverCapacity": 1}));
        assert_eq!(app.references.len(), 2);
    }

    #[test]
    fn server_fields_are_ignored_with_a_warning() {
        let (app, diags) = decoded("id: /x\ncmd: run\nversion: 2014-03-01T23:17:50.295Z\ntasksRunning: 2\n");
        assert!(app.unwrap().spec.get("version").is_none());
        assert_eq!(diags.warnings().count(), 2);
    }

    #[test]
    fn bad_ids_and_numbers_are_errors_at_their_place() {
        let (_, diags) = decoded("id: Web_1\ncmd: run\n");
        assert!(diags.errors().next().unwrap().message.contains("not a valid Marathon id"));
        let (_, diags) = decoded("id: web\ncmd: run\ncpus: lots\n");
        let e = diags.errors().next().unwrap();
        assert_eq!(e.location.as_ref().unwrap().line, 3);
    }

    #[test]
    fn live_apps_compare_equal_to_what_was_declared() {
        let (app, _) = decoded(
            "id: web\ncmd: run\nports: [0, 8080]\nhealthChecks: [{protocol: HTTP, path: /health}]\nenv: {A: b}\n",
        );
        let desired = app.unwrap().spec;
        // What Marathon answers: defaults as floats, assigned ports, filled-in check fields,
        // server-owned fields and the owner's label.
        let mut answer = desired.clone();
        answer["ports"] = json!([10000, 8080]);
        answer["cpus"] = json!(1.0);
        answer["mem"] = json!(128.0);
        answer["healthChecks"][0]["gracePeriodSeconds"] = json!(15);
        answer["healthChecks"][0]["command"] = Value::Null;
        answer["labels"] = json!({OWNER_LABEL: "me"});
        answer["version"] = json!("2014-03-01T23:17:50.295Z");
        answer["executor"] = json!("");
        answer["container"] = Value::Null;
        let (live, _) = from_live(&answer, "me").unwrap();
        assert!(live.owned);
        let (d, l) = comparable(&desired, &live.spec);
        assert_eq!(d, l);

        // A variable added by hand is drift; so is another port.
        let mut drifted = answer.clone();
        drifted["env"]["B"] = json!("c");
        let (live, _) = from_live(&drifted, "me").unwrap();
        let (d, l) = comparable(&desired, &live.spec);
        assert_ne!(d, l);
        let mut moved = answer;
        moved["ports"] = json!([10000, 9090]);
        let (live, _) = from_live(&moved, "someone-else").unwrap();
        assert!(!live.owned);
        let (d, l) = comparable(&desired, &live.spec);
        assert_ne!(d, l);
    }
}
