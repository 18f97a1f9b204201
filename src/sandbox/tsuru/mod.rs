//! The tsuru API (seed 002), emulated: apps, env, units, cnames, service instances and their
//! binds, and jobs.
//!
//! Seed 002 is a flattened Swagger listing: paths, field names and status codes, but no auth
//! form, no media types, no streaming, no error body and no example. Where it is silent this
//! sandbox does what tsuru's own server does (tsuru/tsuru at a4d32c9, file named in brackets),
//! or, where the seed and the server disagree, says which it follows. `research/tsuru.md` is
//! the digest this reading started from (§ numbers in brackets).
//!
//! **Wire**
//!
//! * **Paths** [api/router/router.go]: every route answers at its bare path and under the one
//!   version prefix the seed gives it (`/1.0/apps`, `/1.13/jobs`, `/1.16/jobs/{name}/env`,
//!   `/pools/{pool}` has none): another version is 404, as tsuru's router matches only the
//!   exact version (`/1.0/jobs` is 404, `/1.13/apps` too). A path no route has is 404 `404 page
//!   not found`; a path with another method is 405 with no body (gorilla/mux).
//! * **Auth** [auth/token.go, api/handler.go]: with `--token`, the `Authorization` header is
//!   split on spaces and, when there are fewer than three parts, the last is the token: `bearer
//!   t`, `Bearer t` and a bare `t` all pass. Otherwise 401 `You must provide a valid
//!   Authorization header` with `WWW-Authenticate: Bearer realm="tsuru" scope="tsuru"`. The
//!   sandbox's user is an administrator whose one team is `admin`: an empty `teamOwner` (app,
//!   job) or `team_owner` (instance) becomes `admin` [autoTeamOwner]. Teams are not modelled:
//!   any team name is accepted.
//! * **Bodies** [api/middleware.go ParseInput, InputValue(s); §1.3]: a body with `Content-Type:
//!   application/json` is decoded as JSON, keys matched case-insensitively as Go does
//!   (`envs`/`Envs`, `norestart`/`noRestart`); anything else is read as a form (the
//!   url-encoded body and the query string), keys case-insensitive, nested fields dotted with
//!   list indices (`Envs.0.Name=A&Envs.0.Private=true`, `Metadata.Labels.0.Name=x`), a repeated
//!   key a list. Parameters the server reads one by one (`units`, `process`, `cname`, `env`,
//!   `noRestart`, `force`, `tag`) come from the query string, a form body, or the JSON body's
//!   top-level key, so DELETE parameters go in the query string. `noRestart` is matched in any
//!   case everywhere (the seed writes `norestart` for env and `noRestart` elsewhere; tsuru reads
//!   the query string's key exactly, so a client should send `noRestart`). A JSON body of the
//!   wrong shape is 400 `unable to parse as json: "<the body>" - ...`, **with the body echoed**
//!   as tsuru does (a client must not show that message unredacted: it holds what was sent).
//! * **Errors** [api/middleware.go errorHandlingMiddleware; §1.5]: `text/plain; charset=utf-8`,
//!   the message and a newline. Status codes are tsuru's own, including its 500s for errors it
//!   does not classify (a cname already taken, a bind that exists, an unknown platform, pool or
//!   plan on app create), each listed below.
//! * **Answers**: JSON with a trailing newline (Go's encoder). Lists are 204 with no body when
//!   empty: `GET /apps`, `GET /services`, `GET /services/instances` (whose entries are one per
//!   *service*, so 204 only when there is no service at all, as tsuru answers), plans, pools,
//!   routers, platforms. **`GET /jobs` with no job is 404 `Not founds.`** as the seed says
//!   (L2257); tsuru's code answers 204 there: a client must take both as empty, and must tell
//!   that 404 from a route's `404 page not found`. Where Go would encode a nil list the sandbox
//!   answers `null`: an env read that matches nothing, an app's `cname` before any was added,
//!   a service entry's `plans` and `service_instances` when it has no instance.
//! * **Key names follow the seed** where it and the server differ: apps read back `teamOwner`
//!   (tsuru writes `teamowner`; Go clients do not care), an instance reads back lower-case
//!   `planname`, `teamowner`, `custominfo` (tsuru writes Go field names), a job reads back its
//!   env under `spec.container.envs` (newer tsuru: `spec.envs`). Beyond the seed's listings, a
//!   job reads back its `tags` (tsuru does, the seed's response omits them) and `GET /apps`
//!   takes tsuru's `extended=true`, which adds `platform`, `description` and `metadata` to each
//!   item (the seed's items lack them).
//! * **Streams** (`application/x-json-stream`) [io/stream_writer.go, api/middleware.go; §1.6]:
//!   status 200 first, then one JSON object a line, `{"Message": "...", "Timestamp": "<RFC 3339>"}`
//!   (section lines `---- ... ----`, action lines ` ---> ...`, as tsuru's streamfmt writes them);
//!   a failure after the stream began is a last line `{"Message": "", "Timestamp": ...,
//!   "Error": "<text>"}` inside the 200. A failure before anything was written is an ordinary
//!   text error. Streaming: app update and delete, env set and unset (apps and jobs), units add
//!   and remove, start, stop, restart, bind and unbind of apps, unbind of jobs, instance delete.
//!   Not streaming [tsuru]: app and job create (201 JSON), cname add and remove, job bind (200,
//!   no body), instance create (201, no body) and update (200, no body). A stream may be empty
//!   (an app update that restarts nothing writes no line).
//!
//! **Resources**
//!
//! * **Catalogue** (fixed, listable): plans `c1m1` (the default), `c2m2`, `c4m4`
//!   (`GET /plans`); pools `default` (the default) and `prod`, public, provisioner
//!   `kubernetes` (`GET /pools`, `GET /pools/{pool}`); routers `ingress` (the default) and
//!   `traefik` (`GET /routers`); platforms `go`, `java`, `nodejs`, `php`, `python`, `ruby`,
//!   `static` (`GET /platforms`). Services are state (`GET /services`,
//!   `GET|DELETE /services/{name}`, `GET /services/{name}/plans`): a fresh sandbox has `mysql`
//!   (plans `small`, `medium`, `large`) and `redis` (`basic`, `plus`); deleting a service that
//!   has instances is 403. A state file that holds `"services": {}` starts with none.
//! * **Apps** [api/app.go, app/app.go]: create takes the seed's fields; `name` must match
//!   `^[a-z][a-z0-9-]{0,39}$` (400); a second create is 409 `tsuru failed to create the app
//!   "x": there is already an app with this name`; an empty `pool`, `plan`, `router` takes the
//!   default; an unknown pool, plan, router or platform is 500 with tsuru's text (`Pool does
//!   not exist.`, `plan not found`, `router "x" not found`, `Platform doesn't exist.`).
//!   `platform: python:3` keeps its version (reads back `python:3`, `python:latest` reads back
//!   `python`). Tags are trimmed, blanks dropped, duplicates removed; `tag` adds more (tsuru's
//!   compatibility key). Metadata labels and annotations are `{name, value}` lists: names must
//!   be Kubernetes qualified names, label values valid label values, `tsuru.io/` is reserved
//!   (400). Create answers 201 `{"status": "success", "ip": "<app>.sandbox.test"}`. **Update is
//!   partial**: an empty field keeps its value (a description cannot be cleared), `tags`
//!   present replaces the list, metadata items merge by name (`delete: true` removes one),
//!   `planoverride` merges (0 removes an override), `teamOwner` also grants that team; a
//!   different `pool` is 400 `pool updates are no longer supported, create a new app in the
//!   desired pool instead`, `router`/`routeropts` 400, nothing to change 400 `Neither the
//!   description, tags, plan, pool, team owner or platform were set. You must define at least
//!   one.`; a new plan or changed metadata restarts the units unless `noRestart`. Delete
//!   unbinds every instance, releases the cnames and streams. `GET /apps` filters by `name`
//!   (substring), `platform`, `teamOwner`, `owner`, `pool`, `status` (of a unit), `tag` (all
//!   given); `simplified=true` leaves units out. App info has every key of the seed's listing;
//!   `deploys` is 0 and `lock` unlocked (the sandbox has no deploys and no locks), `quota` is
//!   `{inuse: <units>, limit: -1}`. An app is its own processes: the sandbox builds no image,
//!   so units run at once, at `version` 1.
//! * **Env** [api/app.go setAppEnv/unsetAppEnv, app/app.go SetEnvs; §3.2]: set takes `envs`
//!   (`name`, `value`, `alias`, `private`), `managedBy`, `private` (makes all private),
//!   `pruneUnused`, `noRestart`. Every variable of a request takes the request's `managedBy`
//!   (a per-item `managedBy` is ignored, as tsuru ignores it); `pruneUnused` first removes the
//!   variables whose `managedBy` is the request's and whose name is not in it — variables set
//!   by hand or by another manager are never touched. Refused with 400 before any change: no
//!   variable and no `managedBy` (`You must provide the list of environment variables`),
//!   `pruneUnused` without `managedBy` (`Prune unused requires a managed-by value`), a name
//!   not matching `^[_a-zA-Z][_a-zA-Z0-9]*$`, and the names tsuru write-protects:
//!   `TSURU_APPNAME`, `TSURU_APPDIR`, `TSURU_SERVICES` (only those three, as tsuru; other
//!   `TSURU_*` names may be set). A name a bound service injected fails inside the stream (an
//!   `Error` line, nothing changed) as tsuru's `validateEnvConflicts` does. Reads show
//!   `public` (not `private`) and mask private values as `*** (private variable)` (the text
//!   of tsuru's `app.SuppressedEnv`; the sandbox masks on the wire, so a private value can
//!   never be read back). `GET env` lists the app's variables, the bound services' (private,
//!   `managedBy: "<service>/<instance>"`), and tsuru's `TSURU_APPNAME`, `TSURU_APPDIR`
//!   (`managedBy: "tsuru"`) and `TSURU_SERVICES` (private), sorted by name; `?env=NAME`
//!   (repeatable) reads only the app's own variables, in the order asked. `alias` reads back
//!   the value of the variable it names. Unset takes `env` (repeatable; none is 400 `You must
//!   provide the list of environment variables.`) and removes whatever the names are,
//!   whoever set them. Set and unset restart the units unless `noRestart` (an app without
//!   units is not restarted).
//! * **Units** [api/app.go addUnits/removeUnits, provision/kubernetes]: `units` is a decimal
//!   string > 0 (400 `You must provide the number of units.` / `Invalid number of units: the
//!   number must be an integer greater than 0.`), `process` names the process (empty: the
//!   app's one process, else `web`); `version` is accepted and ignored. A unit is `starting`
//!   (`ready: false`) for `--rollout-ms` after it is created or restarted, then `started`; the
//!   stream of the request that made it ends when it is ready (tsuru waits for the rollout).
//!   Removing more units than the process has is 403 (the seed's `Forbidden`); the newest go
//!   first. Restart gives a process's units new ids (Kubernetes pods), stop makes them
//!   `stopped`, start starts them again; adding units while some are stopped is 500 `Cannot add
//!   units to an app that has stopped units`. Units carry every key of the seed's listing.
//! * **Cnames** [app/actions.go validateNewCNames]: `cname` (repeatable) must match
//!   `^(\*\.)?[a-zA-Z0-9][\w-.]+$` (400 `Invalid cname`). A cname the app has is 500 `cname x
//!   already exists for this app`; one another app holds is 500 `cname x already exists for app
//!   y using same router` when both use one router, `... for another app y and belongs to a
//!   different team owner` when their team owners differ — tsuru answers these with 500, not
//!   409 — and allowed otherwise (another router, the same team), as tsuru. Removing a cname no
//!   app holds is 500 `cname x not exists in app`. Both answer 200 with no body.
//! * **Service instances** [api/service_instance.go, service/service_instance.go; §3.5]:
//!   create takes `name`, `plan_name` (or `plan`), `team_owner` (or `owner`), `description`,
//!   `tags` (and `tag`), `parameters`, `pool` (optional, a known pool; fixed after create);
//!   answers 201 with no body (tsuru; the seed says 200); a name not matching
//!   `^[A-Za-z][-a-zA-Z0-9_]+$` is 400, a second one 409 `instance name already exists.`, an
//!   unknown service 404 `Service not found`, a plan the service does not have 400. **Update
//!   replaces** `description`, `plan`, `teamowner`, `tags`, `parameters` (an absent field is
//!   emptied, absent `tags` kept; an empty `teamowner` is 500 `please specify the team that
//!   owns the service instance`; nothing different is 400). Delete refuses an instance bound
//!   to an app with 400 `Applications bound to the service "x": "a,b"` (tsuru's wrapped
//!   text), and — stricter than tsuru, which checks apps only and would leave a job bound to
//!   nothing — one bound to a job, naming it; `unbindall=true` unbinds apps and jobs first,
//!   in the stream. Reads: the list (`?app=` and `?tag=` filter) groups instances by service,
//!   snake_case (`plan_name`, `team_owner`, `service_name`, integer `id`); the info is the
//!   seed's lower-case object; `GET .../status` is `Service instance "x" is up`.
//! * **Binds** [api/app.go bindServiceInstance, service/actions.go]: binding an app (the 1.0
//!   path `/services/{s}/instances/{i}/{app}` or the 1.13 `.../apps/{app}`) injects the
//!   instance's variables into the app, private and managed by `<service>/<instance>`:
//!   `<PREFIX>_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_DATABASE_NAME` (`MYSQL_…`) or
//!   `_HOST`, `_PORT`, `_PASSWORD` (`REDIS_…`), the password generated once per bind; then
//!   restarts the units unless `noRestart`. Binding twice is 500 `app is already bound to this
//!   service instance ("i" is up)`; unbinding what is not bound 500 `app is not bound to this
//!   service instance`. Jobs (`.../jobs/{job}`) the same, with no restart; a job bind answers
//!   200 with no body (tsuru does not stream it). `parameters` are accepted and kept nowhere.
//! * **Jobs** [api/job.go, job/job.go; §3.6]: the request is flat (`teamOwner`, `plan`,
//!   `pool`, `description`, `tags`, `metadata`, `schedule`, `manual`,
//!   `activeDeadlineSeconds`, `container: {image, command, envs}`), the read nests the spec
//!   under `spec` and `GET /jobs/{name}` wraps it as `{job, units, serviceInstanceBinds}`.
//!   Create answers 201 `{"status": "success", "jobName": "x"}`; a name not matching
//!   `^[a-z][a-z0-9-]{0,39}$` is 400; a second create 409 (the seed's code; tsuru's code wraps
//!   it into a 400); **a job needs a pool** (tsuru has no default pool for jobs: 400 `tsuru
//!   failed to create job "x": Pool does not exist.`); `schedule` and `manual` together are
//!   409; a schedule that is not a five-field cron line (or `@daily`-style) is 400 `invalid
//!   schedule`; a manual job reads back the schedule `* * 31 2 *` (tsuru's placeholder).
//!   **Update merges** as tsuru's mergo does: an empty field keeps its value (so nothing can
//!   be cleared), metadata merges by name, another `pool` is 400 `Update pool is not
//!   implemented yet`; it answers 200 (the seed; tsuru 202) with the job. Jobs have no units
//!   in the sandbox (nothing runs); trigger answers `{"status": "success"}`. Job env (`POST
//!   /1.13/jobs/{name}/env`, `DELETE` the same, `GET /1.16/...`) follows the app rules, with
//!   no restart and no service conflict check. Deleting a job unbinds it.
//!
//! **Knobs**: latency, `--fail-rate`, `--reset-rate` and the token are the shared layer's
//! (`sandbox/mod.rs`); `--rollout-ms` is how long units take to start. The fault
//! `stream_error` in `/_sandbox/faults` makes streams end with an `Error` line:
//! `{"stream_error": {"path_contains": "/env", "method": "POST", "message": "unit web-1 failed
//! to start", "changed": false, "count": 1}}` — every field optional: the streams whose path
//! contains `path_contains` (all when empty) and whose method is `method` (any when absent)
//! answer 200, write their progress lines, and end with `{"Error": message}`; with `changed:
//! false` (the default) the operation changes nothing (tsuru's pipelines roll back), with
//! `true` it is carried out first (units added that then failed to start); `count` limits it
//! to that many streams, then the fault clears itself. Validation errors still come first, as
//! plain text errors.
//!
//! **State**: apps (with env, units, cnames), instances, jobs, services and the counters are
//! in the state file; a unit that was starting when the sandbox stopped is started when it
//! comes back once its time has passed.

mod apps;
mod binds;
mod catalogue;
mod cnames;
mod env;
mod input;
mod instances;
mod jobs;
mod metadata;
mod model;
mod streams;
mod units;

pub use streams::StreamFault;

use super::{PlatformState, Shared};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Everything the emulated tsuru holds; this is what the state file contains.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    pub apps: BTreeMap<String, model::App>,
    /// `<service>/<instance>` → instance.
    pub instances: BTreeMap<String, instances::Instance>,
    pub jobs: BTreeMap<String, jobs::Job>,
    pub services: BTreeMap<String, catalogue::Service>,
    /// The last number handed out (instance ids, unit ids and addresses, bind passwords).
    pub counter: u64,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            apps: BTreeMap::new(),
            instances: BTreeMap::new(),
            jobs: BTreeMap::new(),
            services: catalogue::services(),
            counter: 0,
        }
    }
}

impl Data {
    pub fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

pub struct Tsuru {
    data: Mutex<Data>,
    pub shared: Arc<Shared>,
}

pub type Api = Arc<Tsuru>;

impl Tsuru {
    /// Lock the data; call `changed` after a mutation so the state file is rewritten.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap()
    }

    pub fn changed(&self) {
        self.shared.changed();
    }

    pub fn rollout_ms(&self) -> u64 {
        self.shared.faults.lock().unwrap().rollout_ms
    }

    /// The team of the sandbox's user.
    pub fn team(&self) -> &'static str {
        "admin"
    }
}

impl PlatformState for Tsuru {
    fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        super::snapshot_of(&self.data)
    }
}

/// Load the state file (or start with the catalogue's services).
pub fn load(state_file: Option<&Path>, shared: Arc<Shared>) -> anyhow::Result<Api> {
    let data: Data = super::read_state(state_file)?;
    Ok(Arc::new(Tsuru { data: Mutex::new(data), shared }))
}

/// This platform's entry in the sandbox registry (`crate::sandbox::EMULATORS`).
pub static EMULATOR: super::Emulator = super::Emulator {
    name: "tsuru",
    principal: "admin@tsuru.example",
    error: |status, message, _retry| error(status, message),
    token_ok,
    start: |state_file, shared| {
        let api = load(state_file, shared)?;
        Ok((router(api.clone()), api))
    },
};

pub fn router(api: Api) -> Router {
    Router::new().fallback(dispatch).with_state(api)
}

/// A tsuru error answer: the message as plain text with a newline; a 401 also says how to
/// authenticate. Used for the token check and injected faults too, so the message of a 401 is
/// tsuru's own.
pub fn error(status: StatusCode, message: &str) -> Response {
    let message = if status == StatusCode::UNAUTHORIZED { UNAUTHORIZED } else { message };
    let mut r = text(status, format!("{message}\n"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="tsuru" scope="tsuru""#));
    }
    r
}

const UNAUTHORIZED: &str = "You must provide a valid Authorization header";

/// Whether the `Authorization` header carries `token` as tsuru reads it: split on spaces,
/// fewer than three parts, the last one (`bearer t`, `Bearer t`, `t`).
pub fn token_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let parts: Vec<&str> = value.split(' ').collect();
    parts.len() < 3 && parts.last().is_some_and(|t| !t.is_empty() && *t == token)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
}

/// A JSON answer as Go's encoder writes it (with a trailing newline).
pub fn reply(status: StatusCode, body: &Value) -> Response {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// A list: 204 with no body when it is empty.
pub fn list(items: Vec<Value>) -> Response {
    if items.is_empty() { StatusCode::NO_CONTENT.into_response() } else { reply(StatusCode::OK, &Value::Array(items)) }
}

/// 200 (or another code) with no body.
pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// A refused request.
#[derive(Debug)]
pub enum Fail {
    /// A plain text error.
    Text(StatusCode, String),
    /// No route has this path (`404 page not found`).
    NoRoute,
    /// A route has this path, not this method (405, no body).
    NotAllowed,
}

impl Fail {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fail {
        Fail::Text(status, message.into())
    }

    pub fn bad(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, message)
    }

    /// An error tsuru does not classify, which its middleware answers with 500.
    pub fn internal(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn no_app(name: &str) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, format!("App {name} not found."))
    }

    pub fn no_job(name: &str) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, format!("Job {name} not found."))
    }

    pub fn no_instance() -> Fail {
        Fail::new(StatusCode::NOT_FOUND, "service instance not found")
    }

    pub fn no_service() -> Fail {
        Fail::new(StatusCode::NOT_FOUND, "Service not found")
    }
}

/// 404 unless the app exists: tsuru looks the path's app up before any handler runs.
pub fn need(api: &Api, name: &str) -> Result<(), Fail> {
    if api.lock().apps.contains_key(name) { Ok(()) } else { Err(Fail::no_app(name)) }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Text(status, message) => error(status, &message),
            Fail::NoRoute => text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
            Fail::NotAllowed => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        }
    }
}

/// One request, as the handlers see it.
pub struct Req {
    pub method: Method,
    /// The path without its version prefix.
    pub path: String,
    /// The route's parameters, in the order of its pattern.
    pub params: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// A query parameter (the first of its name).
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable query parameter.
    pub fn queries(&self, key: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean query parameter as Go's `strconv.ParseBool` reads it; anything else is false.
    pub fn query_bool(&self, key: &str) -> bool {
        self.query(key).and_then(input::parse_bool).unwrap_or(false)
    }
}

type Handler = fn(&Api, &Req) -> Result<Response, Fail>;

/// A route: method, the version prefix the seed gives it (`""` for none), the pattern.
struct Route(&'static str, &'static str, &'static str, Handler);

/// In tsuru's registration order: the first route whose path matches wins
/// (`/services/instances` before `/services/{name}`).
const ROUTES: &[Route] = &[
    Route("GET", "1.0", "/services/instances", instances::list),
    Route("POST", "1.0", "/services/{service}/instances", instances::create),
    Route("GET", "1.0", "/services/{service}/instances/{instance}", instances::info),
    Route("PUT", "1.0", "/services/{service}/instances/{instance}", instances::update),
    Route("DELETE", "1.0", "/services/{service}/instances/{instance}", instances::delete),
    Route("GET", "1.0", "/services/{service}/instances/{instance}/status", instances::status),
    Route("PUT", "1.0", "/services/{service}/instances/{instance}/{app}", binds::bind_app),
    Route("DELETE", "1.0", "/services/{service}/instances/{instance}/{app}", binds::unbind_app),
    Route("PUT", "1.13", "/services/{service}/instances/{instance}/apps/{app}", binds::bind_app),
    Route("DELETE", "1.13", "/services/{service}/instances/{instance}/apps/{app}", binds::unbind_app),
    Route("PUT", "1.13", "/services/{service}/instances/{instance}/jobs/{job}", binds::bind_job),
    Route("DELETE", "1.13", "/services/{service}/instances/{instance}/jobs/{job}", binds::unbind_job),
    Route("GET", "1.0", "/services", instances::list_services),
    Route("GET", "1.0", "/services/{name}", catalogue::service_info),
    Route("DELETE", "1.0", "/services/{name}", catalogue::delete_service),
    Route("GET", "1.0", "/services/{name}/plans", catalogue::service_plans),
    Route("GET", "1.0", "/plans", catalogue::plans),
    Route("GET", "1.0", "/apps", apps::list),
    Route("POST", "1.0", "/apps", apps::create),
    Route("GET", "1.0", "/apps/{app}", apps::info),
    Route("DELETE", "1.0", "/apps/{app}", apps::delete),
    Route("PUT", "1.0", "/apps/{app}", apps::update),
    Route("POST", "1.0", "/apps/{app}/cname", cnames::add),
    Route("DELETE", "1.0", "/apps/{app}/cname", cnames::remove),
    Route("POST", "1.0", "/apps/{app}/env", env::set_app),
    Route("GET", "1.0", "/apps/{app}/env", env::get_app),
    Route("DELETE", "1.0", "/apps/{app}/env", env::unset_app),
    Route("POST", "1.0", "/apps/{app}/start", units::start),
    Route("POST", "1.0", "/apps/{app}/stop", units::stop),
    Route("POST", "1.0", "/apps/{app}/restart", units::restart_route),
    Route("PUT", "1.0", "/apps/{app}/units", units::add),
    Route("DELETE", "1.0", "/apps/{app}/units", units::remove),
    Route("GET", "1.0", "/platforms", catalogue::platforms),
    Route("GET", "1.0", "/pools", catalogue::pools),
    Route("GET", "", "/pools/{pool}", catalogue::pool),
    Route("GET", "1.3", "/routers", catalogue::routers),
    Route("POST", "1.13", "/jobs", jobs::create),
    Route("GET", "1.13", "/jobs", jobs::list),
    Route("GET", "1.13", "/jobs/{name}", jobs::info),
    Route("PUT", "1.13", "/jobs/{name}", jobs::update),
    Route("DELETE", "1.13", "/jobs/{name}", jobs::delete),
    Route("POST", "1.13", "/jobs/{name}/trigger", jobs::trigger),
    Route("POST", "1.13", "/jobs/{name}/env", env::set_job),
    Route("DELETE", "1.13", "/jobs/{name}/env", env::unset_job),
    Route("GET", "1.16", "/jobs/{name}/env", env::get_job),
];

/// The parameters of `pattern` in `segments`, when it matches.
fn matches(pattern: &str, segments: &[String]) -> Option<Vec<String>> {
    let parts: Vec<&str> = pattern.split('/').skip(1).collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in parts.iter().zip(segments) {
        if p.starts_with('{') {
            if s.is_empty() {
                return None;
            }
            params.push(s.clone());
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

/// `1.13` in `/1.13/jobs`: a first segment of digits and dots.
fn version_of(segment: &str) -> Option<&str> {
    (!segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then_some(segment)
}

async fn dispatch(State(api): State<Api>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let raw: Vec<String> = uri.path().split('/').skip(1).map(|s| super::percent_decode(s, false)).collect();
    let (version, segments) = match raw.first().and_then(|s| version_of(s)) {
        Some(v) => (Some(v.to_string()), raw[1..].to_vec()),
        None => (None, raw),
    };
    let mut path_matched = false;
    for Route(m, v, pattern, handler) in ROUTES {
        if version.as_deref().is_some_and(|given| given != *v) {
            continue;
        }
        let Some(params) = matches(pattern, &segments) else { continue };
        if *m != method.as_str() {
            path_matched = true;
            continue;
        }
        let req = Req {
            method,
            path: format!("/{}", segments.join("/")),
            params,
            query: super::query_pairs(uri.query()),
            headers,
            body,
        };
        return match handler(&api, &req) {
            Ok(r) => r,
            Err(f) => f.into_response(),
        };
    }
    if path_matched { Fail::NotAllowed.into_response() } else { Fail::NoRoute.into_response() }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// RFC 3339 in UTC, as Go writes a `time.Time` (`2024-05-01T12:00:00.123Z`; whole seconds
/// without a fraction).
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Body of a JSON answer, for handlers that build it themselves.
pub fn body_of(v: &Value) -> Body {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Body::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_token_is_the_last_of_fewer_than_three_words() {
        for ok in ["bearer t0k", "Bearer t0k", "BEARER t0k", "t0k", "token t0k"] {
            assert!(token_ok(&headers(ok), "t0k"), "{ok}");
        }
        for bad in ["bearer  t0k", "bearer x t0k", "bearer other", "", "bearer ", "t0k "] {
            assert!(!token_ok(&headers(bad), "t0k"), "{bad:?}");
        }
        assert!(!token_ok(&HeaderMap::new(), "t0k"));
    }

    #[test]
    fn routes_match_their_pattern_and_version() {
        let seg = |p: &str| p.split('/').skip(1).map(String::from).collect::<Vec<_>>();
        assert_eq!(matches("/apps/{app}/env", &seg("/apps/web/env")), Some(vec!["web".to_string()]));
        assert_eq!(matches("/apps/{app}", &seg("/apps/web/env")), None);
        assert_eq!(matches("/apps/{app}", &seg("/apps/")), None);
        assert_eq!(version_of("1.13"), Some("1.13"));
        assert_eq!(version_of("apps"), None);
        assert!(rfc3339(1_714_564_800_000).starts_with("2024-05-01T12:00:00"));
    }
}
