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
pub mod events;
pub mod metrics;
mod server;
pub mod store;
mod watch;
mod web;

use crate::apply::{self, ApplyOptions, Observer, Outcome, Status, StepOutcome};
use crate::base::diagnostic::Diagnostics;
use crate::cli::output;
use crate::config::Config;
use crate::engine::{self, PlanError, Planned};
use crate::plan::Plan;
use crate::redact::Redactor;
use crate::render::{RenderCache, RenderOptions};
use crate::source::git::{GitSource, RepoSpec, short};
use crate::target::{self, Connected};
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

/// How soon a reconcile that found the target locked, or could not fetch, is tried again:
/// doubling from the first to the last (and never later than the resync interval).
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(500);
const LOCK_RETRY_MAX: Duration = Duration::from_secs(8);

/// At most this many commits skipped in one burst are recorded as superseded.
const SUPERSEDED_LIMIT: usize = 100;

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

/// What the daemon is doing, for `GET /v1/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DaemonStatus {
    pub phase: String,
    /// The commit being converged to.
    pub target: Option<String>,
    /// The commit the followed branch is at.
    pub branch_head: Option<String>,
    /// The last commit applied completely.
    pub last_applied: Option<String>,
    pub last_result: Option<String>,
    pub last_reconcile: Option<String>,
    pub interrupted: bool,
    pub drifted: Vec<String>,
    pub ready: bool,
    /// Who holds the target's lock, while that keeps the daemon from applying.
    pub locked_by: Option<String>,
}

/// The plan running or last run, with its step statuses.
pub struct CurrentPlan {
    pub sha: String,
    pub plan: Plan,
    pub redactor: Redactor,
    pub outcome: Outcome,
}

impl CurrentPlan {
    /// The plan in seed 000's JSON shape, with live statuses.
    pub fn json(&self) -> Value {
        let mut p = output::phases_json(&self.plan, &self.redactor, Some(&self.outcome));
        p["commit"] = json!(self.sha);
        p
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
}

impl Daemon {
    pub async fn start(opts: DaemonOptions) -> anyhow::Result<Arc<Daemon>> {
        crate::state::create_dir(&opts.state_dir)?;
        let state_dir = opts.state_dir.clone();
        let spec = opts.repo.clone();
        let source = tokio::task::spawn_blocking(move || GitSource::open(spec, &state_dir)).await??;
        let store = Store::open_at(opts.store.as_deref(), &opts.state_dir)?;
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
                phase: "starting".into(),
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
                let _ = self.store.set_value("rollback", "");
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
        let _ = self.store.set_value("interrupted", "1");
        let applying = {
            let mut st = self.status.lock().unwrap();
            st.interrupted = true;
            st.phase == "applying"
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
        let _ = self.store.set_value("interrupted", "");
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

    fn set_phase(&self, phase: &str) {
        self.status.lock().unwrap().phase = phase.to_string();
    }

    /// The reconcile loop; returns when shutdown has been asked for and the running step ended.
    pub async fn run(self: Arc<Self>) {
        let watcher = watch::start(self.clone());
        let mut next_resync = Instant::now() + self.opts.resync;
        // A reconcile the target's lock kept from running: when to try again, and for what.
        let mut retry: Option<(Instant, Reason)> = None;
        let mut retry_delay = LOCK_RETRY_FIRST;
        let mut waiting = "waiting_for_lock";
        loop {
            if self.shutting_down.load(Ordering::SeqCst) {
                break;
            }
            let pending: Vec<Reason> = std::mem::take(&mut *self.reasons.lock().unwrap());
            let reason = match Reason::strongest(pending) {
                Some(r) => r,
                None => {
                    self.set_phase(if retry.is_some() { waiting } else { "idle" });
                    let resync_in = next_resync.saturating_duration_since(Instant::now());
                    let retry_in = retry.map(|(at, _)| at.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = self.wake.notified() => continue,
                        _ = tokio::time::sleep(resync_in) => Reason::Resync,
                        _ = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {
                            retry.expect("a retry is due").1
                        }
                    }
                }
            };
            // Whatever runs now also does what the retry was for.
            let reason = Reason::strongest(retry.take().map(|(_, r)| r).into_iter().chain([reason])).unwrap_or(reason);
            if reason == Reason::Resync || reason == Reason::Sync {
                next_resync = Instant::now() + self.opts.resync;
            }
            let started = Instant::now();
            let result = self.reconcile(reason).await;
            // A reconcile of ten thousand resources builds a few hundred MB it has now dropped:
            // hand it back, so an idle daemon is as small as what it keeps.
            crate::release_free_memory();
            // A failed apply is planned again once, from what is live now.
            if result == "apply_failed" && reason != Reason::Retry {
                self.reasons.lock().unwrap().push(Reason::Retry);
            }
            // Locked by an apply, or the repository could not be read (a network, a server, or
            // this process short of file descriptors): try again soon rather than at the next
            // commit, which a local repository's watcher has already reported.
            if result == "target_locked" || result == "fetch_failed" {
                waiting = if result == "fetch_failed" { "waiting_to_fetch" } else { "waiting_for_lock" };
                retry = Some((Instant::now() + retry_delay, reason));
                retry_delay = (retry_delay * 2).min(LOCK_RETRY_MAX).min(self.opts.resync.max(LOCK_RETRY_FIRST));
            } else {
                retry_delay = LOCK_RETRY_FIRST;
            }
            self.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.reconcile(result);
            let mut st = self.status.lock().unwrap();
            st.last_result = Some(result.to_string());
            st.last_reconcile = Some(now_rfc3339());
            st.ready = true;
        }
        drop(watcher);
        self.set_phase("stopped");
    }

    /// One reconcile. Returns a word for the result, for metrics and status.
    async fn reconcile(&self, reason: Reason) -> &'static str {
        self.set_phase("fetching");
        let source = self.source.clone();
        let fetched = tokio::task::spawn_blocking(move || source.fetch_and_resolve())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let sha = match fetched {
            Ok(head) => {
                self.status.lock().unwrap().branch_head = Some(head.clone());
                self.converge_to(head)
            }
            Err(e) => {
                self.events.publish(Event::FetchFailed { message: format!("{e:#}") });
                return "fetch_failed";
            }
        };
        let previous = {
            let st = self.status.lock().unwrap();
            st.target.clone().or_else(|| st.last_applied.clone())
        };
        let new_commit = self.status.lock().unwrap().target.as_deref() != Some(sha.as_str());
        if new_commit {
            let superseded = match previous.filter(|p| *p != sha) {
                Some(p) => self.supersede_between(&p, &sha).await,
                None => Vec::new(),
            };
            if let Err(e) = self.store.seen(&sha) {
                tracing::error!("cannot record commit {sha}: {e:#}");
            }
            self.status.lock().unwrap().target = Some(sha.clone());
            let deferred = self.paused_commit().is_some() && self.is_interrupted();
            self.events.publish(Event::CommitSeen { sha: sha.clone(), superseded, deferred });
        }
        // Interrupted part way: commits are recorded, nothing is planned until `continue`.
        if self.is_interrupted() && self.paused_commit().is_some() {
            return "interrupted";
        }
        let known = self.store.status(&sha).ok().flatten();
        // What the platform was last made equal to: an applied commit is applied again when
        // the branch (or a rollback) comes back to it after another.
        let live = self.store.get_value("live").ok().flatten().filter(|l| !l.is_empty());
        let is_live =
            live.or_else(|| self.status.lock().unwrap().last_applied.clone()).as_deref() == Some(sha.as_str());
        let drift_check = match (reason, known) {
            // An invalid commit stays invalid until the next commit, unless asked again (a sync,
            // or a restart: perhaps with --take-ownership, or other --var values).
            (_, Some(CommitStatus::Invalid)) if !matches!(reason, Reason::Sync | Reason::Startup) => return "invalid",
            // A refused plan stays refused, unless asked again (a sync, or a restart, perhaps
            // with --allow-mass-delete).
            (_, Some(CommitStatus::Refused)) if !matches!(reason, Reason::Sync | Reason::Startup) => return "refused",
            // A rollback applies a commit that was applied before, on purpose; a continue
            // carries on with what was interrupted; a retry tries again what failed.
            (Reason::Rollback | Reason::Continue | Reason::Retry, _) => false,
            // Applied and live: only a resync or an explicit sync looks again, for drift.
            (Reason::Resync | Reason::Sync, Some(CommitStatus::Applied)) if is_live => true,
            (_, Some(CommitStatus::Applied)) if is_live => return "unchanged",
            _ => false,
        };

        // Plan and apply under the target's lock, so that no `capstan apply` changes the target
        // between the two; held by an apply, it is tried again shortly (see `run`).
        // An interrupted plan kept it.
        let held = self.paused.lock().unwrap().take().map(|(_, lock)| lock);
        let lock = match held.map(Ok).unwrap_or_else(|| crate::lock::TargetLock::acquire(&self.connected.key)) {
            Ok(lock) => {
                self.status.lock().unwrap().locked_by = None;
                lock
            }
            Err(e) => return self.locked(&sha, format!("{e:#}")),
        };

        self.set_phase("planning");
        let source = self.source.clone();
        let commit = sha.clone();
        let snapshot = match tokio::task::spawn_blocking(move || source.snapshot(&commit)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.invalid(&sha, reason, vec![json!({ "message": format!("{e:#}") })]),
            Err(e) => return self.invalid(&sha, reason, vec![json!({ "message": e.to_string() })]),
        };
        let config = match &snapshot.config {
            Some(f) => match Config::parse(&f.path, &f.text) {
                Ok(c) => c,
                Err(d) => return self.invalid(&sha, reason, diagnostics_json(&d)),
            },
            None => Config::default(),
        };
        let provider = self.connected.provider.as_ref();
        let flags = engine::PlanFlags { prune: config.prune, take_ownership: self.opts.take_ownership };
        let planned = match engine::plan(
            provider,
            &snapshot,
            &config,
            &self.opts.render,
            flags,
            Some(&self.render_cache),
        )
        .await
        {
            Ok(p) => p,
            Err(PlanError::Invalid(i)) => return self.invalid(&sha, reason, diagnostics_json(&i.0)),
            Err(PlanError::Observe(e)) => {
                self.events.publish(Event::ObserveFailed { sha: sha.clone(), message: e.to_string() });
                return "observe_failed";
            }
        };
        let merged = planned.rendered.redactor.value(&provider.merge_documents(&planned.rendered.documents));
        let _ = self.store.set_rendered(&sha, &merged);
        // The same bytes `capstan plan --repo ... --ref <sha> --output json` prints.
        let plan_json = output::plan_json(
            self.platform(),
            &planned.changes,
            &planned.plan,
            &planned.rendered.warnings,
            &planned.rendered.redactor,
            planned.preview.as_ref(),
        );
        if let Ok(text) = serde_json::to_string_pretty(&plan_json) {
            let _ = self.store.set_plan(&sha, &format!("{text}\n"));
        }

        if drift_check {
            let drifted: Vec<String> = planned
                .changes
                .changes
                .iter()
                .filter(|c| c.action != crate::diff::Action::NoOp)
                .map(|c| c.id.to_string())
                .collect();
            self.metrics.drifted.set(drifted.len() as i64);
            let changed = std::mem::replace(&mut self.status.lock().unwrap().drifted, drifted.clone()) != drifted;
            if drifted.is_empty() {
                return "in_sync";
            }
            if changed {
                let detail = json!({ "resources": drifted, "repairing": self.opts.self_heal });
                let _ = self.store.record(&sha, reason.trigger(), "drift_found", (0, 0), &detail);
            }
            self.events.publish(Event::DriftFound {
                sha: sha.clone(),
                resources: drifted,
                repairing: self.opts.self_heal,
            });
            if !self.opts.self_heal {
                return "drift_reported";
            }
        }
        if !self.opts.allow_mass_delete
            && let Err(why) = engine::check_mass_delete(&planned, &config.mass_delete)
        {
            let deletes = planned.changes.changes.iter().filter(|c| c.action == crate::diff::Action::Delete).count();
            // An applied commit whose drift repair would delete this much stays applied.
            return self.refuse(&sha, reason, deletes, why, !drift_check);
        }
        if !self.opts.allow_check_failures
            && let Err(why) = engine::check_checks(&planned)
        {
            let why = planned.rendered.redactor.text(&why);
            let guard = planned.checks.as_ref().map(|c| c.reason()).unwrap_or_default();
            return self.refuse_as(&sha, reason, &guard, 0, why, !drift_check);
        }
        self.apply(&sha, reason, planned, lock).await
    }

    /// Record commits skipped over between `from` and `to` as superseded by `to`.
    async fn supersede_between(&self, from: &str, to: &str) -> Vec<String> {
        let source = self.source.clone();
        let (from, to_) = (from.to_string(), to.to_string());
        let skipped = tokio::task::spawn_blocking(move || source.commits_between(&from, &to_, SUPERSEDED_LIMIT)).await;
        let skipped = match skipped {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("cannot list the commits before {}: {e:#}", short(to));
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        let mut superseded = Vec::new();
        for c in skipped {
            let known = self.store.status(&c).ok().flatten();
            if matches!(known, None | Some(CommitStatus::Pending | CommitStatus::Applying)) {
                let _ = self.store.supersede(&c, to);
                superseded.push(c);
            }
        }
        superseded
    }

    /// The target is locked by someone else: say so once per holder, and let `run` retry.
    fn locked(&self, sha: &str, message: String) -> &'static str {
        let first = {
            let mut st = self.status.lock().unwrap();
            let first = st.locked_by.as_deref() != Some(message.as_str());
            st.locked_by = Some(message.clone());
            first
        };
        tracing::debug!("cannot apply {}: {message}", short(sha));
        if first {
            self.events.publish(Event::TargetLocked { sha: sha.to_string(), message });
        }
        "target_locked"
    }

    /// A plan that is not to be applied: nothing is changed; the commit is recorded as refused
    /// (when `record`), and the world is told why.
    fn refuse(&self, sha: &str, reason: Reason, deletes: usize, why: String, record: bool) -> &'static str {
        self.refuse_as(sha, reason, "mass_delete", deletes, why, record)
    }

    /// Refuse a commit for a guard's reason (`mass_delete`, a failed check's kind).
    fn refuse_as(
        &self,
        sha: &str,
        reason: Reason,
        guard: &str,
        deletes: usize,
        why: String,
        record: bool,
    ) -> &'static str {
        if record {
            let detail = json!({ "errors": [{ "reason": guard, "message": why }] });
            let _ = self.store.record(sha, reason.trigger(), "refused", (0, 0), &detail);
        }
        tracing::warn!("not applying {}: {why}", short(sha));
        self.events.publish(Event::PlanRefused { sha: sha.to_string(), reason: guard.into(), deletes, message: why });
        "refused"
    }

    /// Record a commit that cannot be applied, and tell the world why.
    fn invalid(&self, sha: &str, reason: Reason, errors: Vec<Value>) -> &'static str {
        let _ = self.store.record(sha, reason.trigger(), "invalid", (0, 0), &json!({ "errors": errors }));
        self.events.publish(Event::RenderFailed { sha: sha.to_string(), errors });
        "invalid"
    }

    async fn apply(&self, sha: &str, reason: Reason, planned: Planned, lock: crate::lock::TargetLock) -> &'static str {
        if self.shutting_down.load(Ordering::SeqCst) {
            return "stopped";
        }
        let Planned { rendered, live, changes, plan: fresh, .. } = &planned;
        let pending = StepOutcome { status: Status::Pending, message: String::new(), duration: Duration::ZERO };
        // After `continue` the plan was made again against the newest commit. When it is what
        // was left of the interrupted one (same commit, same steps), that one carries on, so its
        // completed steps stay shown; otherwise the new plan replaces it, and the events say so.
        let previous = self.current.lock().unwrap().take();
        let (plan, start) = match previous {
            Some(prev) if reason == Reason::Continue && prev.sha == sha && same_rest(&prev, fresh) => {
                let steps = prev
                    .outcome
                    .steps
                    .iter()
                    .map(|o| if o.status == Status::Complete { o.clone() } else { pending.clone() })
                    .collect();
                (prev.plan, Outcome { steps })
            }
            prev => {
                if reason == Reason::Continue
                    && let Some(p) = &prev
                {
                    self.events.publish(Event::PlanReplanned {
                        sha: sha.to_string(),
                        from: p.sha.clone(),
                        steps: fresh.steps.len(),
                    });
                }
                let n = fresh.steps.len();
                (fresh.clone(), Outcome { steps: vec![pending.clone(); n] })
            }
        };
        if reason == Reason::Continue {
            self.events.publish(Event::PlanContinued { sha: sha.to_string() });
        }
        let total = plan.steps.len();
        *self.current.lock().unwrap() = Some(CurrentPlan {
            sha: sha.to_string(),
            plan: plan.clone(),
            redactor: rendered.redactor.clone(),
            outcome: start.clone(),
        });
        if start.converged() {
            return self.converged(sha, reason, &start);
        }
        let trigger = reason.trigger();
        let _ = self.store.record(sha, trigger, "applying", (start.count(Status::Complete), total), &Value::Null);
        self.set_phase("applying");
        self.events.publish(Event::PlanStarted {
            sha: sha.to_string(),
            reason: serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            steps: plan.steps.len(),
            summary: output::summary_line(changes),
        });
        let observer = Steps { daemon: self, sha, redactor: &rendered.redactor, started: AtomicBool::new(false) };
        // A run that a killed daemon left is settled by this plan, made from live state.
        match crate::journal::Journal::take_unfinished(&self.opts.state_dir, &self.connected.key) {
            Ok(runs) => runs.iter().for_each(|r| tracing::warn!("resuming: {}", r.describe())),
            Err(e) => tracing::error!("cannot read the journal: {e:#}"),
        }
        let journal = match crate::journal::Journal::begin(&self.opts.state_dir, &self.connected.key, &plan) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                tracing::error!("cannot open the journal: {e:#}");
                return "journal_failed";
            }
        };
        let opts = ApplyOptions {
            parallelism: self.opts.parallelism,
            interrupt: self.interrupt.clone(),
            journal: journal.clone(),
            paused: Some(self.interrupted.clone()),
        };
        let provider = self.connected.provider.as_ref();
        let outcome = apply::resume(provider, &plan, &rendered.desired, live, &opts, &observer, &start).await;
        let applied = (outcome.count(Status::Complete), total);
        if outcome.steps.iter().any(|s| s.status == Status::Waiting) {
            self.record_outcome(sha, &outcome);
            if let Some(j) = &journal {
                let _ = j.end(if self.is_interrupted() { "interrupted" } else { "stopped" });
            }
            if self.shutting_down.load(Ordering::SeqCst) && !self.is_interrupted() {
                // Stopped part way by a shutdown: the rest is for the next start.
                let _ = self.store.record(sha, trigger, "stopped", applied, &Value::Null);
                return "stopped";
            }
            // Interrupted: the rest waits for `continue`, which plans again first (and may already
            // have come: then it is queued). The lock is kept meanwhile, so no apply changes the
            // target under the plan.
            let _ = self.store.record(sha, trigger, "interrupted", applied, &Value::Null);
            *self.paused.lock().unwrap() = Some((sha.to_string(), lock));
            self.events.publish(Event::PlanInterrupted { sha: sha.to_string() });
            self.set_phase("interrupted");
            return "interrupted";
        }
        self.record_outcome(sha, &outcome);
        // A step that said done and was not is caught by planning again what was touched.
        let verified = match outcome.converged() {
            true => engine::verify(provider, &planned).await,
            false => Ok(()),
        };
        if let Some(j) = &journal {
            let _ = j.end(if outcome.converged() && verified.is_ok() { "done" } else { "failed" });
        }
        if let Err(why) = verified {
            let message = rendered.redactor.text(&why);
            tracing::warn!("{} did not converge: {message}", short(sha));
            let errors = json!({ "errors": [{ "step": "verify", "message": message }] });
            let _ = self.store.record(sha, trigger, "failed", applied, &errors);
            self.events.publish(Event::ApplyFailed {
                sha: sha.to_string(),
                failed: 0,
                not_started: 0,
                message: Some(message),
            });
            "apply_failed"
        } else if outcome.converged() {
            self.converged(sha, reason, &outcome)
        } else {
            let failed = outcome.count(Status::Error);
            let errors: Vec<Value> = outcome
                .steps
                .iter()
                .zip(&plan.steps)
                .filter(|(o, _)| o.status == Status::Error)
                .map(|(o, s)| json!({ "step": s.name, "message": rendered.redactor.text(&o.message) }))
                .collect();
            let _ = self.store.record(sha, trigger, "failed", applied, &json!({ "errors": errors }));
            self.events.publish(Event::ApplyFailed {
                sha: sha.to_string(),
                failed,
                not_started: outcome.steps.len() - failed - outcome.count(Status::Complete),
                message: None,
            });
            "apply_failed"
        }
    }

    fn record_outcome(&self, sha: &str, outcome: &Outcome) {
        let json = self.current.lock().unwrap().as_mut().map(|c| {
            c.outcome = outcome.clone();
            c.json()
        });
        if let Some(j) = json {
            let _ = self.store.set_outcome(sha, &j);
        }
    }

    fn converged(&self, sha: &str, reason: Reason, outcome: &Outcome) -> &'static str {
        self.record_outcome(sha, outcome);
        let steps = (outcome.count(Status::Complete), outcome.steps.len());
        let _ = self.store.record(sha, reason.trigger(), "applied", steps, &Value::Null);
        let _ = self.store.set_value("last_applied", sha);
        let _ = self.store.set_value("live", sha);
        self.metrics.last_applied_commit_time.set(store::now() as f64);
        self.metrics.drifted.set(0);
        {
            let mut st = self.status.lock().unwrap();
            st.last_applied = Some(sha.to_string());
            st.drifted.clear();
        }
        // Older commits that never got applied will not be.
        let _ = self.store.supersede_pending(sha, sha);
        self.events.publish(Event::Converged { sha: sha.to_string() });
        tracing::info!("converged to {}", short(sha));
        "converged"
    }

    /// Stop the embedded sandbox, if any.
    pub async fn close(self: Arc<Self>) -> anyhow::Result<()> {
        match Arc::try_unwrap(self) {
            Ok(d) => d.connected.close().await,
            Err(_) => Ok(()),
        }
    }
}

/// Publishes every step's start and end, and keeps the current plan's statuses live.
struct Steps<'a> {
    daemon: &'a Daemon,
    sha: &'a str,
    redactor: &'a Redactor,
    /// Whether a step has started: from then on the platform is this commit's (`live`).
    started: AtomicBool,
}

impl Observer for Steps<'_> {
    fn step_started(&self, plan: &Plan, step: usize) {
        if !self.started.swap(true, Ordering::SeqCst) {
            let _ = self.daemon.store.set_value("live", self.sha);
        }
        if let Some(c) = self.daemon.current.lock().unwrap().as_mut() {
            c.outcome.steps[step].status = Status::InProgress;
        }
        let s = &plan.steps[step];
        self.daemon.events.publish(Event::StepStarted {
            sha: self.sha.into(),
            step: s.id.clone(),
            name: s.name.clone(),
        });
    }

    fn step_finished(&self, plan: &Plan, step: usize, outcome: &StepOutcome) {
        if let Some(c) = self.daemon.current.lock().unwrap().as_mut() {
            c.outcome.steps[step] = outcome.clone();
        }
        let s = &plan.steps[step];
        let (sha, id, name) = (self.sha.to_string(), s.id.clone(), s.name.clone());
        match outcome.status {
            Status::Complete => {
                self.daemon.metrics.step("complete");
                self.daemon.events.publish(Event::StepFinished {
                    sha,
                    step: id,
                    name,
                    duration_ms: outcome.duration.as_millis() as u64,
                });
            }
            _ => {
                self.daemon.metrics.step("error");
                let message = self.redactor.text(&outcome.message);
                self.daemon.events.publish(Event::StepFailed { sha, step: id, name, message });
            }
        }
    }
}

/// Whether a new plan's steps are exactly the steps an interrupted plan had left to do (step
/// ids are hashes of their content).
fn same_rest(prev: &CurrentPlan, fresh: &Plan) -> bool {
    let left: std::collections::BTreeSet<&str> = prev
        .plan
        .steps
        .iter()
        .zip(&prev.outcome.steps)
        .filter(|(_, o)| o.status != Status::Complete)
        .map(|(s, _)| s.id.as_str())
        .collect();
    let fresh_ids: std::collections::BTreeSet<&str> = fresh.steps.iter().map(|s| s.id.as_str()).collect();
    !left.is_empty() && left == fresh_ids
}

/// How far back a rollback target is looked for along the followed branch's first parents.
const FIRST_PARENT_LIMIT: usize = 100_000;

fn diagnostics_json(d: &Diagnostics) -> Vec<Value> {
    d.0.iter()
        .map(|x| {
            let mut v = serde_json::to_value(x).unwrap_or(Value::Null);
            v["text"] = json!(x.to_string());
            v
        })
        .collect()
}

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
    let _ = crate::cli::out(&format!(
        "capstan daemon listening on http://{addr}, applying {} ({}) to {}; status page: http://{addr}/\n",
        daemon.opts.repo.location,
        daemon.opts.repo.reference.as_deref().unwrap_or("default branch"),
        daemon.target_description()
    ));
    let runner = tokio::spawn(daemon.clone().run());
    crate::cli::shutdown_signal().await;
    tracing::info!("shutting down: finishing the running step");
    daemon.begin_shutdown();
    let _ = runner.await;
    // The last events are out; event streams end, so the server's graceful shutdown can finish.
    daemon.closed.send_replace(true);
    let _ = server.await;
    daemon.close().await
}
