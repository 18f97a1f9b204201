//! Typed calls to the Marathon REST API (seed 004), and the wait for deployments.
//!
//! Every change Marathon accepts answers its new `version`, and most a `deploymentId` too; the
//! change is carried out by a deployment and is done when that deployment leaves
//! `GET /v2/deployments`. A group delete answers only `{"version"}` (seed 004 L1085-1110): its
//! end is signalled by `group_change_success` or `group_change_failed` for that version. capstan
//! follows `GET /v2/events` (server-sent events, one connection per process) for those and for
//! `deployment_success` and `deployment_failed`, so a step ends the moment Marathon says so,
//! and polls `/v2/deployments` slowly besides (by id, or by version), in case the stream misses
//! something.

use crate::http::{HttpClient, Idempotent};
use crate::providers::{ApiError, Connection};
use reqwest::Method;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub struct Client {
    http: HttpClient,
    events: Arc<Events>,
    /// The event stream's reader, started on first use, stopped with the client.
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.reader.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Deployments and group changes Marathon has reported finished, and a wake-up for whoever
/// waits on one.
#[derive(Default)]
struct Events {
    finished: Mutex<Finished>,
    notify: Notify,
    /// The stream is connected: events of deployments started from now on will arrive.
    attached: AtomicBool,
    attach: Notify,
}

#[derive(Default)]
struct Finished {
    /// `deployment <id>` or `version <version>` → whether it succeeded.
    ok: HashMap<String, bool>,
    order: VecDeque<String>,
}

impl Finished {
    fn of(&self, ticket: &Ticket) -> Option<bool> {
        let by_id = ticket.deployment.as_ref().and_then(|d| self.ok.get(&format!("deployment {d}")));
        let by_version = ticket.version.as_ref().and_then(|v| self.ok.get(&format!("version {v}")));
        by_id.or(by_version).copied()
    }
}

/// What a change Marathon accepted can be followed by: the deployment it started, and the
/// version it made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ticket {
    pub deployment: Option<String>,
    pub version: Option<String>,
}

impl Ticket {
    /// The ticket an answer carries, if it carries one.
    fn of(answer: Option<Value>) -> Option<Ticket> {
        let field = |k: &str| answer.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
        let t = Ticket { deployment: field("deploymentId"), version: field("version") };
        (t.deployment.is_some() || t.version.is_some()).then_some(t)
    }

    /// How messages name it.
    pub fn describe(&self) -> String {
        match (&self.deployment, &self.version) {
            (Some(d), _) => format!("deployment {d}"),
            (None, Some(v)) => format!("the deployment of version {v}"),
            (None, None) => "the deployment".to_string(),
        }
    }
}

/// At most this many finished deployments are remembered (others' deployments arrive too).
const FINISHED_LIMIT: usize = 10_000;

/// How a deployment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    /// It left `/v2/deployments` without an event saying how (finished, or cancelled).
    Gone,
}

fn with_force(path: &str, force: bool) -> String {
    if force { format!("{path}?force=true") } else { path.to_string() }
}

impl Client {
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        Ok(Client { http: HttpClient::new(conn)?, events: Arc::default(), reader: Mutex::new(None) })
    }

    /// The whole tree in one call: every group with its apps.
    pub async fn root_group(&self) -> Result<Value, ApiError> {
        let path = "/v2/groups?embed=group.groups&embed=group.apps";
        self.http
            .call(Method::GET, path, None, Idempotent::Yes)
            .await?
            .ok_or_else(|| ApiError::other("GET", path, "empty answer"))
    }

    /// `PUT /v2/{apps|groups}/{id}`: creates the app or group, or changes it (fields not in the
    /// body keep their values). Sending it twice does no harm, so it is retried like a read.
    pub async fn put(&self, collection: &str, id: &str, body: &Value, force: bool) -> Result<Option<Ticket>, ApiError> {
        let path = with_force(&format!("/v2/{collection}{id}"), force);
        Ok(Ticket::of(self.http.call(Method::PUT, &path, Some(body), Idempotent::Yes).await?))
    }

    /// `PUT /v2/apps` with a list of apps: creates or changes them all in one deployment
    /// (fields not in a body keep their values); sending it twice does no harm.
    pub async fn put_apps(&self, bodies: &[Value], force: bool) -> Result<Option<Ticket>, ApiError> {
        let path = with_force("/v2/apps", force);
        let body = Value::Array(bodies.to_vec());
        Ok(Ticket::of(self.http.call(Method::PUT, &path, Some(&body), Idempotent::Yes).await?))
    }

    /// `GET /v2/groups/{id}` with its apps and subgroups; None when there is no such group.
    pub async fn group(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let path = format!("/v2/groups{}?embed=group.groups&embed=group.apps", if id == "/" { "" } else { id });
        match self.http.call(Method::GET, &path, None, Idempotent::Yes).await {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v2/{apps|groups}/{id}`; one that is not there is already deleted.
    pub async fn delete(&self, collection: &str, id: &str, force: bool) -> Result<Option<Ticket>, ApiError> {
        let path = with_force(&format!("/v2/{collection}{id}"), force);
        match self.http.call(Method::DELETE, &path, None, Idempotent::Yes).await {
            Ok(v) => Ok(Ticket::of(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marathon's own plan for making group `id` equal to `body` (`PUT ...?dryRun=true`).
    pub async fn dry_run(&self, id: &str, body: &Value) -> Result<Value, ApiError> {
        let path = format!("/v2/groups{}?dryRun=true", if id == "/" { "" } else { id });
        self.http
            .call(Method::PUT, &path, Some(body), Idempotent::Yes)
            .await?
            .ok_or_else(|| ApiError::other("PUT", &path, "empty answer"))
    }

    /// The running deployments.
    pub async fn deployments(&self) -> Result<Vec<Value>, ApiError> {
        match self.http.call(Method::GET, "/v2/deployments", None, Idempotent::Yes).await? {
            Some(Value::Array(list)) => Ok(list),
            _ => Ok(Vec::new()),
        }
    }

    /// Make sure the event stream is connected before a change is sent, so its deployment's
    /// end cannot be missed. Gives up quickly: the slow poll still sees every deployment end.
    pub async fn follow_events(&self) {
        if self.events.attached.load(Ordering::SeqCst) {
            return;
        }
        let attached = self.events.attach.notified();
        tokio::pin!(attached);
        attached.as_mut().enable();
        {
            let mut reader = self.reader.lock().unwrap();
            if reader.as_ref().is_none_or(|t| t.is_finished()) {
                let stream = self.http.stream(
                    "/v2/events?event_type=deployment_success&event_type=deployment_failed\
                     &event_type=group_change_success&event_type=group_change_failed",
                );
                let events = self.events.clone();
                *reader = Some(tokio::spawn(read_events(stream, events)));
            }
        }
        if self.events.attached.load(Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), attached).await;
    }

    /// Wait until deployment `id` ends; None when `deadline` passes first.
    pub async fn wait_deployment(&self, id: &str, deadline: Instant) -> Result<Option<Ended>, ApiError> {
        self.wait(&Ticket { deployment: Some(id.to_string()), version: None }, deadline).await
    }

    /// Wait until the change a ticket follows ends: its deployment's event, or the group change
    /// event of its version, or (the slow poll) neither its deployment nor one of its version
    /// left in `/v2/deployments`. None when `deadline` passes first.
    pub async fn wait(&self, ticket: &Ticket, deadline: Instant) -> Result<Option<Ended>, ApiError> {
        let mut poll = Duration::from_millis(if self.events.attached.load(Ordering::SeqCst) { 1000 } else { 20 });
        let mut next_poll = Instant::now() + poll;
        let field = |d: &Value, k: &str, want: &Option<String>| {
            want.is_some() && d.get(k).and_then(Value::as_str) == want.as_deref()
        };
        loop {
            let woken = self.events.notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(ok) = self.events.finished.lock().unwrap().of(ticket) {
                return Ok(Some(if ok { Ended::Succeeded } else { Ended::Failed }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now >= next_poll {
                let running = self
                    .deployments()
                    .await?
                    .iter()
                    .any(|d| field(d, "id", &ticket.deployment) || field(d, "version", &ticket.version));
                if !running {
                    // Gone from the list: ended. An event may say how.
                    return Ok(Some(match self.events.finished.lock().unwrap().of(ticket) {
                        Some(false) => Ended::Failed,
                        _ => Ended::Gone,
                    }));
                }
                let streaming = self.events.attached.load(Ordering::SeqCst);
                poll = if streaming { Duration::from_secs(2) } else { (poll * 2).min(Duration::from_millis(500)) };
                next_poll = Instant::now() + poll;
                continue;
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep_until(next_poll.min(deadline).into()) => {}
            }
        }
    }
}

/// Read `data:` lines of the event stream and record the deployments they say ended; reconnect
/// with backoff when the stream breaks.
async fn read_events(stream: crate::http::Stream, events: Arc<Events>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match stream.open().await {
            Ok(mut resp) => {
                events.attached.store(true, Ordering::SeqCst);
                events.attach.notify_waiters();
                backoff = Duration::from_millis(20);
                let mut lines = Lines::default();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    lines.feed(&chunk, |line| {
                        if let Some(data) = line.strip_prefix(b"data:") {
                            record(&events, data);
                        }
                    });
                }
                events.attached.store(false, Ordering::SeqCst);
            }
            Err(e) => tracing::debug!(%e, "cannot follow Marathon's event stream; polling meanwhile"),
        }
        // Whoever waits meanwhile polls; wake them so they notice the stream is down.
        events.notify.notify_waiters();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The longest event line kept: Marathon's events are a few KiB; a stream that sends more
/// without a newline (broken, or not Marathon) has that line dropped, not kept in memory.
const MAX_EVENT_LINE: usize = 1 << 20;

/// Splits a byte stream into lines, each at most `MAX_EVENT_LINE` long (a longer one is skipped
/// to its end).
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// Inside a line that grew too long: everything up to its newline is dropped.
    skipping: bool,
}

impl Lines {
    fn feed(&mut self, mut chunk: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            if !self.skipping && self.buf.len() + nl <= MAX_EVENT_LINE {
                self.buf.extend_from_slice(&chunk[..nl]);
                line(&self.buf);
            }
            self.buf.clear();
            self.skipping = false;
            chunk = &chunk[nl + 1..];
        }
        if !self.skipping && self.buf.len() + chunk.len() <= MAX_EVENT_LINE {
            self.buf.extend_from_slice(chunk);
        } else {
            self.buf.clear();
            self.skipping = true;
        }
    }
}

fn record(events: &Events, data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Value>(data) else { return };
    let (ok, key) = match event.get("eventType").and_then(Value::as_str) {
        Some("deployment_success") => (true, "id"),
        Some("deployment_failed") => (false, "id"),
        Some("group_change_success") => (true, "version"),
        Some("group_change_failed") => (false, "version"),
        _ => return,
    };
    let Some(value) = event.get(key).and_then(Value::as_str) else { return };
    let name = if key == "id" { format!("deployment {value}") } else { format!("version {value}") };
    let mut f = events.finished.lock().unwrap();
    if f.ok.insert(name.clone(), ok).is_none() {
        f.order.push_back(name);
        if f.order.len() > FINISHED_LIMIT
            && let Some(old) = f.order.pop_front()
        {
            f.ok.remove(&old);
        }
    }
    drop(f);
    events.notify.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines.feed(c, |l| out.push(String::from_utf8_lossy(l).into_owned()));
        }
        out
    }

    #[test]
    fn lines_are_joined_across_chunks_and_split_within_one() {
        assert_eq!(split(&[b"data: {\"a\"", b":1}\nda", b"ta: 2\n\ndata: 3\n"]), ["data: {\"a\":1}", "data: 2", "", "data: 3"]);
    }

    #[test]
    fn a_line_longer_than_the_bound_is_dropped_and_the_next_one_kept() {
        let long = vec![b'x'; MAX_EVENT_LINE / 2 + 1];
        // Three halves of a line without a newline: more than the bound, never held whole.
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for _ in 0..3 {
            lines.feed(&long, |l| out.push(l.len()));
            assert!(lines.buf.len() <= MAX_EVENT_LINE);
        }
        lines.feed(b"tail\ndata: ok\n", |l| out.push(l.len()));
        assert_eq!(out, [b"data: ok".len()]);
        let exact = vec![b'y'; MAX_EVENT_LINE];
        assert_eq!(split(&[&exact, b"\n"]), [String::from_utf8(exact.clone()).unwrap()]);
    }
}
