//! Staging pipelines (seed 003: `GET/POST /v1/stagingpipelines`,
//! `GET/PUT/DELETE /v1/stagingpipelines/{uuid}`), declared under `stagingpipelines:` by FQN
//! (`stagpipe::/ns::name`), each with its `stagers`: the FQNs of its stager jobs, in order.
//!
//! The API names stagers by job uuid; both sides are compared by job FQN (a stager job capstan
//! has not listed shows as `uuid:<uuid>`). A pipeline is made after its stager jobs, and before
//! any job whose package it stages (the live package's `staging_pipeline_fqn`, seed L2547, is
//! the package's dependency: mod.rs, observe), and changed
//! with a full-object `PUT` carrying the `version_id` read (a stale one is reported, not
//! overwritten). Ownership: a pipeline object has no labels and no free text, so capstan records
//! the uuid of each pipeline it creates (`created.rs`) and prunes only a recorded one, never
//! another of the same FQN.

use super::kind::Kind;
use super::client::Client;
use super::created::Created;
use super::{Apcera, fqn};
use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, DesiredState, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Value, json};
use std::collections::HashMap;

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/stagingpipelines/{}", pointer_escape(key));
    if !fqn::require(doc, "/stagingpipelines", Some(key), key, Kind::Pipeline.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let mut references = Vec::new();
    let mut stagers = Vec::new();
    for (i, s) in entry["stagers"].as_array().into_iter().flatten().enumerate() {
        let Some(job) = s.as_str() else { continue };
        let at = format!("{pointer}/stagers/{i}");
        if fqn::require(doc, &at, None, job, Kind::Job.name(), diags) {
            references.push(Reference { target: ResourceId::new(Kind::Job.name(), job), at: doc.locate(&at) });
            stagers.push(json!(job));
        }
    }
    vec![DesiredResource {
        id: ResourceId::new(Kind::Pipeline.name(), key),
        spec: json!({ "stagers": stagers }),
        origin: doc.locate_key("/stagingpipelines", key),
        references,
        exclusive: None,
    }]
}

/// A pipeline as listed, its stagers named by job FQN where `job_fqns` (uuid → FQN) knows them;
/// capstan's when `created` records its uuid for `owner`.
pub fn from_live(
    p: &Value,
    job_fqns: &HashMap<String, String>,
    created: &Created,
    owner: &str,
) -> Option<(LiveResource, String)> {
    let fqn = p.get("fqn")?.as_str()?;
    let uuid = p.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    let stagers: Vec<String> = p["stagers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["uuid"].as_str())
        .map(|u| job_fqns.get(u).cloned().unwrap_or_else(|| format!("uuid:{u}")))
        .collect();
    let depends_on =
        stagers.iter().filter(|s| !s.starts_with("uuid:")).map(|s| ResourceId::new(Kind::Job.name(), s)).collect();
    let created_by = created.owner_of(Kind::Pipeline.name(), fqn, &uuid);
    Some((
        LiveResource {
            id: ResourceId::new(Kind::Pipeline.name(), fqn),
            spec: json!({ "stagers": stagers }),
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

/// The staging pipeline a live package names (`staging_pipeline_fqn`, seed L2547), when it is
/// declared, as the package's dependency: a job using the package is then made after the
/// pipeline when both change in one plan. Not when a declared stager of that pipeline uses the package itself: the
/// pipeline waits for its stagers, and the stager cannot also wait for the pipeline.
pub fn staged_by(package_fqn: &str, package: &Value, desired: &DesiredState) -> Option<ResourceId> {
    let pipeline = package.get("staging_pipeline_fqn").and_then(Value::as_str).filter(|s| !s.is_empty())?;
    let id = ResourceId::new(Kind::Pipeline.name(), pipeline);
    let package_id = ResourceId::new(Kind::Package.name(), package_fqn);
    let uses_package = |job: &str| {
        desired
            .resources
            .get(&ResourceId::new(Kind::Job.name(), job))
            .is_some_and(|j| j.references.iter().any(|r| r.target == package_id))
    };
    // Only a declared pipeline orders anything ("where declared").
    let stagers = desired.resources.get(&id)?.spec["stagers"].as_array();
    let circular = stagers.into_iter().flatten().filter_map(Value::as_str).any(uses_package);
    (!circular).then_some(id)
}

/// The declared stagers as the API takes them: `[{uuid}]`.
async fn stager_uuids(provider: &Apcera, client: &Client, spec: &Value) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for job in spec["stagers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let uuid = provider
            .uuid(Kind::Job.name(), job, client)
            .await?
            .ok_or_else(|| ApiError::other("GET", "/v1/jobs", format!("no stager job {job}")))?;
        out.push(json!({ "uuid": uuid }));
    }
    Ok(out)
}

pub async fn execute(
    provider: &Apcera,
    client: &Client,
    verb: Verb,
    desired: Option<&DesiredResource>,
    id: &ResourceId,
) -> Result<(), ApiError> {
    let fqn = &id.name;
    let local = fqn::split(fqn).map(|f| f.local).unwrap_or(fqn);
    match verb {
        Verb::Create => {
            let spec = &desired.expect("create has a declaration").spec;
            let body = json!({ "fqn": fqn, "name": local, "stagers": stager_uuids(provider, client, spec).await? });
            let created = client.create("/v1/stagingpipelines", &body).await?;
            let uuid = created.get("uuid").and_then(Value::as_str).unwrap_or_default();
            provider.remember(Kind::Pipeline.name(), fqn, uuid);
            provider.created.add(Kind::Pipeline.name(), fqn, uuid, &provider.owner).map_err(|e| ApiError::other("POST", "/v1/stagingpipelines", e))
        }
        Verb::Update => {
            let spec = &desired.expect("update has a declaration").spec;
            let uuid = provider
                .uuid(Kind::Pipeline.name(), fqn, client)
                .await?
                .ok_or_else(|| ApiError::other("GET", "/v1/stagingpipelines", format!("{fqn} no longer exists")))?;
            let stagers = stager_uuids(provider, client, spec).await?;
            client.update_pipeline(&uuid, |p| p["stagers"] = json!(stagers)).await?;
            // Taken over (`--take-ownership`) from another owner's record: now this owner's.
            if provider.created.owner_of(Kind::Pipeline.name(), fqn, &uuid).is_some_and(|o| o != provider.owner) {
                let path = "/v1/stagingpipelines";
                provider.created.add(Kind::Pipeline.name(), fqn, &uuid, &provider.owner).map_err(|e| ApiError::other("PUT", path, e))?;
            }
            Ok(())
        }
        Verb::Delete => {
            let Some(uuid) = provider.uuid(Kind::Pipeline.name(), fqn, client).await? else { return Ok(()) };
            // Pruned (no longer declared): only the very object this owner created, never another
            // of the same name made meanwhile, nor one another owner took over since the plan.
            if desired.is_none() && provider.created.owner_of(Kind::Pipeline.name(), fqn, &uuid).as_deref() != Some(provider.owner.as_str()) {
                let why = format!("{fqn} (uuid {uuid}) is not one this owner created: left in place");
                return Err(ApiError::other("DELETE", "/v1/stagingpipelines", why));
            }
            client.delete(&format!("/v1/stagingpipelines/{uuid}")).await?;
            provider.forget(Kind::Pipeline.name(), fqn);
            provider.created.remove(&uuid).map_err(|e| ApiError::other("DELETE", "/v1/stagingpipelines", e))
        }
    }
}
