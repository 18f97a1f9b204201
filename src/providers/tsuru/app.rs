//! Apps (`/1.0/apps`): the fields of `POST /1.0/apps` as seed 002 names them, plus units per
//! process, env, cnames and binds, all converged by one step. An update sends its changes with
//! `noRestart` and restarts the units once at the end when the env or the binds changed.

use super::kind::Kind;
use super::client::{Client, enc};
use super::{Tsuru, env, units};
use crate::base::diagnostic::Diagnostics;
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::ApiError;
use crate::http::Idempotent;
use crate::base::yaml::{Document, pointer_escape};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;


/// The fields of the seed's `POST /1.0/apps` that capstan manages.
pub const FIELDS: &[&str] = &["platform", "plan", "pool", "teamOwner", "description", "tags", "router"];
/// Fixed once the app exists (tsuru refuses to change them).
const FIXED: &[&str] = &["pool", "router"];

pub fn decode(doc: &Document, name: &str, entry: &Value, _diags: &mut Diagnostics) -> DesiredResource {
    let pointer = format!("/apps/{}", pointer_escape(name));
    let mut spec = Map::new();
    for f in FIELDS {
        if let Some(v) = entry.get(*f) {
            spec.insert(f.to_string(), v.clone());
        }
    }
    if let Some(u) = entry.get("units") {
        spec.insert("units".into(), u.clone());
    }
    if let Some(e) = entry.get("env").and_then(Value::as_object) {
        spec.insert("env".into(), env::decode(e));
    }
    if let Some(c) = entry.get("cnames").and_then(Value::as_array) {
        spec.insert("cnames".into(), sorted(c));
    }
    let mut references = Vec::new();
    if let Some(b) = entry.get("binds").and_then(Value::as_array) {
        spec.insert("binds".into(), sorted(b));
        for (i, target) in b.iter().filter_map(Value::as_str).enumerate() {
            references.push(Reference {
                target: ResourceId::new(Kind::ServiceInstance.name(), target),
                at: doc.locate(&format!("{pointer}/binds/{i}")),
            });
        }
    }
    DesiredResource {
        id: ResourceId::new(Kind::App.name(), name),
        spec: Value::Object(spec),
        origin: doc.locate_key("/apps", name),
        references,
        exclusive: None,
    }
}

pub fn sorted(items: &[Value]) -> Value {
    let set: BTreeSet<&str> = items.iter().filter_map(Value::as_str).collect();
    json!(set)
}

/// An item of `GET /1.0/apps?extended=true`, with its binds (from the instance list) and, for a
/// declared app, capstan's env (from its env read).
pub fn from_live(tsuru: &Tsuru, item: &Value, binds: Vec<String>, env_vars: Option<&[Value]>) -> Option<LiveResource> {
    let name = item.get("name")?.as_str()?;
    let (tags, owner, keep) = super::unmark(item.get("tags"));
    let mut units = Map::new();
    for u in item.get("units").and_then(Value::as_array).into_iter().flatten() {
        let p = u.get("processname").and_then(Value::as_str).unwrap_or("web").to_string();
        let c = units.get(&p).and_then(Value::as_i64).unwrap_or(0);
        units.insert(p, json!(c + 1));
    }
    let cnames = item.get("cname").and_then(Value::as_array).map(|c| sorted(c)).unwrap_or(json!([]));
    let mut spec = json!({
        "platform": item.get("platform").cloned().unwrap_or(json!("")),
        "plan": item.pointer("/plan/name").cloned().unwrap_or(json!("")),
        "pool": item.get("pool").cloned().unwrap_or(json!("")),
        "teamOwner": item.get("teamOwner").cloned().unwrap_or(json!("")),
        "description": item.get("description").cloned().unwrap_or(json!("")),
        "tags": tags,
        "router": item.pointer("/routers/0/name").cloned().unwrap_or(json!("")),
        "units": units,
        "cnames": cnames,
        "binds": binds,
    });
    if let Some(vars) = env_vars {
        spec["env"] = env::from_live(&tsuru.owner, vars);
    }
    let depends_on = binds_of(&spec).map(|b| ResourceId::new(Kind::ServiceInstance.name(), b)).collect();
    Some(LiveResource {
        id: ResourceId::new(Kind::App.name(), name),
        spec,
        owned: owner.as_deref() == Some(tsuru.owner.as_str()),
        owner,
        parent: None,
        depends_on,
        exclusive: None,
        removes: Vec::new(),
        keep,
    })
}

fn binds_of(spec: &Value) -> impl Iterator<Item = &str> {
    spec.get("binds").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

fn strings<'a>(spec: Option<&'a Value>, key: &str) -> BTreeSet<&'a str> {
    spec.and_then(|s| s.get(key)).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Both sides as compared: the live side projected onto what the declaration manages, private
/// values by their hash.
pub fn comparable(owner: &str, desired: &Value, live: &Value) -> (Value, Value) {
    let mut d = desired.clone();
    if let Some(e) = desired.get("env") {
        d["env"] = env::comparable(owner, e);
    }
    let mut l = Map::new();
    for k in desired.as_object().into_iter().flatten().map(|(k, _)| k) {
        l.insert(k.clone(), live.get(k).cloned().unwrap_or(Value::Null));
    }
    (d, Value::Object(l))
}

/// Create the app, then converge it as an update from nothing.
pub async fn create(tsuru: &Tsuru, name: &str, spec: &Value) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    let mut body = json!({"name": name});
    for f in FIELDS {
        if let Some(v) = spec.get(*f) {
            body[*f] = v.clone();
        }
    }
    body["tags"] = json!(super::marked(spec.get("tags"), &tsuru.owner, None));
    client.send(Method::POST, "/1.0/apps", Some(&body), Idempotent::No).await?;
    converge(tsuru, name, spec, None).await
}

pub async fn update(tsuru: &Tsuru, name: &str, spec: &Value, live: Option<&LiveResource>) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    let live_spec = live.map(|l| &l.spec);
    for f in FIXED {
        if let (Some(want), Some(have)) = (spec.get(*f), live_spec.and_then(|l| l.get(*f)))
            && want != have
        {
            return Err(ApiError::plain(format!(
                "tsuru cannot change the {f} of app {name} ({have} to {want}): create a new app instead"
            )));
        }
    }
    let changed: Vec<&&str> = FIELDS
        .iter()
        .filter(|f| !FIXED.contains(f) && spec.get(**f).is_some_and(|v| Some(v) != live_spec.and_then(|l| l.get(**f))))
        .collect();
    if !changed.is_empty() {
        let mut body = json!({"noRestart": true});
        for f in changed {
            body[f.to_string()] = spec[f.to_string()].clone();
        }
        let keep = live.and_then(|l| l.keep.clone());
        body["tags"] = json!(super::marked(
            spec.get("tags").or(live_spec.and_then(|l| l.get("tags"))),
            &tsuru.owner,
            keep.as_deref()
        ));
        client.streamed(Method::PUT, &format!("/1.0/apps/{}", enc(name)), Some(&body), Idempotent::Yes).await?;
    }
    converge(tsuru, name, spec, live_spec).await
}

/// Binds, env, cnames and units of `spec` against what `live` has; one restart at the end when
/// the env or the binds of running units changed.
async fn converge(tsuru: &Tsuru, name: &str, spec: &Value, live: Option<&Value>) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    let app = enc(name);
    let mut restart = false;
    // Binds first (they add variables the env must not clash with), unbinds after the env.
    let (want_binds, have_binds) = (strings(Some(spec), "binds"), strings(live, "binds"));
    let managed_binds = spec.get("binds").is_some();
    for b in want_binds.difference(&have_binds) {
        let (s, i) = b.split_once('/').unwrap_or((b, ""));
        let path = format!("/1.0/services/{}/instances/{}/{app}", enc(s), enc(i));
        match client
            .streamed(Method::PUT, &path, Some(&json!({"noRestart": true, "parameters": {}})), Idempotent::Yes)
            .await
        {
            Err(e) if e.message.contains("already bound") => {}
            other => other?,
        }
        restart = true;
    }
    if let Some(e) = spec.get("env") {
        let want = env::comparable(&tsuru.owner, e);
        if live.and_then(|l| l.get("env")) != Some(&want) {
            let path = format!("/1.0/apps/{app}/env");
            client.streamed(Method::POST, &path, Some(&env::set_body(&tsuru.owner, e)), Idempotent::Yes).await?;
            restart = true;
        }
    }
    if managed_binds {
        for b in have_binds.difference(&want_binds) {
            let (s, i) = b.split_once('/').unwrap_or((b, ""));
            unbind(client, s, i, name).await?;
            restart = true;
        }
    }
    if spec.get("cnames").is_some() {
        let (want, have) = (strings(Some(spec), "cnames"), strings(live, "cnames"));
        let gone: Vec<&&str> = have.difference(&want).collect();
        if !gone.is_empty() {
            let q: Vec<String> = gone.iter().map(|c| format!("cname={}", enc(c))).collect();
            match client
                .send(Method::DELETE, &format!("/1.0/apps/{app}/cname?{}", q.join("&")), None, Idempotent::Yes)
                .await
            {
                // Already moved away by the app that takes it over (see `take_cnames`).
                Err(e) if e.message.contains("not exists") => {}
                other => {
                    other?;
                }
            }
        }
        let new: Vec<&str> = want.difference(&have).copied().collect();
        if !new.is_empty() {
            tsuru.take_cnames(name, &new).await?;
            client
                .send(Method::POST, &format!("/1.0/apps/{app}/cname"), Some(&json!({"cname": new})), Idempotent::Yes)
                .await?;
        }
    }
    if spec.get("units").is_some() {
        let (want, have) = (units::counts(Some(spec)), units::counts(live));
        units::remove(client, name, &want, &have).await?;
        let running = have
            .iter()
            .any(|(p, n)| n.as_i64().unwrap_or(0) > 0 && want.get(p).and_then(Value::as_i64).unwrap_or(0) > 0);
        if restart && running {
            client
                .streamed(Method::POST, &format!("/1.0/apps/{app}/restart"), Some(&json!({})), Idempotent::Yes)
                .await?;
        }
        units::add(client, name, &want, &have).await?;
    } else if restart && live.is_some_and(|l| !units::counts(Some(l)).is_empty()) {
        client.streamed(Method::POST, &format!("/1.0/apps/{app}/restart"), Some(&json!({})), Idempotent::Yes).await?;
    }
    Ok(())
}

/// Unbind an app; one that is not bound (any more) is done.
pub async fn unbind(client: &Client, service: &str, instance: &str, app: &str) -> Result<(), ApiError> {
    let path = format!("/1.0/services/{}/instances/{}/{}?noRestart=true", enc(service), enc(instance), enc(app));
    match client.streamed(Method::DELETE, &path, None, Idempotent::Yes).await {
        // Unbound already, or the instance is gone (its delete unbinds first).
        Err(e) if e.message.contains("not bound") || e.is_not_found() => Ok(()),
        other => other,
    }
}

pub async fn delete(tsuru: &Tsuru, name: &str) -> Result<(), ApiError> {
    let path = format!("/1.0/apps/{}", enc(name));
    match tsuru.client()?.streamed(Method::DELETE, &path, None, Idempotent::Yes).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}
