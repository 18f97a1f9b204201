//! Typed calls to the tsuru API (seed 002), at the seed's versioned paths. Bodies are JSON
//! (tsuru's `ParseInput` takes JSON as well as forms, digest §1.3), DELETE parameters go in the
//! query string (tsuru reads them from the form only). Lists answer 204 when empty; the job
//! list answers 404 `Not founds.` when there is none (seed L2257): both are read as empty.

use super::stream;
use crate::http::{HttpClient, Idempotent};
use crate::providers::{ApiError, Connection};
use reqwest::Method;
use serde_json::Value;

pub struct Client {
    http: HttpClient,
}

/// A path segment or query value, percent-encoded.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(conn: &Connection) -> anyhow::Result<Client> {
        Ok(Client { http: HttpClient::new(conn)? })
    }

    /// A list: an empty answer (204) is an empty list.
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        match self.http.call(Method::GET, path, None, Idempotent::Yes).await? {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(ApiError::other("GET", path, format!("expected a JSON list, got {other}"))),
        }
    }

    /// `GET /1.13/jobs`: its 404 `Not founds.` (no job) is empty; a route's 404 is not.
    pub async fn jobs(&self) -> Result<Vec<Value>, ApiError> {
        match self.list("/1.13/jobs").await {
            Err(e) if e.is_not_found() && !e.message.contains("page not found") => Ok(Vec::new()),
            other => other,
        }
    }

    /// A request whose answer is JSON or empty.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<Option<Value>, ApiError> {
        self.http.call(method, path, body, idempotent).await
    }

    /// A request tsuru answers with a stream: read to its end; an `Error` line fails it.
    pub async fn streamed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<(), ApiError> {
        let bytes = self.http.call_raw(method.clone(), path, body, idempotent).await?;
        for m in stream::read(method.as_str(), path, &bytes)? {
            // Its length only: a line may echo a value (a private env var), and no redactor is at hand.
            tracing::debug!(%path, message_bytes = m.len(), "tsuru");
        }
        Ok(())
    }
}

impl Client {
    /// `GET /1.0/apps/{app}/env`: every variable (private ones masked); none is an empty list.
    pub async fn list_or_empty_env(&self, app: &str) -> Result<Vec<Value>, ApiError> {
        self.list(&format!("/1.0/apps/{}/env", enc(app))).await
    }
}
