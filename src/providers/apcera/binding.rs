//! Service bindings and job links (seed 003: `POST /v1/bindings`, `POST /v1/unbind`,
//! `POST /v1/unlink`).
//!
//! The API has no list or get for them; a job lists its own in `job.bindings` (seed L649-682),
//! keyed by binding FQN, so they are observed with the jobs at no extra request. A binding is
//! identified by its (job, service or provider) pair, as `unbind` is; a link by (job, target
//! job, port), as `unlink` is. Neither can be changed in place: a change is a replace. Both
//! belong to their job's declaration: a job that is declared lists all of them.

use super::kind::Kind;
use super::client::Client;
use super::{Apcera, fqn};
use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, pointer_escape};
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::{ApiError, Verb};
use serde_json::{Map, Value, json};

pub fn binding_id(job: &str, target: &str) -> ResourceId {
    ResourceId::new(Kind::Binding.name(), format!("{job} -> {target}"))
}

pub fn link_id(job: &str, target: &str, port: u64) -> ResourceId {
    ResourceId::new(Kind::Link.name(), format!("{job} -> {target}:{port}"))
}

/// The bindings and links of a job share one name space: two with one name exclude each other
/// (declared together they are an error; a live one is removed before another takes its name).
fn exclusive(job: &str, name: &str) -> Option<String> {
    Some(format!("the name {name:?} among the bindings and links of {job} (they share one name space)"))
}

/// The `bindings` and `links` a job entry declares.
pub fn decode_for_job(
    doc: &Document,
    job_pointer: &str,
    job: &str,
    entry: &Map<String, Value>,
    diags: &mut Diagnostics,
) -> Vec<DesiredResource> {
    let mut out = Vec::new();
    let job_id = ResourceId::new(Kind::Job.name(), job);
    if let Some(bindings) = entry.get("bindings").and_then(Value::as_object) {
        let base = format!("{job_pointer}/bindings");
        for (name, b) in bindings {
            let Some(target) = b.get("fqn").and_then(Value::as_str) else {
                continue;
            };
            let at = format!("{base}/{}/fqn", pointer_escape(name));
            let kind = if target.starts_with("provider::") { "provider" } else { "service" };
            if !fqn::require(doc, &at, None, target, kind, diags) {
                continue;
            }
            let field = if kind == "provider" { "provider_fqn" } else { "service_fqn" };
            out.push(DesiredResource {
                id: binding_id(job, target),
                spec: json!({ "job_fqn": job, "name": name, field: target }),
                origin: doc.locate_key(&base, name),
                references: vec![
                    Reference { target: job_id.clone(), at: doc.locate_key(&base, name) },
                    Reference { target: ResourceId::new(kind, target), at: doc.locate(&at) },
                ],
                exclusive: exclusive(job, name),
            });
        }
    }
    if let Some(links) = entry.get("links").and_then(Value::as_object) {
        let base = format!("{job_pointer}/links");
        for (name, l) in links {
            let Some(target) = l.get("fqn").and_then(Value::as_str) else {
                continue;
            };
            let at = format!("{base}/{}/fqn", pointer_escape(name));
            if !fqn::require(doc, &at, None, target, Kind::Job.name(), diags) {
                continue;
            }
            let port = l.get("port").and_then(Value::as_u64).unwrap_or(0);
            out.push(DesiredResource {
                id: link_id(job, target, port),
                spec: json!({ "job_fqn": job, "name": name, "target_job_fqn": target, "target_job_port": port }),
                origin: doc.locate_key(&base, name),
                references: vec![
                    Reference { target: job_id.clone(), at: doc.locate_key(&base, name) },
                    Reference { target: ResourceId::new(Kind::Job.name(), target), at: doc.locate(&at) },
                ],
                exclusive: exclusive(job, name),
            });
        }
    }
    out
}

/// The bindings and links a live job (`job_fqn`) reports in its `bindings` map.
pub fn from_live_job(job_fqn: &str, bindings: Option<&Value>, owned: bool) -> Vec<LiveResource> {
    let Some(map) = bindings.and_then(Value::as_object) else {
        return Vec::new();
    };
    let parent = ResourceId::new(Kind::Job.name(), job_fqn);
    let mut out = Vec::new();
    for b in map.values() {
        let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
        let (id, spec, target) = if let Some(t) = b.get("target_job_fqn").and_then(Value::as_str) {
            let port = b.get("target_job_port").and_then(Value::as_u64).unwrap_or(0);
            (
                link_id(job_fqn, t, port),
                json!({ "job_fqn": job_fqn, "name": name, "target_job_fqn": t, "target_job_port": port }),
                ResourceId::new(Kind::Job.name(), t),
            )
        } else if let Some(s) = b.get("service_fqn").and_then(Value::as_str) {
            (
                binding_id(job_fqn, s),
                json!({ "job_fqn": job_fqn, "name": name, "service_fqn": s }),
                ResourceId::new(Kind::Service.name(), s),
            )
        } else if let Some(p) = b.get("provider_fqn").and_then(Value::as_str) {
            (
                binding_id(job_fqn, p),
                json!({ "job_fqn": job_fqn, "name": name, "provider_fqn": p }),
                ResourceId::new(Kind::Provider.name(), p),
            )
        } else {
            continue;
        };
        out.push(LiveResource {
            id,
            spec,
            owned,
            owner: None,
            parent: Some(parent.clone()),
            depends_on: vec![parent.clone(), target],
            exclusive: exclusive(job_fqn, name),
            removes: Vec::new(),
            keep: None,
        });
    }
    out
}

pub async fn execute(
    _provider: &Apcera,
    client: &Client,
    verb: Verb,
    desired: Option<&DesiredResource>,
    live: Option<&LiveResource>,
) -> Result<(), ApiError> {
    let spec = desired.map(|d| &d.spec).or(live.map(|l| &l.spec)).expect("a binding step has a resource");
    let s = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let job = s("job_fqn");
    match verb {
        Verb::Create => {
            let mut attempts = 0;
            loop {
                attempts += 1;
                match client.bind(spec).await {
                    Ok(_) => return Ok(()),
                    // A conflict is "already there" only when the job has exactly this one (an
                    // earlier attempt whose answer was lost made it); a name taken by another
                    // binding or link of the job is the failure it says it is.
                    Err(e) if e.is_conflict() => {
                        return if exists(client, &job, spec, true).await? { Ok(()) } else { Err(e) };
                    }
                    // Transient: the binding may or may not exist. Look before binding again,
                    // so a lost answer never makes a second binding. As often as capstan.yaml's
                    // `retry` allows any request (as `settle_create` does for other creates).
                    Err(e) if e.transient && attempts < client.max_attempts() => {
                        if exists(client, &job, spec, true).await? {
                            return Ok(());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempts))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Verb::Delete => {
            let sent = if let Some(target) = spec.get("target_job_fqn").and_then(Value::as_str) {
                let port = spec.get("target_job_port").and_then(Value::as_u64).unwrap_or(0);
                client.unlink(&job, target, port).await
            } else {
                let service =
                    spec.get("service_fqn").or(spec.get("provider_fqn")).and_then(Value::as_str).unwrap_or_default();
                client.unbind(&job, service).await
            };
            match sent {
                // "Not there" is success only if the job indeed no longer has it (Apcera's unbind
                // takes services: a binding to a provider answers 404 and stays).
                Err(e) if e.is_not_found() => match exists(client, &job, spec, false).await? {
                    false => Ok(()),
                    true => Err(ApiError {
                        message: format!("{}; read back, {job} still has it, so it was not removed", e.message),
                        ..e
                    }),
                },
                other => other,
            }
        }
        Verb::Update => unreachable!("bindings and links are replaced, never updated"),
    }
}

/// Whether the job has this binding or link (read from the job's `bindings`): the same target,
/// and with `same_name` also the same name.
async fn exists(client: &Client, job: &str, spec: &Value, same_name: bool) -> Result<bool, ApiError> {
    let Some(live) = client.find_job(job).await? else { return Ok(false) };
    let found = live.get("bindings").and_then(Value::as_object).is_some_and(|m| {
        m.values().any(|b| {
            let target = match spec.get("target_job_fqn") {
                Some(t) => {
                    b.get("target_job_fqn") == Some(t) && b.get("target_job_port") == spec.get("target_job_port")
                }
                None => {
                    ["service_fqn", "provider_fqn"].iter().any(|k| spec.get(*k).is_some() && b.get(*k) == spec.get(*k))
                }
            };
            target && (!same_name || b.get("name") == spec.get("name"))
        })
    });
    Ok(found)
}
