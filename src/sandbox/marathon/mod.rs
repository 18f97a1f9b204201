//! The Marathon v2 REST API (seed 004), emulated.
//!
//! The seed leaves gaps: app create/list/show and the deployments resource are only include
//! directives (L56-60, L1307-1309), and several behaviours are not stated. Where the seed is
//! silent this sandbox decides as follows (`research/marathon.md` §8 numbers in brackets):
//!
//! * **Shapes** [1]: `GET /v2/apps` is `{"apps": […]}`, `GET /v2/apps/{id}` is `{"app": …}`,
//!   `GET /v2/deployments` a bare array. `GET /v2/apps` always embeds counts and deployments;
//!   `GET /v2/apps/{id}` always embeds counts, deployments and tasks (Marathon 1.x does, "for
//!   compatibility"); other embeds (`tasks`, `readiness`, `taskStats`, `lastTaskFailure`,
//!   `failures`) are asked for with either the `app.` or the `apps.` prefix. Lists of apps,
//!   groups and tasks are in id order; deployments in the order they began. App, task, group,
//!   deployment and queue objects carry only keys marathon-python's models accept, since it
//!   builds them with `cls(**json)` and fails on any other key. Server-filled app fields are the
//!   defaults of the seed's examples (L613-641, L1530-1559): cpus 1.0, mem 128.0, disk 0.0,
//!   instances 1, one service port, requirePorts false, executor "", env/labels {}, the lists
//!   [], args/user/container/cmd null, backoffSeconds 1, backoffFactor 1.15,
//!   maxLaunchDelaySeconds 3600, upgradeStrategy {minimumHealthCapacity 1.0,
//!   maximumOverCapacity 1.0}; a health check gets protocol HTTP, path "/" (HTTP-like checks),
//!   portIndex 0, gracePeriodSeconds 15, intervalSeconds 10, timeoutSeconds 20,
//!   maxConsecutiveFailures 3 and `command: null` unless it is a COMMAND check; a container gets
//!   `type: DOCKER` and `volumes: []` when it lacks them.
//! * **Unknown app fields** are refused (422, one detail per field) rather than dropped, so a
//!   misspelt field cannot pass unnoticed; the read-only fields a GET answers with (`tasks`,
//!   `deployments`, `tasksRunning`, `versionInfo`, …) are accepted and ignored, so an app read
//!   with GET can be sent back with PUT. Later-version fields marathon-python knows
//!   (`acceptedResourceRoles`, `gpus`, `networks`, `secrets`, …) are kept as given.
//! * **Numbers** [3]: numeric strings (`"cpus": "0.3"`, `"instances": "2"`, L189-191) are
//!   accepted; answers always carry numbers (resources as floats, counts as integers).
//! * **Ports**: `ports` and `portDefinitions` are kept in step and both returned; a port 0 gets
//!   a service port from 10000 up, unique among the apps; an app that already had a port at
//!   that index keeps it (so sending an app back unchanged changes nothing). When a body has
//!   both and they disagree, the one that differs from the app as it is wins (the one the
//!   client edited), `portDefinitions` if both do; ports given as `ports` keep the protocol,
//!   name and labels of the definition at the same index. An app whose container maps its
//!   ports (`portMappings`) gets no port definitions by default; the sandbox assigns no service
//!   ports to port mappings (they are kept as given). Tasks get host ports from 31000 up.
//! * **Ids** [14]: app and group ids are paths; one trailing `/` is ignored; relative ids are
//!   resolved against the enclosing group (`.` and `..` allowed, not above `/`); each segment
//!   must match Marathon's id pattern, or the answer is 422 `{"message": "Object is not
//!   valid", "details": [{"path": "/id", "errors": […]}]}`. An app inside a group body must be
//!   a direct child of that group. An id cannot be both an app and a group (409).
//! * **Errors** [13]: always JSON with `message` (`details` for 422): 400 for malformed JSON
//!   (the body is parsed as JSON whatever its Content-Type), 404 `App '/x' does not exist`,
//!   `Group '/x' does not exist`, `DeploymentPlan x does not exist`, 409 for a duplicate
//!   create (`An app with id [/x] already exists.`, with the request's `id`) and the seed's
//!   lock body (L273-280, message verbatim, `deployments` naming the blockers), 405 for a
//!   method a path does not have. Booleans in queries [12] are `true/false/1/0` in any case
//!   (`force=False` from python-requests); anything else is 400.
//! * **App PUT** [19, 20]: creates an unknown app (201 + `Location`); `partialUpdate` defaults
//!   to true (absent fields keep their values, `null` resets one to its default), `false`
//!   replaces the definition; the path's id wins over the body's; `version` in the body is a
//!   rollback and the rest is ignored (L214), 404 for an unknown version. Every app PUT makes
//!   a new version, even when nothing changed (the deployment then has no steps).
//!   `PUT /v2/apps` takes an array and makes one deployment of all of it.
//! * **Versions** [26]: ISO-8601 UTC with milliseconds and `Z`, strictly increasing across the
//!   sandbox (a write in the same millisecond as the previous one gets the next one). An app
//!   keeps its last 50 versions, newest first in `GET …/versions`; deleting an app hides its
//!   versions (a re-created app starts a new list). `versionInfo.lastScalingAt` changes with
//!   scale, config changes and restarts, `lastConfigChangeAt` with config changes and restarts.
//! * **Groups** [2, 7, 8, 9, 21, 24, 25]: `GET /v2/groups` is the root group; embeds
//!   `group.groups` and `group.apps` (both when none is given; a key not embedded is left out),
//!   and `group.apps.counts|deployments|tasks` add those to the apps. Mixed apps and groups are
//!   allowed. POST answers `{"version", "deploymentId"}` (201 + `Location`, 409 if the group
//!   exists); DELETE answers `{"version"}` alone, as the seed does (L1106-1110), its end
//!   signalled by `group_change_success` (or `group_change_failed`) for that version. `PUT /v2/groups/{id}` creates or updates, group by group down the
//!   body: where a group's body lists `apps` (or `groups`, or `dependencies`) the group gets
//!   exactly those (apps and subgroups it does not list are removed); where it does not, the
//!   group keeps its own — Marathon's group update does, and the seed's scale body (L953) is
//!   only `scaleBy`. An app whose definition is unchanged is neither restarted nor given a new
//!   version; the body's `id` is ignored (the path wins). A body with `version` and none of `apps`, `groups`, `dependencies`,
//!   `scaleBy` is a rollback to that version of the group (404 if unknown);
//!   `PUT /v2/groups/{id}/versions/{v}` (marathon-python's `rollback_group`) is the same.
//!   `scaleBy` (body or query) multiplies every app below the group, rounding up. Group
//!   `dependencies` are resolved against the declaring group (`../backend` on
//!   `/product/service` is `/product/backend`), app `dependencies` against the app's group;
//!   unknown targets are accepted and only order the apps that exist; a cycle is 422.
//!   `DELETE /v2/groups/{id}` removes the group, its subgroups and their apps; deleting the
//!   root removes everything under it. A group's version moves with every change below it.
//!   Groups keep their last 50 versions for rollback.
//! * **Plans** [4, 5, 6]: every change is planned by one function, for dry runs and real
//!   deployments alike: step 1 stops removed apps (`StopApplication`), the next starts new
//!   apps (`StartApplication`, all in one step), then one step per app in dependency order
//!   (dependencies first, else the order of the request): `ScaleApplication` for a new app
//!   with instances or a scale-only change, `RestartApplication` followed by a step
//!   `KillAllOldTasksOf` for a changed or restarted app. Empty steps are left out. With the
//!   `grouped_steps` knob (`--grouped-steps`) the apps at one dependency depth (among those
//!   the deployment changes) share one step, as Marathon 1.x's `DeploymentPlan` groups them by
//!   longest dependency path, with one `KillAllOldTasksOf` step after each step that restarts
//!   apps. A dry run
//!   answers `{"steps": [{"actions": [{"app", "type"}]}]}` as the seed (L1048-1079) but with
//!   **absolute** app ids (the seed's `app1` is ambiguous; deployments use absolute ids);
//!   deployments list actions as `{"action", "app"}`.
//! * **Deployments** [10, 11]: a step that launches tasks (a scale up, a restart with
//!   instances) or stops an app that has tasks (killed as the step ends) takes the sandbox's
//!   `rollout_ms` (read while it runs, so a change through `/_sandbox/faults` applies to the
//!   step in progress); other steps and deployments without steps complete at once. Steps advance on each request and in a background task that
//!   sleeps until the next step is due, so a finished deployment disappears within a
//!   millisecond or so. While a deployment runs, a write that would deploy one of its apps
//!   (app PUT/DELETE/restart, group PUT/DELETE, task kills with `scale`) is 409 with the lock
//!   body unless `force=true`, which cancels the running deployment without rollback: the
//!   sandbox then brings its apps' tasks to their definitions at once (what Marathon's scale
//!   check would do later) and starts the new deployment. `DELETE /v2/deployments/{id}` cancels
//!   it and starts a deployment back to the affected apps' definitions before it (apps it
//!   created are removed; groups it created stay), forced, so another deployment holding
//!   those apps is cancelled too; with `force=true` it is 202 with no body and no rollback.
//! * **Tasks** [16, 17, 18]: `<app id without the leading '/', '/' → '_'>.<uuid>` on host
//!   `127.0.0.1`, staged (`startedAt: null`, state `TASK_STAGING`) until their step is done,
//!   then running. Killing tasks without `scale` starts replacements, staged for `rollout_ms`;
//!   with `scale=true` it lowers `instances` and answers `{"deploymentId", "version"}`.
//!   `POST /v2/tasks/delete` ignores ids it does not know and answers 200 with no body. Tasks of
//!   an app with health checks are healthy once running. The text/plain forms list running
//!   tasks as `<app id with '_'>\t<service port>\t<host>:<port>…` per service port. The queue
//!   lists apps with staged tasks (`count` = staged tasks, `delay.overdue` a boolean [15]).
//! * **Events**: `GET /v2/events` streams `data: <json>` lines: `event_stream_attached` first,
//!   then `api_post_event` for app writes, and per deployment `deployment_info` as each step
//!   starts, `deployment_step_success` as it ends, `deployment_success` (or
//!   `deployment_failed` when cancelled), then `group_change_success` (or `group_change_failed`
//!   with a `reason`) with the changed group (an app's parent for app writes) and the version; `app_terminated_event` when an app is
//!   stopped, `status_update_event` as tasks run or are killed, `subscribe_event` and
//!   `unsubscribe_event`. Only event types marathon-python knows are sent. An event's `plan`
//!   carries the deployment's steps and, in `original` and `target`, the affected apps before
//!   and after (not the whole tree). `event_type` filters; a comment line keeps the stream
//!   alive every 15 s. Event subscriptions [22] are stored and listed; nothing is posted to
//!   them.
//! * **Misc** [23]: the sandbox is always the leader (`host:port` of its URL) and stays so
//!   after `DELETE /v2/leader`. `/v2/info` has the seed's shape with the key
//!   `zk_max_versions` (the seed's `zk_max_version` would make marathon-python fail) and
//!   `elected: true`. `/ping` is `pong\n` (`Content-Length: 5`, L1746), or the JSON string
//!   `"pong"` (`application/json`) to a client whose `Accept` asks for JSON and not text, as
//!   Marathon 1.x answers it (marathon-python asks so). Every route is also served under
//!   `/service/marathon/` (DC/OS base URLs).
//! * **State**: apps with their versions, groups with theirs, deployments in flight (with the
//!   time their step started) and tasks are in the state file; a deployment whose time passed
//!   while the sandbox was down completes when it starts again.

mod apps;
mod deployments;
mod events;
mod groups;
mod misc;
mod tasks;

use super::{PlatformState, Shared};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// How many versions an app or a group keeps.
const HISTORY: usize = 50;

/// Everything the emulated Marathon holds; this is what the state file contains.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    /// Absolute app id → app.
    pub apps: BTreeMap<String, apps::App>,
    /// Absolute app id → its versions, oldest first (kept after a delete, for group rollback).
    pub app_history: HashMap<String, Vec<apps::AppVersion>>,
    /// Absolute group id → group; `/` is always there.
    pub groups: BTreeMap<String, groups::Group>,
    pub group_history: HashMap<String, Vec<groups::GroupRecord>>,
    /// Absolute app id → its tasks.
    pub tasks: HashMap<String, Vec<tasks::Task>>,
    pub deployments: indexmap::IndexMap<String, deployments::Deployment>,
    pub subscriptions: Vec<String>,
    /// The last version handed out, in Unix milliseconds.
    pub last_version_ms: u64,
    pub next_service_port: u32,
    pub next_host_port: u32,
    #[serde(skip)]
    pub used_service_ports: HashSet<u32>,
    /// Plan deployments as Marathon 1.x does (the `grouped_steps` knob, as of this request).
    #[serde(skip)]
    pub grouped_steps: bool,
}

impl Data {
    /// A new version, later than every one before it.
    pub fn next_version(&mut self, now: u64) -> String {
        let ms = now.max(self.last_version_ms + 1);
        self.last_version_ms = ms;
        iso(ms)
    }
}

/// What a handler needs besides the data: the clock, the rollout time, the event bus.
pub struct Ctx<'a> {
    pub now: u64,
    pub rollout: u64,
    pub events: &'a broadcast::Sender<Arc<events::Event>>,
}

pub struct Marathon {
    data: Mutex<Data>,
    pub shared: Arc<Shared>,
    pub events: broadcast::Sender<Arc<events::Event>>,
    /// Woken when deployments change, so the background task re-plans its sleep.
    wake: Arc<Notify>,
}

pub type Api = Arc<Marathon>;

impl Marathon {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx { now: unix_ms(), rollout: self.shared.faults.lock().unwrap().rollout_ms, events: &self.events }
    }

    /// Lock the data, first moving running deployments on to where the clock says they are.
    /// Call `changed` after a mutation so the state file is rewritten.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        let mut data = self.data.lock().unwrap();
        data.grouped_steps = self.shared.faults.lock().unwrap().grouped_steps;
        if !data.deployments.is_empty() && deployments::advance(&mut data, &self.ctx()) {
            self.shared.changed();
        }
        data
    }

    pub fn changed(&self) {
        self.shared.changed();
        self.wake.notify_one();
    }
}

impl PlatformState for Marathon {
    fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        super::snapshot_of(&self.data)
    }
}

/// This platform's entry in the sandbox registry (`crate::sandbox::EMULATORS`).
pub static EMULATOR: super::Emulator = super::Emulator {
    name: "marathon",
    principal: "admin@apcera.me",
    error: |status, message, _retry| error(status, message),
    start: |state_file, shared| {
        let api = load(state_file, shared)?;
        Ok((router(api.clone()), api))
    },
};

/// Load the state file (or start empty) and start the task that moves deployments on.
pub fn load(state_file: Option<&Path>, shared: Arc<Shared>) -> anyhow::Result<Api> {
    let mut data: Data = super::read_state(state_file)?;
    if !data.groups.contains_key("/") {
        let v = data.next_version(unix_ms());
        data.groups.insert("/".into(), groups::Group { version: v, ..Default::default() });
        groups::record(&mut data, "/");
    }
    data.used_service_ports = data.apps.values().flat_map(|a| apps::service_ports(&a.def)).collect();
    let (events, _) = broadcast::channel(4096);
    let api = Arc::new(Marathon { data: Mutex::new(data), shared, events, wake: Arc::new(Notify::new()) });
    tokio::spawn(background(Arc::downgrade(&api), api.wake.clone(), api.shared.clone()));
    Ok(api)
}

/// Moves deployments on when nobody asks: sleeps until the step in progress is due, or until
/// something changes (a new deployment, new fault knobs). Ends with the sandbox.
async fn background(api: Weak<Marathon>, wake: Arc<Notify>, shared: Arc<Shared>) {
    loop {
        let wait = {
            let Some(api) = api.upgrade() else { return };
            let data = api.lock();
            let ctx = api.ctx();
            deployments::next_due(&data, ctx.rollout).map(|due| Duration::from_millis(due.saturating_sub(ctx.now)))
        };
        let wait = wait.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = shared.faults_changed.notified() => {}
        }
    }
}

pub fn router(api: Api) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}

/// One request, as the handlers see it: the path without the DC/OS prefix and the trailing
/// slash, percent-decoded.
pub struct Req {
    pub method: Method,
    pub path: String,
    /// `""` or `"/service/marathon"`, for `Location` headers.
    pub prefix: &'static str,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean query parameter: absent is false; `true/false/1/0` in any case.
    pub fn flag(&self, key: &str) -> Result<bool, Fail> {
        match self.param(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(Fail::status(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter {key}={v:?} is not a boolean (true or false)"),
                )),
            },
        }
    }

    /// The body as JSON, whatever the Content-Type says; an empty body is `null`.
    pub fn json(&self) -> Result<Value, Fail> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| Fail::Json(e.to_string()))
    }

    /// The body as a JSON object (an empty body is an empty object).
    pub fn object(&self) -> Result<Map<String, Value>, Fail> {
        match self.json()? {
            Value::Object(m) => Ok(m),
            Value::Null => Ok(Map::new()),
            _ => Err(Fail::invalid("/", "error.expected.jsobject")),
        }
    }

    /// Whether the client asked for text rather than JSON.
    pub fn wants_text(&self) -> bool {
        let accept = self.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        accept.contains("text/plain") && !accept.contains("application/json")
    }
}

/// A refused request.
#[derive(Debug)]
pub enum Fail {
    Status(StatusCode, String),
    /// 422 with one detail per `(path, error)`.
    Invalid(Vec<(String, String)>),
    /// 400: the body is not JSON.
    Json(String),
    /// 409: the apps are locked by these deployments.
    Locked(Vec<String>),
    /// Any other body.
    Body(StatusCode, Value),
}

impl Fail {
    pub fn status(code: StatusCode, message: impl Into<String>) -> Fail {
        Fail::Status(code, message.into())
    }

    pub fn invalid(path: &str, error: impl Into<String>) -> Fail {
        Fail::Invalid(vec![(path.to_string(), error.into())])
    }

    pub fn no_app(id: &str) -> Fail {
        Fail::status(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
    }

    pub fn no_group(id: &str) -> Fail {
        Fail::status(StatusCode::NOT_FOUND, format!("Group '{id}' does not exist"))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Status(code, message) => error(code, &message),
            Fail::Invalid(details) => {
                let mut by_path: Vec<(String, Vec<String>)> = Vec::new();
                for (path, e) in details {
                    match by_path.iter_mut().find(|(p, _)| *p == path) {
                        Some((_, errors)) => errors.push(e),
                        None => by_path.push((path, vec![e])),
                    }
                }
                let details: Vec<Value> = by_path.into_iter().map(|(p, e)| json!({"path": p, "errors": e})).collect();
                reply(StatusCode::UNPROCESSABLE_ENTITY, &json!({"message": "Object is not valid", "details": details}))
            }
            Fail::Json(e) => reply(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e]}]}),
            ),
            Fail::Locked(ids) => {
                let deployments: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
                reply(
                    StatusCode::CONFLICT,
                    &json!({
                        "deployments": deployments,
                        "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'."
                    }),
                )
            }
            Fail::Body(code, body) => reply(code, &body),
        }
    }
}

/// A Marathon error answer: `{"message": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    reply(status, &json!({ "message": message }))
}

/// A JSON answer.
pub fn reply(status: StatusCode, body: &Value) -> Response {
    raw_json(status, serde_json::to_vec(body).unwrap_or_default())
}

pub fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// The answer of a write that started a deployment: `{"deploymentId", "version"}`, with the
/// deployment's id in a header too.
pub fn deployed(status: StatusCode, deployment: &str, version: &str, location: Option<String>) -> Response {
    let mut r = reply(status, &json!({"deploymentId": deployment, "version": version}));
    if let Ok(v) = HeaderValue::from_str(deployment) {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

async fn dispatch(State(api): State<Api>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let raw = uri.path();
    let (prefix, rest) = match raw.strip_prefix("/service/marathon") {
        Some(r) if r.is_empty() || r.starts_with('/') => ("/service/marathon", r),
        _ => ("", raw),
    };
    let mut path = super::percent_decode(rest, false);
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    if path.is_empty() {
        path.push('/');
    }
    let req = Req { method, path, prefix, query: super::query_pairs(uri.query()), headers, body };
    if req.path == "/v2/events" && req.method == Method::GET {
        return events::stream(&api, &req);
    }
    match route(&api, &req) {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

fn route(api: &Api, req: &Req) -> Result<Response, Fail> {
    let m = &req.method;
    let p = req.path.as_str();
    if let Some(rest) = p.strip_prefix("/v2/apps/") {
        return apps::sub(api, req, rest);
    }
    if let Some(rest) = p.strip_prefix("/v2/groups/") {
        return groups::sub(api, req, rest);
    }
    if let Some(rest) = p.strip_prefix("/v2/deployments/") {
        return match *m {
            Method::DELETE => deployments::delete(api, req, rest),
            _ => Err(not_allowed()),
        };
    }
    if let Some(rest) = p.strip_prefix("/v2/queue/") {
        return match (m, rest.strip_suffix("/delay")) {
            (&Method::DELETE, Some(id)) => misc::reset_delay(api, id),
            (_, Some(_)) => Err(not_allowed()),
            _ => Err(no_route()),
        };
    }
    match (p, m) {
        ("/v2/apps", &Method::GET) => apps::list(api, req),
        ("/v2/apps", &Method::POST) => apps::create(api, req),
        ("/v2/apps", &Method::PUT) => apps::put_many(api, req),
        ("/v2/groups", &Method::GET) => groups::get(api, req, "/"),
        ("/v2/groups", &Method::POST) => groups::create(api, req),
        ("/v2/groups", &Method::PUT) => groups::update(api, req, "/"),
        ("/v2/groups", &Method::DELETE) => groups::delete(api, req, "/"),
        ("/v2/tasks", &Method::GET) => tasks::list_all(api, req),
        ("/v2/tasks/delete", &Method::POST) => tasks::delete_many(api, req),
        ("/v2/deployments", &Method::GET) => deployments::list(api),
        ("/v2/eventSubscriptions", &Method::GET) => events::subscriptions(api),
        ("/v2/eventSubscriptions", &Method::POST) => events::subscribe(api, req),
        ("/v2/eventSubscriptions", &Method::DELETE) => events::unsubscribe(api, req),
        ("/v2/queue", &Method::GET) => misc::queue(api),
        ("/v2/info", &Method::GET) => misc::info(api),
        ("/v2/leader", &Method::GET) => misc::leader(api),
        ("/v2/leader", &Method::DELETE) => misc::abdicate(),
        ("/ping", &Method::GET) => misc::ping(req),
        ("/metrics", &Method::GET) => misc::metrics(api),
        ("/help", &Method::GET) => misc::help(),
        ("/logging", &Method::GET) => misc::logging(),
        (
            "/v2/apps"
            | "/v2/groups"
            | "/v2/tasks"
            | "/v2/tasks/delete"
            | "/v2/deployments"
            | "/v2/eventSubscriptions"
            | "/v2/queue"
            | "/v2/info"
            | "/v2/leader"
            | "/ping"
            | "/metrics"
            | "/help"
            | "/logging",
            _,
        ) => Err(not_allowed()),
        _ => Err(no_route()),
    }
}

pub fn not_allowed() -> Fail {
    Fail::status(StatusCode::METHOD_NOT_ALLOWED, "HTTP method not allowed")
}

pub fn no_route() -> Fail {
    Fail::status(StatusCode::NOT_FOUND, "no such resource")
}

/// The message of an id segment that does not match Marathon's pattern.
pub const ID_PATTERN: &str = "must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$'";

/// One id segment: dot-separated labels of lower-case letters, digits and inner dashes.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// An id resolved against the absolute group `base`: `.` and `..` are followed, empty
/// segments skipped; the result is absolute without a trailing slash (`/` for the root).
pub fn resolve(base: &str, id: &str) -> Result<String, String> {
    let mut segments: Vec<&str> = Vec::new();
    if !id.starts_with('/') {
        segments.extend(base.split('/').filter(|s| !s.is_empty()));
    }
    for s in id.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(format!("{id:?} goes above the root group"));
                }
            }
            s if valid_segment(s) => segments.push(s),
            _ => return Err(ID_PATTERN.to_string()),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The group an absolute id is in (`/` for a top-level id and for `/` itself).
pub fn parent(id: &str) -> &str {
    match id.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &id[..i],
    }
}

/// Whether `id` is `group` or below it.
pub fn is_under(id: &str, group: &str) -> bool {
    group == "/" || id == group || (id.starts_with(group) && id.as_bytes().get(group.len()) == Some(&b'/'))
}

/// Every group from `id`'s parent up to the root.
pub fn ancestors(id: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(id);
    std::iter::from_fn(move || {
        let c = cur?;
        if c == "/" {
            cur = None;
            return None;
        }
        let p = parent(c);
        cur = Some(p);
        Some(p)
    })
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2014-03-01T23:17:50.295Z` (computed directly: task lists format thousands of these).
pub fn iso(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The sandbox's `host:port`, which it reports as the leader.
pub fn host_port(api: &Marathon) -> String {
    api.shared.base_url.trim_start_matches("http://").trim_start_matches("https://").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_against_their_group() {
        assert_eq!(resolve("/product/service", "../backend").unwrap(), "/product/backend");
        assert_eq!(resolve("/", "my-app").unwrap(), "/my-app");
        assert_eq!(resolve("/a", "/x/y/").unwrap(), "/x/y");
        assert_eq!(resolve("/a/b", "./c").unwrap(), "/a/b/c");
        assert!(resolve("/", "../x").is_err());
        assert!(resolve("/", "My-App").is_err());
        assert!(resolve("/", "a_b").is_err());
        assert!(resolve("/", "-a").is_err());
        assert!(valid_segment("a.b-c.d1"));
        assert!(!valid_segment("a..b"));
    }

    #[test]
    fn paths_and_parents() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/x", "/"));
    }

    /// What `target::connect` does for the embedded sandbox: start it in-process by platform
    /// with its state in `sandbox-marathon.json`, and find the state again next time.
    #[tokio::test]
    async fn the_embedded_sandbox_keeps_its_state_in_its_file() {
        use crate::sandbox::{Platform, Sandbox, SandboxOptions};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sandbox-marathon.json");
        let platform: Platform = "marathon".parse().unwrap();
        let mut opts = SandboxOptions::new(platform);
        opts.state_file = Some(file.clone());
        let sb = Sandbox::start(opts.clone()).await.unwrap();
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let created =
            http.post(format!("{}/v2/apps", sb.url())).json(&json!({"id": "e", "cmd": "x"})).send().await.unwrap();
        assert_eq!(created.status(), 201);
        sb.shutdown().await.unwrap();
        assert!(std::fs::read_to_string(&file).unwrap().contains("\"/e\""));
        let sb = Sandbox::start(opts).await.unwrap();
        let again = http.get(format!("{}/v2/apps/e", sb.url())).send().await.unwrap();
        assert_eq!(again.status(), 200);
        sb.shutdown().await.unwrap();
    }

    #[test]
    fn versions_have_millis_and_z() {
        assert_eq!(iso(1_393_716_470_295), "2014-03-01T23:27:50.295Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        for ms in (0..4_102_444_800_000u64).step_by(86_399_999_937) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            assert_eq!(iso(ms), t.format(&format).unwrap(), "{ms}");
        }
        let mut d = Data::default();
        let a = d.next_version(1000);
        let b = d.next_version(1000);
        assert!(b > a, "{a} {b}");
    }
}
