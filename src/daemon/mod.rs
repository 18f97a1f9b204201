//! `capstan daemon`: keep a platform equal to what a git repository says.
//!
//! One reconcile loop per target, one reconcile at a time. It wakes when the repository changes
//! (`notify` on a local repository's refs, polling a remote every `--interval`, or a webhook),
//! every `--resync` to look for drift, and on `POST /v1/sync`. Each wake-up reconciles the
//! newest commit, so bursts of commits coalesce (the commits skipped over are recorded as
//! superseded). A commit that does not render or validate applies nothing: its errors are
//! recorded and published and the platform stays as the last good commit left it; so does a
//! commit whose plan trips the mass-delete guard (recorded as refused). While it plans and
//! applies, the daemon holds the target's lock, as `capstan apply` does; when an apply holds it,
//! the daemon tries again shortly, backing off. Every step of every plan is published as an
//! event; history and plans are kept in SQLite under the state directory, so a restarted daemon
//! carries on and never applies an applied commit again.

pub mod api;
mod apply;
pub mod events;
mod fleet;
pub(crate) mod lease;
pub mod metrics;
mod reconcile;
mod server;
mod state;
pub mod store;
mod watch;
mod web;

pub use state::{CurrentPlan, DaemonStatus, Phase, Reconciled};

use crate::apply::{ApplyOptions, Observer, Outcome, Status, StepOutcome};
use crate::base::diagnostic::Diagnostics;
use crate::config::Config;
use crate::converge::{Applied, Cleared, Guards, Refusal, Session};
use crate::engine::{self, PlanError, Planned};
use crate::plan::Plan;
use crate::redact::Redacted;
use crate::redact::Redactor;
use crate::render::{RenderCache, RenderOptions};
use crate::source::git::{GitSource, RepoSpec, short};
use crate::target::{self, Connected};
use crate::view::{PhasesView, PlanView};
use anyhow::Context;
use events::{Event, EventBus};
use metrics::Metrics;
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{CommitStatus, Store};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub repo: RepoSpec,
    pub target: Option<String>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Where the history is kept: none is SQLite in `state_dir`, else a PostgreSQL URL.
    pub store: Option<String>,
    /// How often a remote repository is polled.
    pub interval: Duration,
    /// How often live state is compared with the applied commit.
    pub resync: Duration,
    pub self_heal: bool,
    /// The token every endpoint but `/health/*` and `/metrics` requires (none: not required).
    pub token: Option<String>,
    /// `/metrics` requires the token too.
    pub metrics_need_token: bool,
    /// Secret for webhook signatures (none: webhooks are not verified).
    pub webhook_secret: Option<String>,
    pub render: RenderOptions,
    pub parallelism: usize,
    /// Override platform locks (Marathon's `force=true`) instead of waiting for them.
    pub force: bool,
    /// Apply plans that delete more than the mass-delete guard allows.
    pub allow_mass_delete: bool,
    /// Apply plans whose pre-apply checks fail.
    pub allow_check_failures: bool,
    /// Take over declared resources another owner's mark claims.
    pub take_ownership: bool,
    /// How long a unit's lease lasts unrenewed (PostgreSQL store): a dead daemon's unit is
    /// taken over within about this plus a third of it.
    pub lease_ttl: Duration,
}

/// Why a reconcile runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Startup,
    Change,
    Poll,
    Webhook,
    Sync,
    Resync,
    /// Asked to apply an earlier commit again (`POST /v1/rollback`).
    Rollback,
    /// Once after a failed apply: observe afresh and plan again (a resource changed or deleted
    /// behind the daemon's back makes a request fail; the next plan sees it as it is).
    Retry,
    /// `continue` after an interrupt: plan again against the newest commit, then apply.
    Continue,
}

impl Reason {
    /// Which of several pending reasons a reconcile runs for: the one that asks most of it.
    /// A rollback must not be lost; a sync or startup looks again at judged commits; a commit
    /// covers a resync.
    fn rank(self) -> u8 {
        match self {
            Reason::Rollback => 5,
            Reason::Continue => 4,
            Reason::Sync => 3,
            Reason::Startup | Reason::Retry => 2,
            Reason::Change | Reason::Poll | Reason::Webhook => 1,
            Reason::Resync => 0,
        }
    }

    /// What the history says set a reconcile off.
    fn trigger(self) -> &'static str {
        match self {
            Reason::Startup | Reason::Change | Reason::Poll | Reason::Webhook => "commit",
            Reason::Sync => "sync",
            Reason::Resync => "resync",
            Reason::Rollback => "rollback",
            Reason::Retry => "retry",
            Reason::Continue => "continue",
        }
    }

    fn strongest(reasons: impl IntoIterator<Item = Reason>) -> Option<Reason> {
        reasons.into_iter().fold(None, |best: Option<Reason>, r| match best {
            Some(b) if b.rank() >= r.rank() => Some(b),
            _ => Some(r),
        })
    }
}

/// A rollback: the daemon converges to `sha` until the branch moves past `head`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pin {
    sha: String,
    head: String,
}

impl Pin {
    fn load(store: &Store) -> Option<Pin> {
        let v = store.get_value("rollback").ok().flatten()?;
        let (sha, head) = v.split_once(' ')?;
        Some(Pin { sha: sha.to_string(), head: head.to_string() })
    }
}

pub struct Daemon {
    pub opts: DaemonOptions,
    source: Arc<GitSource>,
    pub store: Store,
    pub events: EventBus,
    pub metrics: Metrics,
    pub status: Mutex<DaemonStatus>,
    pub current: Mutex<Option<CurrentPlan>>,
    /// Set by a rollback; cleared by the next commit.
    pin: Mutex<Option<Pin>>,
    connected: Connected,
    render_cache: RenderCache,
    /// Wakes the reconcile loop; permits coalesce, so a burst of wake-ups is one reconcile.
    wake: Notify,
    reasons: Mutex<Vec<Reason>>,
    /// Stops apply from starting steps: set by an interrupt, and by a shutdown.
    pub interrupt: Arc<AtomicBool>,
    /// Set by `interrupt`, cleared by `continue`; kept in the store across restarts.
    interrupted: Arc<AtomicBool>,
    /// The commit of a plan stopped by an interrupt, whose lock is held until it is continued.
    paused: Mutex<Option<(String, crate::lock::TargetLock)>>,
    shutting_down: AtomicBool,
    /// Set once the reconcile loop has stopped: the API server and event streams then end.
    closed: tokio::sync::watch::Sender<bool>,
    /// capstan.yaml's notification receivers (of the commit the daemon started at).
    pub notifier: Arc<crate::notify::Notifier>,
    /// The unit's name, from `opts.repo.path` by [`unit_name`].
    unit: String,
    /// The unit leases shared with other daemons (always held with SQLite).
    pub fleet: Arc<fleet::Fleet>,
}

/// The name of the unit whose manifests are in `path` (relative to the repository root): its
/// components joined by `/`, with `.` components, empty components and a trailing slash left
/// out, and `.` for the repository root. `./clusters//eu/` and `clusters/eu` are one unit,
/// `clusters/eu`. The name is stable across restarts and daemons: it keys leases and history.
pub fn unit_name(path: &str) -> String {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|c| !c.is_empty() && *c != ".").collect();
    if parts.is_empty() { ".".to_string() } else { parts.join("/") }
}

impl Daemon {
    /// What the store could not keep is said (an error in the log, `capstan_store_errors_total`),
    /// never dropped in silence: a store over the network can fail where a local file did not.
    /// The reconcile goes on — the platform is already changed; the history says less.
    fn stored<T>(&self, result: anyhow::Result<T>) {
        if let Err(e) = result {
            self.metrics.store_errors.inc();
            tracing::error!("the store did not keep a record: {e:#}");
        }
    }

    pub async fn start(opts: DaemonOptions) -> anyhow::Result<Arc<Daemon>> {
        crate::state::create_dir(&opts.state_dir)?;
        let state_dir = opts.state_dir.clone();
        let spec = opts.repo.clone();
        let source = tokio::task::spawn_blocking(move || GitSource::open(spec, &state_dir)).await??;
        let store = Store::open_at(opts.store.as_deref(), &opts.state_dir)?;
        let fleet = Arc::new(fleet::Fleet::open(opts.store.as_deref(), opts.lease_ttl)?);
        // The target comes from the newest commit's capstan.yaml (or --target). A commit whose
        // capstan.yaml cannot be read is an error here: its defaults would be another target
        // (the embedded sandbox), and changes must never silently go elsewhere.
        let config = {
            let head = source.resolve().ok();
            let file = match &head {
                Some(c) => {
                    source
                        .snapshot(c)
                        .map_err(|e| anyhow::anyhow!("cannot choose the target: cannot read commit {c}: {e:#}"))?
                        .config
                }
                None => None,
            };
            let mut config = match &file {
                Some(f) => Config::parse(&f.path, &f.text).map_err(|d| {
                    let shown: Vec<String> = d.0.iter().map(ToString::to_string).collect();
                    anyhow::anyhow!(
                        "cannot choose the target: the newest commit's capstan.yaml is invalid:\n{}",
                        shown.join("\n")
                    )
                })?,
                None => Config::default(),
            };
            // A relative ca_cert is read from the same commit, next to capstan.yaml.
            if let (Some(c), Some(f)) = (&head, &file) {
                config.read_ca_certs(f.path.parent().unwrap_or(std::path::Path::new("")), source.reader_at(c))?;
            }
            config
        };
        let connected = target::connect(&config, opts.target.as_deref(), &opts.state_dir, opts.force).await?;
        let last_applied = store.get_value("last_applied")?;
        let pin = Mutex::new(Pin::load(&store));
        let interrupted = store.get_value("interrupted")?.as_deref() == Some("1");
        let metrics = Metrics::default();
        let notifier = crate::notify::Notifier::new(
            &config.notifications,
            metrics.notifications.clone(),
            metrics.notification_failing.clone(),
        )?;
        let daemon = Arc::new(Daemon {
            source: Arc::new(source),
            store,
            events: EventBus::default(),
            metrics,
            status: Mutex::new(DaemonStatus {
                phase: Phase::Starting,
                last_applied,
                interrupted,
                ..DaemonStatus::default()
            }),
            current: Mutex::new(None),
            pin,
            connected,
            render_cache: RenderCache::default(),
            wake: Notify::new(),
            reasons: Mutex::new(vec![Reason::Startup]),
            interrupt: Arc::new(AtomicBool::new(interrupted)),
            interrupted: Arc::new(AtomicBool::new(interrupted)),
            paused: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            closed: tokio::sync::watch::channel(false).0,
            notifier: Arc::new(notifier),
            unit: unit_name(&opts.repo.path),
            fleet,
            opts,
        });
        Ok(daemon)
    }

    fn source_git_dir(&self) -> anyhow::Result<PathBuf> {
        self.source.git_dir()
    }

    pub fn platform(&self) -> &'static str {
        self.connected.provider.platform()
    }

    /// The deployment unit this daemon reconciles: its directory relative to the repository
    /// root, slash-separated (`clusters/eu`; `.` for the root). Leases and per-unit records are
    /// keyed by exactly this name; see [`unit_name`].
    pub fn unit(&self) -> &str {
        &self.unit
    }

    pub fn target_description(&self) -> &str {
        &self.connected.description
    }

    /// Apply the configuration of an earlier commit again, and keep to it until a new commit
    /// arrives. `rev` is resolved against the followed branch (`HEAD~1` is its `~1`), and must
    /// be a commit of its first-parent history that this daemon has applied before, unless
    /// `force`. Returns the commit, or why not (an HTTP status and a message).
    pub async fn rollback(&self, rev: &str, force: bool) -> Result<String, (u16, String)> {
        let source = self.source.clone();
        let rev = rev.trim().to_string();
        if rev.contains("@{") {
            return Err((
                400,
                format!(
                    "{rev:?} names a commit through a reflog, which the daemon does not follow: expected a commit id, tag, branch or HEAD~N"
                ),
            ));
        }
        let resolved = tokio::task::spawn_blocking(move || {
            source.fetch()?;
            let head = source.resolve()?;
            // HEAD is the followed branch, not the repository's HEAD.
            let rev = match rev.strip_prefix("HEAD").or_else(|| rev.strip_prefix('@')) {
                Some(rest) if rest.is_empty() || rest.starts_with(['~', '^']) => format!("{head}{rest}"),
                _ => rev,
            };
            let sha = source.resolve_rev(&rev);
            let on_branch = match &sha {
                Ok(sha) => source.is_first_parent_ancestor(&head, sha, FIRST_PARENT_LIMIT)?,
                Err(_) => false,
            };
            anyhow::Ok((sha, head, on_branch))
        })
        .await
        .map_err(|e| (500, e.to_string()))?
        .map_err(|e| (502, format!("{e:#}")))?;
        let (sha, head, on_branch) = resolved;
        let sha = sha.map_err(|e| (404, format!("{e:#}")))?;
        let branch = self.opts.repo.reference.clone().unwrap_or_else(|| "HEAD".into());
        if !force && !on_branch {
            return Err((
                422,
                format!(
                    "{} is not in the first-parent history of {branch} (at {}): expected a commit {branch} has been at; {{\"force\": true}} (--any-commit) rolls back to it anyway",
                    short(&sha),
                    short(&head)
                ),
            ));
        }
        if !force && !self.store.applied_before(&sha).unwrap_or(false) {
            return Err((
                422,
                format!(
                    "{} was never applied by this daemon: expected a commit it applied before; {{\"force\": true}} (--any-commit) rolls back to it anyway",
                    short(&sha)
                ),
            ));
        }
        self.store.set_value("rollback", &format!("{sha} {head}")).map_err(|e| (500, format!("{e:#}")))?;
        *self.pin.lock().unwrap() = Some(Pin { sha: sha.clone(), head });
        self.trigger(Reason::Rollback);
        Ok(sha)
    }

    /// The commit a rollback keeps to, if any.
    pub fn pinned(&self) -> Option<String> {
        self.pin.lock().unwrap().as_ref().map(|p| p.sha.clone())
    }

    /// Whether a plan is interrupted (or the next one will start so).
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The commit to converge to when the branch is at `head`: a rollback's, until the branch
    /// moves on.
    fn converge_to(&self, head: String) -> String {
        let mut pin = self.pin.lock().unwrap();
        match pin.as_ref() {
            Some(p) if p.head == head => p.sha.clone(),
            Some(_) => {
                *pin = None;
                self.stored(self.store.set_value("rollback", ""));
                head
            }
            None => head,
        }
    }

    /// Ask for a reconcile.
    pub fn trigger(&self, reason: Reason) {
        self.reasons.lock().unwrap().push(reason);
        self.wake.notify_one();
    }

    /// No new step starts until `continue`; while idle, the next plan starts interrupted (as
    /// seed 000's plans do). Kept across restarts. False when already interrupted (208).
    pub fn interrupt_plan(&self) -> bool {
        if self.interrupted.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.interrupt.store(true, Ordering::SeqCst);
        self.stored(self.store.set_value("interrupted", "1"));
        let applying = {
            let mut st = self.status.lock().unwrap();
            st.interrupted = true;
            st.phase == Phase::Applying
        };
        // What has not started will not, until continue: shown so at once.
        if applying {
            self.show_not_started(Status::Pending, Status::Waiting);
        }
        true
    }

    /// Show the running plan's steps that have not started with another status.
    fn show_not_started(&self, from: Status, to: Status) {
        if let Some(c) = self.current.lock().unwrap().as_mut() {
            for o in c
                .outcome
                .steps
                .iter_mut()
                .filter(|o| o.status == from && (o.message.is_empty() || from == Status::Waiting))
            {
                o.status = to;
            }
        }
    }

    /// Carry on: plan again against the newest commit, then apply. False when nothing is
    /// interrupted (208).
    pub fn continue_plan(&self) -> bool {
        if !self.interrupted.swap(false, Ordering::SeqCst) {
            return false;
        }
        if !self.shutting_down.load(Ordering::SeqCst) {
            self.interrupt.store(false, Ordering::SeqCst);
        }
        self.stored(self.store.set_value("interrupted", ""));
        self.status.lock().unwrap().interrupted = false;
        // About to run (after planning again): no longer waiting.
        self.show_not_started(Status::Waiting, Status::Pending);
        self.trigger(Reason::Continue);
        true
    }

    /// The commit of the plan an interrupt stopped part way, if any.
    pub fn paused_commit(&self) -> Option<String> {
        self.paused.lock().unwrap().as_ref().map(|(sha, _)| sha.clone())
    }

    /// Stop after the running step, recording state.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.interrupt.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Resolves once the daemon has stopped reconciling (for the server and event streams).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Stop the embedded sandbox, if any.
    pub async fn close(self: Arc<Self>) -> anyhow::Result<()> {
        match Arc::try_unwrap(self) {
            Ok(d) => d.connected.close().await,
            Err(_) => Ok(()),
        }
    }
}

/// How far back a rollback target is looked for along the followed branch's first parents.
const FIRST_PARENT_LIMIT: usize = 100_000;

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Run the daemon until SIGINT or SIGTERM: finish the running step, record state, return.
pub async fn serve(opts: DaemonOptions) -> anyhow::Result<()> {
    // Room for many clients, and for git and the store besides them (see `server`).
    let limits = server::Limits::for_fd_limit(crate::fds::raise_limit());
    let daemon = Daemon::start(opts).await?;
    let listener = tokio::net::TcpListener::bind(daemon.opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", daemon.opts.listen))?;
    let addr = listener.local_addr()?;
    let app = api::router(daemon.clone());
    daemon.notifier.start(daemon.events.subscribe(None).1, format!("http://{addr}/"));
    let server = tokio::spawn(server::serve(listener, app, limits, daemon.closed()));
    // A closed stdout is no reason to stop (nor to panic, as println! would).
    let _ = write_stdout(&format!(
        "capstan daemon listening on http://{addr}, applying {} ({}) to {}; status page: http://{addr}/\n",
        daemon.opts.repo.location,
        daemon.opts.repo.reference.as_deref().unwrap_or("default branch"),
        daemon.target_description()
    ));
    let keeper = fleet::keep(daemon.clone());
    let runner = tokio::spawn(daemon.clone().run());
    crate::shutdown_signal().await;
    tracing::info!("shutting down: finishing the running step");
    daemon.begin_shutdown();
    let _ = runner.await;
    // The last events are out; event streams end, so the server's graceful shutdown can finish.
    daemon.closed.send_replace(true);
    let _ = keeper.await;
    daemon.release_leases().await;
    let _ = server.await;
    daemon.close().await
}

/// Write to stdout; a closed stdout is no reason to stop (nor to panic, as println! would).
fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush())
}

#[cfg(test)]
mod unit_name_tests {
    use super::unit_name;

    #[test]
    fn the_root_is_dot() {
        assert_eq!(unit_name(""), ".");
        assert_eq!(unit_name("."), ".");
        assert_eq!(unit_name("./"), ".");
        assert_eq!(unit_name("/"), ".");
    }

    #[test]
    fn a_directory_is_its_slash_separated_relative_path() {
        assert_eq!(unit_name("clusters/eu"), "clusters/eu");
        assert_eq!(unit_name("./clusters//eu/"), "clusters/eu");
        assert_eq!(unit_name("clusters\\eu"), "clusters/eu");
        assert_eq!(unit_name("deploy"), "deploy");
    }

    #[test]
    fn different_directories_are_different_units() {
        assert_ne!(unit_name("clusters/eu"), unit_name("clusters/us"));
        assert_ne!(unit_name("clusters/eu"), unit_name("clusters"));
    }
}
