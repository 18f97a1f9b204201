//! The Apcera REST API (seed 003), emulated.
//!
//! Where the seed is silent, this sandbox chooses what a real Apcera cluster would do, and says
//! so here (the recommendations of `research/apcera.md` §5 unless noted):
//!
//! * **Errors** (A1): JSON modelled on Apcera's published APIError object — `code`, `message`,
//!   `client_side`, `duplicate_key`, `resource_missing`, `retry`, `fatal`, `request_id`, and
//!   `error_details` where there are details. 400 for malformed input, 401 without the token,
//!   404 for an unknown uuid, 409 for a duplicate FQN, a stale `version_id`, or a resource in
//!   use, 405 for updates the API does not have (services, providers, networks). Injected
//!   faults carry `retry: true`.
//! * **Successes** are 200 with the seed's bodies: `null` for DELETE of a network, service,
//!   provider, instance and for leaving a network; no body for DELETE of a job, unbind, unlink.
//! * **Jobs** (A3, A4, A6, A19): `fqn` is required, `name` defaults to its local part and must
//!   match it; creates start in state `ready`; `num_instances` 0 becomes 1; zero rollout fields
//!   become 3 / 0.5 / 300 / 120; null raw commands become `[]`. Like a Go server, unknown fields
//!   are ignored and absent ones take zero values, then these defaults: an absent or all-zero
//!   `resources` is `cpu 0, memory 256 MiB, disk 1 GiB, network 5 Mbit/s, netmax 0` (the
//!   values of the seed's create example); absent `ports` is one port 0; absent `processes` is
//!   one process `app`; absent `restart` is `always`, 0 attempts. A PUT is a full object: the
//!   path uuid wins, a `version_id` different from the current one is 409, server-owned
//!   fields are recomputed, `version_id` goes up by one.
//! * **Instances**: a started job gets `num_instances` instances, `STARTING` until
//!   `rollout_ms` has passed, then `RUNNING`; a change to a started job replaces its instances
//!   the same way; stopping removes them. Health `score` is running / wanted.
//! * **Packages** (A18): the packages the seed names are preloaded, with a few runtimes for
//!   examples; a job's user package gets `state: unknown, source: user` and a `system` copy.
//! * **Bindings and links** (A7): stored in the binding job's `bindings` map under the FQN the
//!   create answered with (`binding::/::<UPPER-CASE UUID>`); a link entry carries
//!   `target_job_fqn` and `target_job_port`. A job's bindings and links share one name space:
//!   a second of either with a name the job already uses is 409. `unbind` removes every
//!   binding of the pair to a *service* (the seed documents unbind for a job and a service,
//!   L4151-4170), so a binding to a provider is not found by it (404); `unlink` removes the
//!   matching link; either answers 404 when there is none.
//! * **Job versions**: making or removing a binding or link, and joining or leaving a network,
//!   are changes of the job (the seed shows a job with two bindings at `version_id` 3,
//!   L636-749, and a join as a change of the job's `network_ref`, L166-205): each raises its
//!   `version_id` and `updated_at`, so a full-object `PUT` read before it is refused as stale.
//!   So does removing a link because the job it pointed at was deleted.
//! * **Networks** (A8, A11): `network_end_points` is `null` when empty; an end point has an
//!   `end_point_interface` only while its job is started; subnets are allocated uniquely
//!   (`192.168.N.0/24`); a job is on one network at most (`network_ref` is singular): joining
//!   while it has one is 409, the same network included; networks stay at `version_id` 0.
//! * **Deletes in use** (A10): deleting a job removes its bindings, links in both directions
//!   and its membership; a service with bindings, a provider backing services, a network with
//!   members, or a job backing a provider answers 409. A service naming a provider that does
//!   not exist is 404.
//! * **Tasks** (A5): `{uuid, state: running|done|failed, created_at, events: [{time, type,
//!   message}]}`, done after `rollout_ms`; `?time=` returns only later events.
//! * **Manifests**: `POST /v1/manifests` runs a manifest's `jobs` (packages by FQN or uuid,
//!   `state`, `ssh`, `start.cmd`) and answers with a task; `POST /v1/manifests/expansion` is
//!   seed 003's expansion exactly (see `manifests.rs`).
//! * **Policy and simulation**: documents with their history and the cluster policy version,
//!   transactional PUT and DELETE (see `policy.rs`); `/v1/sim` evaluates a documented subset of
//!   the policy language and answers `unknown` outside it (see `sim.rs`).
//! * **Auth** (A14): any token when none is configured; the principal is the sandbox's
//!   (`admin@apcera.me`), whose default namespace is `/sandbox/admin`.

mod bindings;
mod drains;
mod jobs;
mod manifests;
mod misc;
mod networks;
mod packages;
mod pipelines;
mod policy;
mod rules;
mod services;
mod sim;

use super::{PlatformState, Shared};
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use jobs::Job;

/// Everything the emulated cluster holds; this is what the state file contains.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    pub jobs: IndexMap<String, Job>,
    pub instances: HashMap<String, Vec<jobs::Instance>>,
    pub packages: IndexMap<String, Value>,
    pub services: IndexMap<String, Value>,
    pub providers: IndexMap<String, Value>,
    /// Provider parameters are write-only: kept, never returned.
    pub provider_parameters: HashMap<String, Value>,
    pub networks: IndexMap<String, networks::Network>,
    pub tasks: IndexMap<String, manifests::Task>,
    pub next_subnet: u32,
    /// Policy documents by name, each with its history, and the cluster policy version.
    pub policy: IndexMap<String, policy::PolicyDoc>,
    pub policy_version: u64,
    /// Semantic pipeline rules by uuid.
    pub rules: IndexMap<String, Value>,
    /// Staging pipelines by uuid.
    pub pipelines: IndexMap<String, Value>,
    /// Set once the seed's objects have been loaded, so a deleted one stays deleted.
    pub preloaded: bool,
}

impl Data {
    pub fn job_by_fqn(&self, fqn: &str) -> Option<&Job> {
        self.jobs.values().find(|j| j.fqn == fqn)
    }

    pub fn job_uuid(&self, fqn: &str) -> Option<String> {
        self.job_by_fqn(fqn).map(|j| j.uuid.clone())
    }
}

pub struct Apcera {
    pub data: Mutex<Data>,
    pub shared: Arc<Shared>,
    /// FQN → uuid of jobs, kept alongside `data.jobs` for lookups at 10,000 jobs.
    pub job_index: Mutex<HashMap<String, String>>,
    /// Bumped by every change, so an unfiltered job list can be answered from `job_list`.
    generation: std::sync::atomic::AtomicU64,
    job_list: Mutex<Option<(u64, bytes::Bytes)>>,
}

pub type Api = Arc<Apcera>;

impl Apcera {
    /// Lock the data; call `changed` after a mutation so the state file is rewritten.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }

    pub fn changed(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.shared.changed();
    }

    /// The unfiltered job list, serialised once per change rather than once per request.
    pub fn job_list(&self, make: impl FnOnce() -> Vec<u8>) -> bytes::Bytes {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let mut cached = self.job_list.lock().unwrap();
        if let Some((g, bytes)) = cached.as_ref()
            && *g == generation
        {
            return bytes.clone();
        }
        let bytes = bytes::Bytes::from(make());
        *cached = Some((generation, bytes.clone()));
        bytes
    }

    pub fn index_job(&self, fqn: &str, uuid: Option<&str>) {
        let mut idx = self.job_index.lock().unwrap();
        match uuid {
            Some(u) => idx.insert(fqn.to_string(), u.to_string()),
            None => idx.remove(fqn),
        };
    }

    pub fn job_uuid_by_fqn(&self, fqn: &str) -> Option<String> {
        self.job_index.lock().unwrap().get(fqn).cloned()
    }
}

impl PlatformState for Apcera {
    fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        super::snapshot_of(&self.data)
    }
}

/// This platform's entry in the sandbox registry (`crate::sandbox::EMULATORS`).
pub static EMULATOR: super::Emulator = super::Emulator {
    name: "apcera",
    principal: "admin@apcera.me",
    error: |status, message, retry| error_body(status, message, retry, None),
    token_ok: super::bearer_token_ok,
    start: |state_file, shared| {
        let api = load(state_file, shared)?;
        Ok((router(api.clone()), api))
    },
};

/// Load the state file (or start empty) and put in the seed's preloaded objects.
pub fn load(state_file: Option<&Path>, shared: Arc<Shared>) -> anyhow::Result<Api> {
    let mut data: Data = super::read_state(state_file)?;
    if !data.preloaded {
        packages::preload(&mut data);
        services::preload(&mut data);
        data.preloaded = true;
    }
    let index = data.jobs.values().map(|j| (j.fqn.clone(), j.uuid.clone())).collect();
    Ok(Arc::new(Apcera {
        data: Mutex::new(data),
        shared,
        job_index: Mutex::new(index),
        generation: Default::default(),
        job_list: Mutex::new(None),
    }))
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/v1/jobs/health", get(jobs::health))
        .route("/v1/jobs/routes", get(jobs::routes))
        .route("/v1/jobs/routes/{endpoint}", get(jobs::route))
        .route("/v1/jobs/{uuid}", get(jobs::get_one).put(jobs::update).delete(jobs::remove))
        .route("/v1/jobs/{uuid}/instances", get(jobs::instances))
        .route("/v1/jobs/{uuid}/logs/drains", get(drains::list).post(drains::create))
        .route("/v1/jobs/{uuid}/logs/drains/{drain}", delete(drains::remove))
        .route("/v1/jobs/{uuid}/instances/{instance}", delete(jobs::stop_instance))
        .route("/v1/jobs/{uuid}/networks", post(networks::join))
        .route("/v1/jobs/{uuid}/networks/{network}", delete(networks::leave))
        .route("/v1/packages", get(packages::list).post(packages::create))
        .route("/v1/packages/{uuid}", get(packages::get_one).delete(packages::remove))
        .route("/v1/services", get(services::list_services).post(services::create_service))
        .route("/v1/services/{uuid}", delete(services::delete_service).put(not_allowed).get(services::get_service))
        .route("/v1/providers", get(services::list_providers).post(services::create_provider))
        .route("/v1/providers/{uuid}", delete(services::delete_provider).put(not_allowed))
        .route("/v1/networks", get(networks::list).post(networks::create))
        .route("/v1/networks/{uuid}", get(networks::get_one).delete(networks::remove).put(not_allowed))
        .route("/v1/bindings", post(bindings::create))
        .route("/v1/unbind", post(bindings::unbind))
        .route("/v1/unlink", post(bindings::unlink))
        .route("/v1/tasks/{uuid}", get(manifests::task))
        .route("/v1/manifests", post(manifests::deploy))
        .route("/v1/manifests/expansion", post(manifests::expansion))
        // The auth host's paths (seed L3005-3186, L3705-3896), on the same listener.
        .route("/v1/policy", get(policy::list).put(policy::put).delete(policy::delete))
        .route("/v1/policy/{name}", get(policy::get_one))
        .route("/v1/sim", get(sim::get).put(sim::put))
        .route("/v1/rules", get(rules::list).post(rules::create))
        .route("/v1/rules/{uuid}", get(rules::get_one).delete(rules::remove))
        .route("/v1/stagingpipelines", get(pipelines::list).post(pipelines::create))
        .route(
            "/v1/stagingpipelines/{uuid}",
            get(pipelines::get_one).put(pipelines::update).delete(pipelines::remove),
        )
        .route("/v1/namespace/default", get(misc::default_namespace))
        .route("/v1/info", get(misc::info))
        .route("/v1/version", get(misc::version))
        .route("/v1/apc/version", get(misc::apc_version))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(api)
}

async fn not_allowed() -> Response {
    api_error(StatusCode::METHOD_NOT_ALLOWED, "this resource cannot be updated; delete it and create it again")
}

/// An APIError answer.
pub fn api_error(status: StatusCode, message: &str) -> Response {
    error_body(status, message, false, None)
}

/// An APIError that marks the failure as transient (`retry: true`).
pub fn api_error_retry(status: StatusCode, message: &str) -> Response {
    error_body(status, message, true, None)
}

pub fn error_body(status: StatusCode, message: &str, retry: bool, details: Option<Value>) -> Response {
    let code = status.as_u16();
    let mut body = json!({
        "code": code,
        "message": message,
        "client_side": (400..500).contains(&code),
        "duplicate_key": code == 409 && message.contains("exists"),
        "resource_missing": code == 404,
        "retry": retry,
        "fatal": !retry && code >= 500,
        "request_id": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(d) = details {
        body["error_details"] = d;
    }
    (status, axum::Json(body)).into_response()
}

/// A refused request, answered as an APIError.
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        api_error(self.0, &self.1)
    }
}

/// Parse a JSON request body, or answer 400 saying why.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(bytes)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("the request body is not valid: {e}")))
}

/// The literal JSON `null` the seed answers some deletes with.
pub fn null_body() -> Response {
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], "null").into_response()
}

/// 200 with no body, as the seed shows for job deletes, unbind and unlink.
pub fn empty_body() -> Response {
    (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")]).into_response()
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros trimmed, as Go prints times.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let base = t
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"))
        .unwrap_or_default();
    let nanos = t.nanosecond();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `type::/namespace::name` split in three, when it has that shape with an absolute namespace.
pub fn split_fqn(fqn: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = fqn.split_once("::")?;
    let (ns, local) = rest.split_once("::")?;
    (ns.starts_with('/') && !local.is_empty() && !local.contains("::")).then_some((kind, ns, local))
}

/// Check an FQN of `kind` and the optional `name` that goes with it; returns the local name.
pub fn check_identity(fqn: &str, name: Option<&str>, kind: &str) -> Result<String, Refusal> {
    let bad = |m: String| Err(Refusal(StatusCode::BAD_REQUEST, m));
    let Some((k, _, local)) = split_fqn(fqn) else {
        return bad(format!("invalid FQN {fqn:?}: expected {kind}::/namespace::name"));
    };
    if k != kind {
        return bad(format!("{fqn:?} is not a {kind} FQN"));
    }
    match name {
        Some(n) if !n.is_empty() && n != local => {
            bad(format!("name {n:?} does not match the FQN's local name {local:?}"))
        }
        _ => Ok(local.to_string()),
    }
}

/// Partial FQN matching (`matchPartialFQN`): the same type, and a namespace equal to or below
/// the filter's (`/dev` matches `/dev/x`, not `/devops`); an exact FQN matches itself.
pub fn fqn_matches(fqn: &str, filter: &str, partial: bool) -> bool {
    if fqn == filter {
        return true;
    }
    if !partial {
        return false;
    }
    let (Some((k, ns, _)), Some((fk, fns))) = (split_fqn(fqn), filter.split_once("::")) else { return false };
    let fns = fns.split("::").next().unwrap_or("");
    (fk == "*" || fk == k) && (fns == "/" || ns == fns || ns.starts_with(&format!("{}/", fns.trim_end_matches('/'))))
}

pub use super::query_pairs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_fqn_matching_follows_namespace_segments() {
        assert!(fqn_matches("job::/dev/x::a", "job::/dev", true));
        assert!(!fqn_matches("job::/devops::a", "job::/dev", true));
        assert!(fqn_matches("job::/dev::a", "job::/dev::a", false));
        assert!(!fqn_matches("job::/dev::a", "job::/dev", false));
        assert!(fqn_matches("job::/a::b", "*::/", true));
    }

    #[test]
    fn times_look_like_go_rfc3339_nano() {
        let t = now();
        assert!(t.ends_with('Z') && t.contains('T'), "{t}");
        assert!(!t.contains("0Z") || t.ends_with(":00Z") || !t.contains('.'), "{t}");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs(Some("FQN=job%3A%3A%2Fdev%3A%3Ax&label=a=b&label=c")),
            vec![
                ("FQN".to_string(), "job::/dev::x".to_string()),
                ("label".to_string(), "a=b".to_string()),
                ("label".to_string(), "c".to_string()),
            ]
        );
    }
}
