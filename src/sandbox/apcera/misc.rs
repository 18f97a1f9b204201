//! Small read-only endpoints: the default namespace, info, versions.

use super::Api;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `/sandbox/<local part of the principal>` (seed L2244-2265: per user).
pub async fn default_namespace(State(api): State<Api>) -> Response {
    let user = api.shared.principal.split('@').next().unwrap_or("admin");
    axum::Json(json!({ "namespace": format!("/sandbox/{user}") })).into_response()
}

pub async fn info(State(api): State<Api>) -> Response {
    axum::Json(json!({ "cluster_domain": "sandbox.local", "name": "capstan-sandbox", "url": format!("{}/", api.shared.base_url) }))
        .into_response()
}

pub async fn version() -> Response {
    axum::Json(json!({ "build_number": env!("CARGO_PKG_VERSION") })).into_response()
}

pub async fn apc_version() -> Response {
    axum::Json(json!({ "version": "0.20.0" })).into_response()
}
