//! A deployment unit: one manifest directory of the followed repository, with its own
//! capstan.yaml, target, lock, plan, pin, render cache, history and events, reconciled by its
//! own loop (`reconcile.rs`, `apply.rs`). What all units of a daemon share (the repository, the
//! event bus, the metrics, the options, the HTTP server) is the [`Daemon`]'s.
//!
//! The lease a daemon holds for a unit on a shared store is the daemon's [`fleet::Fleet`]'s
//! (one keeper for all units, keyed by unit name); each reconcile of a unit claims it first
//! and applies past its fence (`reconcile.rs`, `apply.rs`).

use super::*;

pub struct Unit {
    /// The unit's name by [`unit_name`]: its directory relative to the repository root.
    pub name: String,
    /// Its manifest directory, as it reads it from each commit.
    pub path: String,
    pub opts: Arc<DaemonOptions>,
    /// The daemon's repository, reading this unit's directory.
    pub(super) source: Arc<GitSource>,
    /// Where its journal and embedded sandbox live: the state directory for a daemon of one
    /// unit, `units/<name>` under it for a fleet.
    pub(super) state_dir: PathBuf,
    /// Its history, apart from every other unit's.
    pub store: Store,
    pub events: UnitEvents,
    pub metrics: Arc<Metrics>,
    /// The unit's label on per-unit metrics (none for a daemon of one unit, whose metrics are
    /// as they always were).
    pub(super) label: Option<String>,
    pub status: Mutex<DaemonStatus>,
    pub current: Mutex<Option<CurrentPlan>>,
    /// Set by a rollback; cleared by the next commit.
    pub(super) pin: Mutex<Option<Pin>>,
    pub(super) connected: Connected,
    /// The target, platform and owner its capstan.yaml named when it started (what
    /// `connected` is): two units with one target and one owner would each prune what the
    /// other declares, so a fleet refuses the second; a commit naming another is not applied
    /// by this unit (`moved`), and a fleet starts the unit afresh for it.
    pub(super) identity: target::Identity,
    pub(super) render_cache: RenderCache,
    /// What the platform was last made equal to, by the commit it was (none after anything but
    /// a converged apply or a drift check in sync): a commit after it is planned incrementally.
    pub(super) baseline: Mutex<Option<(String, crate::engine::Baseline)>>,
    /// When the last full plan was made: a commit is planned incrementally only within the
    /// resync interval of one, so a stream of commits never puts off the full look.
    pub(super) last_full: Mutex<Option<Instant>>,
    /// Wakes the reconcile loop; permits coalesce, so a burst of wake-ups is one reconcile.
    pub(super) wake: Notify,
    pub(super) reasons: Mutex<Vec<Reason>>,
    /// Stops apply from starting steps: set by an interrupt, and by a shutdown.
    pub interrupt: Arc<AtomicBool>,
    /// Set by `interrupt`, cleared by `continue`; kept in the store across restarts.
    pub(super) interrupted: Arc<AtomicBool>,
    /// The commit of a plan stopped by an interrupt, whose lock is held until it is continued.
    pub(super) paused: Mutex<Option<(String, crate::lock::TargetLock)>>,
    /// The daemon's: set when it stops.
    pub(super) shutting_down: Arc<AtomicBool>,
    /// Set when the unit's directory is gone from the newest commit (or lost its capstan.yaml):
    /// its loop ends; nothing of it is deleted.
    pub(super) retired: AtomicBool,
    /// How many units may reconcile at once (`--unit-parallelism`), shared by all.
    pub(super) permits: Arc<tokio::sync::Semaphore>,
    /// capstan.yaml's notification receivers (of the commit the unit started at).
    pub notifier: Arc<super::notify::Notifier>,
    /// The daemon's side of the unit leases (shared by all its units): this unit is reconciled
    /// only under its claim (`reconcile`), each step past its fence.
    pub(super) fleet: Arc<fleet::Fleet>,
    /// What this daemon last kept in the shared store as what the API shows (`share_shown`).
    pub(super) shared_shown: Mutex<Option<String>>,
    /// The commit whose stored outcome is the unit's current plan, as last kept (shared store).
    pub(super) shared_plan: Mutex<Option<String>>,
}

/// The keys under which the holder keeps, in the unit's store, what every daemon's API shows:
/// [`Shown`], and the commit whose outcome is the current plan.
const SHOWN_KEY: &str = "shown";
const PLAN_KEY: &str = "plan_commit";

/// A unit's view of the daemon's event bus: every event it publishes carries its name, and
/// also goes to its own notifier's channel (a unit's notifications are about it alone).
pub struct UnitEvents {
    pub unit: String,
    bus: Arc<EventBus>,
    own: tokio::sync::broadcast::Sender<events::Envelope>,
}

impl UnitEvents {
    pub fn publish(&self, event: Event) {
        let env = self.bus.publish_in(Some(&self.unit), event);
        let _ = self.own.send(env);
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<events::Envelope> {
        self.own.subscribe()
    }
}

/// What a unit is started with besides its directory.
pub(super) struct UnitContext {
    pub opts: Arc<DaemonOptions>,
    pub source: Arc<GitSource>,
    pub events: Arc<EventBus>,
    pub metrics: Arc<Metrics>,
    pub shutting_down: Arc<AtomicBool>,
    pub permits: Arc<tokio::sync::Semaphore>,
    /// A daemon of one unit keeps everything where it always did (`capstan.db` in the state
    /// directory); a fleet's unit under `units/<name>`.
    pub single: bool,
    /// Where the units keep their histories (shared PostgreSQL connections, or SQLite files).
    pub stores: Arc<super::store::Stores>,
    pub fleet: Arc<fleet::Fleet>,
}

/// The directory name a unit's state is kept under: its name with every character but ASCII
/// letters, digits, `-`, `_` and a `.` that does not lead percent-encoded (`clusters%2Feu`),
/// so no name can leave `units/` or collide with another. A name that would be longer than a
/// file name may be (255 bytes; a unit's name joins up to 16 directories) keeps its first
/// `KEPT` bytes and then `~` and a hash of the whole name (`~` is always encoded otherwise, so
/// it cannot collide with a shorter name).
pub fn unit_dir_name(name: &str) -> String {
    const MAX: usize = 200;
    const KEPT: usize = 150;
    let mut out = String::new();
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX {
        use sha2::Digest;
        // Never half an escape: cut before a `%` in the last two bytes kept.
        let cut = out[KEPT - 2..KEPT].find('%').map_or(KEPT, |at| KEPT - 2 + at);
        let digest = sha2::Sha256::digest(name.as_bytes());
        out = format!("{}~{}", &out[..cut], hex::encode(&digest[..12]));
    }
    out
}

impl Unit {
    /// Start the unit whose manifests are in `path`: its target from the newest commit's
    /// capstan.yaml in that directory (or --target).
    pub(super) async fn start(cx: &UnitContext, path: &str) -> anyhow::Result<Unit> {
        let opts = cx.opts.clone();
        let name = unit_name(path);
        let source = Arc::new(cx.source.at_path(path));
        let state_dir =
            if cx.single { opts.state_dir.clone() } else { opts.state_dir.join("units").join(unit_dir_name(&name)) };
        crate::state::create_dir(&state_dir)?;
        let store = if cx.single {
            Store::open_at(opts.store.as_deref(), &opts.state_dir)?
        } else {
            let (stores, dir, unit) = (cx.stores.clone(), state_dir.clone(), name.clone());
            // Migrating the unit's schema waits for a connection of the pool: not on a worker.
            tokio::task::spawn_blocking(move || Store::open_unit(&stores, &dir, &unit)).await??
        };
        // The target comes from the newest commit's capstan.yaml (or --target). A commit whose
        // capstan.yaml cannot be read is an error here: its defaults would be another target
        // (the embedded sandbox), and changes must never silently go elsewhere.
        let config = {
            let src = source.clone();
            let (head, file) = tokio::task::spawn_blocking(move || {
                let head = src.resolve().ok();
                let file = match &head {
                    Some(c) => {
                        src.snapshot(c)
                            .map_err(|e| anyhow::anyhow!("cannot choose the target: cannot read commit {c}: {e:#}"))?
                            .config
                    }
                    None => None,
                };
                anyhow::Ok((head, file))
            })
            .await??;
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
        let identity = target::Identity::of(&config, opts.target.as_deref())?;
        let connected = target::connect(&config, opts.target.as_deref(), &state_dir, opts.force).await?;
        let last_applied = store.get_value("last_applied")?;
        let pin = Mutex::new(Pin::load(&store));
        let interrupted = store.get_value("interrupted")?.as_deref() == Some("1");
        let notifier = super::notify::Notifier::new(
            &config.notifications,
            cx.metrics.notifications.clone(),
            cx.metrics.notification_failing.clone(),
        )?;
        Ok(Unit {
            label: (!cx.single).then(|| name.clone()),
            events: UnitEvents {
                unit: name.clone(),
                bus: cx.events.clone(),
                own: tokio::sync::broadcast::channel(4096).0,
            },
            name,
            path: path.to_string(),
            source,
            state_dir,
            store,
            metrics: cx.metrics.clone(),
            status: Mutex::new(DaemonStatus {
                phase: Phase::Starting,
                last_applied,
                interrupted,
                ..DaemonStatus::default()
            }),
            current: Mutex::new(None),
            pin,
            connected,
            identity,
            render_cache: RenderCache::default(),
            baseline: Mutex::new(None),
            last_full: Mutex::new(None),
            wake: Notify::new(),
            reasons: Mutex::new(vec![Reason::Startup]),
            interrupt: Arc::new(AtomicBool::new(interrupted)),
            interrupted: Arc::new(AtomicBool::new(interrupted)),
            paused: Mutex::new(None),
            shutting_down: cx.shutting_down.clone(),
            retired: AtomicBool::new(false),
            permits: cx.permits.clone(),
            notifier: Arc::new(notifier),
            fleet: cx.fleet.clone(),
            shared_shown: Mutex::new(None),
            shared_plan: Mutex::new(None),
            opts,
        })
    }

    /// Why this unit must not apply a commit whose capstan.yaml is `config`: it names another
    /// target, platform or owner than the unit was started (and connected) for. Applying it
    /// would send the commit's manifests to the old target, or mark and prune as the old
    /// owner, and daemons started at different commits would disagree. None when the same.
    pub(super) fn moved(&self, config: &Config) -> Option<String> {
        let now = match target::Identity::of(config, self.opts.target.as_deref()) {
            Ok(id) if id == self.identity => return None,
            Ok(id) => id,
            Err(e) => return Some(format!("cannot tell what capstan.yaml applies {} to: {e:#}", self.name)),
        };
        let again = if self.label.is_some() {
            "the daemon starts the unit afresh when it next looks for units"
        } else {
            "restart the daemon to follow it"
        };
        Some(format!(
            "capstan.yaml at this commit applies {} to {now}, and this unit was started for {}: nothing is applied to either until the unit is started again ({again})",
            self.name, self.identity
        ))
    }

    /// Whether the loop is to end: the daemon stops, or the unit left the repository.
    pub(super) fn ending(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst) || self.retired.load(Ordering::SeqCst)
    }

    /// The unit is no longer in the newest commit: its loop ends after what runs now. What it
    /// applied stays (nothing is deleted: the first law).
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Stop after the running step, recording state.
    pub(super) fn begin_shutdown(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Stop the embedded sandbox, if any.
    pub(super) async fn close(self: Arc<Self>) -> anyhow::Result<()> {
        match Arc::try_unwrap(self) {
            Ok(u) => u.connected.close().await,
            Err(_) => Ok(()),
        }
    }

    /// One line of `/v1/units`: name, platform, target (without credentials), phase, what it
    /// last applied and came to (`last_result`, `ready`: this daemon's own loop).
    pub fn summary(&self) -> Value {
        let shown = self.shown();
        let st = self.status.lock().unwrap().clone();
        json!({
            "name": self.name,
            "path": self.path,
            "platform": self.platform(),
            "target": self.target_description(),
            "phase": shown.phase,
            "last_applied": shown.last_applied,
            "branch_head": shown.branch_head,
            "commit": shown.target,
            "status": shown.target.as_deref().and_then(|sha| self.store.status(sha).ok().flatten()),
            "last_result": st.last_result,
            "interrupted": shown.interrupted,
            "ready": st.ready,
            "lease": self.fleet.holdings(&[self.unit()]).pop(),
        })
    }

    /// Whether this daemon holds the unit's lease (always, with SQLite).
    pub fn holds(&self) -> bool {
        self.fleet.holds(&self.name)
    }

    /// What the API shows of the unit: this daemon's own state while it holds the unit (always
    /// with SQLite); else what the holder last kept in the shared store — never this daemon's
    /// stale memory (its own, until a holder has kept something).
    pub fn shown(&self) -> Shown {
        let own = self.own_shown();
        if self.holds() {
            return own;
        }
        match self.store.get_value(SHOWN_KEY) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or(own),
            _ => own,
        }
    }

    fn own_shown(&self) -> Shown {
        let st = self.status.lock().unwrap().clone();
        Shown {
            phase: st.phase,
            target: st.target,
            branch_head: st.branch_head,
            last_applied: st.last_applied,
            interrupted: st.interrupted,
            drifted: st.drifted,
            locked_by: st.locked_by,
            paused_commit: self.paused_commit(),
            pinned: self.pinned(),
        }
    }

    /// With a shared store, while this daemon holds the unit: keeps what the API shows in the
    /// unit's store when it changed since last kept (one write; none when it did not).
    pub(super) fn share_shown(&self) {
        if !self.fleet.shared() || !self.holds() {
            return;
        }
        let Ok(text) = serde_json::to_string(&self.own_shown()) else { return };
        let mut last = self.shared_shown.lock().unwrap();
        if last.as_deref() == Some(text.as_str()) {
            return;
        }
        match self.store.set_value(SHOWN_KEY, &text) {
            Ok(()) => *last = Some(text),
            Err(e) => self.stored::<()>(Err(e)),
        }
    }

    /// With a shared store: the commit whose outcome was just recorded is the current plan.
    pub(super) fn share_plan(&self, sha: &str) {
        if !self.fleet.shared() {
            return;
        }
        let mut last = self.shared_plan.lock().unwrap();
        if last.as_deref() == Some(sha) {
            return;
        }
        match self.store.set_value(PLAN_KEY, sha) {
            Ok(()) => *last = Some(sha.to_string()),
            Err(e) => self.stored::<()>(Err(e)),
        }
    }

    /// The plan running or last run, as `/plans/deploy` shows it: the holder's own while it has
    /// one; else, with a shared store, the outcome last recorded for the unit (by whichever
    /// daemon held it), so every daemon answers the same. With SQLite, as always: none until
    /// a plan has run in this process.
    pub fn plan_json(&self) -> Option<Value> {
        if self.holds()
            && let Some(c) = self.current.lock().unwrap().as_ref()
        {
            return Some(c.json());
        }
        if !self.fleet.shared() {
            return None;
        }
        let sha = self.store.get_value(PLAN_KEY).ok().flatten().filter(|s| !s.is_empty())?;
        self.store.outcome(&sha).ok().flatten()
    }
}

impl Unit {
    /// What the store could not keep is said (an error in the log, `capstan_store_errors_total`),
    /// never dropped in silence: a store over the network can fail where a local file did not.
    /// The reconcile goes on — the platform is already changed; the history says less.
    pub(super) fn stored<T>(&self, result: anyhow::Result<T>) {
        if let Err(e) = result {
            self.metrics.store_errors.inc();
            tracing::error!("the store did not keep a record: {e:#}");
        }
    }

    pub fn platform(&self) -> &'static str {
        self.connected.provider.platform()
    }

    /// The deployment unit this daemon reconciles: its directory relative to the repository
    /// root, slash-separated (`clusters/eu`; `.` for the root). Leases and per-unit records are
    /// keyed by exactly this name; see [`unit_name`].
    pub fn unit(&self) -> &str {
        &self.name
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
    pub(super) fn converge_to(&self, head: String) -> String {
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
        self.share_shown();
        true
    }

    /// Show the running plan's steps that have not started with another status.
    pub(super) fn show_not_started(&self, from: Status, to: Status) {
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
        self.share_shown();
        // About to run (after planning again): no longer waiting.
        self.show_not_started(Status::Waiting, Status::Pending);
        self.trigger(Reason::Continue);
        true
    }

    /// The commit of the plan an interrupt stopped part way, if any.
    pub fn paused_commit(&self) -> Option<String> {
        self.paused.lock().unwrap().as_ref().map(|(sha, _)| sha.clone())
    }
}
