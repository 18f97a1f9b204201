//! Service instances (`/1.0/services/{service}/instances`), named `service/instance`. Create
//! sends the seed's snake_case fields (`plan_name`, `team_owner`); update replaces
//! `description`, `plan`, `teamowner`, `tags` and `parameters` (tsuru empties what it is not
//! sent, so every field is sent). Deleting one unbinds its apps and jobs first, one by one, so
//! the unbind always precedes the delete.

use super::kind::Kind;
use super::client::enc;
use super::{Tsuru, app, job};
use crate::base::diagnostic::Diagnostics;
use crate::model::{DesiredResource, LiveResource, LiveState, ResourceId};
use crate::providers::ApiError;
use crate::http::Idempotent;
use crate::base::yaml::Document;
use reqwest::Method;
use serde_json::{Map, Value, json};


const FIELDS: &[&str] = &["plan", "teamOwner", "description", "tags", "parameters"];

pub fn decode(doc: &Document, key: &str, entry: &Value, _diags: &mut Diagnostics) -> DesiredResource {
    let mut spec = Map::new();
    for f in FIELDS {
        if let Some(v) = entry.get(*f) {
            spec.insert(f.to_string(), v.clone());
        }
    }
    DesiredResource {
        id: ResourceId::new(Kind::ServiceInstance.name(), key),
        spec: Value::Object(spec),
        origin: doc.locate_key("/serviceInstances", key),
        references: Vec::new(),
        exclusive: None,
    }
}

/// One `service_instances` item of `GET /1.0/services/instances`.
pub fn from_live(owner: &str, service: &str, item: &Value) -> Option<LiveResource> {
    let name = item.get("name")?.as_str()?;
    let (tags, mark, keep) = super::unmark(item.get("tags"));
    let spec = json!({
        "plan": item.get("plan_name").cloned().unwrap_or(json!("")),
        "teamOwner": item.get("team_owner").cloned().unwrap_or(json!("")),
        "description": item.get("description").cloned().unwrap_or(json!("")),
        "tags": tags,
        "parameters": item.get("parameters").cloned().filter(|p| !p.is_null()).unwrap_or(json!({})),
        "apps": item.get("apps").cloned().filter(|p| !p.is_null()).unwrap_or(json!([])),
        "jobs": item.get("jobs").cloned().filter(|p| !p.is_null()).unwrap_or(json!([])),
    });
    Some(LiveResource {
        id: ResourceId::new(Kind::ServiceInstance.name(), format!("{service}/{name}")),
        spec,
        owned: mark.as_deref() == Some(owner),
        owner: mark,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep,
    })
}

fn split(id: &str) -> (String, String) {
    let (s, i) = id.split_once('/').unwrap_or((id, ""));
    (enc(s), enc(i))
}

pub async fn create(tsuru: &Tsuru, id: &str, spec: &Value) -> Result<(), ApiError> {
    let (s, _) = split(id);
    let body = json!({
        "name": id.split_once('/').map(|(_, i)| i).unwrap_or(id),
        "plan_name": spec.get("plan").cloned().unwrap_or(json!("")),
        "team_owner": spec.get("teamOwner").cloned().unwrap_or(json!("")),
        "description": spec.get("description").cloned().unwrap_or(json!("")),
        "tags": super::marked(spec.get("tags"), &tsuru.owner, None),
        "parameters": spec.get("parameters").cloned().unwrap_or(json!({})),
    });
    tsuru.client()?.send(Method::POST, &format!("/1.0/services/{s}/instances"), Some(&body), Idempotent::No).await?;
    Ok(())
}

pub async fn update(tsuru: &Tsuru, id: &str, spec: &Value, live: Option<&LiveResource>) -> Result<(), ApiError> {
    let (s, i) = split(id);
    let live_spec = live.map(|l| &l.spec);
    // Update replaces: what the manifest leaves out keeps its live value.
    let field = |k: &str| spec.get(k).or(live_spec.and_then(|l| l.get(k))).cloned().unwrap_or(json!(""));
    let keep = live.and_then(|l| l.keep.clone());
    let body = json!({
        "plan": field("plan"),
        "teamowner": field("teamOwner"),
        "description": field("description"),
        "tags": super::marked(spec.get("tags").or(live_spec.and_then(|l| l.get("tags"))), &tsuru.owner, keep.as_deref()),
        "parameters": spec.get("parameters").or(live_spec.and_then(|l| l.get("parameters"))).cloned().unwrap_or(json!({})),
    });
    tsuru
        .client()?
        .send(Method::PUT, &format!("/1.0/services/{s}/instances/{i}"), Some(&body), Idempotent::Yes)
        .await?;
    Ok(())
}

/// Unbind every app and job still bound, then delete.
/// Only what capstan owns is unbound: an instance another app or job still uses is not deleted.
pub async fn delete(tsuru: &Tsuru, id: &str, live: Option<&LiveResource>, state: &LiveState) -> Result<(), ApiError> {
    let client = tsuru.client()?;
    let (service, instance) = id.split_once('/').unwrap_or((id, ""));
    let bound = |k: &str| -> Vec<String> {
        live.and_then(|l| l.spec.get(k))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    for (kind, name) in bound("apps").iter().map(|a| (Kind::App.name(), a)).chain(bound("jobs").iter().map(|j| (Kind::Job.name(), j)))
    {
        if !state.get(&ResourceId::new(kind, name)).is_some_and(|l| l.owned) {
            return Err(ApiError::plain(format!(
                "service instance {id} is still bound to {kind} {name}, which capstan does not manage: unbind it first"
            )));
        }
    }
    for a in bound("apps") {
        app::unbind(client, service, instance, &a).await?;
    }
    for j in bound("jobs") {
        job::unbind(client, service, instance, &j).await?;
    }
    let (s, i) = split(id);
    match client.streamed(Method::DELETE, &format!("/1.0/services/{s}/instances/{i}"), None, Idempotent::Yes).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Both sides as compared: the live side projected onto the declared fields.
pub fn comparable(desired: &Value, live: &Value) -> Value {
    let mut l = Map::new();
    for k in desired.as_object().into_iter().flatten().map(|(k, _)| k) {
        l.insert(k.clone(), live.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(l)
}
