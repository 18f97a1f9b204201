//! What a request to the daemon's API is about: the unit its path names (extracted by [`U`]),
//! and the JSON error every endpoint answers with. Below both `api` and `web`, which use it.

use super::{Daemon, Unit};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The unit a request is about: the one its path names (`/v1/units/{unit}/…`, the name
/// percent-encoded: `clusters%2Feu`, `%2E` for the root), else the daemon's only unit. A
/// daemon of several units answers the paths without a unit with 409, naming `/v1/units`.
pub struct U(pub Arc<Unit>);

impl FromRequestParts<Arc<Daemon>> for U {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Daemon>) -> Result<Self, Response> {
        let params =
            axum::extract::RawPathParams::from_request_parts(parts, d).await.map_err(IntoResponse::into_response)?;
        match params.iter().find(|(k, _)| *k == "unit") {
            Some((_, name)) => d
                .unit_named(name)
                .map(U)
                .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no unit {name:?} (GET /v1/units lists them)"))),
            None => d.sole().map(U).ok_or_else(|| several(d)),
        }
    }
}

/// The answer to a path without a unit when there are several (or none).
fn several(d: &Daemon) -> Response {
    error(
        StatusCode::CONFLICT,
        format!(
            "this daemon runs {} units: ask /v1/units/{{unit}}/… (the unit's name percent-encoded, clusters%2Feu); GET /v1/units lists them",
            d.units().len()
        ),
    )
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": message.into() }))).into_response()
}
