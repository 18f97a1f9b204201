//! Jobs (seed 003: `GET/POST /v1/jobs`, `GET/PUT/DELETE /v1/jobs/{uuid}`, `GET /v1/jobs/health`).
//!
//! Comparable form. The declaration manages the fields it writes, plus the fields whose absence
//! has a documented meaning: `num_instances` (1), `weight` (0), `tags`, `labels` and the
//! scheduling tags (empty), `restart` (always, 0) and `rollout` (the server turns zeros into
//! 3 / 0.5 / 300 / 120). Fields the server fills in (uuid, times, versions, system packages,
//! bindings, network_ref) are never compared; the job's drains are compared as its declared
//! `log_drains` where it declares them (`drain.rs`). Inside `resources`, `restart`, `rollout`
//! and each process, only the sub-fields written are compared, and an update merges them into
//! the job as read, so a value the platform defaulted is left alone rather than fought over.
//!
//! Updates are full-object `PUT`s (seed L1537: "You must include the entire job object"): the
//! job is read again just before, the declared fields are merged into it, and everything else
//! goes back exactly as read, `version_id` included; a stale version is re-read and retried.

use super::kind::Kind;
use super::client::Client;
use super::drain;
use super::fqn;
use super::{Apcera, OWNER_LABEL, PRUNE_LABEL};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::{Document, pointer_escape};
use super::listed::ListedJob;
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use serde::Deserialize;
use crate::providers::{ApiError, Verb};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// Top-level fields of seed 003's Job object that a declaration may set.
const JOB_FIELDS: &[&str] = &[
    "state",
    "num_instances",
    "weight",
    "ports",
    "processes",
    "resources",
    "rollout",
    "restart",
    "logs",
    "tags",
    "labels",
    "hard_scheduling_tags",
    "soft_scheduling_tags",
    "packages",
];

/// Objects of fixed fields: only the sub-fields a declaration writes are managed.
const STRUCT_FIELDS: &[&str] = &["resources", "restart", "rollout"];

/// Apcera's SSH port (docs.apcera.com, "Using SSH": the job is reached on port 222).
const SSH_PORT: u64 = 222;

/// Decode one job entry: the job itself, and the bindings and links it declares.
pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/jobs/{}", pointer_escape(key));
    if !fqn::require(doc, "/jobs", Some(key), key, Kind::Job.name(), diags) {
        return Vec::new();
    }
    super::check_name_fields(doc, &pointer, key, entry, diags);
    let origin = doc.locate_key("/jobs", key);
    // Read in place: at ten thousand jobs a copy of each entry is a copy of the manifests.
    let empty = Map::new();
    let obj = entry.as_object().unwrap_or(&empty);
    let mut spec = Map::new();
    for field in JOB_FIELDS {
        if let Some(v) = obj.get(*field) {
            spec.insert(field.to_string(), v.clone());
        }
    }
    if obj.contains_key(drain::FIELD) {
        spec.insert(drain::FIELD.into(), drain::normalize(obj.get(drain::FIELD)));
    }
    // Manifest shorthands from seed 003's POST /v1/manifests example.
    if let Some(cmd) = obj.get("start").and_then(|s| s.get("cmd")).and_then(Value::as_str) {
        let processes = spec.entry("processes").or_insert_with(|| json!({}));
        let app = processes.as_object_mut().unwrap().entry("app").or_insert_with(|| json!({}));
        app["start_command"] = json!(cmd);
    }
    if obj.get("ssh") == Some(&Value::Bool(true)) {
        let ports = spec.entry("ports").or_insert_with(|| json!([]));
        let list = ports.as_array_mut().unwrap();
        if !list.iter().any(|p| p.get("number").and_then(Value::as_u64) == Some(SSH_PORT)) {
            list.push(json!({ "number": SSH_PORT, "optional": false }));
        }
    }
    if spec.get("labels").is_some_and(|l| l.get(OWNER_LABEL).is_some()) {
        diags.push(Diagnostic::error_at(
            doc.locate_key(&format!("{pointer}/labels"), OWNER_LABEL),
            format!("the label {OWNER_LABEL} is capstan's ownership mark: set `owner` in capstan.yaml instead"),
        ));
    }
    let spec = crate::model::compact(normalize(Value::Object(spec), true));

    let mut references = Vec::new();
    if let Some(pkgs) = obj.get("packages").and_then(Value::as_array) {
        for (i, p) in pkgs.iter().enumerate() {
            if let Some(f) = p.get("fqn").and_then(Value::as_str) {
                let at = format!("{pointer}/packages/{i}/fqn");
                if fqn::require(doc, &at, None, f, "package", diags) {
                    references.push(Reference { target: ResourceId::new(Kind::Package.name(), f), at: doc.locate(&at) });
                }
            }
        }
    }
    if let Some(deps) = obj.get("depends_on").and_then(Value::as_array) {
        for (i, d) in deps.iter().enumerate() {
            let Some(text) = d.as_str() else { continue };
            let at = format!("{pointer}/depends_on/{i}");
            let kind = fqn::split(text).map(|f| f.kind).unwrap_or("job");
            if fqn::require(doc, &at, None, text, kind, diags) {
                references.push(Reference { target: ResourceId::new(kind, text), at: doc.locate(&at) });
            }
        }
    }

    let mut out = vec![DesiredResource { id: ResourceId::new(Kind::Job.name(), key), spec, origin, references, exclusive: None }];
    out.extend(super::binding::decode_for_job(doc, &pointer, key, obj, diags));
    out
}

/// Bring a job (declared or as read) to the form both sides are compared in.
fn normalize(mut job: Value, desired: bool) -> Value {
    let Some(obj) = job.as_object_mut() else {
        return job;
    };
    for (field, default) in [
        ("num_instances", json!(1)),
        ("weight", json!(0)),
        ("tags", json!({})),
        ("labels", json!({})),
        ("hard_scheduling_tags", json!({})),
        ("soft_scheduling_tags", json!({})),
    ] {
        if obj.get(field).is_none_or(Value::is_null) {
            obj.insert(field.into(), default);
        }
    }
    // The server stores num_instances 0 as 1 (seed: created jobs report 1).
    if obj.get("num_instances") == Some(&json!(0)) {
        obj.insert("num_instances".into(), json!(1));
    }
    let restart = obj.entry("restart").or_insert_with(|| json!({}));
    if let Some(r) = restart.as_object_mut() {
        r.entry("restart_mode").or_insert(json!("always"));
        r.entry("maximum_attempts").or_insert(json!(0));
    }
    let rollout = obj.entry("rollout").or_insert_with(|| json!({}));
    if let Some(r) = rollout.as_object_mut() {
        // Seed L1134-1139 → L1227-1233: zero (or absent) fields become the server defaults.
        for (k, d) in [
            ("force_stop_old_instances_after", json!(120)),
            ("flapping_minimum_restarts", json!(3)),
            ("flapping_percent", json!(0.5)),
            ("flapping_window", json!(300)),
        ] {
            let zero = r.get(k).is_none_or(|v| v.as_f64() == Some(0.0));
            if zero {
                r.insert(k.into(), d);
            }
        }
        r.entry("errored_state_window").or_insert(json!(0));
        if let Some(p) = r.get("flapping_percent").and_then(Value::as_f64) {
            r.insert("flapping_percent".into(), json!(p));
        }
    }
    if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("optional").or_insert(json!(false));
            let empty = p.get("routes").is_none_or(|r| r.as_array().is_none_or(Vec::is_empty));
            if empty {
                p.remove("routes");
            } else if let Some(routes) = p.get_mut("routes").and_then(Value::as_array_mut) {
                for r in routes.iter_mut().filter_map(Value::as_object_mut) {
                    r.entry("weight").or_insert(json!(0));
                    if let Some(w) = r.get("weight").and_then(Value::as_f64) {
                        r.insert("weight".into(), number(w));
                    }
                }
            }
        }
    }
    if let Some(procs) = obj.get_mut("processes").and_then(Value::as_object_mut) {
        for p in procs.values_mut().filter_map(Value::as_object_mut) {
            for raw in ["start_command_raw", "stop_command_raw"] {
                // Seed: a null raw command is stored as [].
                if p.get(raw).is_some_and(Value::is_null) {
                    p.insert(raw.into(), json!([]));
                }
            }
            let empty_env =
                p.get("environment").is_some_and(|e| e.as_object().is_some_and(Map::is_empty) || e.is_null());
            if empty_env {
                p.remove("environment");
            }
        }
    }
    if let Some(pkgs) = obj.get_mut("packages").and_then(Value::as_array_mut) {
        if desired {
            for p in pkgs.iter_mut() {
                *p = package_ref(p);
            }
        } else {
            // Only the packages the user named; the server adds "system" dependencies.
            let user: Vec<Value> = pkgs
                .iter()
                .filter(|p| p.get("source").and_then(Value::as_str).is_none_or(|s| s == "user"))
                .map(package_ref)
                .collect();
            *pkgs = user;
        }
    } else if desired {
        obj.insert("packages".into(), json!([]));
    }
    job
}

/// Integral floats (a route weight of 0.0) compare equal to the integers servers send back.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 { json!(f as i64) } else { json!(f) }
}

fn package_ref(p: &Value) -> Value {
    match (p.get("fqn").and_then(Value::as_str), p.get("uuid").and_then(Value::as_str)) {
        (Some(f), _) => json!({ "fqn": f }),
        (None, Some(u)) => json!({ "uuid": u }),
        _ => p.clone(),
    }
}

/// A job as listed by `GET /v1/jobs` (or read by `GET /v1/jobs/{uuid}`), in comparable form;
/// also says whether capstan's owner marked it.
pub fn from_live(job: &Value, owner: &str) -> Option<(LiveResource, String)> {
    let listed = ListedJob::deserialize(job).ok()?;
    from_listed(listed, owner).map(|(live, uuid, _)| (live, uuid))
}

/// A live job in comparable form from a job as decoded, with its uuid and the bindings and
/// links it reports (`None` for a job without an FQN).
pub fn from_listed(mut job: ListedJob, owner: &str) -> Option<(LiveResource, String, Vec<LiveResource>)> {
    let fqn = match job.fqn.take() {
        Some(Value::String(f)) => f,
        _ => return None,
    };
    let uuid = match job.uuid.take() {
        Some(Value::String(u)) => u,
        _ => String::new(),
    };
    let fields = job.declarable();
    let mut spec = Map::with_capacity(fields.iter().filter(|(_, v)| v.is_some()).count() + 1);
    for (field, v) in fields {
        if let Some(v) = v {
            spec.insert(field.to_string(), v);
        }
    }
    // Compared only where a declaration writes them (`project_onto`); none is no field.
    if job.drains.as_ref().and_then(Value::as_array).is_some_and(|d| !d.is_empty()) {
        spec.insert(drain::FIELD.into(), drain::normalize(job.drains.as_ref()));
    }
    let mut mark = None;
    if let Some(Value::Object(labels)) = spec.get_mut("labels")
        && let Some(m) = labels.remove(OWNER_LABEL)
    {
        mark = Some(m.as_str().map_or_else(|| m.to_string(), str::to_string));
        // Kept for the whole plan: without the room the mark took.
        *labels = std::mem::take(labels).into_iter().collect();
    }
    let owned = mark.as_deref() == Some(owner);
    let keep = (spec.get("labels").and_then(|l| l.get(PRUNE_LABEL)).and_then(Value::as_str) == Some("false"))
        .then(|| format!("label {PRUNE_LABEL}: \"false\""));
    let attachments = super::binding::from_live_job(&fqn, job.bindings.as_ref(), owned);
    let spec = normalize(Value::Object(spec), false);
    let live = LiveResource {
        id: ResourceId::new(Kind::Job.name(), fqn),
        spec,
        owned,
        owner: mark,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep,
    };
    Some((live, uuid, attachments))
}

/// Project a live job onto what the declaration manages, and write packages the same way on
/// both sides (by FQN where the package is known).
pub fn comparable<'a>(provider: &Apcera, desired: &'a Value, live: &Value) -> (Cow<'a, Value>, Value) {
    let mut projected = project_onto(desired, live);
    if let Some(p) = projected.get_mut("packages") {
        *p = provider.packages_by_name(p);
    }
    (provider.named_packages(desired), projected)
}

/// The live job reduced to what the declaration writes (projecting twice changes nothing).
/// `comparable` is handed a job observe has already reduced, so the copy here is a small one.
pub fn project_onto(desired: &Value, live: &Value) -> Value {
    project_onto_owned(desired, live.clone())
}

/// `project_onto` for a live job the caller owns: the kept fields are moved out of it, never
/// copied (observe reduces every listed job this way).
pub fn project_onto_owned(desired: &Value, live: Value) -> Value {
    let Some(d) = desired.as_object() else { return live };
    let Value::Object(mut l) = live else { return live };
    let mut projected = Map::with_capacity(d.len());
    for (k, dv) in d {
        let Some(lv) = l.remove(k) else { continue };
        let v = if STRUCT_FIELDS.contains(&k.as_str()) {
            project_owned(dv, lv)
        } else if k == "processes" {
            project_processes_owned(dv, lv)
        } else {
            lv
        };
        projected.insert(k.clone(), v);
    }
    // A job without drains has none, as far as a declaration of them is concerned.
    if d.contains_key(drain::FIELD) && !projected.contains_key(drain::FIELD) {
        projected.insert(drain::FIELD.into(), json!([]));
    }
    // A person's keep label is theirs, not drift, unless the manifest writes it too.
    if d.get("labels").is_some_and(|dl| dl.get(PRUNE_LABEL).is_none())
        && let Some(Value::Object(labels)) = projected.get_mut("labels")
    {
        labels.remove(PRUNE_LABEL);
    }
    Value::Object(projected)
}

/// Keep only the sub-fields of `live` that `desired` writes.
fn project_owned(desired: &Value, live: Value) -> Value {
    match (desired.as_object(), live) {
        (Some(d), Value::Object(l)) => {
            // Made with the room it needs: the projection is what a plan keeps.
            let mut kept = Map::with_capacity(l.keys().filter(|k| d.contains_key(*k)).count());
            kept.extend(l.into_iter().filter(|(k, _)| d.contains_key(k)));
            Value::Object(kept)
        }
        (_, live) => live,
    }
}

fn project_processes_owned(desired: &Value, live: Value) -> Value {
    match (desired.as_object(), live) {
        (Some(d), Value::Object(l)) => Value::Object(
            l.into_iter()
                .map(|(name, lp)| {
                    let v = match d.get(&name) {
                        Some(dp) => {
                            let mut p = project_owned(dp, lp);
                            // The environment is the user's map: compared whole when declared.
                            if dp.get("environment").is_none() {
                                p.as_object_mut().map(|o| o.remove("environment"));
                            }
                            p
                        }
                        None => lp,
                    };
                    (name, v)
                })
                .collect(),
        ),
        (_, live) => live,
    }
}


/// Merge declared fields into a job object (the body of a create, or the job as read for a
/// full-object update). Struct-like fields and processes merge by sub-field; the rest replace.
fn merge_into(target: &mut Map<String, Value>, desired: &Value, owner: &str) {
    let Some(d) = desired.as_object() else { return };
    let keep = target.get("labels").and_then(|l| l.get(PRUNE_LABEL)).cloned();
    // Drains are not a field of the job object: they have their own calls (`drain::sync`).
    for (k, dv) in d.iter().filter(|(k, _)| *k != drain::FIELD) {
        let merged = match (k.as_str(), target.get(k)) {
            (f, Some(tv)) if STRUCT_FIELDS.contains(&f) => merge_object(tv, dv),
            ("processes", Some(tv)) => {
                let mut procs = tv.as_object().cloned().unwrap_or_default();
                if let Some(dprocs) = dv.as_object() {
                    // A declared process map is the whole set of processes.
                    procs.retain(|name, _| dprocs.contains_key(name));
                    for (name, dp) in dprocs {
                        let merged = match procs.get(name) {
                            Some(tp) => merge_object(tp, dp),
                            None => dp.clone(),
                        };
                        procs.insert(name.clone(), merged);
                    }
                }
                Value::Object(procs)
            }
            _ => dv.clone(),
        };
        target.insert(k.clone(), merged);
    }
    let labels = target.entry("labels").or_insert_with(|| json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert(OWNER_LABEL.into(), json!(owner));
        // A person's keep label survives capstan's writes.
        if let Some(k) = keep {
            l.entry(PRUNE_LABEL).or_insert(k);
        }
    }
}

fn merge_object(base: &Value, over: &Value) -> Value {
    match (base.as_object(), over.as_object()) {
        (Some(b), Some(o)) => {
            let mut m = b.clone();
            for (k, v) in o {
                m.insert(k.clone(), v.clone());
            }
            Value::Object(m)
        }
        _ => over.clone(),
    }
}

/// Turn the declared package references into what the API takes: `{uuid}`.
fn resolve_packages(provider: &Apcera, job: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(pkgs) = job.get_mut("packages").and_then(Value::as_array_mut) {
        for p in pkgs.iter_mut() {
            if let Some(f) = p.get("fqn").and_then(Value::as_str) {
                let uuid = provider
                    .package_uuid(f)
                    .ok_or_else(|| ApiError::other("GET", "/v1/packages", format!("no package {f}")))?;
                *p = json!({ "uuid": uuid });
            }
        }
    }
    Ok(())
}

pub async fn execute(
    provider: &Apcera,
    client: &Client,
    verb: Verb,
    desired: Option<&DesiredResource>,
    live: Option<&LiveResource>,
    id: &ResourceId,
) -> Result<(), ApiError> {
    let fqn = &id.name;
    match verb {
        Verb::Create => create(provider, client, fqn, desired.expect("create has a declaration")).await,
        Verb::Update => update(provider, client, fqn, desired.expect("update has a declaration")).await,
        Verb::Delete => {
            let _ = live;
            match provider.uuid(Kind::Job.name(), fqn, client).await? {
                Some(uuid) => {
                    client.delete_job(&uuid).await?;
                    provider.forget(Kind::Job.name(), fqn);
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }
}

async fn create(provider: &Apcera, client: &Client, fqn: &str, desired: &DesiredResource) -> Result<(), ApiError> {
    // Known since observing (a step settled by looking again after a lost answer): update.
    if provider.known_uuid(Kind::Job.name(), fqn).is_some() {
        return update(provider, client, fqn, desired).await;
    }
    let local = fqn::split(fqn).map(|f| f.local).unwrap_or(fqn);
    let mut body = Map::new();
    body.insert("fqn".into(), json!(fqn));
    body.insert("name".into(), json!(local));
    merge_into(&mut body, &desired.spec, &provider.owner);
    // A job is created "ready" (seed L1235) and started with a PUT afterwards.
    let wants = body.remove("state");
    resolve_packages(provider, &mut body)?;
    let body = Value::Object(body);
    let mine =
        |j: &Value| j.get("labels").and_then(|l| l.get(OWNER_LABEL)).and_then(Value::as_str) == Some(&provider.owner);
    let created = super::settle_create(client.max_attempts(), || client.create_job(&body), || client.find_job(fqn), mine).await?;
    let uuid = created.get("uuid").and_then(Value::as_str).unwrap_or_default().to_string();
    provider.remember(Kind::Job.name(), fqn, &uuid);
    let job = match wants {
        Some(state) if created.get("state") != Some(&state) => {
            // The create's answer is the job as it now is (its version included): the start is
            // written onto it without reading it again; a 409 says it changed, and it is read.
            let first = match created {
                Value::Object(o) => Some(o),
                _ => None,
            };
            put_with_retry(client, &uuid, first, |job| {
                job.insert("state".into(), state.clone());
                true
            })
            .await?
        }
        _ => created,
    };
    if let Some(drains) = desired.spec.get(drain::FIELD) {
        drain::sync(client, &uuid, drains).await?;
    }
    wait_ready(client, &job, fqn, provider.ready_timeout(Kind::Job.name())).await
}

async fn update(provider: &Apcera, client: &Client, fqn: &str, desired: &DesiredResource) -> Result<(), ApiError> {
    let uuid = provider
        .uuid(Kind::Job.name(), fqn, client)
        .await?
        .ok_or_else(|| ApiError::other("GET", "/v1/jobs", format!("{fqn} no longer exists")))?;
    let mut resolved = desired.spec.clone();
    if let Some(obj) = resolved.as_object_mut() {
        resolve_packages(provider, obj)?;
    }
    let owner = provider.owner.clone();
    let job = put_with_retry(client, &uuid, None, |job| {
        // Only the declared fields that differ from the job as read are written; everything
        // else goes back exactly as it came, in the platform's own representation.
        let as_read = Value::Object(job.clone());
        let live = from_live(&as_read, &owner).map(|(l, _)| l);
        let (want, have) = match &live {
            Some(l) => comparable(provider, &desired.spec, &l.spec),
            None => (Cow::Borrowed(&desired.spec), Value::Null),
        };
        let mut differing = Map::new();
        for (k, v) in resolved.as_object().into_iter().flatten().filter(|(k, _)| *k != drain::FIELD) {
            if want.get(k) != have.get(k) {
                differing.insert(k.clone(), v.clone());
            }
        }
        let owned = live.is_some_and(|l| l.owned);
        if differing.is_empty() && owned {
            return false;
        }
        // Declared user packages replace the user ones; the system ones stay as read.
        let system: Vec<Value> = job
            .get("packages")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|p| p.get("source").and_then(Value::as_str) == Some("system")).cloned().collect())
            .unwrap_or_default();
        let packages_change = differing.contains_key("packages");
        merge_into(job, &Value::Object(differing), &owner);
        if packages_change && let Some(pkgs) = job.get_mut("packages").and_then(Value::as_array_mut) {
            pkgs.extend(system);
        }
        true
    })
    .await?;
    if let Some(drains) = desired.spec.get(drain::FIELD) {
        drain::sync(client, &uuid, drains).await?;
    }
    wait_ready(client, &job, fqn, provider.ready_timeout(Kind::Job.name())).await
}

/// Read the job, change it, and `PUT` it back whole; a stale `version_id` (409) means someone
/// else changed it in between, so read again and redo the change. `change` returns false when
/// the job as read needs no change; then nothing is sent. `first`, when given, is the job as
/// the platform just answered it (a create's answer), used instead of the first read.
async fn put_with_retry(
    client: &Client,
    uuid: &str,
    mut first: Option<Map<String, Value>>,
    change: impl Fn(&mut Map<String, Value>) -> bool,
) -> Result<Value, ApiError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut job = match first.take() {
            Some(job) if job.get("uuid").and_then(Value::as_str) == Some(uuid) && job.contains_key("version_id") => job,
            _ => match client.get_job(uuid).await? {
                Value::Object(o) => o,
                _ => {
                    return Err(ApiError::other("GET", &format!("/v1/jobs/{uuid}"), "answer is not a job object"));
                }
            },
        };
        if !change(&mut job) {
            return Ok(Value::Object(job));
        }
        match client.update_job(uuid, &Value::Object(job)).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_conflict() && attempts < 5 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Wait until a started job has all its instances running (`GET /v1/jobs/health`), polling
/// tightly at first so an instant platform costs an instant, for at most `timeout`.
async fn wait_ready(client: &Client, job: &Value, fqn: &str, timeout: Duration) -> Result<(), ApiError> {
    if job.get("state").and_then(Value::as_str) != Some("started") {
        return Ok(());
    }
    let uuid = job.get("uuid").and_then(Value::as_str).unwrap_or_default();
    let want = job.get("num_instances").and_then(Value::as_u64).unwrap_or(1);
    let started = Instant::now();
    let mut delay = Duration::from_millis(2);
    loop {
        let health = client.job_health(&[uuid]).await?;
        let running = health
            .iter()
            .find(|h| h.get("uuid").and_then(Value::as_str) == Some(uuid))
            .and_then(|h| h.get("instance_state_count"))
            .and_then(|c| c.get("RUNNING"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if running >= want {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(ApiError::plain(format!(
                "{fqn} is not ready after {}: {running} of {want} instances running (the readiness timeout for jobs; `timeouts: {{job: SECONDS}}` in capstan.yaml)",
                seconds(timeout)
            )));
        }
        // Never sleep past the deadline.
        tokio::time::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// `300s`, `1.5s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0}s") } else { format!("{s}s") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::apcera::listed::ListEntry;

    /// A listed job decoded straight from the answer's bytes gives the same live job, bindings
    /// and projection as the job read as a `Value` (byte for byte, key order included).
    #[test]
    fn a_job_decoded_from_the_bytes_is_the_job_read_as_a_value() {
        let owner = "me";
        let live = json!({
            "uuid": "u-1", "fqn": "job::/a::web", "version_id": 3, "created_at": "then",
            "state": "started", "num_instances": 2, "weight": 0,
            "processes": {
                "app": {"start_command": "./web", "environment": {"A": "1"}, "stop_timeout": 5},
                "extra": {"start_command": "./x"}
            },
            "resources": {"memory": 256, "cpu": 100, "disk": 1024},
            "rollout": {"flapping_window": 300},
            "labels": {PRUNE_LABEL: "false", OWNER_LABEL: owner, "team": "a"},
            "tags": {"release": "1"},
            "ports": [{"number": 8080, "routes": [{"type": "http", "endpoint": "a.example.com"}]}],
            "bindings": {"b": {"name": "db", "service_fqn": "service::/a::db"}},
            "drains": [{"url": "syslog://a:514"}]
        });
        let desireds = [
            json!({"state": "started", "processes": {"app": {"start_command": "./web"}}, "resources": {"memory": 256},
                   "labels": {"team": "a"}, drain::FIELD: []}),
            json!({"processes": {"app": {"environment": {"A": "1"}}, "extra": "not an object"}, "tags": {}, "ports": []}),
            json!({"processes": "not an object", "resources": 5, "labels": {PRUNE_LABEL: "false"}}),
            json!("not an object"),
        ];
        for desired in desireds {
            let (copied, uuid) = from_live(&live, owner).unwrap();
            let entry: ListEntry = serde_json::from_str(&live.to_string()).unwrap();
            let (moved, uuid2, attachments) = from_listed(entry.0.unwrap(), owner).unwrap();
            assert_eq!((uuid.as_str(), moved.owned, &moved.keep, &moved.owner), (uuid2.as_str(), copied.owned, &copied.keep, &copied.owner));
            assert_eq!(attachments.len(), 1);
            assert_eq!(serde_json::to_string(&moved.spec).unwrap(), serde_json::to_string(&copied.spec).unwrap());
            let want = project_onto(&desired, &copied.spec);
            let got = project_onto(&desired, &moved.spec);
            assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&want).unwrap(), "{desired}");
        }
    }

    /// What a job is reduced to, byte for byte and key order included (the declaration's order
    /// at the top, the live job's within), for odd declarations as well as ordinary ones; and
    /// projecting twice changes nothing.
    #[test]
    fn a_live_job_is_reduced_to_what_its_declaration_writes() {
        let live = json!({
            "state": "started", "num_instances": 2,
            "processes": {
                "app": {"start_command": "./web", "environment": {"A": "1"}, "stop_timeout": 5},
                "extra": {"start_command": "./x"}
            },
            "resources": {"memory": 256, "cpu": 100, "disk": 1024},
            "labels": {PRUNE_LABEL: "false", OWNER_LABEL: "me", "team": "a"},
            "tags": {"release": "1"},
            "ports": [{"number": 8080}]
        });
        let cases = [
            (
                json!({"state": "started", "processes": {"app": {"start_command": "./web"}}, "resources": {"memory": 256},
                       "labels": {"team": "a"}, drain::FIELD: []}),
                r#"{"state":"started","processes":{"app":{"start_command":"./web"},"extra":{"start_command":"./x"}},"resources":{"memory":256},"labels":{"team":"a","capstan-owner":"me"},"log_drains":[]}"#,
            ),
            (
                json!({"tags": {}, "ports": [], "processes": {"app": {"environment": {"A": "1"}}, "extra": "not an object"}}),
                r#"{"tags":{"release":"1"},"ports":[{"number":8080}],"processes":{"app":{"environment":{"A":"1"}},"extra":{"start_command":"./x"}}}"#,
            ),
            (
                json!({"processes": "not an object", "resources": 5, "labels": {PRUNE_LABEL: "false"}, "absent": 1}),
                r#"{"processes":{"app":{"start_command":"./web","environment":{"A":"1"},"stop_timeout":5},"extra":{"start_command":"./x"}},"resources":{"memory":256,"cpu":100,"disk":1024},"labels":{"capstan-prune":"false","capstan-owner":"me","team":"a"}}"#,
            ),
            (
                json!("not an object"),
                r#"{"state":"started","num_instances":2,"processes":{"app":{"start_command":"./web","environment":{"A":"1"},"stop_timeout":5},"extra":{"start_command":"./x"}},"resources":{"memory":256,"cpu":100,"disk":1024},"labels":{"capstan-prune":"false","capstan-owner":"me","team":"a"},"tags":{"release":"1"},"ports":[{"number":8080}]}"#,
            ),
            (json!({}), "{}"),
        ];
        for (desired, want) in cases {
            let once = project_onto_owned(&desired, live.clone());
            assert_eq!(serde_json::to_string(&once).unwrap(), want, "{desired}");
            assert_eq!(serde_json::to_string(&project_onto(&desired, &once)).unwrap(), want, "twice: {desired}");
        }
        // A live job that is no object is kept as it is.
        assert_eq!(project_onto_owned(&json!({"state": "started"}), json!(5)), json!(5));
    }
    /// The list's elements that are not job objects are skipped, not an error; a field present
    /// as `null` stays `null` (a missing one gets its default); fields outside
    /// [`JOB_FIELDS`] are not kept; and the struct's fields are [`JOB_FIELDS`], in order.
    #[test]
    fn the_jobs_list_is_decoded_with_only_what_comparing_needs() {
        let text = r#"[5, "x", null, [1, {"fqn": "job::/a::n"}], {"uuid": "u"},
            {"fqn": "job::/a::j", "uuid": "u-2", "created_at": "t", "version_id": 9, "restart": null,
             "labels": {"capstan-owner": "me"}, "network_ref": {"deep": [1, 2]}, "logs": []}]"#;
        let mut jobs = Vec::new();
        let entries: Vec<ListEntry> = serde_json::from_str(text).unwrap();
        for e in entries {
            if let Some(j) = e.0 {
                jobs.extend(from_listed(j, "me"));
            }
        }
        assert_eq!(jobs.len(), 1, "only the job with an FQN");
        let (live, uuid, attachments) = &jobs[0];
        assert_eq!((live.id.name.as_str(), uuid.as_str(), live.owned, attachments.len()), ("job::/a::j", "u-2", true, 0));
        let spec = live.spec.as_object().unwrap();
        assert_eq!(spec.get("restart"), Some(&Value::Null), "null kept, not defaulted");
        for absent in ["created_at", "version_id", "network_ref", "uuid", "fqn"] {
            assert!(!spec.contains_key(absent), "{absent}");
        }
        let (want, _) = from_live(&serde_json::from_str::<Vec<Value>>(text).unwrap()[5], "me").unwrap();
        assert_eq!(serde_json::to_string(&live.spec).unwrap(), serde_json::to_string(&want.spec).unwrap());
        let names: Vec<&str> = ListedJob::default().declarable().iter().map(|(k, _)| *k).collect();
        assert_eq!(names, JOB_FIELDS);
    }
}

