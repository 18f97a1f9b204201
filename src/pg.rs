//! A PostgreSQL connection owned by a thread of its own, for the history store
//! (`daemon::store::postgresql`, which migrates it on open), the lease keeper and the shared
//! journal (`journal::postgres`) alike: below all of them, using none.
//!
//! **Why a thread of its own.** The blocking `postgres::Client` runs its own small runtime and
//! panics when called on a thread of another; so one dedicated thread owns the connection, and
//! each call sends it a job over a channel and waits for the answer. **A lost connection** is
//! made again before the next job (a few attempts, bounded backoff), and a job that failed
//! because the connection was lost is run once more on the new one: every job is idempotent.

use postgres::{Client, NoTls};
use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The connection, owned by the store's thread.
struct Connection {
    config: postgres::Config,
    client: Option<Client>,
    shown: String,
}

impl Connection {
    /// The open connection, made again when it was lost.
    fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut last = None;
            for attempt in 0..5u32 {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                match self.config.connect(NoTls) {
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

    /// `job` on the connection; once more on a new connection when the connection was lost
    /// under it (jobs are idempotent).
    fn run<R>(&mut self, job: &mut dyn FnMut(&mut Client) -> Result<R, postgres::Error>) -> anyhow::Result<R> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let client = self.client()?;
            match job(client) {
                Ok(r) => return Ok(r),
                Err(e) if client.is_closed() && attempts < 2 => {
                    tracing::warn!(store = %self.shown, error = %e, "the connection to the store was lost; connecting again");
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("the store {}", self.shown))),
            }
        }
    }
}

pub struct Postgres {
    jobs: mpsc::Sender<Job>,
    shown: String,
}

/// Round trips to PostgreSQL this process has made (one per job: a statement, or one
/// transaction of several), by the history, the lease keeper, the fence, the shared journal
/// and the event relay alike: `capstan_store_queries_total`.
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
    /// Starts the thread that owns a connection made by `config`, and runs `init` on it first
    /// (the store's migrations): its error is this one's. `shown` names the store (redacted).
    pub fn start(
        config: postgres::Config,
        shown: &str,
        init: impl FnOnce(&mut Client) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let shown = shown.to_string();
        let mut conn = Connection { config, client: None, shown: shown.clone() };
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("capstan-store".into()).spawn(move || {
            for job in inbox {
                job(&mut conn);
            }
        })?;
        // Connecting and the first job run on the store's thread too: the client may not be
        // made on a runtime's thread.
        let (tx, rx) = mpsc::sync_channel(1);
        jobs.send(Box::new(move |conn: &mut Connection| {
            let _ = tx.send(conn.client().and_then(init));
        }))
        .map_err(|_| anyhow::anyhow!("the store {shown}'s connection thread has stopped"))?;
        rx.recv().map_err(|_| anyhow::anyhow!("the store {shown}'s connection thread has stopped"))??;
        Ok(Postgres { jobs, shown })
    }

    /// Runs `job` on the store's thread and waits for its answer (the lease keeper and the
    /// shared journal use a connection of their own through this too).
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
        let sent = self.jobs.send(Box::new(move |conn: &mut Connection| {
            let _ = tx.send(conn.run(&mut job));
        }));
        if sent.is_err() {
            anyhow::bail!("the store {}'s connection thread has stopped", self.shown);
        }
        let stopped = || anyhow::anyhow!("the store {}'s connection thread has stopped", self.shown);
        match wait {
            None => rx.recv().map_err(|_| stopped())?,
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    anyhow::bail!("the store {} did not answer within {} ms", self.shown, wait.as_millis())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
            },
        }
    }
}
