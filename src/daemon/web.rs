//! The status page at `/`: one HTML file, a stylesheet and a script, embedded in the binary,
//! with no library and nothing fetched from elsewhere. The page itself holds no data, so it is
//! served without the token; everything it shows comes from the API, which asks for it.
//!
//! Two read endpoints exist for the page (behind the token like the rest): the history with
//! each commit's author, message and errors, and one step's diff as the CLI prints it, made
//! from the stored plan, whose values are already redacted.

use super::Daemon;
use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

const INDEX: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// Nothing but the daemon itself: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page and its assets (no token: they say nothing about the target).
pub fn page() -> Router<Arc<Daemon>> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// The API the page reads besides the rest (to be put behind the token).
pub fn api() -> Router<Arc<Daemon>> {
    Router::new().route("/v1/commits", get(commits)).route("/v1/plans/deploy/steps/{id}/diff", get(step_diff))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct CommitsQuery {
    limit: Option<usize>,
}

/// Commits seen, newest first (`?limit=`, 50 by default), each with its author, the first
/// line of its message and the errors that made it invalid, refused or failed.
async fn commits(super::request::U(d): super::request::U, Query(q): Query<CommitsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    let list = match d.store.summaries() {
        Ok(l) => l,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    };
    let source = d.source.clone();
    let store = &d.store;
    let mut items: Vec<Value> = Vec::new();
    let infos = {
        let shas: Vec<String> = list.iter().take(limit).map(|c| c.sha.clone()).collect();
        tokio::task::spawn_blocking(move || shas.iter().map(|s| source.commit_info(s).ok()).collect::<Vec<_>>())
            .await
            .unwrap_or_default()
    };
    for (i, c) in list.into_iter().take(limit).enumerate() {
        let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
        let (author, message) = infos.get(i).cloned().flatten().unwrap_or_default();
        v["author"] = json!(author);
        v["message"] = json!(message);
        v["errors"] = json!(store.errors(&c.sha).unwrap_or_default());
        items.push(v);
    }
    axum::Json(items).into_response()
}

/// One step's diff of the running or last plan, as text: a header naming the resource and
/// what happens to it, then its lines as `capstan plan` prints them (without colour).
async fn step_diff(super::request::U(d): super::request::U, Path(id): Path<String>) -> Response {
    let found = {
        let current = d.current.lock().unwrap();
        current.as_ref().and_then(|c| c.plan.steps.iter().find(|s| s.id == id).map(|s| (c.sha.clone(), s.clone())))
    };
    let Some((sha, step)) = found else {
        return (StatusCode::NOT_FOUND, format!("no step {id} in the current plan\n")).into_response();
    };
    let plan: Option<Value> = d.store.plan(&sha).ok().flatten().and_then(|t| serde_json::from_str(&t).ok());
    let address = step.resource.to_string();
    let change = plan
        .as_ref()
        .and_then(|p| p["resource_changes"].as_array())
        .and_then(|l| l.iter().find(|c| c["address"].as_str() == Some(address.as_str())));
    let text = match change {
        Some(c) => diff_text(c),
        None => format!("# {address}: no recorded change ({})\n", step.name),
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// A stored resource change (already redacted) as the CLI prints it.
fn diff_text(change: &Value) -> String {
    let address = change["address"].as_str().unwrap_or_default();
    let action = change["action"].as_str().unwrap_or_default();
    let mut out = format!("# {address} ({action})\n");
    if let Some(r) = change["reason"].as_str() {
        out.push_str(&format!("# {r}\n"));
    }
    for line in crate::view::redacted_diff_lines(change.get("before"), change.get("after")) {
        out.push_str(&line.plain());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_is_made_from_the_stored_redacted_values() {
        let change = json!({
            "address": "job::/dev::web", "action": "update",
            "before": { "name": "web", "env": { "PASSWORD": "(sensitive)" }, "instances": 1 },
            "after": { "name": "web", "env": { "PASSWORD": "(sensitive)" }, "instances": 2 },
        });
        let text = diff_text(&change);
        assert!(text.starts_with("# job::/dev::web (update)\n"), "{text}");
        assert!(text.contains("- instances: 1\n") && text.contains("+ instances: 2\n"), "{text}");
        let created = diff_text(&json!({ "address": "a", "action": "create", "before": null, "after": { "x": 1 } }));
        assert_eq!(created, "# a (create)\n+ x: 1\n");
    }

    #[test]
    fn every_asset_is_embedded_and_refers_to_nothing_outside() {
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "{text}");
        }
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/style.css"));
    }
}
