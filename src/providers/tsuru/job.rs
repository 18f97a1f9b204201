//! Jobs (`/1.13/jobs`, tsuru 1.13): the flat fields of `POST /1.13/jobs` (`teamOwner`, `pool`,
//! `plan`, `description`, `tags`, `schedule`, `manual`, `activeDeadlineSeconds`, `container:
//! {image, command}`), the env as `container.envs`, and binds to service instances (a job bind
//! does not stream). tsuru's job update merges (an empty field keeps its value), so a field
//! removed from the manifest keeps its live value.

use super::kind::Kind;
use super::client::{Client, enc};
use super::{Tsuru, app};
use crate::base::diagnostic::Diagnostics;
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::ApiError;
use crate::http::Idempotent;
use crate::base::yaml::{Document, pointer_escape};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;


const FIELDS: &[&str] =
    &["teamOwner", "pool", "plan", "description", "tags", "schedule", "manual", "activeDeadlineSeconds", "container"];

fn text(v: &Value) -> String {
    v.as_str().map(String::from).unwrap_or_else(|| v.to_string())
}

pub fn decode(doc: &Document, name: &str, entry: &Value, _diags: &mut Diagnostics) -> DesiredResource {
    let pointer = format!("/jobs/{}", pointer_escape(name));
    let mut spec = Map::new();
    for f in FIELDS {
        if let Some(v) = entry.get(*f) {
            spec.insert(f.to_string(), v.clone());
        }
    }
    if let Some(e) = entry.get("env").and_then(Value::as_object) {
        spec.insert("env".into(), Value::Object(e.iter().map(|(k, v)| (k.clone(), json!(text(v)))).collect()));
    }
    let mut references = Vec::new();
    if let Some(b) = entry.get("binds").and_then(Value::as_array) {
        spec.insert("binds".into(), app::sorted(b));
        for (i, target) in b.iter().filter_map(Value::as_str).enumerate() {
            references.push(Reference {
                target: ResourceId::new(Kind::ServiceInstance.name(), target),
                at: doc.locate(&format!("{pointer}/binds/{i}")),
            });
        }
    }
    DesiredResource {
        id: ResourceId::new(Kind::Job.name(), name),
        spec: Value::Object(spec),
        origin: doc.locate_key("/jobs", name),
        references,
        exclusive: None,
    }
}

/// One item of `GET /1.13/jobs`, with its binds (from the instance list).
pub fn from_live(owner: &str, item: &Value, binds: Vec<String>) -> Option<LiveResource> {
    let name = item.get("name")?.as_str()?;
    let (tags, mark, keep) = super::unmark(item.get("tags"));
    let spec_of = |p: &str| item.pointer(p).cloned().unwrap_or(Value::Null);
    let env: Map<String, Value> = item
        .pointer("/spec/container/envs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get("name")?.as_str()?.to_string(), e.get("value").cloned().unwrap_or(json!("")))))
        .collect();
    let spec = json!({
        "teamOwner": spec_of("/teamOwner"),
        "pool": spec_of("/pool"),
        "plan": spec_of("/plan/name"),
        "description": spec_of("/description"),
        "tags": tags,
        "schedule": spec_of("/spec/schedule"),
        "manual": spec_of("/spec/manual"),
        "activeDeadlineSeconds": spec_of("/spec/activeDeadlineSeconds"),
        "container": {"image": spec_of("/spec/container/image"), "command": spec_of("/spec/container/command")},
        "env": env,
        "binds": binds,
    });
    let depends_on =
        binds_of(&spec).iter().map(|b| ResourceId::new(Kind::ServiceInstance.name(), b.as_str())).collect();
    Some(LiveResource {
        id: ResourceId::new(Kind::Job.name(), name),
        spec,
        owned: mark.as_deref() == Some(owner),
        owner: mark,
        parent: None,
        depends_on,
        exclusive: None,
        removes: Vec::new(),
        keep,
    })
}

fn binds_of(spec: &Value) -> BTreeSet<String> {
    spec.get("binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// The live side projected onto the declared fields (and the container onto its declared keys).
pub fn comparable(desired: &Value, live: &Value) -> Value {
    let mut l = Map::new();
    for (k, dv) in desired.as_object().into_iter().flatten() {
        let mut v = live.get(k).cloned().unwrap_or(Value::Null);
        if k == "container"
            && let (Some(dc), Some(lc)) = (dv.as_object(), v.as_object())
        {
            v = Value::Object(dc.keys().map(|ck| (ck.clone(), lc.get(ck).cloned().unwrap_or(Value::Null))).collect());
        }
        l.insert(k.clone(), v);
    }
    Value::Object(l)
}

fn body(tsuru: &Tsuru, name: &str, spec: &Value, keep: Option<&str>) -> Value {
    let mut b = json!({"name": name});
    for f in FIELDS {
        if let Some(v) = spec.get(*f) {
            b[*f] = v.clone();
        }
    }
    b["tags"] = json!(super::marked(spec.get("tags"), &tsuru.owner, keep));
    let envs: Vec<Value> = spec
        .get("env")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| json!({"name": k, "value": v, "alias": "", "public": true, "managedBy": ""}))
        .collect();
    if !envs.is_empty() || spec.get("env").is_some() {
        if !b["container"].is_object() {
            b["container"] = json!({});
        }
        b["container"]["envs"] = json!(envs);
    }
    b
}

pub async fn create(tsuru: &Tsuru, name: &str, spec: &Value) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    client.send(Method::POST, "/1.13/jobs", Some(&body(tsuru, name, spec, None)), Idempotent::No).await?;
    binds(client, name, spec, None).await
}

pub async fn update(tsuru: &Tsuru, name: &str, spec: &Value, live: Option<&LiveResource>) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    let live_spec = live.map(|l| &l.spec);
    let bare = |s: &Value| {
        let mut s = s.clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("binds");
        }
        s
    };
    let (d, l) = (bare(spec), live_spec.map(|l| comparable(&bare(spec), l)));
    if l.as_ref() != Some(&d) {
        let keep = live.and_then(|l| l.keep.clone());
        let path = format!("/1.13/jobs/{}", enc(name));
        client.send(Method::PUT, &path, Some(&body(tsuru, name, spec, keep.as_deref())), Idempotent::Yes).await?;
    }
    binds(client, name, spec, live_spec).await
}

async fn binds(client: &Client, name: &str, spec: &Value, live: Option<&Value>) -> Result<(), ApiError> {
    if spec.get("binds").is_none() {
        return Ok(());
    }
    let want = binds_of(spec);
    let have = live.map(binds_of).unwrap_or_default();
    for b in want.difference(&have) {
        let (s, i) = b.split_once('/').unwrap_or((b, ""));
        let path = format!("/1.13/services/{}/instances/{}/jobs/{}", enc(s), enc(i), enc(name));
        match client.send(Method::PUT, &path, Some(&json!({"parameters": {}})), Idempotent::Yes).await {
            Err(e) if e.message.contains("already bound") => {}
            other => {
                other?;
            }
        }
    }
    for b in have.difference(&want) {
        let (s, i) = b.split_once('/').unwrap_or((b, ""));
        unbind(client, s, i, name).await?;
    }
    Ok(())
}

/// Unbind a job (a stream); one not bound (any more) is done.
pub async fn unbind(client: &Client, service: &str, instance: &str, job: &str) -> Result<(), ApiError> {
    let path = format!("/1.13/services/{}/instances/{}/jobs/{}", enc(service), enc(instance), enc(job));
    match client.streamed(Method::DELETE, &path, None, Idempotent::Yes).await {
        // Unbound already, or the instance is gone (its delete unbinds first).
        Err(e) if e.message.contains("not bound") || e.is_not_found() => Ok(()),
        other => other,
    }
}

pub async fn delete(tsuru: &Tsuru, name: &str) -> Result<(), ApiError> {
    let path = format!("/1.13/jobs/{}", enc(name));
    match tsuru.client()?.send(Method::DELETE, &path, None, Idempotent::Yes).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other.map(|_| ()),
    }
}
