//! The event stream (`GET /v2/events`, seed 004 L1315-1354) and event subscriptions
//! (L1356-1496); events themselves are published through `model::emit`.

use super::api::Api;
use super::model::emit;
use super::http::{Fail, Req, reply};
use super::ids::{iso, unix_ms};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /v2/events[?event_type=…]`: `event_stream_attached`, then every event as it happens.
pub fn stream(api: &Api, req: &Req) -> Response {
    let types: Vec<String> =
        req.params("event_type").iter().flat_map(|t| t.split(',')).map(|t| t.trim().to_string()).collect();
    let wanted = move |kind: &str| types.is_empty() || types.iter().any(|t| t == kind);
    let rx = api.events.subscribe();
    let mut head = Vec::new();
    if wanted("event_stream_attached") {
        let attached =
            json!({"remoteAddress": "127.0.0.1", "eventType": "event_stream_attached", "timestamp": iso(unix_ms())});
        head.push(Ok::<Bytes, Infallible>(Bytes::from(format!("data: {attached}\n\n"))));
    }
    let rest = futures::stream::unfold((rx, wanted), |(mut rx, wanted)| async move {
        loop {
            match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
                Err(_) => return Some((Ok(Bytes::from_static(b":\n\n")), (rx, wanted))),
                Ok(Ok(ev)) if wanted(ev.kind) => {
                    return Some((Ok(Bytes::from(format!("data: {}\n\n", ev.line))), (rx, wanted)));
                }
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(futures::stream::iter(head), rest));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream;charset=UTF-8")
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::EXPIRES, "0")
        .header(header::PRAGMA, "no-cache")
        .body(body)
        .unwrap_or_default()
}

pub fn subscriptions(api: &Api) -> Result<Response, Fail> {
    let data = api.lock();
    Ok(reply(StatusCode::OK, &json!({ "callbackUrls": data.subscriptions })))
}

fn callback(req: &Req) -> Result<String, Fail> {
    match req.param("callbackUrl") {
        Some(u) if !u.is_empty() => Ok(u.to_string()),
        _ => Err(Fail::status(StatusCode::BAD_REQUEST, "the query parameter callbackUrl is required")),
    }
}

fn subscription_event(api: &Api, url: &str, kind: &'static str) -> Value {
    let ctx = api.ctx();
    emit(&ctx, ctx.now, kind, || {
        let mut m = Map::new();
        m.insert("clientIp".into(), json!("127.0.0.1"));
        m.insert("callbackUrl".into(), json!(url));
        m
    });
    json!({"callbackUrl": url, "clientIp": "127.0.0.1", "eventType": kind})
}

/// `POST /v2/eventSubscriptions?callbackUrl=…`: stored; nothing is posted to it.
pub fn subscribe(api: &Api, req: &Req) -> Result<Response, Fail> {
    let url = callback(req)?;
    {
        let mut data = api.lock();
        if !data.subscriptions.contains(&url) {
            data.subscriptions.push(url.clone());
        }
    }
    api.changed();
    Ok(reply(StatusCode::OK, &subscription_event(api, &url, "subscribe_event")))
}

pub fn unsubscribe(api: &Api, req: &Req) -> Result<Response, Fail> {
    let url = callback(req)?;
    api.lock().subscriptions.retain(|u| *u != url);
    api.changed();
    Ok(reply(StatusCode::OK, &subscription_event(api, &url, "unsubscribe_event")))
}
