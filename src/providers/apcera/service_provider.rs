//! Service providers (seed 003: `GET/POST /v1/providers`, `DELETE /v1/providers/{uuid}`).
//!
//! No update endpoint: a change replaces the provider. Its `parameters` are write-only (the
//! create answer and the list never return them, seed L3263-3283), so they are sent on create
//! but can never be compared; `backing_job_port` is a string on the wire.

use super::kind::Kind;
use super::client::Client;
use super::{Apcera, fqn};
use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Value, json};

/// The key of the write-only parameters inside a declared spec; dropped before comparing.
pub const WRITE_ONLY: &str = "parameters";

fn port_string(v: Option<&Value>) -> Value {
    match v {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(s)) => json!(s),
        _ => json!(""),
    }
}

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/providers/{}", pointer_escape(key));
    if !fqn::require(doc, "/providers", Some(key), key, Kind::Provider.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let mut references = Vec::new();
    if let Some(j) = entry.get("backing_job_fqn").and_then(Value::as_str) {
        let at = format!("{pointer}/backing_job_fqn");
        if fqn::require(doc, &at, None, j, Kind::Job.name(), diags) {
            references.push(Reference { target: ResourceId::new(Kind::Job.name(), j), at: doc.locate(&at) });
        }
    }
    vec![DesiredResource {
        id: ResourceId::new(Kind::Provider.name(), key),
        spec: json!({
            "type": entry.get("type").cloned().unwrap_or(Value::Null),
            "description": entry.get("description").and_then(Value::as_str).unwrap_or_default(),
            "backing_job_fqn": entry.get("backing_job_fqn").cloned().unwrap_or(Value::Null),
            "backing_job_port": port_string(entry.get("backing_job_port")),
            WRITE_ONLY: entry.get("parameters").cloned().unwrap_or_else(|| json!({})),
        }),
        origin: doc.locate_key("/providers", key),
        references,
        exclusive: None,
    }]
}

pub fn from_live(p: &Value, owner: &str) -> Option<(LiveResource, String)> {
    let fqn = p.get("fqn")?.as_str()?;
    let uuid = p.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    let written = p.get("description").and_then(Value::as_str).unwrap_or_default();
    let (description, mark) = super::unmark(written);
    let owned = mark.as_deref() == Some(owner);
    let backing = p.get("backing_job_fqn").cloned().unwrap_or(Value::Null);
    let depends_on = backing.as_str().map(|j| vec![ResourceId::new(Kind::Job.name(), j)]).unwrap_or_default();
    Some((
        LiveResource {
            id: ResourceId::new(Kind::Provider.name(), fqn),
            spec: json!({
                "type": p.get("type").cloned().unwrap_or(Value::Null),
                "description": description,
                "backing_job_fqn": backing,
                "backing_job_port": port_string(p.get("backing_job_port")),
            }),
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
            let mut body = spec.clone();
            body["fqn"] = json!(fqn);
            body["name"] = json!(local);
            body["description"] = json!(super::mark(spec["description"].as_str().unwrap_or_default(), &provider.owner));
            let created = super::create_once(client, "/v1/providers", &body, &provider.owner, || async {
                Ok(client
                    .list_providers()
                    .await?
                    .into_iter()
                    .find(|p| p.get("fqn").and_then(Value::as_str) == Some(fqn)))
            })
            .await?;
            provider.remember(Kind::Provider.name(), fqn, created.get("uuid").and_then(Value::as_str).unwrap_or_default());
            Ok(())
        }
        Verb::Delete => {
            if let Some(uuid) = provider.uuid(Kind::Provider.name(), fqn, client).await? {
                client.delete(&format!("/v1/providers/{uuid}")).await?;
                provider.forget(Kind::Provider.name(), fqn);
            }
            Ok(())
        }
        Verb::Update => unreachable!("providers are replaced, never updated"),
    }
}
