//! PostgreSQL connections, each owned by a thread of its own, for the history store
//! (`daemon::store::postgresql`, which migrates it on open), the lease keeper and the shared
//! journal (`journal::postgres`) alike: below all of them, using none.
//!
//! **Why a thread of its own.** The blocking `postgres::Client` runs its own small runtime and
//! panics when called on a thread of another; so one dedicated thread owns each connection,
//! and each call sends a job over a channel and waits for the answer. **A lost connection** is
//! made again before the next job (a few attempts, bounded backoff), and a job that failed
//! because the connection was lost is run once more on the new one: every job is idempotent.
//!
//! **A bounded pool.** A [`Pool`] is a few such threads taking jobs from one queue; a
//! [`Postgres`] is a handle on a pool with the schema its jobs run in (`search_path`, set on a
//! connection only when the job before it ran in another). A daemon's units share one pool
//! (`--store-connections`), so a fleet of hundreds of units opens a handful of connections,
//! not one each; the lease keeper has a pool of one to itself, so a renewal never waits behind
//! the histories' writes. A connection is made when a job first needs it.
//!
//! **TLS** (`tls.rs`): the URL's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert` are read here, and TLS is rustls.

mod tls;

use postgres::Client;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub use tls::Tls;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// One connection of a pool, owned by its thread.
struct Connection {
    config: postgres::Config,
    tls: Tls,
    client: Option<Client>,
    /// The schema the session's `search_path` names now (none: the URL's default).
    schema: Option<String>,
    shown: String,
}

impl Connection {
    /// The open connection, made again when it was lost (in the URL's default schema).
    fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.schema = None;
            let mut last = None;
            for attempt in 0..5u32 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                match self.tls.connect(&self.config) {
                    Ok(c) => {
                        self.client = Some(c);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last.filter(|_| self.client.is_none()) {
                return Err(anyhow::Error::new(e).context(format!("cannot connect to the store {}", self.shown)));
            }
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// The open connection, its `search_path` set to `schema` (none: the URL's default) when
    /// the job before ran in another.
    fn client_in(&mut self, schema: Option<&str>) -> anyhow::Result<Result<&mut Client, postgres::Error>> {
        self.client()?;
        if self.schema.as_deref() != schema {
            let client = self.client.as_mut().expect("connected");
            let sql = match schema {
                // A name of ours (`unit_schema`), quoted all the same.
                Some(s) => format!("SET search_path TO \"{}\"", s.replace('"', "\"\"")),
                None => "RESET search_path".to_string(),
            };
            CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = client.batch_execute(&sql) {
                return Ok(Err(e));
            }
            self.schema = schema.map(str::to_string);
        }
        Ok(Ok(self.client.as_mut().expect("connected")))
    }

    /// `job` on the connection, in `schema`; once more on a new connection when the connection
    /// was lost under it (jobs are idempotent).
    fn run<R>(
        &mut self,
        schema: Option<&str>,
        job: &mut dyn FnMut(&mut Client) -> Result<R, postgres::Error>,
    ) -> anyhow::Result<R> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let shown = self.shown.clone();
            let answer = match self.client_in(schema)? {
                Ok(client) => job(client).map_err(|e| (client.is_closed(), e)),
                Err(e) => Err((self.client.as_ref().is_none_or(Client::is_closed), e)),
            };
            match answer {
                Ok(r) => return Ok(r),
                Err((true, e)) if attempts < 2 => {
                    tracing::warn!(store = %shown, error = %e, "the connection to the store was lost; connecting again");
                }
                Err((_, e)) => return Err(anyhow::Error::new(e).context(format!("the store {shown}"))),
            }
        }
    }
}

/// A few connections to one database, each owned by a thread, taking jobs from one queue.
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    shown: String,
    size: usize,
}

impl Pool {
    /// The pool for `url` (checked and parsed here; its password never shown) of at most
    /// `size` connections, each made when first needed.
    pub fn open(url: &str, size: usize) -> anyhow::Result<Arc<Pool>> {
        let (config, tls, shown) = parse(url)?;
        Pool::start(config, tls, &shown, size)
    }

    fn start(config: postgres::Config, tls: Tls, shown: &str, size: usize) -> anyhow::Result<Arc<Pool>> {
        let size = size.max(1);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let inbox = Arc::new(Mutex::new(inbox));
        for i in 0..size {
            let inbox = inbox.clone();
            let mut conn = Connection {
                config: config.clone(),
                tls: tls.clone(),
                client: None,
                schema: None,
                shown: shown.into(),
            };
            std::thread::Builder::new().name(format!("capstan-store-{i}")).spawn(move || {
                loop {
                    // The queue's lock is held only while waiting for the next job.
                    let job = match inbox.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut conn),
                        // Every handle is gone.
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Arc::new(Pool { jobs, shown: shown.to_string(), size }))
    }

    /// How many connections it may open.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The store it connects to, redacted.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// The store's URL parsed: the client's configuration (with a connect timeout), its TLS as
/// `sslmode` and `sslrootcert` say, and how it is shown (redacted).
pub fn parse(url: &str) -> anyhow::Result<(postgres::Config, Tls, String)> {
    let shown = crate::redact::url(url);
    let (rest, tls) = Tls::from_url(url, &shown)?;
    // The parser's messages name options, never their values; the URL is shown redacted.
    let mut config: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
        anyhow::Error::new(e).context(format!("--store {shown} is not a PostgreSQL URL"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok((config, tls, shown))
}

/// A handle on a [`Pool`]: its jobs run in one schema (none: the URL's default).
pub struct Postgres {
    pool: Arc<Pool>,
    schema: Option<String>,
}

/// Round trips to PostgreSQL this process has made (one per job: a statement, or one
/// transaction of several; and a `search_path` switched), by the history, the lease keeper,
/// the fence, the shared journal and the event relay alike: `capstan_store_queries_total`.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn calls() -> u64 {
    CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts a round trip made on a connection of another kind (the event relay's, which is
/// asynchronous), with the rest.
pub fn count_call() {
    CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Postgres {
    /// A pool of one connection made by `config`, running `init` on it first (the store's
    /// migrations): its error is this one's. `shown` names the store (redacted).
    pub fn start(
        config: postgres::Config,
        tls: Tls,
        shown: &str,
        init: impl FnOnce(&mut Client) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        Postgres::on(Pool::start(config, tls, shown, 1)?, None, init)
    }

    /// A handle on `pool` whose jobs run in `schema` (none: the URL's default), running `init`
    /// in it first (the schema's migrations): its error is this one's.
    pub fn on(
        pool: Arc<Pool>,
        schema: Option<String>,
        init: impl FnOnce(&mut Client) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let db = Postgres { pool, schema };
        let (tx, rx) = mpsc::sync_channel(1);
        let schema = db.schema.clone();
        db.send(Box::new(move |conn: &mut Connection| {
            let _ = tx.send(conn.client_in(schema.as_deref()).and_then(|c| init(c?)));
        }))?;
        rx.recv().map_err(|_| db.stopped())??;
        Ok(db)
    }

    fn stopped(&self) -> anyhow::Error {
        anyhow::anyhow!("the store {}'s connection threads have stopped", self.pool.shown)
    }

    fn send(&self, job: Job) -> anyhow::Result<()> {
        self.pool.jobs.send(job).map_err(|_| self.stopped())
    }

    /// Runs `job` on one of the pool's threads and waits for its answer.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        job: impl FnMut(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> anyhow::Result<R> {
        self.call_within(None, job)
    }

    /// As `call`, but an answer that has not come within `wait` (queued behind other jobs, a
    /// slow statement, a connection being made again) is an error: the fence's check, whose
    /// "yes" is worth nothing once late. The job may still run later; its answer is dropped.
    pub(crate) fn call_within<R: Send + 'static>(
        &self,
        wait: Option<Duration>,
        mut job: impl FnMut(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> anyhow::Result<R> {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        let schema = self.schema.clone();
        self.send(Box::new(move |conn: &mut Connection| {
            let _ = tx.send(conn.run(schema.as_deref(), &mut job));
        }))?;
        match wait {
            None => rx.recv().map_err(|_| self.stopped())?,
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    anyhow::bail!("the store {} did not answer within {} ms", self.pool.shown, wait.as_millis())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.stopped()),
            },
        }
    }
}
