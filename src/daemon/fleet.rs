//! The fleet: which daemon reconciles which unit when several share one PostgreSQL store.
//!
//! A [`Fleet`] is this daemon's side of the unit leases (`lease.rs`): a keeper task that, every
//! ttl/3, marks the daemon live (`daemons`), renews the leases it holds, and takes a free or
//! expired one while it holds fewer than its fair share (ceil(units / live daemons)); and, for
//! each reconcile, a [`Claim`]: checked in the database when the reconcile starts, carrying the
//! fence every step is sent past and the unit's shared journal. With SQLite there is no
//! sharing: the lease is always held, the claim has no fence and the journal is local — one
//! code path, two engines.
//!
//! Everything is per unit name. One `Fleet` per daemon (one keeper, one connection, one daemon
//! id) keeps the leases of all its units: the keeper learns the set of units from the daemon at
//! each round (units come and go with commits; a retired unit's lease is given up), and gives
//! up idle units beyond its fair share so that units spread as daemons join. The keeper's
//! queries run on a PostgreSQL connection of its own (not the history's), so a
//! slow history write never delays a renewal.

use super::lease::{self, Held};
use super::*;
use crate::apply::Fence;
use crate::converge::Leased;
use crate::daemon::store::postgresql::Postgres;
use crate::journal::postgres::SharedJournal;
use std::collections::BTreeMap;

/// Who holds a unit, as `/v1/status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Holding {
    pub unit: String,
    /// The holder's daemon id (none: free or expired).
    pub holder: Option<String>,
    /// The lease's fencing generation (none with SQLite, which has no leases).
    pub generation: Option<i64>,
    /// Whether the holder is this daemon.
    pub this_daemon: bool,
}

pub struct Fleet {
    id: String,
    ttl: Duration,
    /// The shared store's connection for leases and the journal; none with SQLite.
    db: Option<Arc<Postgres>>,
    /// The leases this daemon holds, as the keeper last renewed them.
    held: Mutex<BTreeMap<String, Held>>,
    /// The local deadline of each lease held (`Until`), kept by the keeper.
    until: Mutex<BTreeMap<String, Arc<Until>>>,
    /// Who holds each unit, as last read.
    holdings: Mutex<BTreeMap<String, Holding>>,
    /// How many daemons were live at the keeper's last heartbeat.
    live: std::sync::atomic::AtomicUsize,
    /// The URL of this daemon's API, given with each heartbeat (`advertise`).
    address: std::sync::OnceLock<String>,
}

/// What one reconcile of a unit runs under: with a shared store, the lease (fence and journal).
pub struct Claim {
    pub leased: Option<Leased>,
}

/// The fence of one lease: the row still names this daemon with this generation, and at least
/// `margin` of it remains.
struct LeaseFence {
    db: Arc<Postgres>,
    held: Held,
    holder: String,
    margin: Duration,
    /// The lease's local deadline, as the keeper keeps it (`Until`).
    until: Arc<Until>,
}

/// A held lease's local deadline: the instant, by this process's monotonic clock, before which
/// at least the margin of the lease surely remains — the time the last successful take or
/// renewal was *sent*, plus ttl, minus the margin. The database set the expiry to its `now()`
/// plus ttl when it ran the statement, which is after it was sent, so this deadline is never
/// later than the database's expiry minus the margin. Cleared (0) when the lease is lost or
/// given up; a new generation gets a new `Until`. Read before every mutating request.
#[derive(Default)]
struct Until(std::sync::atomic::AtomicU64);

/// The origin of `Until`'s nanoseconds.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Until {
    fn at(sent: Instant, ttl: Duration, margin: Duration) -> Arc<Until> {
        let until = Arc::new(Until::default());
        until.renewed(sent, ttl, margin);
        until
    }

    /// A take or renewal sent at `sent` succeeded.
    fn renewed(&self, sent: Instant, ttl: Duration, margin: Duration) {
        let at = (sent + ttl.saturating_sub(margin)).saturating_duration_since(epoch()).as_nanos();
        self.0.store((at as u64).max(1), Ordering::SeqCst);
    }

    fn lost(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    fn holds(&self) -> bool {
        let at = self.0.load(Ordering::SeqCst);
        at != 0 && (epoch().elapsed().as_nanos() as u64) < at
    }
}

impl LeaseFence {
    fn refused(&self) -> String {
        format!(
            "this daemon no longer holds the lease of unit {} (generation {}) with {} ms to spare",
            self.held.unit,
            self.held.generation,
            self.margin.as_millis()
        )
    }
}

impl Fence for LeaseFence {
    /// By the local deadline alone: no query, so it can be consulted before every request.
    fn held(&self) -> Result<(), String> {
        if self.until.holds() { Ok(()) } else { Err(self.refused()) }
    }

    fn check(&self) -> Result<(), String> {
        self.held()?;
        let (held, holder, margin) = (self.held.clone(), self.holder.clone(), self.margin);
        // An answer later than half the margin is no answer: at least half of it still
        // remains when a "yes" arrives in time (the database's now() is after the send).
        match self.db.call_within(Some(margin / 2), move |c| lease::fenced(c, &held, &holder, margin)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.refused()),
            // Fail closed: a lease that cannot be checked (in time) is not held.
            Err(e) => Err(format!("cannot check the lease of unit {}: {e:#}", self.held.unit)),
        }
    }
}

impl Fleet {
    /// The fleet for `--store`: leases in PostgreSQL, or none for SQLite.
    pub fn open(store: Option<&str>, ttl: Duration) -> anyhow::Result<Fleet> {
        let db = match store.map(str::trim).filter(|s| !s.is_empty()) {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Some(Arc::new(Postgres::open(url)?))
            }
            _ => None,
        };
        Ok(Fleet {
            id: lease::daemon_id(),
            ttl,
            db,
            held: Mutex::default(),
            until: Mutex::default(),
            holdings: Mutex::default(),
            live: std::sync::atomic::AtomicUsize::new(1),
            address: std::sync::OnceLock::new(),
        })
    }

    /// This daemon's id in the lease table.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn shared(&self) -> bool {
        self.db.is_some()
    }

    /// The URL of this daemon's API, which the other daemons name when asked to change a unit
    /// this one holds (from the next heartbeat on).
    pub fn advertise(&self, url: String) {
        let _ = self.address.set(url);
    }

    /// The URL of the API of the live daemon `id`, if it gave one (blocking; at most 2 s).
    pub fn address_of(&self, id: &str) -> Option<String> {
        let db = self.db.as_ref()?;
        let id = id.to_string();
        db.call_within(Some(Duration::from_secs(2)), move |c| lease::address(c, &id)).ok().flatten()
    }

    /// How much of a lease must remain for a step to be sent under it.
    pub fn margin(&self) -> Duration {
        self.ttl / 3
    }

    /// The claim a reconcile of `unit` runs under, or None when this daemon does not hold its
    /// lease now (checked in the database, with the margin).
    pub fn claim(&self, unit: &str) -> Option<Claim> {
        let Some(db) = &self.db else { return Some(Claim { leased: None }) };
        let held = self.held.lock().unwrap().get(unit).cloned()?;
        let until = self.until.lock().unwrap().get(unit).cloned()?;
        let fence =
            LeaseFence { db: db.clone(), held: held.clone(), holder: self.id.clone(), margin: self.margin(), until };
        if let Err(why) = fence.check() {
            tracing::debug!("not reconciling: {why}");
            return None;
        }
        let journal = SharedJournal::new(db.clone(), unit, &self.id, held.generation);
        Some(Claim { leased: Some(Leased { fence: Arc::new(fence), journal }) })
    }

    /// Whether this daemon holds `unit`'s lease, as the keeper last renewed it.
    pub fn holds(&self, unit: &str) -> bool {
        self.db.is_none() || self.held.lock().unwrap().contains_key(unit)
    }

    /// Who holds each of `units`: SQLite's are all this daemon's.
    pub fn holdings(&self, units: &[&str]) -> Vec<Holding> {
        if self.db.is_none() {
            return units
                .iter()
                .map(|u| Holding {
                    unit: u.to_string(),
                    holder: Some(self.id.clone()),
                    generation: None,
                    this_daemon: true,
                })
                .collect();
        }
        let known = self.holdings.lock().unwrap();
        units
            .iter()
            .map(|u| {
                known.get(*u).cloned().unwrap_or(Holding {
                    unit: u.to_string(),
                    holder: None,
                    generation: None,
                    this_daemon: false,
                })
            })
            .collect()
    }

    /// One round of the keeper (blocking): heartbeat, renew what is held, take what is free up
    /// to the fair share, read who holds what. Returns the units taken (with their generation)
    /// and the units lost.
    fn tick(&self, units: &[String]) -> anyhow::Result<(Vec<Held>, Vec<Held>)> {
        let Some(db) = &self.db else { return Ok((Vec::new(), Vec::new())) };
        let (id, ttl, address) = (self.id.clone(), self.ttl, self.address.get().cloned());
        let live = db.call(move |c| lease::heartbeat(c, &id, ttl, address.as_deref()))?;
        self.live.store(live, Ordering::SeqCst);
        let mut lost = Vec::new();
        let mine: Vec<Held> = self.held.lock().unwrap().values().cloned().collect();
        // Measured before the renewal is sent: the deadline is never past the database's.
        let sent = Instant::now();
        let (m, id) = (mine.clone(), self.id.clone());
        let renewed = db.call(move |c| lease::renew_all(c, &m, &id, ttl))?;
        for held in mine {
            if renewed.contains(&held.unit) {
                if let Some(until) = self.until.lock().unwrap().get(&held.unit) {
                    until.renewed(sent, ttl, self.margin());
                }
            } else {
                self.forget(&held.unit);
                lost.push(held);
            }
        }
        // Who holds what: only a unit free or expired is tried (one statement each, which two
        // racers cannot both win), not every unit another daemon holds.
        let names: Vec<String> = units.to_vec();
        let read = move |c: &mut postgres::Client| {
            let rows = c.query(
                "SELECT unit, holder, generation, expires_at > now() FROM leases WHERE unit = ANY($1)",
                &[&names],
            )?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, i64>(2), r.get::<_, bool>(3)))
                .collect::<Vec<_>>())
        };
        let mut rows = db.call(read.clone())?;
        let mut taken = Vec::new();
        let share = lease::fair_share(units.len(), live);
        for unit in units {
            if self.held.lock().unwrap().len() >= share {
                break;
            }
            let others = rows.iter().any(|(u, holder, _, live)| u == unit && *live && *holder != self.id);
            if others || self.held.lock().unwrap().contains_key(unit) {
                continue;
            }
            let (u, id) = (unit.clone(), self.id.clone());
            let sent = Instant::now();
            if let Some(held) = db.call(move |c| lease::acquire(c, &u, &id, ttl))? {
                // A new generation, a new deadline: a fence of an older one never sees it.
                let until = Until::at(sent, ttl, self.margin());
                if let Some(old) = self.until.lock().unwrap().insert(unit.clone(), until) {
                    old.lost();
                }
                self.held.lock().unwrap().insert(unit.clone(), held.clone());
                taken.push(held);
            }
        }
        if !taken.is_empty() {
            rows = db.call(read)?;
        }
        let mut holdings = BTreeMap::new();
        for (unit, holder, generation, live) in rows {
            let this_daemon = live && holder == self.id;
            let holder = live.then_some(holder);
            holdings.insert(unit.clone(), Holding { unit, holder, generation: Some(generation), this_daemon });
        }
        *self.holdings.lock().unwrap() = holdings;
        Ok((taken, lost))
    }

    /// Gives every held lease up (a clean shutdown): another daemon takes the units at once.
    fn release_all(&self) {
        let Some(db) = &self.db else { return };
        for until in std::mem::take(&mut *self.until.lock().unwrap()).into_values() {
            until.lost();
        }
        let held: Vec<Held> = std::mem::take(&mut *self.held.lock().unwrap()).into_values().collect();
        for h in held {
            let id = self.id.clone();
            let unit = h.unit.clone();
            if let Err(e) = db.call(move |c| lease::release(c, &h, &id)) {
                tracing::warn!("cannot give up the lease of unit {unit}: {e:#}");
            }
        }
    }
}

/// Starts the keeper of the daemon's unit leases: every ttl/3 until the daemon has stopped,
/// for the units the daemon has at that moment. A unit taken is reconciled at once (as at a
/// start: the store's record of it is read afresh); a unit lost is logged (the fence stops any
/// apply under it); a unit gone from the daemon is given up; idle units beyond the fair share
/// are given up so that the units spread across the live daemons.
pub(super) fn keep(daemon: Arc<Daemon>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let fleet = daemon.fleet.clone();
        if !fleet.shared() {
            return;
        }
        let period = (fleet.ttl / 3).max(Duration::from_millis(50));
        let mut closed = std::pin::pin!(daemon.closed());
        loop {
            let units = daemon.units();
            let names: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
            let (f, n) = (fleet.clone(), names.clone());
            let ticked = tokio::task::spawn_blocking(move || {
                f.give_up_gone(&n);
                f.tick(&n)
            });
            match ticked.await {
                Ok(Ok((taken, lost))) => {
                    for held in lost {
                        tracing::warn!(unit = %held.unit, generation = held.generation, "lost the unit's lease");
                    }
                    for held in taken {
                        tracing::info!(unit = %held.unit, generation = held.generation, daemon = %fleet.id(), "took the unit's lease");
                        if let Some(unit) = units.iter().find(|u| u.name == held.unit) {
                            unit.took_over(&held);
                        }
                    }
                    for unit in &units {
                        // Held, yet the last reconcile found it not (a renewal late past the
                        // fence's margin, a check the database failed): look again, or nothing
                        // would until the next commit or resync.
                        let last = unit.status.lock().unwrap().last_result;
                        if fleet.holds(&unit.name) && matches!(last, Some(Reconciled::Standby | Reconciled::LeaseLost))
                        {
                            unit.trigger(Reason::Startup);
                        }
                    }
                    // Spread: beyond the fair share, give up units that are doing nothing now
                    // (never one planning or applying, nor a plan paused with its lock).
                    let idle: Vec<String> = units
                        .iter()
                        .filter(|u| fleet.holds(&u.name))
                        .filter(|u| {
                            matches!(
                                u.status.lock().unwrap().phase,
                                Phase::Idle | Phase::Starting | Phase::WaitingToFetch
                            )
                        })
                        .map(|u| u.name.clone())
                        .collect();
                    let (f, count) = (fleet.clone(), names.len());
                    let _ = tokio::task::spawn_blocking(move || f.shed(count, &idle)).await;
                }
                Ok(Err(e)) => tracing::warn!("cannot keep the unit leases: {e:#}"),
                Err(e) => tracing::warn!("the lease keeper failed: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = &mut closed => break,
            }
        }
    })
}

impl Fleet {
    /// Gives up `unit`'s lease when this daemon holds it: another daemon may take it at once.
    /// Forgotten first, so no reconcile claims it meanwhile; an apply running under it is
    /// stopped by its fence.
    fn give_up(&self, unit: &str) {
        let Some(db) = &self.db else { return };
        let Some(held) = self.forget(unit) else { return };
        let id = self.id.clone();
        if let Err(e) = db.call(move |c| lease::release(c, &held, &id)) {
            tracing::warn!("cannot give up the lease of unit {unit}: {e:#}");
        }
    }

    /// Forgets `unit`'s lease: no claim is made under it, and every fence of it refuses from
    /// now on (its local deadline cleared).
    fn forget(&self, unit: &str) -> Option<Held> {
        if let Some(until) = self.until.lock().unwrap().remove(unit) {
            until.lost();
        }
        self.held.lock().unwrap().remove(unit)
    }

    /// Gives up the leases of units the daemon no longer has (gone from the newest commit).
    fn give_up_gone(&self, units: &[String]) {
        let gone: Vec<String> = self.held.lock().unwrap().keys().filter(|u| !units.contains(u)).cloned().collect();
        for unit in gone {
            tracing::info!(unit = %unit, "giving up the lease of a unit no longer in the repository");
            self.give_up(&unit);
        }
    }

    /// Gives up leases beyond the fair share of `units` among the daemons live at the last
    /// heartbeat, taken from `idle` only.
    fn shed(&self, units: usize, idle: &[String]) {
        let share = lease::fair_share(units, self.live.load(Ordering::SeqCst));
        let excess = self.held.lock().unwrap().len().saturating_sub(share);
        for unit in idle.iter().rev().take(excess) {
            tracing::info!(unit = %unit, share, "giving up a unit beyond this daemon's fair share");
            self.give_up(unit);
        }
    }
}

impl Daemon {
    /// Gives the unit leases up once the reconcile loops have stopped.
    pub(super) async fn release_leases(self: &Arc<Self>) {
        let f = self.fleet.clone();
        let _ = tokio::task::spawn_blocking(move || f.release_all()).await;
    }
}

impl Unit {
    /// The unit's lease was just taken: what another daemon recorded meanwhile is read afresh
    /// (the last commit applied, a rollback, an interrupt or a continue), and the unit is
    /// reconciled. An interrupt a person gave the holder before it died or stopped holds here
    /// too: the next plan starts interrupted, and nothing is sent until continue.
    fn took_over(&self, held: &Held) {
        let last_applied = self.store.get_value("last_applied").ok().flatten().filter(|s| !s.is_empty());
        // Unreadable: kept as this daemon last knew it.
        let interrupted = self.store.get_value("interrupted").ok().map(|v| v.as_deref() == Some("1"));
        // What the API shows is shared afresh by this holder, and the plan it shows is the
        // store's until it runs one (what it ran when it last held the unit is not current).
        *self.shared_shown.lock().unwrap() = None;
        *self.shared_plan.lock().unwrap() = None;
        // Another daemon may have changed the platform while this one did not hold the unit:
        // its next plan is a full one.
        self.baseline.lock().unwrap().take();
        if self.paused_commit().is_none() {
            *self.current.lock().unwrap() = None;
        }
        {
            let mut st = self.status.lock().unwrap();
            if let Some(interrupted) = interrupted {
                self.interrupted.store(interrupted, Ordering::SeqCst);
                // A shutdown's stop stays set.
                if !self.shutting_down.load(Ordering::SeqCst) {
                    self.interrupt.store(interrupted, Ordering::SeqCst);
                }
                st.interrupted = interrupted;
            }
            if last_applied.is_some() {
                st.last_applied = last_applied;
            }
            // Planned afresh: the commit is looked at again whatever this daemon saw before.
            st.target = None;
        }
        *self.pin.lock().unwrap() = Pin::load(&self.store);
        self.events.publish(Event::LeaseTaken { daemon: self.fleet.id().to_string(), generation: held.generation });
        self.trigger(Reason::Startup);
    }

    /// An apply the fence stopped: nothing further was sent. The plan's statuses are kept in
    /// memory only — the shared record of the commit is the new holder's to write — and the
    /// history says the run ended by lease loss (an entry that changes no commit's status).
    pub(super) fn lease_lost(&self, sha: &str, trigger: &str, outcome: &Outcome, why: String) -> Reconciled {
        if let Some(c) = self.current.lock().unwrap().as_mut() {
            c.outcome = outcome.clone();
        }
        let applied = (outcome.count(Status::Complete), outcome.steps.len());
        let detail = json!({ "reason": "lease_lost", "daemon": self.fleet.id(), "message": why });
        self.stored(self.store.record(sha, trigger, "lease_lost", applied, &detail));
        tracing::warn!("stopped applying {}: {why}", short(sha));
        self.events.publish(Event::LeaseLost { sha: sha.to_string(), message: why });
        Reconciled::LeaseLost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_deadline_is_the_send_time_plus_ttl_less_the_margin_and_ends_on_loss() {
        let (ttl, margin) = (Duration::from_millis(300), Duration::from_millis(100));
        let until = Until::at(Instant::now(), ttl, margin);
        assert!(until.holds(), "just renewed");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!until.holds(), "past send time + ttl - margin, with no renewal since");
        until.renewed(Instant::now(), ttl, margin);
        assert!(until.holds(), "renewed");
        until.lost();
        assert!(!until.holds(), "lost");
        let sent_long_ago = Instant::now() - Duration::from_millis(250);
        assert!(!Until::at(sent_long_ago, ttl, margin).holds(), "measured from the send, not the answer");
    }

    /// A fence over a real PostgreSQL: a check that cannot be answered within half the margin
    /// (its query queued behind a slow one on the same connection) is a refusal, never a late
    /// "yes"; and a lease whose local deadline has passed or was cleared is refused with no
    /// query at all (what every mutating request consults).
    #[test]
    fn a_late_or_unrenewed_lease_check_fails_closed() {
        let url = crate::daemon::lease::tests::server_url();
        let _store = crate::daemon::store::Store::open_at(Some(&url), &std::env::temp_dir()).unwrap(); // migrates
        let db = Arc::new(Postgres::open(&url).unwrap());
        let (holder, unit) = (lease::daemon_id(), format!("fence-test-{}", lease::daemon_id()));
        let (ttl, margin) = (Duration::from_secs(6), Duration::from_secs(2));
        let (u, h) = (unit.clone(), holder.clone());
        let sent = Instant::now();
        let held = db.call(move |c| lease::acquire(c, &u, &h, ttl)).unwrap().expect("a free lease is taken");
        let fence = LeaseFence {
            db: db.clone(),
            held: held.clone(),
            holder: holder.clone(),
            margin,
            until: Until::at(sent, ttl, margin),
        };
        assert_eq!(fence.check(), Ok(()), "held, answered at once");

        // The connection's thread is busy for 3 s (a slow history or journal write).
        let busy = db.clone();
        let slow = std::thread::spawn(move || busy.call(|c| c.execute("SELECT pg_sleep(3)", &[])));
        std::thread::sleep(Duration::from_millis(200));
        let asked = Instant::now();
        let answer = fence.check();
        let waited = asked.elapsed();
        let why = answer.expect_err("a check the store cannot answer in time is a refusal");
        assert!(why.contains("did not answer within 1000 ms"), "{why}");
        assert!(waited < Duration::from_millis(1800), "the check waited {waited:?}");
        slow.join().unwrap().unwrap();
        assert_eq!(fence.check(), Ok(()), "answered in time again");

        // The keeper lost it (or could not renew it in time): refused before any query.
        // The connection busy again: a refusal that needs no query comes at once.
        fence.until.lost();
        let busy = db.clone();
        let slow = std::thread::spawn(move || busy.call(|c| c.execute("SELECT pg_sleep(1)", &[])));
        std::thread::sleep(Duration::from_millis(100));
        let asked = Instant::now();
        let why = fence.held().expect_err("no longer held by the local deadline");
        assert!(why.contains(&unit) && why.contains("no longer holds"), "{why}");
        let why = fence.check().expect_err("the full check refuses too");
        assert!(why.contains("no longer holds"), "{why}");
        assert!(asked.elapsed() < Duration::from_millis(300), "a query was waited for: {:?}", asked.elapsed());
        slow.join().unwrap().unwrap();
    }
}
