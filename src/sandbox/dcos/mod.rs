//! A DC/OS cluster behind its admin router: Marathon (seed 004) at `/service/marathon`, and
//! the schedulers Marathon runs at `/service/<name>`: DC/OS SDK services (seed 000) and the
//! pre-SDK DC/OS Apache Cassandra (seed 001).
//!
//! Entry points: [`load`] (state file → [`Api`]), [`router`] (the admin router), [`error`] (its
//! error shape); the state file is `{"marathon": <Marathon's state>, "dcos": <the schedulers>}`.
//! Files: `admin.rs` (the mount and dispatch), `service.rs` (schedulers found from Marathon's
//! apps, pods, configurations), `spec.rs` (labels and env → service specification),
//! `plan.rs` (plans, statuses, strategies, commands), `sdk.rs` (plans, configurations, state),
//! `pods.rs` (pods, endpoints), `cassandra.rs` (legacy Cassandra).
//!
//! Where the seeds are silent, these are the choices (digest `research/dcos.md` marks what
//! upstream dcos-commons does; **[upstream]** below = read there, **[choice]** = ours):
//! - Auth: the shared token check of every platform request, so Marathon behind the admin
//!   router too; only `Authorization: token=<T>` (seeds 000/001), a `Bearer <T>` is refused;
//!   401 carries `WWW-Authenticate: acsjwt` [choice].
//! - A scheduler exists while a Marathon app carries its labels (`spec::classify`), serves once
//!   a task of the app's current configuration runs (503 before), restarts — rebuilding its
//!   deploy plan — when that configuration changes, and goes with the app [choice: the
//!   scheduler is the app's task, as on DC/OS].
//! - Pod types from env: `<X>_COUNT` → pod type `x` (lower case, `_` → `-`), `NODES` → `node`;
//!   every other variable belongs to every pod type unless it starts with another type's
//!   `<X>_` prefix; `<X>_PORT` is the endpoint's port (8080) [choice, after the digest's
//!   section 4]. One task `server` per pod; steps are `<pod>:[server]` [upstream naming].
//! - A configuration change that validates becomes a new target id (UUID); pods whose task
//!   specification (count aside) is unchanged are relabelled with it and keep COMPLETE steps;
//!   unused configurations are dropped [upstream `DefaultConfigurationUpdater`]. Shrinking
//!   or removing a pod type is refused: the target stays, the errors go on the deploy plan,
//!   `GET /v1/plans/deploy` answers 417 [upstream `PodSpecsCannotShrink`].
//! - Plans: `deploy` serial phases (one per pod type) of serial steps; `recovery` one
//!   parallel phase per replaced/restarted pod. A step is PREPARED for the first half of
//!   `--step-ms`, STARTING for the second, then COMPLETE; aggregation follows upstream
//!   `PlanUtils.getAggregateStatus` (WAITING when interrupted). GET plan: 200 COMPLETE, 202
//!   otherwise, 417 with errors, the plan as the body in all three [upstream].
//! - Commands are POST (PUT accepted: seed 000 L49). interrupt/continue with optional
//!   `?phase=`: 208 text `Command has already been reported or completed` when there is nothing
//!   to do; forceComplete/restart/start/stop as upstream `PlansResource` [upstream].
//! - Plans move with the clock, not with requests: after a restart (`--state`) a step that
//!   was active completes at its due time and the plan resumes where it was.
//! - Fault `fail_step` (`PUT /_sandbox/faults` `{"fail_step": {"service", "step", "message"}}`):
//!   that step goes ERROR with the message whenever it starts, in any plan of that service;
//!   the plan's `errors` carry the message, so GET plan answers 417. `step_ms` there too.
//! - Legacy Cassandra (seed 001): `GET /v1/plan` shows the dcos-commons 0.7 shape (phases of
//!   `blocks`, a Reconciliation phase then Deploy) and answers 200 COMPLETE, else 503 with the
//!   plan as the body [upstream dcos-cassandra-service; digest 3.3 says to read a 503 with a
//!   plan body as 202]. `cmd=interrupt` (POST) / `cmd=proceed` (PUT) always 200. Cleanup,
//!   repair, backup, restore: `PUT /v1/<op>/start` with seed 001's bodies, one step per node,
//!   `/v1/<op>/status` the op's plan in the same shape; `/stop` [choice for the bodies:
//!   backup/restore answer `{"status":"started","message":""}`, as seed 001 L152].
//!   `/cassandra/v1/connection` without `/service` is served too (seed 001 L40).

mod admin;
pub mod cassandra;
pub mod plan;
mod pods;
mod scheduler;
mod sdk;
pub mod service;
pub mod spec;

use super::marathon;
use super::{PlatformState, Shared};
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plan::Clock;
use serde::Deserialize;
use serde_json::{Value, json};
use service::Data;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// How long one step takes when `--step-ms` does not say.
pub const DEFAULT_STEP_MS: u64 = 5;

pub use super::FailStep;

pub struct Dcos {
    data: Mutex<Data>,
    pub marathon: marathon::Api,
    marathon_router: Router,
    pub shared: Arc<Shared>,
    /// Woken when something changes, so the background task re-plans its sleep.
    wake: Arc<Notify>,
}

pub type Api = Arc<Dcos>;

/// The time and the knobs a request or a tick runs with.
pub struct Ctx {
    pub clock: Clock,
    pub fail: Option<FailStep>,
}

impl Dcos {
    pub fn ctx(&self) -> Ctx {
        let faults = self.shared.faults.lock().unwrap();
        Ctx {
            clock: Clock { now: marathon::unix_ms(), step_ms: faults.step_ms.unwrap_or(DEFAULT_STEP_MS) },
            fail: faults.fail_step.clone(),
        }
    }

    /// Lock the data, first moving every plan on to where the clock says it is.
    pub fn lock(&self) -> MutexGuard<'_, Data> {
        let mut data = self.data.lock().unwrap();
        if advance(&mut data, &self.ctx()) {
            self.shared.changed();
        }
        data
    }

    /// The state changed: write it, and let the background task look again.
    pub fn changed(&self) {
        self.shared.changed();
        self.wake.notify_one();
    }

    /// Bring the schedulers in line with Marathon's apps (read first, so the two locks are
    /// never held together).
    pub fn sync(&self) {
        let apps = self.marathon.apps_labelled(|labels| spec::classify(labels).is_some());
        let mut data = self.lock();
        if service::sync(&mut data, &apps) {
            advance(&mut data, &self.ctx());
            drop(data);
            self.changed();
        }
    }
}

/// Move every serving scheduler's plans on; record finished backups.
fn advance(data: &mut Data, ctx: &Ctx) -> bool {
    let mut changed = false;
    let mut backups = Vec::new();
    for s in data.services.values_mut() {
        let (c, done) = s.advance(&ctx.clock, ctx.fail.as_ref());
        changed |= c;
        backups.extend(done);
    }
    data.backups.extend(backups);
    changed
}

impl PlatformState for Dcos {
    /// `{"marathon": <Marathon's state>, "dcos": <the schedulers>}`.
    fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        let marathon = self.marathon.snapshot()?;
        let dcos = super::snapshot_of(&self.data)?;
        let mut out = Vec::with_capacity(marathon.len() + dcos.len() + 24);
        out.extend_from_slice(b"{\"marathon\":");
        out.extend_from_slice(&marathon);
        out.extend_from_slice(b",\"dcos\":");
        out.extend_from_slice(&dcos);
        out.push(b'}');
        Ok(out)
    }
}

/// This platform's entry in the sandbox registry (`crate::sandbox::EMULATORS`).
pub static EMULATOR: super::Emulator = super::Emulator {
    name: "dcos",
    principal: "admin@apcera.me",
    error: |status, message, _retry| error(status, message),
    token_ok,
    start: |state_file, shared| {
        let api = load(state_file, shared)?;
        Ok((router(api.clone()), api))
    },
};

/// `Authorization: token=<token>`, the admin router's form (seeds 000/001); `Bearer` is refused.
pub fn token_ok(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("token="))
        .is_some_and(|t| t.trim() == token)
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct StateFile {
    marathon: marathon::Data,
    dcos: Data,
}

/// Load the state file (or start empty), start Marathon, and start the task that moves the
/// schedulers' plans on.
pub fn load(state_file: Option<&Path>, shared: Arc<Shared>) -> anyhow::Result<Api> {
    let file: StateFile = super::read_state(state_file)?;
    let marathon = marathon::start(file.marathon, shared.clone());
    let api = Arc::new(Dcos {
        data: Mutex::new(file.dcos),
        marathon_router: marathon::router(marathon.clone()),
        marathon,
        shared,
        wake: Arc::new(Notify::new()),
    });
    let events = api.marathon.events.subscribe();
    tokio::spawn(background(Arc::downgrade(&api), api.wake.clone(), events));
    api.sync();
    Ok(api)
}

/// Moves plans on when nobody asks, and notices Marathon's changes (a scheduler's task
/// running): sleeps until the next step is due, a change, or Marathon's next event, at most a
/// second. Ends with the sandbox.
async fn background<T: Clone>(api: Weak<Dcos>, wake: Arc<Notify>, mut events: broadcast::Receiver<T>) {
    loop {
        let wait = {
            let Some(api) = api.upgrade() else { return };
            api.sync();
            let ctx = api.ctx();
            let data = api.lock();
            data.services
                .values()
                .filter_map(|s| s.next_due(ctx.clock.step_ms))
                .min()
                .map(|due| Duration::from_millis(due.saturating_sub(ctx.clock.now)))
        };
        let wait = wait.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            event = events.recv() => {
                if let Err(broadcast::error::RecvError::Closed) = event {
                    return;
                }
            }
        }
    }
}

/// The admin router: Marathon, the schedulers, and nothing else.
pub fn router(api: Api) -> Router {
    Router::new().fallback(admin::dispatch).with_state(api)
}

/// An error of the admin router (the token check, injected faults, unknown services): JSON
/// `{"message"}`, as Marathon's, since Marathon is behind it too.
pub fn error(status: StatusCode, message: &str) -> Response {
    let mut r = marathon::error(status, message);
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("acsjwt"));
    }
    r
}

/// A JSON answer of a scheduler: pretty-printed with two spaces, as the SDK's are.
pub fn json_reply(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// A text answer of a scheduler (its errors, and 208).
pub fn text_reply(status: StatusCode, body: &str) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], body.to_string()).into_response()
}

/// `{"message": "Received cmd: <what>"}`, the answer to a plan command.
pub fn command_result(what: &str) -> Response {
    json_reply(StatusCode::OK, &json!({ "message": format!("Received cmd: {what}") }))
}
