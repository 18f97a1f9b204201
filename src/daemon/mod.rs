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
mod clash;
pub mod events;
mod fleet;
pub(crate) mod lease;
pub mod metrics;
mod notify;
mod reconcile;
mod relay;
mod request;
mod server;
mod state;
pub mod store;
mod unit;
mod watch;
mod web;

pub use state::{CurrentPlan, DaemonStatus, Phase, Reconciled, Shown};
pub use unit::{Unit, UnitEvents};

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
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use store::{CommitStatus, Store};
use tokio::sync::Notify;

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The repository; its `path` is the first `--path`.
    pub repo: RepoSpec,
    /// Every `--path`: one plain directory is one unit, as a daemon always was; several, or a
    /// pattern (`clusters/*`), are a fleet: each matching directory holding its own
    /// capstan.yaml is a unit. Empty: `repo.path` alone.
    pub paths: Vec<String>,
    /// How many units reconcile at once.
    pub unit_parallelism: usize,
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
    /// How many connections to PostgreSQL a fleet's units share for their histories (the
    /// lease keeper and the shared journal have one more of their own).
    pub store_connections: usize,
    /// How long a unit's lease lasts unrenewed (PostgreSQL store): a dead daemon's unit is
    /// taken over within about this plus a third of it.
    pub lease_ttl: Duration,
}

impl DaemonOptions {
    /// The `--path` values (`repo.path` when none were listed).
    pub fn patterns(&self) -> Vec<String> {
        if self.paths.is_empty() { vec![self.repo.path.clone()] } else { self.paths.clone() }
    }
}

/// How many units reconcile at once unless `--unit-parallelism` says otherwise.
pub const DEFAULT_UNIT_PARALLELISM: usize = 4;

/// How many PostgreSQL connections a fleet's units share unless `--store-connections` says
/// otherwise: as many as reconcile at once.
pub const DEFAULT_STORE_CONNECTIONS: usize = 4;

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

/// The daemon: what its units share — the repository, the options, the event bus, the metrics
/// and the HTTP API — and its units, each reconciled by its own loop ([`Unit`]).
pub struct Daemon {
    pub opts: Arc<DaemonOptions>,
    source: Arc<GitSource>,
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    /// The units by name.
    units: RwLock<BTreeMap<String, Arc<Unit>>>,
    /// Directories that match and hold a capstan.yaml but could not be started (their
    /// capstan.yaml is invalid, their target cannot be reached), with why; tried again at the
    /// next commit.
    broken: Mutex<BTreeMap<String, String>>,
    /// One plain `--path`: one unit, kept exactly as a daemon always kept it.
    single: bool,
    /// Where the units of a fleet keep their histories (with PostgreSQL: one bounded pool of
    /// connections for them all, `--store-connections`).
    stores: Arc<store::Stores>,
    /// The commit the units were last looked for at.
    discovered_at: Mutex<Option<String>>,
    /// How many units reconcile at once.
    permits: Arc<tokio::sync::Semaphore>,
    shutting_down: Arc<AtomicBool>,
    /// Set once the reconcile loops have stopped: the API server and event streams then end.
    closed: tokio::sync::watch::Sender<bool>,
    /// Wakes the loop that looks for units at a new commit, and then wakes every unit for
    /// these reasons (so a unit gone from the commit is retired before it could reconcile it).
    wake: Notify,
    reasons: Mutex<Vec<Reason>>,
    /// The status page's URL, once listening: notifications link to it.
    page: std::sync::OnceLock<String>,
    /// The running units' loops.
    loops: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set once `run` started the loops: units found later start theirs at once.
    started: AtomicBool,
    /// The unit leases shared with other daemons (always held with SQLite): one keeper, one
    /// PostgreSQL connection (the default schema) and one daemon id for all units.
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

/// Whether a `--path` is a pattern (`clusters/*`) rather than one directory.
pub fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Whether `name` (a unit's name, slash-separated) matches the pattern `pattern`, component by
/// component: `*` is any run of characters within one component, `?` one character, `[abc]`
/// and `[a-z]` one of a set; a `*` never crosses a `/`. A pattern without wildcards matches its
/// own directory only.
pub fn path_matches(pattern: &str, name: &str) -> bool {
    let pattern = unit_name(pattern);
    let p: Vec<&str> = pattern.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| component_matches(p.as_bytes(), n.as_bytes()))
}

fn component_matches(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') => (0..=n.len()).any(|i| component_matches(&p[1..], &n[i..])),
        Some(b'?') => !n.is_empty() && component_matches(&p[1..], &n[1..]),
        Some(b'[') => match p.iter().position(|&c| c == b']') {
            Some(end) if end > 1 && !n.is_empty() => {
                let set = &p[1..end];
                let (negate, set) = match set.first() {
                    Some(b'!') | Some(b'^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= set[i] <= n[0] && n[0] <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == n[0];
                        i += 1;
                    }
                }
                hit != negate && component_matches(&p[end + 1..], &n[1..])
            }
            _ => n.first() == Some(&b'[') && component_matches(&p[1..], &n[1..]),
        },
        Some(c) => n.first() == Some(c) && component_matches(&p[1..], &n[1..]),
    }
}

/// How deep directories are looked into for units, and how many units there may be at most.
const UNIT_DEPTH: usize = 16;
const MAX_UNITS: usize = 10_000;

impl Daemon {
    pub async fn start(opts: DaemonOptions) -> anyhow::Result<Arc<Daemon>> {
        crate::state::create_dir(&opts.state_dir)?;
        let patterns = opts.patterns();
        let single = patterns.len() == 1 && !is_pattern(&patterns[0]);
        if !single && opts.target.is_some() {
            anyhow::bail!(
                "--target names one target, and several --path (or a pattern) name several units, each with its own target in its capstan.yaml: leave out --target"
            );
        }
        if opts.unit_parallelism == 0 {
            anyhow::bail!("--unit-parallelism must be at least 1");
        }
        let state_dir = opts.state_dir.clone();
        let spec = opts.repo.clone();
        let source = Arc::new(tokio::task::spawn_blocking(move || GitSource::open(spec, &state_dir)).await??);
        if opts.store_connections == 0 {
            anyhow::bail!("--store-connections must be at least 1");
        }
        let fleet = Arc::new(fleet::Fleet::open(opts.store.as_deref(), opts.lease_ttl)?);
        let stores = Arc::new(store::Stores::open(opts.store.as_deref(), opts.store_connections)?);
        let daemon = Arc::new(Daemon {
            fleet,
            source,
            events: Arc::new(EventBus::default()),
            metrics: Arc::new(Metrics::default()),
            units: RwLock::new(BTreeMap::new()),
            broken: Mutex::new(BTreeMap::new()),
            single,
            stores,
            discovered_at: Mutex::new(None),
            permits: Arc::new(tokio::sync::Semaphore::new(opts.unit_parallelism)),
            shutting_down: Arc::new(AtomicBool::new(false)),
            closed: tokio::sync::watch::channel(false).0,
            wake: Notify::new(),
            reasons: Mutex::new(Vec::new()),
            page: std::sync::OnceLock::new(),
            loops: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            opts: Arc::new(opts),
        });
        if single {
            // As a daemon always did: a unit that cannot start stops the daemon.
            let unit = Unit::start(&daemon.context(), &daemon.opts.repo.path).await?;
            daemon.units.write().unwrap().insert(unit.name.clone(), Arc::new(unit));
        } else {
            daemon.discover().await?;
        }
        Ok(daemon)
    }

    fn context(&self) -> unit::UnitContext {
        unit::UnitContext {
            opts: self.opts.clone(),
            source: self.source.clone(),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
            shutting_down: self.shutting_down.clone(),
            permits: self.permits.clone(),
            single: self.single,
            stores: self.stores.clone(),
            fleet: self.fleet.clone(),
        }
    }

    /// The directories of the newest commit that are units: they match a `--path` and hold
    /// their own capstan.yaml.
    async fn unit_paths(&self) -> anyhow::Result<(String, Vec<String>)> {
        let source = self.source.clone();
        let patterns = self.opts.patterns();
        tokio::task::spawn_blocking(move || {
            let head = source.fetch_and_resolve()?;
            let dirs = source.directories_with(&head, "capstan.yaml", UNIT_DEPTH, MAX_UNITS)?;
            let mut paths: Vec<String> =
                dirs.into_iter().filter(|d| patterns.iter().any(|p| path_matches(p, &unit_name(d)))).collect();
            paths.sort();
            paths.dedup_by(|a, b| unit_name(a) == unit_name(b));
            anyhow::Ok((head, paths))
        })
        .await?
    }

    /// Look for the units at the newest commit: start the new ones, retire the ones gone (their
    /// loops end; what they applied stays). A no-op when the commit was looked at already.
    async fn discover(self: &Arc<Self>) -> anyhow::Result<()> {
        let (head, paths) = self.unit_paths().await?;
        if self.discovered_at.lock().unwrap().as_deref() == Some(head.as_str()) {
            return Ok(());
        }
        let names: BTreeSet<String> = paths.iter().map(|p| unit_name(p)).collect();
        let gone: Vec<Arc<Unit>> = {
            let mut units = self.units.write().unwrap();
            let gone: Vec<String> = units.keys().filter(|n| !names.contains(*n)).cloned().collect();
            gone.iter().filter_map(|n| units.remove(n)).collect()
        };
        for u in gone {
            tracing::warn!(
                "unit {} is not in commit {}: no longer reconciled (nothing of it is deleted)",
                u.name,
                short(&head)
            );
            u.retire();
        }
        self.broken.lock().unwrap().retain(|n, _| names.contains(n));
        // What each unit's capstan.yaml names at this commit, before any unit reconciles it.
        let named = clash::named(self.source.clone(), &head, &paths, self.opts.target.clone()).await;
        let clashes = clash::clashes(&named);
        // A running unit that now shares its target and owner with another is stopped; one
        // whose capstan.yaml names another target or owner is started afresh for it (until
        // then it applies nothing: `Unit::moved`).
        let stale: Vec<Arc<Unit>> = {
            let mut units = self.units.write().unwrap();
            let stale: Vec<String> = units
                .values()
                .filter(|u| {
                    clashes.contains_key(&u.name) || named.get(&u.name).is_some_and(|n| n.identity != u.identity)
                })
                .map(|u| u.name.clone())
                .collect();
            stale.iter().filter_map(|n| units.remove(n)).collect()
        };
        for u in stale {
            tracing::warn!("unit {} names another target or owner at commit {}: stopping it", u.name, short(&head));
            u.retire();
        }
        for path in paths {
            let name = unit_name(&path);
            if self.units.read().unwrap().contains_key(&name) {
                continue;
            }
            if let Some(why) = clashes.get(&name) {
                tracing::error!("unit {name} cannot start: {why}");
                self.broken.lock().unwrap().insert(name, why.clone());
                continue;
            }
            let started = Unit::start(&self.context(), &path).await.and_then(|unit| {
                // Two units that mark what they make with one owner on one target (however it
                // is spelled) would each prune what the other declares. Refused above from the
                // commit; checked again here, as a unit starts at the newest commit.
                let units = self.units.read().unwrap();
                let clash = |u: &&Arc<Unit>| {
                    u.connected.key.overlaps(&unit.connected.key) && u.identity.owner == unit.identity.owner
                };
                match units.values().find(clash) {
                    Some(other) => anyhow::bail!(
                        "unit {} already reconciles {} with owner {:?}: each would prune what the other declares; give one of them its own `owner:` in capstan.yaml",
                        other.name,
                        other.connected.description,
                        unit.identity.owner
                    ),
                    None => Ok(unit),
                }
            });
            match started {
                Ok(unit) => {
                    self.broken.lock().unwrap().remove(&name);
                    let unit = Arc::new(unit);
                    self.units.write().unwrap().insert(name.clone(), unit.clone());
                    if let Some(page) = self.page.get() {
                        unit.notifier.start(unit.events.subscribe(), page.clone());
                    }
                    if self.running() {
                        self.loops.lock().unwrap().push(tokio::spawn(unit.run()));
                    }
                }
                Err(e) => {
                    tracing::error!("unit {name} cannot start: {e:#}");
                    self.broken.lock().unwrap().insert(name, format!("{e:#}"));
                }
            }
        }
        *self.discovered_at.lock().unwrap() = Some(head);
        Ok(())
    }

    /// Whether the units' loops have been started (by `run`).
    fn running(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Every unit, by name.
    pub fn units(&self) -> Vec<Arc<Unit>> {
        self.units.read().unwrap().values().cloned().collect()
    }

    /// The unit named `name`.
    pub fn unit_named(&self, name: &str) -> Option<Arc<Unit>> {
        self.units.read().unwrap().get(&unit_name(name)).cloned()
    }

    /// The one unit, when there is exactly one (the paths without a unit answer for it).
    pub fn sole(&self) -> Option<Arc<Unit>> {
        let units = self.units.read().unwrap();
        if units.len() == 1 { units.values().next().cloned() } else { None }
    }

    /// Units that could not start, with why.
    pub fn broken(&self) -> BTreeMap<String, String> {
        self.broken.lock().unwrap().clone()
    }

    /// Whether this daemon was started for one plain `--path`.
    pub fn is_single(&self) -> bool {
        self.single
    }

    fn source_git_dir(&self) -> anyhow::Result<PathBuf> {
        self.source.git_dir()
    }

    /// Ask every unit for a reconcile (each decides whether the newest commit changes anything
    /// for it), and look for new units first.
    pub fn trigger(&self, reason: Reason) {
        if self.single {
            for u in self.units() {
                u.trigger(reason);
            }
        } else {
            self.reasons.lock().unwrap().push(reason);
            self.wake.notify_one();
        }
    }

    /// The loops: one per unit, and (for a fleet) one that looks for units at each new commit.
    /// Returns when shutdown has been asked for and every unit's running step ended.
    pub async fn run(self: Arc<Self>) {
        self.started.store(true, Ordering::SeqCst);
        let watcher = watch::start(self.clone());
        for u in self.units() {
            self.loops.lock().unwrap().push(tokio::spawn(u.run()));
        }
        let first = Duration::from_millis(500);
        let mut retry = first;
        while !self.shutting_down.load(Ordering::SeqCst) {
            if self.single {
                self.wake.notified().await;
                continue;
            }
            let wait = match self.discover().await {
                Ok(()) => {
                    retry = first;
                    self.opts.resync
                }
                Err(e) => {
                    tracing::warn!("cannot look for units: {e:#}");
                    retry = (retry * 2).min(Duration::from_secs(8));
                    retry
                }
            };
            // Each unit decides whether the commit changes anything for it.
            let reasons: Vec<Reason> = std::mem::take(&mut *self.reasons.lock().unwrap());
            if let Some(reason) = Reason::strongest(reasons) {
                for u in self.units() {
                    u.trigger(reason);
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        drop(watcher);
        loop {
            let handle = self.loops.lock().unwrap().pop();
            match handle {
                Some(h) => {
                    let _ = h.await;
                }
                None => break,
            }
        }
    }

    /// Stop after each unit's running step, recording state.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        for u in self.units() {
            u.begin_shutdown();
        }
    }

    /// Resolves once the daemon has stopped reconciling (for the server and event streams).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Stop the embedded sandboxes, if any.
    pub async fn close(self: Arc<Self>) -> anyhow::Result<()> {
        let units: Vec<Arc<Unit>> = std::mem::take(&mut *self.units.write().unwrap()).into_values().collect();
        drop(self);
        let mut result = Ok(());
        for u in units {
            if let Err(e) = u.close().await {
                result = Err(e);
            }
        }
        result
    }

    /// What `/v1/units` shows: each unit, and each that could not start.
    pub fn units_json(&self) -> Value {
        let mut list: Vec<Value> = self.units().iter().map(|u| u.summary()).collect();
        for (name, why) in self.broken() {
            list.push(json!({ "name": name, "phase": "not_started", "error": why }));
        }
        json!(list)
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
    // Named to clients by the other daemons when asked to change a unit this one holds (on
    // every address: by the machine's name).
    daemon.fleet.advertise(if addr.ip().is_unspecified() {
        format!("http://{}:{}", lease::host_name(), addr.port())
    } else {
        format!("http://{addr}")
    });
    let app = api::router(daemon.clone());
    let page = format!("http://{addr}/");
    let _ = daemon.page.set(page.clone());
    for u in daemon.units() {
        u.notifier.start(u.events.subscribe(), page.clone());
    }
    let server = tokio::spawn(server::serve(listener, app, limits, daemon.closed()));
    let destination = match daemon.sole() {
        Some(u) if daemon.is_single() => u.target_description().to_string(),
        _ => format!("{} units (GET /v1/units)", daemon.units().len()),
    };
    // A closed stdout is no reason to stop (nor to panic, as println! would).
    let _ = write_stdout(&format!(
        "capstan daemon listening on http://{addr}, applying {} ({}) to {}; status page: http://{addr}/\n",
        daemon.opts.repo.location,
        daemon.opts.repo.reference.as_deref().unwrap_or("default branch"),
        destination
    ));
    // With a shared store, events reach every daemon's subscribers (one connection of its own).
    let relay = match daemon.opts.store.as_deref().map(str::trim) {
        Some(url) if daemon.fleet.shared() => {
            Some(relay::start(url, daemon.fleet.id(), daemon.events.clone(), daemon.closed())?)
        }
        _ => None,
    };
    let keeper = fleet::keep(daemon.clone());
    let runner = tokio::spawn(daemon.clone().run());
    crate::shutdown_signal().await;
    tracing::info!("shutting down: finishing the running step");
    daemon.begin_shutdown();
    let _ = runner.await;
    // The last events are out; event streams end, so the server's graceful shutdown can finish.
    daemon.closed.send_replace(true);
    let _ = keeper.await;
    // The relay sends what is queued once the daemon has closed; it is not waited for long.
    if let Some(relay) = relay {
        let _ = tokio::time::timeout(Duration::from_secs(5), relay).await;
    }
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

#[cfg(test)]
mod pattern_tests {
    use super::unit::unit_dir_name;
    use super::{is_pattern, path_matches};

    #[test]
    fn a_star_matches_within_one_directory_name_only() {
        assert!(path_matches("clusters/*", "clusters/eu"));
        assert!(path_matches("./clusters/*/", "clusters/us-east"));
        assert!(!path_matches("clusters/*", "clusters/eu/staging"), "a * does not cross /");
        assert!(!path_matches("clusters/*", "clusters"));
        assert!(!path_matches("clusters/*", "other/eu"));
        assert!(path_matches("*/*", "clusters/eu"));
        assert!(path_matches("clusters/e?", "clusters/eu"));
        assert!(!path_matches("clusters/e?", "clusters/e"));
        assert!(path_matches("clusters/[a-f]*", "clusters/eu"));
        assert!(!path_matches("clusters/[a-f]*", "clusters/us"));
        assert!(path_matches("clusters/[!a-f]*", "clusters/us"));
        assert!(path_matches("clusters/eu", "clusters/eu"), "a plain path matches itself");
        assert!(!path_matches("clusters/eu", "clusters/us"));
        assert!(path_matches("", "."), "the root");
    }

    #[test]
    fn patterns_are_told_from_directories() {
        assert!(is_pattern("clusters/*"));
        assert!(is_pattern("c?"));
        assert!(!is_pattern("clusters/eu"));
        assert!(!is_pattern(""));
    }

    #[test]
    fn a_unit_directory_name_cannot_leave_units_nor_collide() {
        assert_eq!(unit_dir_name("clusters/eu"), "clusters%2Feu");
        assert_eq!(unit_dir_name("."), "%2E");
        assert_eq!(unit_dir_name(".."), "%2E.");
        assert_ne!(unit_dir_name("a/b"), unit_dir_name("a%2Fb"));
        assert!(!unit_dir_name("../../etc").contains('/'));
        // Longer than a file name may be: cut, with a hash of the whole name.
        let (a, b) = (format!("clusters/{}/x", "a".repeat(300)), format!("clusters/{}/y", "a".repeat(300)));
        let (da, db) = (unit_dir_name(&a), unit_dir_name(&b));
        assert!(da.len() <= 200 && db.len() <= 200, "{da}");
        assert_ne!(da, db, "the hash tells them apart");
        assert!(da.starts_with("clusters%2Faaa") && da.contains('~'), "{da}");
        let d = unit_dir_name(&format!("a{}", "%".repeat(100)));
        let kept = d.split('~').next().unwrap();
        assert!(kept.ends_with("%25") && kept.len() == 148, "never half an escape: {d}");
        assert_eq!(unit_dir_name("short"), "short", "short names are as they were");
    }
}
