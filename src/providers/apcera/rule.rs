//! Semantic pipeline rules (seed 003: `GET/POST /v1/rules`, `DELETE /v1/rules/{uuid}`),
//! declared under `sempiperules:` by FQN, each with its `action` (`commands`, `inline`) and one
//! of `service`, `provider` or `job`.
//!
//! There is no update endpoint: a changed rule is replaced. A rule is made after what it governs
//! (a reference to it) and removed before it. Ownership: a rule object has no labels and no
//! free text (its `name` must be the FQN's last part), so capstan records the uuid of each rule
//! it creates (`created.rs`) and prunes only a recorded one: a rule of the same FQN made by
//! anyone else, or one capstan found already there, is never deleted by pruning.

use super::kind::Kind;
use super::client::Client;
use super::created::Created;
use super::{Apcera, fqn};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Value, json};

/// What a rule may govern: its field and the kind of the FQN it holds.
const TARGETS: &[(&str, &str)] =
    &[("service", Kind::Service.name()), ("provider", Kind::Provider.name()), ("job", Kind::Job.name())];

/// The form both sides are compared in.
fn spec_of(v: &Value) -> Value {
    let target = |k: &str| v.get(k).filter(|t| t.as_str().is_some_and(|s| !s.is_empty())).cloned().unwrap_or(Value::Null);
    json!({
        "action": {
            "commands": v["action"].get("commands").cloned().unwrap_or(json!([])),
            "inline": v["action"].get("inline").cloned().unwrap_or(json!("")),
        },
        "service": target("service"),
        "provider": target("provider"),
        "job": target("job"),
    })
}

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/sempiperules/{}", pointer_escape(key));
    if !fqn::require(doc, "/sempiperules", Some(key), key, Kind::Rule.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let has = |f: &str| entry.get(f).is_some();
    if !(has("service") && !has("job") || has("provider") && !has("job") || has("job") && !has("service") && !has("provider")) {
        diags.push(Diagnostic::error_at(
            doc.locate(&pointer),
            "a rule governs one thing: expected one of service, provider or job (a service may come with its provider)",
        ));
        return Vec::new();
    }
    let mut references = Vec::new();
    for (field, kind) in TARGETS {
        if let Some(t) = entry.get(*field).and_then(Value::as_str) {
            let at = format!("{pointer}/{field}");
            if fqn::require(doc, &at, None, t, kind, diags) {
                references.push(Reference { target: ResourceId::new(*kind, t), at: doc.locate(&at) });
            }
        }
    }
    vec![DesiredResource {
        id: ResourceId::new(Kind::Rule.name(), key),
        spec: spec_of(entry),
        origin: doc.locate_key("/sempiperules", key),
        references,
        exclusive: None,
    }]
}

/// A rule as listed: capstan's when `created` records its uuid for `owner`.
pub fn from_live(r: &Value, created: &Created, owner: &str) -> Option<(LiveResource, String)> {
    let fqn = r.get("fqn")?.as_str()?;
    let uuid = r.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    let spec = spec_of(r);
    let depends_on = TARGETS
        .iter()
        .filter_map(|(field, kind)| spec[*field].as_str().map(|t| ResourceId::new(*kind, t)))
        .collect();
    let created_by = created.owner_of(Kind::Rule.name(), fqn, &uuid);
    Some((
        LiveResource {
            id: ResourceId::new(Kind::Rule.name(), fqn),
            spec,
            owned: created_by.as_deref() == Some(owner),
            owner: created_by,
            parent: None,
            depends_on,
            exclusive: None,
            removes: Vec::new(),
            keep: None,
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
            body["type"] = json!(0);
            let created = client.create("/v1/rules", &body).await?;
            let uuid = created.get("uuid").and_then(Value::as_str).unwrap_or_default();
            provider.remember(Kind::Rule.name(), fqn, uuid);
            provider.created.add(Kind::Rule.name(), fqn, uuid, &provider.owner).map_err(|e| ApiError::other("POST", "/v1/rules", e))
        }
        Verb::Delete => {
            let Some(uuid) = provider.uuid(Kind::Rule.name(), fqn, client).await? else { return Ok(()) };
            // Pruned (no longer declared): only the very object this owner created, never another
            // of the same name made meanwhile, nor one another owner took over since the plan.
            if desired.is_none() && provider.created.owner_of(Kind::Rule.name(), fqn, &uuid).as_deref() != Some(provider.owner.as_str()) {
                let why = format!("{fqn} (uuid {uuid}) is not one this owner created: left in place");
                return Err(ApiError::other("DELETE", "/v1/rules", why));
            }
            client.delete(&format!("/v1/rules/{uuid}")).await?;
            provider.forget(Kind::Rule.name(), fqn);
            provider.created.remove(&uuid).map_err(|e| ApiError::other("DELETE", "/v1/rules", e))
        }
        Verb::Update => unreachable!("rules are replaced, never updated"),
    }
}
