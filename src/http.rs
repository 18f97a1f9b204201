//! The HTTP client every provider talks through: base URL, token (`Bearer` or `token=`), CA certificate,
//! timeouts, retries of transient failures with exponential backoff and jitter, and errors that
//! say in one line which request failed and what the API answered.

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to reach a platform's API.
#[derive(Clone, Debug)]
pub struct Connection {
    pub url: String,
    /// A second host of the same platform's API, where it has one (a separate auth host);
    /// None: the same as `url`.
    pub auth_url: Option<String>,
    /// The token, already read from the environment variable the target names.
    pub token: Option<String>,
    /// How the token is written in `Authorization` (the platform's provider says).
    pub token_form: TokenForm,
    /// A CA certificate to trust: its path, and its content when it has been read already.
    pub ca_cert: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Override the platform's own locks instead of waiting for them (Marathon's `force=true`
    /// on a change to an app a deployment holds).
    pub force: bool,
    /// How transient failures are retried (capstan.yaml's `retry`).
    pub retry: RetryPolicy,
    /// How long a change of each kind may take to become ready, where capstan.yaml's
    /// `timeouts` says; other kinds get their provider's default.
    pub ready_timeouts: BTreeMap<String, Duration>,
    /// The state directory of this run, where a provider may keep what the platform has no
    /// place for (Apcera: which rules and staging pipelines capstan created); None: nowhere.
    pub state_dir: Option<PathBuf>,
}

impl Connection {
    /// A connection with the default retries and readiness timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Connection {
            url: url.into(),
            auth_url: None,
            token: None,
            token_form: TokenForm::Bearer,
            ca_cert: None,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            force: false,
            retry: RetryPolicy::default(),
            ready_timeouts: BTreeMap::new(),
            state_dir: None,
        }
    }

    /// How long a provider waits for a change of `kind` to be ready before the step fails:
    /// capstan.yaml's `timeouts`, else the provider's own `default` for that kind.
    pub fn ready_timeout(&self, kind: &str, default: Duration) -> Duration {
        self.ready_timeouts.get(kind).copied().unwrap_or(default)
    }
}

/// How a token is written in the `Authorization` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenForm {
    /// `Bearer <token>` (RFC 6750), what most platforms take.
    #[default]
    Bearer,
    /// `token=<token>`, as an ACS-style admin router wants it.
    Equals,
}

impl TokenForm {
    /// The `Authorization` value, marked sensitive (never the token in an error).
    fn header(self, token: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
        let text = match self {
            TokenForm::Bearer => format!("Bearer {token}"),
            TokenForm::Equals => format!("token={token}"),
        };
        let mut value = reqwest::header::HeaderValue::from_str(&text)
            .map_err(|_| anyhow::anyhow!("the token holds characters an HTTP header cannot carry"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Requests sent to platforms by this process, by HTTP status code (or "error" when no answer
/// came back), for the daemon's metrics.
static REQUEST_COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

pub fn request_counts() -> Vec<(String, u64)> {
    REQUEST_COUNTS.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn count(code: &str) {
    *REQUEST_COUNTS.lock().unwrap().entry(code.to_string()).or_insert(0) += 1;
}

/// A failed API call. `Display` is the one-line message users see.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub method: String,
    pub path: String,
    /// The HTTP status, when an answer came back.
    pub status: Option<u16>,
    /// The API's own error text, or the transport error.
    pub message: String,
    /// Worth retrying: the platform said so, or the failure was in transport.
    pub transient: bool,
    /// How many times the request was sent (1 when it was not retried).
    pub attempts: u32,
    /// The answer's body when it is JSON: some platforms answer a document with an error status
    /// (DC/OS's plan API answers a failed plan as a 417 whose body is the plan), which must not
    /// be read back out of `message`, a one-line text for people.
    pub document: Option<Box<Value>>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a request (a wait that ran out): the message says it all.
        if self.method.is_empty() {
            return f.write_str(&self.message);
        }
        let tries = if self.attempts > 1 { format!(" after {} attempts", self.attempts) } else { String::new() };
        match self.status {
            Some(s) => write!(f, "{} {} answered {s}{tries}: {}", self.method, self.path, self.message),
            None => write!(f, "{} {} failed{tries}: {}", self.method, self.path, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn other(method: &str, path: &str, message: impl Into<String>) -> Self {
        ApiError {
            method: method.into(),
            path: path.into(),
            status: None,
            message: message.into(),
            transient: false,
            attempts: 1,
            document: None,
        }
    }

    /// A failure that is no single request's (a readiness wait that timed out): shown as the
    /// message alone.
    pub fn plain(message: impl Into<String>) -> Self {
        ApiError::other("", "", message)
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.status == Some(409)
    }
}

/// How long and how often transient failures are retried (capstan.yaml's `retry` sets
/// `max_attempts` and `max_elapsed`).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

/// What must still hold for this task to send a mutating request: the unit's lease, when daemons
/// share a store (`apply::Gate::held`, set around each step by the executor). Consulted before
/// every send of a request that is not a GET or HEAD — the first and every retry — so a request
/// that passed the wave's fence is not sent again after the lease was lost (a retry loop may run
/// for a minute; a lease lasts seconds). Err says why not; the request ends with it, unsent.
pub type Hold = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

tokio::task_local! {
    static HOLD: Hold;
}

/// Runs `f` with every mutating request it sends checked by `hold` first (none: unchecked).
pub async fn under<F: std::future::Future>(hold: Option<Hold>, f: F) -> F::Output {
    match hold {
        Some(h) => HOLD.scope(h, f).await,
        None => f.await,
    }
}

/// The hold of this task, if any, for `method`: Err when a mutating request may not be sent.
fn still_held(method: &Method) -> Result<(), String> {
    if *method == Method::GET || *method == Method::HEAD {
        return Ok(());
    }
    HOLD.try_with(|h| h()).unwrap_or(Ok(()))
}

/// Whether a request may be sent again after its answer was lost. A create is not: the
/// platform may have done it, and the caller must look before trying again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotent {
    Yes,
    No,
}

#[derive(Clone)]
pub struct HttpClient {
    base: String,
    client: reqwest::Client,
    /// For long-lived answers (event streams): no overall timeout.
    streaming: reqwest::Client,
    /// The whole `Authorization` value, marked sensitive.
    auth: Option<reqwest::header::HeaderValue>,
    pub retry: RetryPolicy,
}

/// The certificates of a `ca_cert` file: at least one, each one a certificate a TLS client
/// accepts; anything else is an error naming `path` (reqwest alone takes a file with no
/// certificate in it as an empty bundle, and so would trust nothing it says).
pub fn ca_certificates(path: &std::path::Path, pem: &[u8]) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let not = |why: String| anyhow::anyhow!("ca_cert {} is not a PEM certificate: {why}", path.display());
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| not(root_cause(&e)))?;
    if certs.is_empty() {
        return Err(not("it holds no -----BEGIN CERTIFICATE----- block".into()));
    }
    let mut builder = reqwest::Client::builder();
    for c in &certs {
        builder = builder.add_root_certificate(c.clone());
    }
    builder.build().map_err(|e| not(root_cause(&e)))?;
    Ok(certs)
}

/// A long-lived GET that can be opened again after it breaks (an event stream).
#[derive(Clone)]
pub struct Stream {
    client: reqwest::Client,
    url: String,
    path: String,
    /// The whole `Authorization` value, marked sensitive.
    auth: Option<reqwest::header::HeaderValue>,
}

impl Stream {
    /// Connect; Ok once the platform answered 2xx (the body is the stream).
    pub async fn open(&self) -> Result<reqwest::Response, ApiError> {
        let mut req = self.client.get(&self.url).header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let fail = |status: Option<u16>, message: String| ApiError {
            method: "GET".into(),
            path: self.path.clone(),
            status,
            message,
            transient: true,
            attempts: 1,
            document: None,
        };
        let resp = req.send().await.map_err(|e| fail(None, root_cause(&e)))?;
        count(resp.status().as_str());
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = match read_bounded(resp, MAX_ERROR_BYTES).await {
                Ok(Bounded::Whole(b) | Bounded::Cut(b)) => b,
                Err(_) => bytes::Bytes::new(),
            };
            let (message, _) = error_text(&body);
            return Err(fail(Some(status), message));
        }
        Ok(resp)
    }
}

impl HttpClient {
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        let certs = match (&conn.ca_cert, &conn.ca_pem) {
            (Some(path), Some(pem)) => ca_certificates(path, pem)?,
            (Some(path), None) => {
                let pem =
                    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read ca_cert {}: {e}", path.display()))?;
                ca_certificates(path, &pem)?
            }
            _ => Vec::new(),
        };
        let build = |timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(64)
                // The process too: a platform's log tells daemons sharing a store apart by it.
                .user_agent(format!("capstan/{} (pid {})", env!("CARGO_PKG_VERSION"), std::process::id()));
            if let Some(t) = timeout {
                builder = builder.timeout(t);
            }
            for c in &certs {
                builder = builder.add_root_certificate(c.clone());
            }
            builder.build()
        };
        Ok(HttpClient {
            base: conn.url.trim_end_matches('/').to_string(),
            client: build(Some(conn.timeout))?,
            streaming: build(None)?,
            auth: conn.token.as_deref().map(|t| conn.token_form.header(t)).transpose()?,
            retry: conn.retry.clone(),
        })
    }

    /// A long-lived GET of `path`, to open (and open again) when wanted.
    pub fn stream(&self, path: &str) -> Stream {
        Stream {
            client: self.streaming.clone(),
            url: format!("{}{}", self.base, path),
            path: path.to_string(),
            auth: self.auth.clone(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send a request, retrying transient failures as far as `idempotent` allows.
    /// Returns the parsed JSON body, or None for an empty body or a literal `null`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<Option<Value>, ApiError> {
        let bytes = self.call_raw(method.clone(), path, body, idempotent).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(ApiError::other(method.as_str(), path, format!("answer is not JSON: {e}"))),
        }
    }

    /// GET a JSON array and hand each element to `each` as it is parsed, so a list of ten
    /// thousand objects is never held as one big value.
    pub async fn list_each<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        each: impl FnMut(T),
    ) -> Result<(), ApiError> {
        let bytes = self.call_raw(Method::GET, path, None, Idempotent::Yes).await?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde::Deserializer::deserialize_any(&mut de, EachElement(each, std::marker::PhantomData))
            .and_then(|()| de.end())
            .map_err(|e| ApiError::other("GET", path, format!("answer is not a JSON array: {e}")))
    }

    /// The body of a successful answer, retrying transient failures as `call` does (for
    /// answers that are not one JSON value, such as a JSON stream).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<bytes::Bytes, ApiError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Err(why) = still_held(&method) {
                let mut err = ApiError::other(method.as_str(), path, format!("not sent: {why}"));
                err.attempts = attempt - 1;
                return Err(err);
            }
            match self.send_once(method.clone(), path, body).await {
                Ok(v) => return Ok(v),
                Err((mut err, sent)) => {
                    err.attempts = attempt;
                    // A 500 on a request that may be sent again is worth another try: platforms
                    // answer it for passing trouble (a leader change) as often as for bugs.
                    let retry_500 = err.status == Some(500) && idempotent == Idempotent::Yes;
                    let may_retry = (err.transient || retry_500) && (idempotent == Idempotent::Yes || !sent);
                    if !may_retry || attempt >= self.retry.max_attempts || started.elapsed() >= self.retry.max_elapsed {
                        return Err(err);
                    }
                    let delay = self.backoff(attempt);
                    // Not the answer's text: it may echo a secret, and no redactor is at hand here.
                    tracing::debug!(method = %err.method, path = %err.path, status = ?err.status, attempt, ?delay, "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base_delay.saturating_mul(1 << (attempt - 1).min(16));
        let capped = exp.min(self.retry.max_delay);
        // Full jitter, so many retrying steps do not hit the platform in lockstep.
        let jitter = rand::rng().random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }

    /// One attempt. On failure also says whether the request may have reached the platform.
    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<bytes::Bytes, (ApiError, bool)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let mk = |status: Option<u16>, message: String, transient: bool| ApiError {
            method: method.to_string(),
            path: path.to_string(),
            status,
            message,
            transient,
            attempts: 1,
            document: None,
        };
        let resp = match req.send().await {
            Ok(r) => {
                count(r.status().as_str());
                r
            }
            Err(e) => {
                count("error");
                // A connect failure never reached the platform; anything later may have.
                let sent = !e.is_connect();
                let transient = e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                return Err((mk(None, transport_message(&e, &self.base), transient), sent));
            }
        };
        let status = resp.status();
        // An error's body is only ever shown as one line: its start is all that is read.
        let success = status.is_success();
        let too_large = || {
            let message = format!(
                "the answer is larger than {} MiB, the most capstan reads of one answer",
                MAX_ANSWER_BYTES >> 20
            );
            Err((mk(Some(status.as_u16()), message, false), true))
        };
        if success && resp.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
            return too_large();
        }
        let limit = if success { MAX_ANSWER_BYTES } else { MAX_ERROR_BYTES };
        let bytes = match read_bounded(resp, limit).await {
            Ok(Bounded::Whole(b)) => b,
            Ok(Bounded::Cut(b)) if !success => b,
            Ok(Bounded::Cut(_)) => return too_large(),
            Err(e) => {
                return Err((mk(Some(status.as_u16()), transport_message(&e, &self.base), true), true));
            }
        };
        if status.is_success() {
            return Ok(bytes);
        }
        let (message, platform_says_retry) = error_text(&bytes);
        let transient = platform_says_retry
            || matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            );
        let document = serde_json::from_slice::<Value>(&bytes).ok().filter(|v| !v.is_null()).map(Box::new);
        Err((ApiError { document, ..mk(Some(status.as_u16()), message, transient) }, true))
    }
}

/// The most capstan reads of one successful answer. Ten thousand Apcera jobs are about 20 MB;
/// observe reads a few lists at once, so this bounds them together to about a GiB;
/// a platform (or something posing as one) that answers more, or never stops, gets an error
/// rather than all of capstan's memory.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;
/// The most read of an error's body: its text is shown as one line, but DC/OS answers a failed
/// plan (of any size) as a 417 whose body is the plan.
const MAX_ERROR_BYTES: usize = 16 << 20;

enum Bounded {
    Whole(bytes::Bytes),
    /// The first `limit` bytes; there was more (the rest is not read).
    Cut(bytes::Bytes),
}

/// A body of at most `limit` bytes, or None when there is more (the rest is not read).
pub async fn body_up_to(resp: reqwest::Response, limit: usize) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    Ok(match read_bounded(resp, limit).await? {
        Bounded::Whole(b) => Some(b),
        Bounded::Cut(_) => None,
    })
}

/// Read a body up to `limit` bytes.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Result<Bounded, reqwest::Error> {
    let mut buf: Vec<u8> = Vec::with_capacity(resp.content_length().map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        let take = chunk.len().min(room);
        // Grow by doubling, but never past the bound (plain doubling could hold twice it).
        if buf.len() + take > buf.capacity() {
            let want = (buf.capacity() * 2).max(buf.len() + take).min(limit);
            buf.reserve_exact(want - buf.len());
        }
        buf.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            return Ok(Bounded::Cut(buf.into()));
        }
    }
    Ok(Bounded::Whole(buf.into()))
}

/// Visits a JSON array, handing each element over as soon as it is parsed (into `T`, straight
/// from the bytes: a typed element never exists as a `Value` tree).
struct EachElement<F, T>(F, std::marker::PhantomData<fn() -> T>);

impl<'de, T: serde::de::DeserializeOwned, F: FnMut(T)> serde::de::Visitor<'de> for EachElement<F, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<T>()? {
            (self.0)(v);
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(()) // `null`: an empty list
    }
}

fn transport_message(e: &reqwest::Error, base: &str) -> String {
    if e.is_connect() {
        format!("cannot connect to {base}: {}", root_cause(e))
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        root_cause(e)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The most characters of an API's error text shown: the error is one line.
const ERROR_CHARS: usize = 500;

/// The API's own message from an error body (`message`, `error` or the raw text), at most
/// `ERROR_CHARS` characters on one line, and whether the platform marked the failure as worth
/// retrying (Apcera's `retry` flag). A body cut at `MAX_ERROR_BYTES` (perhaps inside a UTF-8
/// character) is not JSON: its start is shown as text.
fn error_text(bytes: &[u8]) -> (String, bool) {
    let line = |s: &str| -> String {
        let s: String = s.trim().chars().take(ERROR_CHARS).collect();
        s.replace(['\n', '\r'], " ")
    };
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let retry = v.get("retry").and_then(Value::as_bool).unwrap_or(false);
        for key in ["message", "error", "errors"] {
            if let Some(s) = v.get(key).and_then(Value::as_str)
                && !s.trim().is_empty()
            {
                return (line(s), retry);
            }
        }
        return (line(&v.to_string()), retry);
    }
    let text = line(&String::from_utf8_lossy(bytes));
    let text = if text.is_empty() { "(empty body)".to_string() } else { text };
    (text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A too-large answer to a mutating request is not sent again: the platform carried it
    /// out, whatever it answered (a real HTTP server on loopback, counting what it gets).
    #[tokio::test]
    async fn a_too_large_answer_to_a_change_is_not_sent_again() {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(16) {
                let Ok(mut s) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut req = [0u8; 8192];
                let _ = s.read(&mut req);
                // Announced larger than the bound, and the bound's worth and more sent unannounced.
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\nConnection: close\r\n\r\n[");
            }
        });
        let mut conn = Connection::new(url);
        conn.retry.base_delay = Duration::from_millis(1);
        let client = HttpClient::new(&conn).unwrap();
        for (method, idempotent) in [(Method::POST, Idempotent::No), (Method::PUT, Idempotent::Yes)] {
            let before = got.load(Ordering::SeqCst);
            let err =
                client.call(method.clone(), "/v1/jobs", Some(&serde_json::json!({})), idempotent).await.unwrap_err();
            assert!(err.to_string().contains("larger than 256 MiB"), "{err}");
            assert_eq!(err.attempts, 1, "{method}: {err}");
            assert_eq!(got.load(Ordering::SeqCst) - before, 1, "{method} was sent again");
        }
    }

    /// A change retried after a transient failure is not sent again once the hold (the unit's
    /// lease) is lost: the retry loop ends with the hold's reason (a real HTTP server on
    /// loopback answering 503, counting what it gets). GETs are not held.
    #[tokio::test]
    async fn a_change_is_not_sent_again_once_the_hold_is_lost() {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(AtomicUsize::new(0));
        let seen = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(64) {
                let Ok(mut s) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut req = [0u8; 8192];
                let _ = s.read(&mut req);
                let _ =
                    s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        let mut conn = Connection::new(url);
        conn.retry.base_delay = Duration::from_millis(1);
        conn.retry.max_delay = Duration::from_millis(5);
        let client = HttpClient::new(&conn).unwrap();
        // Held for the first send only: the lease is lost while the first answer is awaited.
        let held = Arc::new(AtomicBool::new(true));
        let h = held.clone();
        let hold: Hold =
            Arc::new(
                move || {
                    if h.swap(false, Ordering::SeqCst) { Ok(()) } else { Err("the lease of unit u is lost".into()) }
                },
            );
        let body = serde_json::json!({});
        let err = under(Some(hold.clone()), client.call(Method::PUT, "/v2/apps/a", Some(&body), Idempotent::Yes))
            .await
            .unwrap_err();
        assert_eq!(got.load(Ordering::SeqCst), 1, "sent again after the lease was lost: {err}");
        assert!(err.to_string().contains("the lease of unit u is lost"), "{err}");
        assert!(err.to_string().starts_with("PUT /v2/apps/a"), "{err}");
        // Lost before the first send: nothing is sent at all.
        let err = under(Some(hold.clone()), client.call(Method::DELETE, "/v2/apps/a", None, Idempotent::Yes))
            .await
            .unwrap_err();
        assert_eq!(got.load(Ordering::SeqCst), 1, "a DELETE was sent without the lease: {err}");
        // A read is not a change: retried as ever.
        let before = got.load(Ordering::SeqCst);
        let err = under(Some(hold), client.call(Method::GET, "/v2/apps/a", None, Idempotent::Yes)).await.unwrap_err();
        assert_eq!(got.load(Ordering::SeqCst) - before, conn.retry.max_attempts as usize, "{err}");
    }

    /// An error is one line: the platform's JSON message is bounded as its raw text is, and a
    /// body cut inside a UTF-8 character (as one cut at `MAX_ERROR_BYTES` may be) is shown, not a panic.
    #[test]
    fn an_error_text_is_one_bounded_line_whatever_the_body() {
        let long = format!("{{\"message\": \"{}\\nsecond line\", \"retry\": true}}", "é".repeat(40_000));
        let (text, retry) = error_text(long.as_bytes());
        assert!(retry);
        assert_eq!(text.chars().count(), ERROR_CHARS, "{} characters", text.chars().count());
        assert!(!text.contains('\n'));
        let (text, _) = error_text(br#"{"message": "a\nb"}"#);
        assert_eq!(text, "a b");
        // Cut inside the two bytes of an é, as a cut at the bound may be (13 bytes precede them).
        let cut = &long.as_bytes()[..64 << 10];
        assert!(std::str::from_utf8(cut).is_err());
        let (text, retry) = error_text(cut);
        assert!(!retry);
        assert!(text.starts_with("{\"message\": \"éé") && text.chars().count() <= ERROR_CHARS, "{text}");
    }
}
