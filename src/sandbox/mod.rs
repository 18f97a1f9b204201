//! Faithful local emulations of the platforms' REST APIs, served on loopback.
//!
//! A sandbox is capstan's embedded default target and what every test and benchmark talks to
//! over real HTTP. What all platforms share lives here: the HTTP server (hyper, with an accept
//! loop of its own so a request can have its connection dropped on purpose), the state file
//! and its background writer, the request log tests read, latency, the token check, and the
//! fault knobs (5xx answers, dropped connections before or after a change, latency with jitter,
//! rollout time, requests held until released), settable at start and at run time through
//! `/_sandbox/faults`.
//!
//! Admin endpoints live under `/_sandbox` (never delayed, faulted, recorded or token-checked):
//! `GET/DELETE /_sandbox/requests` (each request with its method, path, query, status, body and
//! `at_ms`, when the platform took it), `GET /_sandbox/requests/count`, `GET/PUT
//! /_sandbox/faults`, `GET /_sandbox/info`.
//!
//! Each platform is one directory with its router and state, and one name in [`emulators!`]; the platform code
//! never imports capstan's providers, so sandbox and provider are two independent readings of
//! the platform's API reference.

/// The emulator registry: one folder per platform (`src/sandbox/<p>/`, whose `mod.rs` has a
/// `pub static EMULATOR: Emulator`), and its name here.
macro_rules! emulators {
    ($($p:ident),+ $(,)?) => {
        $(pub mod $p;)+
        /// Every platform the sandbox serves, in registry order (the first is `serve`'s default).
        pub static EMULATORS: &[&Emulator] = &[$(&$p::EMULATOR),+];
    };
}

emulators!(apcera, marathon, tsuru, dcos);

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// Loads a platform's state (from the state file, if any) and builds its API's router.
pub type StartEmulator = fn(Option<&std::path::Path>, Arc<Shared>) -> anyhow::Result<(Router, Arc<dyn PlatformState>)>;

/// One platform's emulation, as its folder registers it.
pub struct Emulator {
    /// The platform's name, as capstan.yaml and `--platform` spell it.
    pub name: &'static str,
    /// The identity requests act as unless told (`created_by`, the default namespace).
    pub principal: &'static str,
    /// An error answer in the platform's own shape (the token check and injected faults are
    /// answered with it, before the platform's handlers); `retry` says the client may retry.
    pub error: fn(StatusCode, &str, bool) -> Response,
    /// Whether a request's headers carry the token, as the platform reads `Authorization`
    /// ([`bearer_token_ok`] unless the platform reads it its own way).
    pub token_ok: fn(&HeaderMap, &str) -> bool,
    /// Load the platform's state (from the state file, when there is one) and build the router
    /// of its API. A platform that embeds another's API mounts that one's router itself.
    pub start: StartEmulator,
}

/// A platform the sandbox serves: an entry of [`EMULATORS`].
#[derive(Clone, Copy)]
pub struct Platform(&'static Emulator);

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl PartialEq for Platform {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for Platform {}

impl std::str::FromStr for Platform {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match EMULATORS.iter().find(|e| e.name == s) {
            Some(e) => Ok(Platform(e)),
            None => {
                let names: Vec<&str> = EMULATORS.iter().map(|e| e.name).collect();
                anyhow::bail!("the sandbox does not serve {s:?}: expected {}", names.join(" or "))
            }
        }
    }
}

impl Platform {
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    fn error(&self, status: StatusCode, message: &str, retry: bool) -> Response {
        (self.0.error)(status, message, retry)
    }

    fn token_ok(&self, headers: &HeaderMap, token: &str) -> bool {
        (self.0.token_ok)(headers, token)
    }
}

/// Faults and delays, changeable while the sandbox runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of platform requests answered 500, 502, 503 or 504 without being carried out.
    pub fail_rate: f64,
    /// Share of platform requests whose connection is dropped: half before the request is
    /// carried out, half after (the change is made, the answer is lost).
    pub reset_rate: f64,
    /// Added before every platform answer.
    pub latency_ms: u64,
    /// Up to this much more, at random.
    pub latency_jitter_ms: u64,
    /// How long asynchronous work takes (job instances starting, tasks).
    pub rollout_ms: u64,
    /// The methods `fail_rate` and `reset_rate` apply to (`["PUT"]`); empty: every method.
    pub methods: Vec<String>,
    /// Marathon: plan deployments as Marathon 1.x does, the apps at one dependency depth in one
    /// step (default: one app per step, as seed 004's dry-run example shows).
    pub grouped_steps: bool,
    /// Platforms that answer with JSON streams: end matching streams with an error line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_error: Option<StreamFault>,
    /// Platforms whose services run plans: how long one step of a service's plan takes (default 5 ms).
    pub step_ms: Option<u64>,
    /// Platforms whose services run plans: the step of a service's plan that fails when it starts, with this message.
    pub fail_step: Option<FailStep>,
    /// Requests (`"PUT /v1/sim"`: method and path) held before they are carried out, until a
    /// change of the knobs no longer names them: a test can act between two of a client's
    /// requests. `/_sandbox/requests/count` says how many are held.
    pub hold: Vec<String>,
}

/// Make streamed answers end with an error line after their 200 (`/_sandbox/faults`:
/// `{"stream_error": {...}}`), for the platforms whose answers are JSON streams.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamFault {
    /// Only streams whose path (without its version prefix) contains this; all when empty.
    pub path_contains: String,
    /// Only streams of this method (`POST`, `PUT`, `DELETE`); any when absent.
    pub method: Option<String>,
    /// The error line's text.
    pub message: String,
    /// Carry the operation out before failing (default: change nothing).
    pub changed: bool,
    /// Fail this many streams, then clear the fault; every matching stream when absent.
    pub count: Option<u64>,
}

/// The `fail_step` fault, for platforms whose services run plans of named steps: the step of
/// that service (any of its plans) named so fails with `message` whenever it starts, until the
/// fault is cleared.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailStep {
    pub service: String,
    pub step: String,
    #[serde(default)]
    pub message: String,
}

impl FailStep {
    pub fn message(&self) -> String {
        if self.message.is_empty() {
            format!("injected fault: step {} failed", self.step)
        } else {
            self.message.clone()
        }
    }
}

#[derive(Clone, Debug)]
pub struct SandboxOptions {
    pub platform: Platform,
    pub listen: SocketAddr,
    /// Where the platform's state is kept across restarts (None: memory only).
    pub state_file: Option<PathBuf>,
    pub latency_ms: u64,
    /// When set, every platform request must carry it (`Authorization: Bearer <token>` or
    /// `Authorization: token=<token>`).
    pub token: Option<String>,
    pub rollout_ms: u64,
    /// The identity requests act as (`created_by`, the default namespace).
    pub principal: String,
    pub faults: Faults,
    /// Seed for the fault knobs' randomness, so a run can be repeated.
    pub seed: Option<u64>,
}

impl SandboxOptions {
    pub fn new(platform: Platform) -> Self {
        SandboxOptions {
            platform,
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            state_file: None,
            latency_ms: 0,
            token: None,
            rollout_ms: 0,
            principal: platform.0.principal.into(),
            faults: Faults::default(),
            seed: None,
        }
    }
}

/// One recorded platform request.
#[derive(Clone, Debug, Serialize)]
pub struct Recorded {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: Value,
    /// When the platform took it (after any injected latency), in Unix milliseconds: the clock
    /// of the platform's own times (Marathon's versions, a task's `startedAt`).
    pub at_ms: u64,
    /// The client's `User-Agent` (capstan's names its process: several daemons sharing a store
    /// are told apart by it).
    pub user_agent: String,
}

const LOG_LIMIT: usize = 100_000;

/// What every request handler of every platform can reach.
pub struct Shared {
    pub platform: Platform,
    pub faults: Mutex<Faults>,
    /// Notified when the fault knobs change, so timers that depend on them (rollout) re-plan.
    pub faults_changed: Notify,
    rng: Mutex<rand::rngs::SmallRng>,
    token: Option<String>,
    pub principal: String,
    /// The sandbox's own base URL, for `Location` headers and task URLs.
    pub base_url: String,
    log: Mutex<VecDeque<Recorded>>,
    seq: AtomicU64,
    /// Requests waiting on `Faults::hold`, and the wake-up for them when the knobs change.
    held: AtomicU64,
    hold_changed: Notify,
    persist: Persister,
}

impl Shared {
    pub fn rollout(&self) -> Duration {
        Duration::from_millis(self.faults.lock().unwrap().rollout_ms)
    }

    /// Tell the writer the state changed.
    pub fn changed(&self) {
        self.persist.mark();
    }
}

/// Writes the platform's state in the background: every change marks it dirty, one write at a
/// time writes the latest snapshot to a temporary file and renames it over the state file.
struct Persister {
    dirty: AtomicBool,
    wake: Notify,
}

impl Persister {
    fn mark(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// A platform's state, as its sandbox keeps it.
pub trait PlatformState: Send + Sync + 'static {
    /// The state as JSON, to write to the state file.
    fn snapshot(&self) -> anyhow::Result<Vec<u8>>;
}

pub struct Sandbox {
    url: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
    flush: Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>,
}

impl Sandbox {
    /// Bind, load the state file if there is one, and serve; returns once the socket accepts
    /// connections.
    pub async fn start(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .with_context(|| format!("cannot listen on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let mut faults = opts.faults.clone();
        faults.latency_ms = faults.latency_ms.max(opts.latency_ms);
        faults.rollout_ms = faults.rollout_ms.max(opts.rollout_ms);
        let rng = match opts.seed {
            Some(s) => rand::rngs::SmallRng::seed_from_u64(s),
            None => rand::rngs::SmallRng::from_os_rng(),
        };
        let shared = Arc::new(Shared {
            platform: opts.platform,
            faults: Mutex::new(faults),
            faults_changed: Notify::new(),
            rng: Mutex::new(rng),
            token: opts.token.clone(),
            principal: opts.principal.clone(),
            base_url: url.clone(),
            log: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(1),
            held: AtomicU64::new(0),
            hold_changed: Notify::new(),
            persist: Persister { dirty: AtomicBool::new(false), wake: Notify::new() },
        });
        let (platform_router, state) = (opts.platform.0.start)(opts.state_file.as_deref(), shared.clone())?;
        let platform_name = opts.platform.name();
        let router = Router::new()
            .route("/_sandbox/requests", axum::routing::get(get_requests).delete(clear_requests))
            .route("/_sandbox/requests/count", axum::routing::get(count_requests))
            .route("/_sandbox/faults", axum::routing::get(get_faults).put(put_faults))
            .route(
                "/_sandbox/info",
                axum::routing::get(move || async move { axum::Json(json!({ "platform": platform_name })) }),
            )
            .with_state(shared.clone())
            .merge(platform_router.layer(axum::middleware::from_fn_with_state(shared.clone(), platform_layer)));

        let flush: Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync> = {
            let state = state.clone();
            let file = opts.state_file.clone();
            // One write at a time, the snapshot taken inside: the final write at shutdown
            // waits for a background one still running (aborting the writer task does not
            // stop its blocking write), and the newest snapshot is the one left on disk.
            let one_at_a_time = Arc::new(Mutex::new(()));
            Arc::new(move || {
                let _turn = one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
                match &file {
                    Some(f) => write_atomically(f, &state.snapshot()?),
                    None => Ok(()),
                }
            })
        };
        let writer = {
            let shared = shared.clone();
            let flush = flush.clone();
            tokio::spawn(async move {
                loop {
                    shared.persist.wake.notified().await;
                    while shared.persist.dirty.swap(false, Ordering::SeqCst) {
                        let flush = flush.clone();
                        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || flush()).await {
                            tracing::error!("cannot write the sandbox state: {e:#}");
                        }
                    }
                }
            })
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let server = tokio::spawn(accept_loop(listener, router, shared.clone(), stop_rx));
        Ok(Sandbox { url, addr, stop: Some(stop_tx), server, writer, shared, flush })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving, give requests in flight a moment to finish, and write the state.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.server.abort();
        self.writer.abort();
        let flush = self.flush.clone();
        tokio::task::spawn_blocking(move || flush()).await??;
        let _ = &self.shared;
        Ok(())
    }
}

/// A platform's state as its state file holds it, or its empty state when there is no file yet.
pub fn read_state<T: serde::de::DeserializeOwned + Default>(state_file: Option<&std::path::Path>) -> anyhow::Result<T> {
    match state_file {
        Some(p) if p.exists() => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read the sandbox state {}", p.display()))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("the sandbox state {} is unreadable: {e}", p.display()))
        }
        _ => Ok(T::default()),
    }
}

/// The state to write: copied under the lock, serialised outside it, so requests are not held
/// up by the writer.
pub fn snapshot_of<T: Clone + Serialize>(data: &Mutex<T>) -> anyhow::Result<Vec<u8>> {
    let copy = data.lock().unwrap().clone();
    Ok(serde_json::to_vec(&copy)?)
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    // A file of our own, never one a symlink left there (in a shared directory) points to.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Dropping this ends the request's connection without an answer (a "reset" fault).
#[derive(Clone)]
struct ConnectionKill(Arc<Mutex<Option<oneshot::Sender<()>>>>);

impl ConnectionKill {
    fn fire(&self) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("sandbox accept failed: {e}");
                    // Out of file descriptors, accept fails at once again: pause, do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let _ = &shared;
        connections.spawn(async move {
            let (kill_tx, kill_rx) = oneshot::channel();
            let kill = ConnectionKill(Arc::new(Mutex::new(Some(kill_tx))));
            // Kept to set SO_LINGER to zero, so a killed connection is reset, not closed.
            let std_stream = stream.into_std().ok();
            let Some(std_stream) = std_stream else { return };
            let resetter = std_stream.try_clone().ok();
            let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else { return };
            let service = tower::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(kill.clone());
                let router = router.clone();
                async move { tower::ServiceExt::oneshot(router, req.map(Body::new)).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::select! {
                _ = conn => {}
                _ = kill_rx => {
                    if let Some(s) = resetter {
                        let _ = socket_linger_zero(&s);
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // In flight: a short grace period, then whatever is left is dropped.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

fn socket_linger_zero(s: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// What happens to one platform request before and after its handler: the token check,
/// latency, faults, and the request log.
async fn platform_layer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let kill = req.extensions().get::<ConnectionKill>().cloned();
    let (parts, body) = req.into_parts();
    let user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect::<String>();
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let logged_body =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };

    let (delay, fail, reset) = {
        let faults = shared.faults.lock().unwrap().clone();
        let mut rng = shared.rng.lock().unwrap();
        let jitter = if faults.latency_jitter_ms > 0 { rng.random_range(0..=faults.latency_jitter_ms) } else { 0 };
        let faulted = faults.methods.is_empty() || faults.methods.iter().any(|m| m.eq_ignore_ascii_case(&method));
        let fail = (faulted && faults.fail_rate > 0.0 && rng.random_bool(faults.fail_rate.clamp(0.0, 1.0)))
            .then(|| [500u16, 502, 503, 504][rng.random_range(0..4)]);
        let reset = (faulted && faults.reset_rate > 0.0 && rng.random_bool(faults.reset_rate.clamp(0.0, 1.0)))
            .then(|| rng.random_bool(0.5));
        (faults.latency_ms + jitter, fail, reset)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let key = format!("{method} {path}");
    if shared.faults.lock().unwrap().hold.contains(&key) {
        shared.held.fetch_add(1, Ordering::SeqCst);
        loop {
            let released = shared.hold_changed.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !shared.faults.lock().unwrap().hold.contains(&key) {
                break;
            }
            released.await;
        }
        shared.held.fetch_sub(1, Ordering::SeqCst);
    }
    let at_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let record = |status: u16| {
        let mut log = shared.log.lock().unwrap();
        log.push_back(Recorded {
            seq: shared.seq.fetch_add(1, Ordering::SeqCst),
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status,
            body: logged_body.clone(),
            at_ms,
            user_agent: user_agent.clone(),
        });
        if log.len() > LOG_LIMIT {
            log.pop_front();
        }
    };
    if let Some(token) = &shared.token
        && !shared.platform.token_ok(&parts.headers, token)
    {
        record(401);
        return shared.platform.error(StatusCode::UNAUTHORIZED, "missing or invalid Authorization header", false);
    }
    if let Some(code) = fail {
        record(code);
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return shared.platform.error(status, "injected fault: the platform is unavailable, try again", true);
    }
    if let (Some(before), Some(kill)) = (reset, &kill)
        && before
    {
        record(0);
        kill.fire();
        return std::future::pending().await;
    }
    let req = Request::from_parts(parts, Body::from(bytes));
    let response = next.run(req).await;
    record(response.status().as_u16());
    if let (Some(false), Some(kill)) = (reset, &kill) {
        // The change is made; the answer never arrives.
        kill.fire();
        return std::future::pending().await;
    }
    response
}

/// `Authorization: Bearer <token>` or `Authorization: token=<token>`: most platforms' reading.
pub fn bearer_token_ok(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token=")))
        .is_some_and(|t| t.trim() == token)
}

async fn get_requests(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<Recorded>> {
    axum::Json(shared.log.lock().unwrap().iter().cloned().collect())
}

/// How many requests the log holds, and how many of them could change something (not GET):
/// cheap enough to poll every few milliseconds while a test waits for the Nth change.
async fn count_requests(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let log = shared.log.lock().unwrap();
    let mutating = log.iter().filter(|r| r.method != "GET").count();
    let held = shared.held.load(Ordering::SeqCst);
    axum::Json(json!({ "requests": log.len(), "mutating": mutating, "held": held }))
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.log.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> axum::Json<Faults> {
    axum::Json(shared.faults.lock().unwrap().clone())
}

async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            *shared.faults.lock().unwrap() = f.clone();
            shared.faults_changed.notify_one();
            shared.hold_changed.notify_waiters();
            axum::Json(f).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({ "message": e.to_string() }))).into_response(),
    }
}

/// Query parameters, repeatable ones kept in order.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Undo percent-encoding; `plus_is_space` for query strings (a path keeps its `+`).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if plus_is_space && b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
