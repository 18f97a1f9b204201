//! The daemon's HTTP server: hyper HTTP/1 connections from an accept loop of its own, so that
//! no client can take the daemon down by being slow or many (`axum::serve` has no header
//! timeout and no bound on connections: a few thousand half-sent requests used to hold every
//! file descriptor, and then git could not open the repository either).
//!
//! * A request's head must arrive within `header_timeout` of the connection being ready for
//!   it (a new connection, or a kept-alive one between requests), its body within
//!   `body_timeout` of its head.
//! * At most `max_connections` are open. One more arriving closes the oldest connection with
//!   no request in progress (a slow or idle client), so `/health/live` and real clients still
//!   get in while thousands of half-sent requests are held open elsewhere; when every
//!   connection has a request in progress, the new one is closed instead.
//! * Event streams (`/v1/events`) are requests in progress for as long as they last, so at most
//!   `max_event_streams` of them are open; one more is answered 503.
//! * Out of file descriptors all the same (EMFILE), the loop closes idle connections and pauses
//!   before accepting again, instead of spinning.
//!
//! On shutdown it stops accepting, lets requests in progress finish (idle connections close at
//! once), and drops what is left after `shutdown_grace`.

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_event_streams: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    /// Limits for a process that may have `fd_limit` files open: half of them for connections
    /// (at most 4096), the rest for git, the store, the platform's client and an embedded
    /// sandbox.
    pub fn for_fd_limit(fd_limit: u64) -> Limits {
        let max_connections = (fd_limit / 2).clamp(16, 4096) as usize;
        Limits {
            max_connections,
            max_event_streams: (max_connections / 4).max(1),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The open connections, oldest first, and how to close each.
#[derive(Default)]
struct Connections {
    next: u64,
    open: BTreeMap<u64, Handle>,
}

struct Handle {
    /// Requests in progress (from their head to the end of their answer).
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

impl Connections {
    fn add(&mut self) -> (u64, Arc<AtomicUsize>, Arc<Notify>) {
        let id = self.next;
        self.next += 1;
        let handle = Handle { busy: Arc::new(AtomicUsize::new(0)), close: Arc::new(Notify::new()) };
        let pair = (handle.busy.clone(), handle.close.clone());
        self.open.insert(id, handle);
        (id, pair.0, pair.1)
    }

    /// Close the `n` oldest connections with no request in progress; false if there was none.
    fn close_idle(&mut self, n: usize) -> bool {
        let idle: Vec<u64> =
            self.open.iter().filter(|(_, h)| h.busy.load(Ordering::SeqCst) == 0).map(|(id, _)| *id).take(n).collect();
        for id in &idle {
            if let Some(h) = self.open.remove(id) {
                h.close.notify_one();
            }
        }
        !idle.is_empty()
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Mutex::new(Connections::default()));
    let streams = Arc::new(Semaphore::new(limits.max_event_streams));
    let (stop, stopping) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut warned: Option<Instant> = None;
    let mut warn = |what: &str| {
        // At most one line every ten seconds, however long an attack lasts.
        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!("{what}");
            warned = Some(Instant::now());
        }
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if crate::fds::is_exhaustion(&e) {
                    connections.lock().unwrap().close_idle(16);
                    warn(&format!("cannot accept API connections: {e}; closing idle ones"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (id, busy, close) = {
            let mut c = connections.lock().unwrap();
            if c.open.len() >= limits.max_connections {
                if !c.close_idle(1) {
                    warn(&format!(
                        "{} API connections, all with a request in progress: refusing more until one ends",
                        c.open.len()
                    ));
                    continue;
                }
                warn(&format!("{} API connections open (the limit): closing the oldest idle ones", c.open.len() + 1));
            }
            c.add()
        };
        let _ = stream.set_nodelay(true);
        let service = Service { router: router.clone(), busy, streams: streams.clone(), limits: limits.clone() };
        let (connections, limits, mut stopping) = (connections.clone(), limits.clone(), stopping.clone());
        tasks.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut graceful = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    // Closed to make room: dropping the connection closes its socket.
                    _ = close.notified() => break,
                    _ = stopping.wait_for(|s| *s), if !graceful => {
                        graceful = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            connections.lock().unwrap().open.remove(&id);
        });
    }
    drop(listener);
    stop.send_replace(true);
    let finished = tokio::time::timeout(limits.shutdown_grace, async { while tasks.join_next().await.is_some() {} });
    if finished.await.is_err() {
        tracing::warn!("API connections still open after {:?}: closed", limits.shutdown_grace);
        tasks.abort_all();
    }
}

/// One connection's requests, handed to the router.
#[derive(Clone)]
struct Service {
    router: Router,
    busy: Arc<AtomicUsize>,
    streams: Arc<Semaphore>,
    limits: Limits,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Service {
    type Response = hyper::Response<Tracked>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let busy = Busy::enter(self.busy.clone());
        let (router, streams, body_timeout) = (self.router.clone(), self.streams.clone(), self.limits.body_timeout);
        Box::pin(async move {
            let permit = if req.uri().path() == "/v1/events" {
                match streams.try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        let body = Body::from("{\"message\":\"too many event streams are open; try again later\"}");
                        let mut resp = hyper::Response::new(Tracked { body, _busy: busy, _stream: None });
                        *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        return Ok(resp);
                    }
                }
            } else {
                None
            };
            let req = req.map(|b| Body::new(Deadline { body: b, timer: Box::pin(tokio::time::sleep(body_timeout)) }));
            let resp = tower::ServiceExt::oneshot(router, req).await?;
            Ok(resp.map(|body| Tracked { body, _busy: busy, _stream: permit }))
        })
    }
}

/// Counts a request in progress on its connection until dropped.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(count: Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body, which keeps its request counted (and its event-stream slot taken) until
/// it has been sent or dropped.
pub struct Tracked {
    body: Body,
    _busy: Busy,
    _stream: Option<OwnedSemaphorePermit>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request's body, which fails once `timer` has run out before it has all arrived.
struct Deadline {
    body: Incoming,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err("the request's body did not arrive in time".into())))
            }
            other => other.map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_is_closed_first_and_busy_ones_never() {
        let mut c = Connections::default();
        let (_, busy0, _) = c.add();
        let (_, _, close1) = c.add();
        let (_, _, _) = c.add();
        busy0.fetch_add(1, Ordering::SeqCst);
        assert!(c.close_idle(1));
        assert_eq!(c.open.keys().copied().collect::<Vec<_>>(), [0, 2], "the oldest idle one, not the busy one");
        // Its task is told (a permit is stored for it).
        let notified = close1.notified();
        tokio::pin!(notified);
        assert!(futures::FutureExt::now_or_never(notified).is_some());
        assert!(c.close_idle(5));
        assert!(!c.close_idle(1), "only the busy one is left");
        assert_eq!(c.open.len(), 1);
    }

    #[test]
    fn limits_leave_half_the_descriptors_to_the_rest() {
        assert_eq!(Limits::for_fd_limit(1024).max_connections, 512);
        assert_eq!(Limits::for_fd_limit(1 << 20).max_connections, 4096);
        assert_eq!(Limits::for_fd_limit(20).max_connections, 16);
    }
}
