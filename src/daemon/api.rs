//! The daemon's HTTP API, modelled on the DC/OS SDK plan and configuration APIs (seed 000):
//! plans with interrupt and continue, configurations (commits), plus status, a sync trigger, a
//! git webhook, server-sent events, Prometheus metrics and health.
//!
//! With a token configured, every endpoint but `/health/*` and `/metrics` (that one too with
//! `--metrics-need-token`) needs it — reads as well, since history and plans say what runs
//! where — sent as `Authorization: Bearer <token>` or as seed 000's `Authorization:
//! token=<token>` (the scheme in any case); 401 otherwise, before a body is read. Webhooks are
//! authenticated by their signature (`X-Hub-Signature-256`, `X-Gitea-Signature`, or GitLab's
//! `X-Gitlab-Token`) when a webhook secret is configured, else by the token like the rest.

use super::events::Envelope;
use super::request::{U, error};
use super::{Daemon, Reason, Unit};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;

type Shared = State<Arc<Daemon>>;

/// A path parameter by name.
fn param(params: &HashMap<String, String>, name: &str) -> String {
    params.get(name).cloned().unwrap_or_default()
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    let token = || axum::middleware::from_fn_with_state(daemon.clone(), require_token);
    // A signed webhook is its own proof; an unsigned one needs the token like the rest.
    let mut webhook_route = Router::new().route("/v1/webhook", post(webhook));
    if daemon.opts.webhook_secret.is_none() {
        webhook_route = webhook_route.route_layer(token());
    }
    let mut metrics_route = Router::new().route("/metrics", get(metrics));
    if daemon.opts.metrics_need_token {
        metrics_route = metrics_route.route_layer(token());
    }
    // What a unit answers: under `/v1/units/{unit}` for any unit, and under `/v1` for the
    // only one (the `U` extractor tells them apart).
    let per_unit = || {
        Router::new()
            .route("/plans", get(plans))
            .route("/plans/deploy", get(plan))
            .route("/plans/deploy/interrupt", post(interrupt))
            .route("/plans/deploy/continue", post(continue_).put(continue_))
            .route("/configurations", get(configurations))
            .route("/configurations/target", get(target))
            .route("/configurations/{sha}", get(configuration))
            .route("/configurations/{sha}/plan", get(configuration_plan))
            .route("/rollback", post(rollback))
            .route("/history", get(history))
            .route("/status", get(status))
            .route("/events", get(events))
    };
    let units = Router::new()
        .route("/v1/units", get(units))
        .route("/v1/units/{unit}", get(unit))
        .route("/v1/units/{unit}/sync", post(unit_sync))
        .nest("/v1/units/{unit}", per_unit());
    Router::new()
        .merge(units)
        .nest("/v1", per_unit())
        .route("/v1/sync", post(sync))
        .merge(super::web::api())
        .route_layer(token())
        .merge(webhook_route)
        .merge(metrics_route)
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .merge(super::web::page())
        .with_state(daemon)
}

/// The token check, before the request's body is read or its handler runs.
async fn require_token(State(d): Shared, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match refused(&d, req.headers()) {
        Some(r) => r,
        None => next.run(req).await,
    }
}

/// The token check; both header forms of the seeds are accepted, the scheme in any case.
/// Returns the refusal, if any.
fn refused(daemon: &Daemon, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &daemon.opts.token else { return None };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(presented_token);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "a token is required: send Authorization: Bearer <token> or Authorization: token=<token>",
        )),
    }
}

/// The token in an `Authorization` value: `Bearer <token>` or `token=<token>`, the scheme's
/// letters in any case.
fn presented_token(value: &str) -> Option<&str> {
    let v = value.trim();
    if let Some((scheme, rest)) = v.split_once(char::is_whitespace)
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(rest.trim());
    }
    match v.get(..6) {
        Some(scheme) if scheme.eq_ignore_ascii_case("token=") => Some(v[6..].trim()),
        _ => None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn plans() -> axum::Json<Value> {
    axum::Json(json!(["deploy"]))
}

/// Every unit: name, platform, target (no credentials), phase, last applied commit, status.
async fn units(State(d): Shared) -> axum::Json<Value> {
    axum::Json(d.units_json())
}

async fn unit(U(u): U) -> axum::Json<Value> {
    axum::Json(u.summary())
}

async fn plan(U(d): U) -> Response {
    match d.plan_json() {
        Some(plan) => axum::Json(plan).into_response(),
        None => error(StatusCode::NOT_FOUND, "no plan has run yet"),
    }
}

/// A unit is changed only by the daemon holding its lease (the fencing law): another daemon
/// refuses an interrupt, continue, rollback or sync of it with 409, naming the holder and the
/// URL of its API when it gave one — it neither applies nor records the command (see
/// ARCHITECTURE.md, "Leases and fencing"). None when this daemon holds it (always, with SQLite).
async fn not_held(daemon: &Daemon, u: &Unit) -> Option<Response> {
    if u.holds() {
        return None;
    }
    let holder = daemon.fleet.holdings(&[u.unit()]).pop().and_then(|h| h.holder);
    let fleet = daemon.fleet.clone();
    let address = match holder.clone() {
        Some(h) => tokio::task::spawn_blocking(move || fleet.address_of(&h)).await.ok().flatten(),
        None => None,
    };
    let message = match (&holder, &address) {
        (Some(h), Some(url)) => format!(
            "unit {} is held by daemon {h}, not this one ({}): only the holder changes it; send this to {url}",
            u.name,
            daemon.fleet.id()
        ),
        (Some(h), None) => format!(
            "unit {} is held by daemon {h}, not this one ({}): only the holder changes it; send this to that daemon",
            u.name,
            daemon.fleet.id()
        ),
        (None, _) => format!(
            "no daemon holds unit {} at the moment (its lease is being taken): only the holder changes it; try again in a few seconds (GET /v1/units/{{unit}} names the holder)",
            u.name
        ),
    };
    let body = json!({ "message": message, "unit": u.name, "holder": holder, "holder_url": address });
    Some((StatusCode::CONFLICT, axum::Json(body)).into_response())
}

/// Seed 000's answer to a plan command with nothing to do.
fn already_reported(why: &str) -> Response {
    (
        StatusCode::ALREADY_REPORTED,
        axum::Json(json!({ "message": "Command has already been reported or completed", "reason": why })),
    )
        .into_response()
}

/// No new step starts; while idle, the next plan starts interrupted. 208 when already so.
async fn interrupt(State(daemon): Shared, U(d): U, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&daemon, &headers) {
        return r;
    }
    if let Some(r) = not_held(&daemon, &d).await {
        return r;
    }
    if !d.interrupt_plan() {
        return already_reported("the plan is already interrupted");
    }
    axum::Json(json!({ "message": "Received cmd: interrupt" })).into_response()
}

/// Plan again against the newest commit and carry on. 208 when nothing is interrupted.
async fn continue_(State(daemon): Shared, U(d): U, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&daemon, &headers) {
        return r;
    }
    if let Some(r) = not_held(&daemon, &d).await {
        return r;
    }
    if !d.continue_plan() {
        return already_reported("nothing is interrupted");
    }
    axum::Json(json!({ "message": "Received cmd: continue" })).into_response()
}

/// Every unit looks at the newest commit again (a daemon of one unit: as it always did).
async fn sync(State(daemon): Shared, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&daemon, &headers) {
        return r;
    }
    match daemon.sole() {
        Some(u) if daemon.is_single() => sync_unit(&u),
        _ => {
            daemon.trigger(Reason::Sync);
            let body = json!({ "message": "sync started", "units": daemon.units().len() });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
    }
}

async fn unit_sync(State(daemon): Shared, U(u): U, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&daemon, &headers) {
        return r;
    }
    if let Some(r) = not_held(&daemon, &u).await {
        return r;
    }
    sync_unit(&u)
}

fn sync_unit(d: &Unit) -> Response {
    d.trigger(Reason::Sync);
    if d.is_interrupted() {
        let message = "the plan is interrupted: the newest commit is fetched and recorded now, and planned and applied on continue";
        return (StatusCode::ACCEPTED, axum::Json(json!({ "message": message, "interrupted": true }))).into_response();
    }
    (StatusCode::ACCEPTED, axum::Json(json!({ "message": "sync started" }))).into_response()
}

#[derive(serde::Deserialize)]
struct RollbackRequest {
    /// A commit, tag, branch or revision (`HEAD~1`), resolved against the followed branch.
    to: String,
    /// Also a commit outside the followed branch's first-parent history, or never applied.
    #[serde(default)]
    force: bool,
}

/// Apply an earlier commit's configuration again; the daemon keeps to it until the next commit.
async fn rollback(State(daemon): Shared, U(d): U, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refused(&daemon, &headers) {
        return r;
    }
    if let Some(r) = not_held(&daemon, &d).await {
        return r;
    }
    let req: RollbackRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("expected {{\"to\": \"<commit>\", \"force\": false}}: {e}"));
        }
    };
    match d.rollback(&req.to, req.force).await {
        Ok(sha) => {
            let message = if d.is_interrupted() {
                format!("rolling back to {sha} when the interrupted plan is continued; kept until the next commit")
            } else {
                format!("rolling back to {sha}; kept until the next commit")
            };
            let body = json!({ "message": message, "sha": sha, "interrupted": d.is_interrupted() });
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
        Err((code, message)) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), message),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

/// Applied commits, newest first (`?all=true` adds invalid, failed and pending ones).
async fn configurations(U(d): U, Query(q): Query<ListQuery>) -> Response {
    match d.store.summaries() {
        Ok(list) => {
            let items: Vec<_> =
                list.into_iter().filter(|c| q.all || c.status == super::store::CommitStatus::Applied).collect();
            axum::Json(items).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

async fn target(U(d): U) -> Response {
    let sha = d.shown().target;
    match sha {
        Some(sha) => {
            let status = d.store.status(&sha).ok().flatten();
            axum::Json(json!({ "sha": sha, "status": status })).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no commit seen yet"),
    }
}

async fn configuration(U(d): U, Path(p): Path<HashMap<String, String>>) -> Response {
    let sha = param(&p, "sha");
    // A unique prefix of a commit id is enough, as in git.
    let found = match d.store.get(&sha) {
        Ok(Some(c)) => Some(c),
        _ => d
            .store
            .summaries()
            .ok()
            .and_then(|l| {
                let mut m = l.into_iter().filter(|c| c.sha.starts_with(&sha));
                let first = m.next();
                if m.next().is_some() { None } else { first }
            })
            .and_then(|c| d.store.get(&c.sha).ok().flatten()),
    };
    match found {
        Some(c) => axum::Json(c).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no configuration for commit {sha}")),
    }
}

/// The plan the daemon made for a commit, byte for byte as `capstan plan --output json` prints
/// it for the same commit and live state.
async fn configuration_plan(U(d): U, Path(p): Path<HashMap<String, String>>) -> Response {
    let sha = param(&p, "sha");
    match d.store.plan(&sha) {
        Ok(Some(text)) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("no plan for commit {sha}")),
    }
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    sha: Option<String>,
    limit: Option<usize>,
}

/// The append-only history, newest first (`?sha=` of one commit, `?limit=`, 1000 by default).
async fn history(U(d): U, Query(q): Query<HistoryQuery>) -> Response {
    match d.store.history(q.sha.as_deref(), q.limit.unwrap_or(1000).min(100_000)) {
        Ok(entries) => axum::Json(entries).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// What the daemon is doing: a daemon of one unit answers as it always did, with `units`
/// besides; one of several (without a unit in the path) lists its units.
async fn status(State(daemon): Shared, params: axum::extract::RawPathParams) -> Response {
    let named = params.iter().find(|(k, _)| *k == "unit").map(|(_, v)| v.to_string());
    let unit = match &named {
        Some(name) => match daemon.unit_named(name) {
            Some(u) => Some(u),
            None => return error(StatusCode::NOT_FOUND, format!("no unit {name:?} (GET /v1/units lists them)")),
        },
        None => daemon.sole(),
    };
    match unit {
        Some(u) => {
            let mut v = unit_status(&daemon, &u);
            v["unit"] = json!(u.name);
            v["units"] = daemon.units_json();
            axum::Json(v).into_response()
        }
        None => {
            let units = daemon.units();
            axum::Json(json!({
                "units": daemon.units_json(),
                "ready": units.iter().all(|u| u.status.lock().unwrap().ready),
                "daemon_id": daemon.fleet.id(),
                "leases": daemon.fleet.holdings(&units.iter().map(|u| u.unit()).collect::<Vec<_>>()),
                "repository": { "location": daemon.opts.repo.location, "ref": daemon.opts.repo.reference, "paths": daemon.opts.patterns() },
                "self_heal": daemon.opts.self_heal,
            }))
            .into_response()
        }
    }
}

/// A unit's status: what its holder knows (`Unit::shown`, the same from every daemon) and what
/// this daemon's own loop did (`last_result`, `last_reconcile`, `ready`, `daemon_id`, a lease's
/// `this_daemon`, `notifications`).
fn unit_status(daemon: &Daemon, d: &Unit) -> Value {
    let own = d.status.lock().unwrap().clone();
    let st = d.shown();
    // What the platform was last made equal to, and why that commit.
    let live_sha = d.store.get_value("live").ok().flatten().filter(|s| !s.is_empty()).or(st.last_applied.clone());
    let pinned = st.pinned.clone();
    let live = live_sha.map(|sha| {
        let why = if pinned.as_deref() == Some(sha.as_str()) {
            "pinned by rollback: kept until the branch moves on"
        } else if st.branch_head.as_deref() == Some(sha.as_str()) {
            "converged to the branch head"
        } else {
            "an earlier commit: the daemon has not (yet) converged to the branch head"
        };
        let converged = st.last_applied.as_deref() == Some(sha.as_str());
        json!({ "sha": sha, "why": why, "converged": converged, "status": d.store.status(&sha).ok().flatten() })
    });
    json!({
        "live": live,
        "branch_head": st.branch_head,
        "pinned": pinned,
        "paused_commit": st.paused_commit,
        "phase": st.phase,
        "target": st.target,
        "last_applied": st.last_applied,
        "last_result": own.last_result,
        "last_reconcile": own.last_reconcile,
        "interrupted": st.interrupted,
        "drifted": st.drifted,
        "ready": own.ready,
        "daemon_id": d.fleet.id(),
        "leases": d.fleet.holdings(&[d.unit()]),
        "locked_by": st.locked_by,
        "repository": { "location": daemon.opts.repo.location, "ref": daemon.opts.repo.reference, "path": d.path },
        "platform": d.platform(),
        "destination": d.target_description(),
        "self_heal": d.opts.self_heal,
        "notifications": d.notifier.health(),
    })
}

async fn ready(State(d): Shared) -> Response {
    if d.units().iter().all(|u| u.status.lock().unwrap().ready) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// The body is OpenMetrics text (it ends with `# EOF`), so it says so; Prometheus accepts it.
async fn metrics(State(d): Shared) -> Response {
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], d.metrics.render()).into_response()
}

fn sse_event(e: &Envelope) -> SseEvent {
    SseEvent::default().id(e.id.to_string()).event(e.event.name()).data(serde_json::to_string(e).unwrap_or_default())
}

/// Server-sent events, in order; `Last-Event-ID` replays what a reconnecting client missed.
/// On `/v1/units/{unit}/events`, only that unit's events (ids stay the daemon's, so
/// `Last-Event-ID` works the same).
async fn events(
    State(d): Shared,
    params: axum::extract::RawPathParams,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Response> {
    let only: Option<String> = match params.iter().find(|(k, _)| *k == "unit") {
        Some((_, name)) => match d.unit_named(name) {
            Some(u) => Some(u.name.clone()),
            None => return Err(error(StatusCode::NOT_FOUND, format!("no unit {name:?} (GET /v1/units lists them)"))),
        },
        None => None,
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (missed, rx) = d.events.subscribe(last);
    let wanted = move |e: &Envelope| only.is_none() || e.unit == only;
    let keep = wanted.clone();
    let replay = tokio_stream::iter(missed.into_iter().filter(move |e| keep(e)).map(|e| Ok(sse_event(&e))));
    // A stream ends once the daemon has stopped and it has sent every event published before
    // (or the server's graceful shutdown would wait for it forever).
    let live = futures::stream::unfold((rx, Box::pin(d.closed()), wanted), |(mut rx, mut closed, wanted)| async move {
        loop {
            tokio::select! {
                biased;
                r = rx.recv() => match r {
                    Ok(e) if !wanted(&e) => continue,
                    Ok(e) => return Some((Ok(sse_event(&e)), (rx, closed, wanted))),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                },
                _ = &mut closed => return None,
            }
        }
    });
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::default()))
}

/// GitHub-, GitLab- and Gitea-style push webhooks: verify, then fetch at once (an unsigned
/// webhook's token is checked before this runs).
async fn webhook(State(d): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(secret) = &d.opts.webhook_secret
        && let Err(msg) = verify_webhook(secret, &headers, &body)
    {
        return error(StatusCode::UNAUTHORIZED, msg);
    }
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let pushed = payload.get("ref").and_then(Value::as_str).unwrap_or_default();
    // A push to another branch is not ours to follow.
    if let Some(ours) = d.opts.repo.reference.as_deref()
        && pushed.starts_with("refs/heads/")
        && !ours.starts_with("refs/")
        && pushed != format!("refs/heads/{ours}")
        && !looks_like_commit(ours)
    {
        return (StatusCode::ACCEPTED, axum::Json(json!({ "message": format!("ignored: push to {pushed}") })))
            .into_response();
    }
    d.trigger(Reason::Webhook);
    (StatusCode::ACCEPTED, axum::Json(json!({ "message": "fetch started" }))).into_response()
}

fn looks_like_commit(r: &str) -> bool {
    r.len() >= 7 && r.chars().all(|c| c.is_ascii_hexdigit())
}

fn verify_webhook(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let check = |hex_sig: &str| -> Result<(), &'static str> {
        let sig = hex::decode(hex_sig.trim()).map_err(|_| "the webhook signature is not hex")?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        mac.verify_slice(&sig).map_err(|_| "the webhook signature does not match")
    };
    if let Some(sig) = header("x-hub-signature-256") {
        return check(sig.strip_prefix("sha256=").unwrap_or(sig));
    }
    if let Some(sig) = header("x-gitea-signature") {
        return check(sig);
    }
    if let Some(token) = header("x-gitlab-token") {
        return if constant_time_eq(token.as_bytes(), secret.as_bytes()) {
            Ok(())
        } else {
            Err("the X-Gitlab-Token does not match")
        };
    }
    Err("the webhook is not signed: expected X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token")
}

#[cfg(test)]
mod tests {
    use super::presented_token;

    #[test]
    fn both_header_forms_are_read_with_the_scheme_in_any_case() {
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "token=t0k", "Token=t0k", "TOKEN= t0k"] {
            assert_eq!(presented_token(v), Some("t0k"), "{v:?}");
        }
        for v in ["Basic t0k", "t0k", "Bearer", "tokens=t0k", "", "é"] {
            assert_eq!(presented_token(v), None, "{v:?}");
        }
    }
}
