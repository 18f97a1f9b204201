//! The admin router: `/service/marathon/…` is Marathon's own router, unchanged;
//! `/service/<name>/…` the scheduler of that service (the longest name that matches, so a
//! service in a folder, `prod/db`, is reached at `/service/prod/db/v1/…`); seed 001's
//! `/<name>/v1/connection` (without `/service`) reaches a legacy Cassandra service too.

use super::scheduler::{Outcome, Req};
use super::service::{Data, Service};
use super::spec::Kind;
use super::{Api, Ctx, cassandra, error, sdk};
use crate::sandbox::{percent_decode, query_pairs};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;


pub async fn dispatch(State(api): State<Api>, req: Request) -> Response {
    let raw = req.uri().path();
    if raw == "/service/marathon" || raw.starts_with("/service/marathon/") {
        let write = req.method() != Method::GET && req.method() != Method::HEAD;
        let response = match tower::ServiceExt::oneshot(api.marathon_router.clone(), req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if write {
            api.sync();
        }
        return response;
    }
    let path = percent_decode(raw, false);
    let query = query_pairs(req.uri().query());
    let method = req.method().clone();
    // The shared layer has read and bounded the body already.
    let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let (name, rest) = match path.strip_prefix("/service/") {
        Some(rest) => (None, rest.to_string()),
        None => match path.strip_suffix("/v1/connection").map(|n| n.trim_start_matches('/')) {
            Some(n) if !n.is_empty() => (Some(n.to_string()), format!("{n}/v1/connection")),
            _ => return error(StatusCode::NOT_FOUND, "no such resource"),
        },
    };
    api.sync();
    let ctx = api.ctx();
    let mut data = api.lock();
    let Some((service, below)) = find(&data, &rest) else {
        let first = rest.split('/').next().unwrap_or_default();
        return error(StatusCode::NOT_FOUND, &format!("service {first:?} is not running on this cluster"));
    };
    if name.is_some() && data.services[&service].kind != Kind::Legacy {
        return error(StatusCode::NOT_FOUND, "no such resource");
    }
    let mut path = below.to_string();
    while path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    let req = Req { method, path, query, body };
    let outcome = serve(&mut data, &service, &ctx, &req);
    drop(data);
    if outcome.changed {
        api.changed();
    }
    outcome.response
}

/// The service `rest` (`<name>/v1/…`) names, and the path below it.
fn find<'a>(data: &Data, rest: &'a str) -> Option<(String, &'a str)> {
    data.services
        .keys()
        .filter(|name| rest == name.as_str() || rest.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('/')))
        .max_by_key(|name| name.len())
        .map(|name| (name.clone(), &rest[name.len()..]))
}

fn serve(data: &mut Data, name: &str, ctx: &Ctx, req: &Req) -> Outcome {
    let backups = data.backups.clone();
    let service: &mut Service = data.services.get_mut(name).expect("found above");
    if !service.serving() {
        return Outcome::read(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the scheduler of {name} is not running (yet): its Marathon app {} has no running task of its configuration",
                service.app
            ),
        ));
    }
    match service.kind {
        Kind::Sdk => sdk::route(service, ctx, req),
        Kind::Legacy => cassandra::route(service, &backups, ctx, req),
    }
}
