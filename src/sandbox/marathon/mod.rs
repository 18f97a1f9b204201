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

mod api;
mod apps;
mod deploy;
mod deployments;
mod events;
mod groups;
mod http;
mod ids;
mod launch;
mod misc;
mod model;
mod tasks;
mod tree;
mod validate;
mod views;

pub use api::{Api, AppView, Marathon, load, start};
pub use http::error;
pub use ids::{unix_ms, valid_segment};
pub use model::Data;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use http::{Fail, Req, no_route, not_allowed};

/// This platform's entry in the sandbox registry (`crate::sandbox::EMULATORS`).
pub static EMULATOR: crate::sandbox::Emulator = crate::sandbox::Emulator {
    name: "marathon",
    principal: "admin@apcera.me",
    error: |status, message, _retry| error(status, message),
    token_ok: crate::sandbox::bearer_token_ok,
    start: |state_file, shared| {
        let api = load(state_file, shared)?;
        Ok((router(api.clone()), api))
    },
};

pub fn router(api: Api) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}

async fn dispatch(State(api): State<Api>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let raw = uri.path();
    let (prefix, rest) = match raw.strip_prefix("/service/marathon") {
        Some(r) if r.is_empty() || r.starts_with('/') => ("/service/marathon", r),
        _ => ("", raw),
    };
    let mut path = crate::sandbox::percent_decode(rest, false);
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    if path.is_empty() {
        path.push('/');
    }
    let req = Req { method, path, prefix, query: crate::sandbox::query_pairs(uri.query()), headers, body };
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
