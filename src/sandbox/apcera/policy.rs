//! Policy documents (seed 003 L3005-3186), served on the auth host's paths (the same listener).
//!
//! Choices where the seed is silent (digest §2.6, A13):
//! * Every document keeps its whole history: version N is the N-th text it had, readable with
//!   `GET /v1/policy/{name}?version=N` (404 for a version it never had). A document deleted and
//!   created again starts a new history at version 1.
//! * `PUT /v1/policy` is all or nothing: every document is checked first, then all are written,
//!   and the cluster policy version goes up by one. A `for_version` that is not the document's
//!   current version is 409, and so is creating (no `for_version`, or 0) a document that exists
//!   — a create must not overwrite what someone else made meanwhile.
//! * `DELETE /v1/policy?doc=a&doc=b` is all or nothing too: an unknown name is 404 and nothing
//!   is deleted. No `doc` is 400.
//! * Names: letters, digits, `-`, `_`, not starting with `-` (L3069); anything else is 400.
//! * Text is stored verbatim, never parsed here (the simulation parses it, see `sim.rs`).
//! * `GET /v1/policy/{name}` answers `updated_at` as the Go zero time, as the seed shows (L3093).

use super::{Api, Refusal, api_error, now, parse, query_pairs};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// One document: every text it has had, oldest first (version = index + 1).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyDoc {
    pub versions: Vec<String>,
    pub updated_at: String,
    pub updated_by: String,
}

impl PolicyDoc {
    pub fn version(&self) -> u64 {
        self.versions.len() as u64
    }

    pub fn text(&self) -> &str {
        self.versions.last().map(String::as_str).unwrap_or_default()
    }
}

/// Whether a document name is one the seed allows (L3069).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn list(State(api): State<Api>) -> Response {
    let data = api.lock();
    let mut docs: Vec<_> = data.policy.iter().collect();
    docs.sort_by(|a, b| a.0.cmp(b.0));
    let docs: Vec<_> = docs
        .into_iter()
        .map(|(name, d)| {
            json!({ "name": name, "updated_at": d.updated_at, "updated_by": d.updated_by, "version": d.version() })
        })
        .collect();
    axum::Json(json!({ "docs": docs })).into_response()
}

pub async fn get_one(State(api): State<Api>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let data = api.lock();
    let Some(doc) = data.policy.get(&name) else {
        return api_error(StatusCode::NOT_FOUND, &format!("no policy document {name:?}"));
    };
    let wanted = match query_pairs(q.as_deref()).into_iter().find(|(k, _)| k == "version") {
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if n >= 1 && n <= doc.version() => n,
            _ => return api_error(StatusCode::NOT_FOUND, &format!("policy document {name:?} has no version {v:?}")),
        },
        None => doc.version(),
    };
    let text = &doc.versions[(wanted - 1) as usize];
    axum::Json(json!({ "name": name, "text": text, "version": wanted, "updated_at": "0001-01-01T00:00:00Z" }))
        .into_response()
}

#[derive(Deserialize)]
pub struct DocRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub for_version: u64,
    #[serde(default)]
    pub text: String,
}

#[derive(Deserialize)]
pub struct DocsRequest {
    #[serde(default)]
    pub docs: Vec<DocRequest>,
}

/// Check the names of a PUT body (shared with the simulation's PUT).
pub fn check_docs(req: &DocsRequest) -> Result<(), Refusal> {
    let mut seen = std::collections::HashSet::new();
    for d in &req.docs {
        if !valid_name(&d.name) {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid policy document name {:?}: letters, digits, '-' and '_', not starting with '-'",
                    d.name
                ),
            ));
        }
        if !seen.insert(d.name.as_str()) {
            return Err(Refusal(StatusCode::BAD_REQUEST, format!("policy document {:?} is named twice", d.name)));
        }
    }
    Ok(())
}

pub async fn put(State(api): State<Api>, body: Bytes) -> Response {
    let req: DocsRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = check_docs(&req) {
        return r.into_response();
    }
    if req.docs.is_empty() {
        return api_error(StatusCode::BAD_REQUEST, "no policy documents in the request");
    }
    let mut data = api.lock();
    // Every document is checked before any is written: the PUT is one transaction.
    for d in &req.docs {
        let current = data.policy.get(&d.name).map_or(0, PolicyDoc::version);
        if d.for_version != current {
            let why = if current == 0 {
                format!("policy document {:?} does not exist (for_version {})", d.name, d.for_version)
            } else if d.for_version == 0 {
                format!(
                    "policy document {:?} exists already at version {current}; send for_version to update it",
                    d.name
                )
            } else {
                format!(
                    "policy document {:?} is at version {current}, not {}: it was changed meanwhile",
                    d.name, d.for_version
                )
            };
            return api_error(StatusCode::CONFLICT, &why);
        }
    }
    let t = now();
    for d in req.docs {
        let doc = data.policy.entry(d.name).or_default();
        doc.versions.push(d.text);
        doc.updated_at = t.clone();
        doc.updated_by = api.shared.principal.clone();
    }
    data.policy_version += 1;
    let version = data.policy_version;
    drop(data);
    api.changed();
    axum::Json(json!({ "version": version })).into_response()
}

pub async fn delete(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let names: Vec<String> =
        query_pairs(q.as_deref()).into_iter().filter(|(k, _)| k == "doc").map(|(_, v)| v).collect();
    if names.is_empty() {
        return api_error(StatusCode::BAD_REQUEST, "name the documents to delete with doc=<name>");
    }
    let mut data = api.lock();
    if let Some(missing) = names.iter().find(|n| !data.policy.contains_key(*n)) {
        return api_error(StatusCode::NOT_FOUND, &format!("no policy document {missing:?}; nothing was deleted"));
    }
    for n in &names {
        data.policy.shift_remove(n);
    }
    data.policy_version += 1;
    let version = data.policy_version;
    drop(data);
    api.changed();
    axum::Json(json!({ "version": version })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_seed() {
        assert!(valid_name("new-policy") && valid_name("a_b9"));
        assert!(!valid_name("-x") && !valid_name("") && !valid_name("a/b") && !valid_name("a b"));
    }
}
