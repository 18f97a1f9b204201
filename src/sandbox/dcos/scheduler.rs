//! What the admin router hands a scheduler's handlers (`sdk`, `cassandra`, `pods`) and what
//! they answer: the request below the service's prefix, the outcome, and Jersey's bare answers.

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request to a scheduler: the path below its service prefix (`/v1/plans/deploy`,
/// percent-decoded, no trailing slash), the query, the body.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// Whether it may change something: the SDK's commands are POST, seed 000's continue is
    /// PUT; both are taken.
    pub fn command(&self) -> bool {
        self.method == Method::POST || self.method == Method::PUT
    }
}

/// What a scheduler's handler answers, and whether it changed the state.
pub struct Outcome {
    pub response: Response,
    pub changed: bool,
}

impl Outcome {
    pub fn read(response: Response) -> Outcome {
        Outcome { response, changed: false }
    }

    pub fn wrote(response: Response) -> Outcome {
        Outcome { response, changed: true }
    }
}

/// A path a scheduler does not serve (Jersey's answer).
pub fn not_found() -> Response {
    super::text_reply(StatusCode::NOT_FOUND, "HTTP 404 Not Found")
}

pub fn not_allowed() -> Response {
    super::text_reply(StatusCode::METHOD_NOT_ALLOWED, "HTTP 405 Method Not Allowed")
}

/// An empty answer with this status (upstream's `Response.status(...).build()`).
pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}
