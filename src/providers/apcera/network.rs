//! Virtual networks and their job membership (seed 003: `GET/POST /v1/networks`,
//! `DELETE /v1/networks/{uuid}`, `POST /v1/jobs/{uuid}/networks`,
//! `DELETE /v1/jobs/{uuid}/networks/{network_uuid}`).
//!
//! Networks have no update endpoint, so a changed description replaces the network (its
//! members leave first and join again after). Membership is observed from the networks'
//! `network_end_points`, and belongs to the network's declaration: a declared network lists all
//! its members. A job is on at most one network (`job.network_ref` is singular), so joining a
//! new network waits for leaving the old one.

use super::kind::Kind;
use super::client::Client;
use super::{Apcera, fqn};
use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Value, json};

pub fn membership_id(job: &str, network: &str) -> ResourceId {
    ResourceId::new(Kind::Membership.name(), format!("{job} -> {network}"))
}

/// A job is on one network at most (`network_ref` is singular): its memberships exclude each
/// other.
fn exclusive(job: &str) -> Option<String> {
    Some(format!("the network of {job} (a job is on one network at most)"))
}

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/networks/{}", pointer_escape(key));
    if !fqn::require(doc, "/networks", Some(key), key, Kind::Network.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let description = entry.get("description").and_then(Value::as_str).unwrap_or_default();
    let id = ResourceId::new(Kind::Network.name(), key);
    let mut out = vec![DesiredResource {
        id: id.clone(),
        spec: json!({ "description": description }),
        origin: doc.locate_key("/networks", key),
        references: Vec::new(),
        exclusive: None,
    }];
    if let Some(jobs) = entry.get("jobs").and_then(Value::as_array) {
        for (i, j) in jobs.iter().enumerate() {
            let Some(job) = j.as_str() else { continue };
            let at = format!("{pointer}/jobs/{i}");
            if !fqn::require(doc, &at, None, job, Kind::Job.name(), diags) {
                continue;
            }
            out.push(DesiredResource {
                id: membership_id(job, key),
                spec: json!({ "job_fqn": job, "network_fqn": key }),
                origin: doc.locate(&at),
                references: vec![
                    Reference { target: ResourceId::new(Kind::Job.name(), job), at: doc.locate(&at) },
                    Reference { target: id.clone(), at: doc.locate(&at) },
                ],
                exclusive: exclusive(job),
            });
        }
    }
    out
}

/// A listed network and its members; also its uuid.
pub fn from_live(net: &Value, owner: &str) -> Option<(Vec<LiveResource>, String)> {
    let fqn = net.get("fqn")?.as_str()?;
    let uuid = net.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    let written = net.get("description").and_then(Value::as_str).unwrap_or_default();
    let (description, mark) = super::unmark(written);
    let owned = mark.as_deref() == Some(owner);
    let id = ResourceId::new(Kind::Network.name(), fqn);
    let mut out = vec![LiveResource {
        id: id.clone(),
        spec: json!({ "description": description }),
        owned,
        owner: mark,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep: super::keep_mark(written),
    }];
    if let Some(points) = net.get("network_end_points").and_then(Value::as_array) {
        for p in points {
            let Some(job) = p.get("job_fqn").and_then(Value::as_str) else {
                continue;
            };
            out.push(LiveResource {
                id: membership_id(job, fqn),
                spec: json!({ "job_fqn": job, "network_fqn": fqn }),
                owned,
                owner: None,
                parent: Some(id.clone()),
                depends_on: vec![ResourceId::new(Kind::Job.name(), job), id.clone()],
                exclusive: exclusive(job),
                removes: Vec::new(),
                keep: None,
            });
        }
    }
    Some((out, uuid))
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
            let description = spec.get("description").and_then(Value::as_str).unwrap_or_default();
            let body = json!({ "fqn": fqn, "name": local, "description": super::mark(description, &provider.owner) });
            let created = super::create_once(client, "/v1/networks", &body, &provider.owner, || async {
                Ok(client
                    .list_networks()
                    .await?
                    .into_iter()
                    .find(|n| n.get("fqn").and_then(Value::as_str) == Some(fqn)))
            })
            .await?;
            provider.remember(Kind::Network.name(), fqn, created.get("uuid").and_then(Value::as_str).unwrap_or_default());
            Ok(())
        }
        Verb::Delete => {
            if let Some(uuid) = provider.uuid(Kind::Network.name(), fqn, client).await? {
                client.delete(&format!("/v1/networks/{uuid}")).await?;
                provider.forget(Kind::Network.name(), fqn);
            }
            Ok(())
        }
        Verb::Update => unreachable!("networks are replaced, never updated"),
    }
}

pub async fn execute_membership(
    provider: &Apcera,
    client: &Client,
    verb: Verb,
    desired: Option<&DesiredResource>,
    live: Option<&LiveResource>,
) -> Result<(), ApiError> {
    let spec = desired.map(|d| &d.spec).or(live.map(|l| &l.spec)).expect("a membership step has a resource");
    let job = spec["job_fqn"].as_str().unwrap_or_default();
    let network = spec["network_fqn"].as_str().unwrap_or_default();
    let missing = |what: &str| ApiError::other("GET", "/v1/jobs", format!("{what} not found"));
    let job_uuid = provider.uuid(Kind::Job.name(), job, client).await?;
    match verb {
        Verb::Create => {
            let job_uuid = job_uuid.ok_or_else(|| missing(job))?;
            match client.join_network(&job_uuid, job, network).await {
                // Refused as a second join: success only if the job is on this network (a join
                // whose answer was lost), not on another one.
                Err(e) if e.is_conflict() => settled(client, job, network, true, e).await,
                other => other,
            }
        }
        Verb::Delete => {
            // A job or network already gone took its membership with it.
            let (Some(job_uuid), Some(net_uuid)) = (job_uuid, provider.uuid(Kind::Network.name(), network, client).await?) else {
                return Ok(());
            };
            match client.leave_network(&job_uuid, &net_uuid).await {
                Err(e) if e.is_not_found() => settled(client, job, network, false, e).await,
                other => other,
            }
        }
        Verb::Update => unreachable!("memberships are replaced, never updated"),
    }
}

/// A join or leave the platform refused as already done: read the networks back, and count it
/// done only if the job's membership of `network` is what was wanted.
async fn settled(client: &Client, job: &str, network: &str, member: bool, e: ApiError) -> Result<(), ApiError> {
    let is_member = client.list_networks().await?.iter().any(|n| {
        n.get("fqn").and_then(Value::as_str) == Some(network)
            && n.get("network_end_points")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p.get("job_fqn").and_then(Value::as_str) == Some(job)))
    });
    if is_member == member {
        return Ok(());
    }
    let state = if is_member { "still is" } else { "is not" };
    Err(ApiError { message: format!("{}; read back, {job} {state} a member of {network}", e.message), ..e })
}
