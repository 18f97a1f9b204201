//! A request as the handlers see it (`Req`), a refused request (`Fail`) and the shapes of
//! Marathon's answers: what every handler speaks, and nothing about apps or groups.

use super::ids::resolve;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// One request, as the handlers see it: the path without the DC/OS prefix and the trailing
/// slash, percent-decoded.
pub struct Req {
    pub method: Method,
    pub path: String,
    /// `""` or `"/service/marathon"`, for `Location` headers.
    pub prefix: &'static str,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean query parameter: absent is false; `true/false/1/0` in any case.
    pub fn flag(&self, key: &str) -> Result<bool, Fail> {
        match self.param(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                _ => Err(Fail::status(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter {key}={v:?} is not a boolean (true or false)"),
                )),
            },
        }
    }

    /// The body as JSON, whatever the Content-Type says; an empty body is `null`.
    pub fn json(&self) -> Result<Value, Fail> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| Fail::Json(e.to_string()))
    }

    /// The body as a JSON object (an empty body is an empty object).
    pub fn object(&self) -> Result<Map<String, Value>, Fail> {
        match self.json()? {
            Value::Object(m) => Ok(m),
            Value::Null => Ok(Map::new()),
            _ => Err(Fail::invalid("/", "error.expected.jsobject")),
        }
    }

    /// Whether the client asked for text rather than JSON.
    pub fn wants_text(&self) -> bool {
        let accept = self.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        accept.contains("text/plain") && !accept.contains("application/json")
    }
}

/// A refused request.
#[derive(Debug)]
pub enum Fail {
    Status(StatusCode, String),
    /// 422 with one detail per `(path, error)`.
    Invalid(Vec<(String, String)>),
    /// 400: the body is not JSON.
    Json(String),
    /// 409: the apps are locked by these deployments.
    Locked(Vec<String>),
    /// Any other body.
    Body(StatusCode, Value),
}

impl Fail {
    pub fn status(code: StatusCode, message: impl Into<String>) -> Fail {
        Fail::Status(code, message.into())
    }

    pub fn invalid(path: &str, error: impl Into<String>) -> Fail {
        Fail::Invalid(vec![(path.to_string(), error.into())])
    }

    pub fn no_app(id: &str) -> Fail {
        Fail::status(StatusCode::NOT_FOUND, format!("App '{id}' does not exist"))
    }

    pub fn no_group(id: &str) -> Fail {
        Fail::status(StatusCode::NOT_FOUND, format!("Group '{id}' does not exist"))
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Status(code, message) => error(code, &message),
            Fail::Invalid(details) => {
                let mut by_path: Vec<(String, Vec<String>)> = Vec::new();
                for (path, e) in details {
                    match by_path.iter_mut().find(|(p, _)| *p == path) {
                        Some((_, errors)) => errors.push(e),
                        None => by_path.push((path, vec![e])),
                    }
                }
                let details: Vec<Value> = by_path.into_iter().map(|(p, e)| json!({"path": p, "errors": e})).collect();
                reply(StatusCode::UNPROCESSABLE_ENTITY, &json!({"message": "Object is not valid", "details": details}))
            }
            Fail::Json(e) => reply(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e]}]}),
            ),
            Fail::Locked(ids) => {
                let deployments: Vec<Value> = ids.iter().map(|id| json!({ "id": id })).collect();
                reply(
                    StatusCode::CONFLICT,
                    &json!({
                        "deployments": deployments,
                        "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'."
                    }),
                )
            }
            Fail::Body(code, body) => reply(code, &body),
        }
    }
}

/// A Marathon error answer: `{"message": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    reply(status, &json!({ "message": message }))
}

/// A JSON answer.
pub fn reply(status: StatusCode, body: &Value) -> Response {
    raw_json(status, serde_json::to_vec(body).unwrap_or_default())
}

pub fn raw_json(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// The answer of a write that started a deployment: `{"deploymentId", "version"}`, with the
/// deployment's id in a header too.
pub fn deployed(status: StatusCode, deployment: &str, version: &str, location: Option<String>) -> Response {
    let mut r = reply(status, &json!({"deploymentId": deployment, "version": version}));
    if let Ok(v) = HeaderValue::from_str(deployment) {
        r.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

pub fn not_allowed() -> Fail {
    Fail::status(StatusCode::METHOD_NOT_ALLOWED, "HTTP method not allowed")
}

pub fn no_route() -> Fail {
    Fail::status(StatusCode::NOT_FOUND, "no such resource")
}

/// An id from a URL path: relative to the root; invalid is 422.
pub fn path_id(raw: &str) -> Result<String, Fail> {
    let id = resolve("/", raw).map_err(|e| Fail::invalid("/id", e))?;
    if id == "/" {
        return Err(Fail::invalid("/id", "an app id cannot be the root"));
    }
    Ok(id)
}
