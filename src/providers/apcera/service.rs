//! Services (seed 003: `GET/POST /v1/services`, `DELETE /v1/services/{uuid}`).
//!
//! There is no update endpoint: a changed service is replaced, and the jobs bound to it are
//! unbound before and bound again after. Absent fields compare as the server reports them:
//! `description` "", `provider_fqn` null, `parameters` {}.

use super::kind::Kind;
use super::client::Client;
use super::{Apcera, fqn};
use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Value, json};

fn spec_of(v: &Value, description: &str) -> Value {
    json!({
        "type": v.get("type").cloned().unwrap_or(Value::Null),
        "description": description,
        "provider_fqn": v.get("provider_fqn").cloned().unwrap_or(Value::Null),
        "parameters": v.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(|| json!({})),
    })
}

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/services/{}", pointer_escape(key));
    if !fqn::require(doc, "/services", Some(key), key, Kind::Service.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let mut references = Vec::new();
    if let Some(p) = entry.get("provider_fqn").and_then(Value::as_str) {
        let at = format!("{pointer}/provider_fqn");
        if fqn::require(doc, &at, None, p, Kind::Provider.name(), diags) {
            references
                .push(Reference { target: ResourceId::new(Kind::Provider.name(), p), at: doc.locate(&at) });
        }
    }
    let description = entry.get("description").and_then(Value::as_str).unwrap_or_default();
    vec![DesiredResource {
        id: ResourceId::new(Kind::Service.name(), key),
        spec: spec_of(entry, description),
        origin: doc.locate_key("/services", key),
        references,
        exclusive: None,
    }]
}

pub fn from_live(svc: &Value, owner: &str) -> Option<(LiveResource, String)> {
    let fqn = svc.get("fqn")?.as_str()?;
    let uuid = svc.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    let written = svc.get("description").and_then(Value::as_str).unwrap_or_default();
    let (description, mark) = super::unmark(written);
    let owned = mark.as_deref() == Some(owner);
    let depends_on = svc
        .get("provider_fqn")
        .and_then(Value::as_str)
        .map(|p| vec![ResourceId::new(Kind::Provider.name(), p)])
        .unwrap_or_default();
    Some((
        LiveResource {
            id: ResourceId::new(Kind::Service.name(), fqn),
            spec: spec_of(svc, &description),
            owned,
            owner: mark,
            parent: None,
            depends_on,
            exclusive: None,
            removes: Vec::new(),
            keep: super::keep_mark(written),
        },
        uuid,
    ))
}

pub async fn execute(
    provider: &Apcera,
    client: &Client,
    verb: Verb,
    desired: Option<&DesiredResource>,
    id: &ResourceId,
) -> Result<(), ApiError> {
    let fqn = &id.name;
    match verb {
        Verb::Create => {
            let spec = &desired.expect("create has a declaration").spec;
            let local = fqn::split(fqn).map(|f| f.local).unwrap_or(fqn);
            let description = spec["description"].as_str().unwrap_or_default();
            let mut body = json!({
                "fqn": fqn,
                "name": local,
                "type": spec["type"],
                "description": super::mark(description, &provider.owner),
                "parameters": spec["parameters"],
            });
            if !spec["provider_fqn"].is_null() {
                body["provider_fqn"] = spec["provider_fqn"].clone();
            }
            let created = super::create_once(client, "/v1/services", &body, &provider.owner, || async {
                Ok(client
                    .list_services()
                    .await?
                    .into_iter()
                    .find(|s| s.get("fqn").and_then(Value::as_str) == Some(fqn)))
            })
            .await?;
            provider.remember(Kind::Service.name(), fqn, created.get("uuid").and_then(Value::as_str).unwrap_or_default());
            Ok(())
        }
        Verb::Delete => {
            if let Some(uuid) = provider.uuid(Kind::Service.name(), fqn, client).await? {
                client.delete(&format!("/v1/services/{uuid}")).await?;
                provider.forget(Kind::Service.name(), fqn);
            }
            Ok(())
        }
        Verb::Update => unreachable!("services are replaced, never updated"),
    }
}
