//! `application/x-json-stream` answers: status 200, then one JSON object a line as tsuru's
//! `SimpleJsonMessageEncoderWriter` writes them (`{"Message", "Timestamp"}`), and, when the
//! operation fails after the stream began, a last `{"Message": "", "Timestamp", "Error"}`
//! line. The `stream_error` fault ends a stream that way on purpose.

use super::{Api, Data, Fail, Req, rfc3339, unix_ms};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

pub use crate::sandbox::StreamFault;

/// What a stream writes, in order: progress messages, waits, and maybe an error.
#[derive(Default)]
pub struct Stream {
    parts: Vec<Part>,
    failed: bool,
}

enum Part {
    Message(String),
    /// Nothing more until this time (Unix ms): units starting.
    Until(u64),
    Error(String),
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// A raw message (tsuru writes console text, newlines included).
    pub fn msg(&mut self, text: impl Into<String>) {
        self.parts.push(Part::Message(text.into()));
    }

    /// `---- text ----` on a line, as tsuru's `streamfmt.FprintlnSectionf`.
    pub fn section(&mut self, text: impl std::fmt::Display) {
        self.msg(format!("---- {text} ----\n"));
    }

    /// ` ---> text` on a line, as `streamfmt.FprintlnActionf`.
    pub fn action(&mut self, text: impl std::fmt::Display) {
        self.msg(format!(" ---> {text}\n"));
    }

    /// Write nothing more before `at_ms`.
    pub fn until(&mut self, at_ms: u64) {
        if at_ms > unix_ms() {
            self.parts.push(Part::Until(at_ms));
        }
    }

    /// End with an `Error` line; what the operation changed must be undone by its caller.
    pub fn fail(&mut self, message: impl Into<String>) {
        self.parts.push(Part::Error(message.into()));
        self.failed = true;
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn into_response(self) -> Response {
        let lines = futures::stream::unfold(self.parts.into_iter(), |mut parts| async move {
            loop {
                match parts.next()? {
                    Part::Until(at) => {
                        let now = unix_ms();
                        if at > now {
                            tokio::time::sleep(Duration::from_millis(at - now)).await;
                        }
                    }
                    Part::Message(m) => return Some((Ok::<Bytes, Infallible>(line(&m, None)), parts)),
                    Part::Error(e) => return Some((Ok(line("", Some(&e))), parts)),
                }
            }
        });
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-json-stream"))],
            Body::from_stream(lines),
        )
            .into_response()
    }
}

fn line(message: &str, error: Option<&str>) -> Bytes {
    let mut v = json!({"Message": message, "Timestamp": rfc3339(unix_ms())});
    if let Some(e) = error {
        v["Error"] = json!(e);
    }
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The `stream_error` fault that applies to this request, if any; `take` counts it.
fn fault_for(api: &Api, req: &Req, take: bool) -> Option<StreamFault> {
    let mut faults = api.shared.faults.lock().unwrap();
    let f = faults.stream_error.as_mut()?;
    if !req.path.contains(&f.path_contains)
        || f.method.as_ref().is_some_and(|m| !m.eq_ignore_ascii_case(req.method.as_str()))
    {
        return None;
    }
    let found = f.clone();
    if take {
        match f.count {
            Some(n) if n <= 1 => faults.stream_error = None,
            Some(n) => f.count = Some(n - 1),
            None => {}
        }
    }
    Some(found)
}

/// Run a streaming operation on the data. `op` checks everything before it changes anything:
/// an `Err` is an ordinary error answer, and a stream it ends with `fail` must have changed
/// nothing. A `stream_error` fault then ends the stream with its `Error` line, and leaves the
/// data as it was unless the fault says `changed`.
pub fn run(
    api: &Api,
    req: &Req,
    op: impl FnOnce(&mut Data, &mut Stream) -> Result<(), Fail>,
) -> Result<Response, Fail> {
    let rollback = fault_for(api, req, false).is_some_and(|f| !f.changed);
    let mut data = api.lock();
    // Copied only when a fault may have to undo the change: the data can be large.
    let before = rollback.then(|| data.clone());
    let mut stream = Stream::new();
    op(&mut data, &mut stream)?;
    if stream.failed() {
        return Ok(stream.into_response());
    }
    match fault_for(api, req, true) {
        Some(fault) => {
            let message = if fault.message.is_empty() {
                "injected fault: the operation failed".to_string()
            } else {
                fault.message
            };
            stream.fail(message);
            match before {
                Some(b) if !fault.changed => *data = b,
                _ => api.changed(),
            }
        }
        None => api.changed(),
    }
    Ok(stream.into_response())
}
