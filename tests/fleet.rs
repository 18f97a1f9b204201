//! Several daemons sharing the work on one PostgreSQL store (issue 19): real daemons as
//! processes, a real PostgreSQL (`.ci/postgres`, or `CAPSTAN_TEST_POSTGRES_URL`: these tests
//! never skip), a real git repository, Apcera sandboxes over HTTP; one unit, or a fleet of 30. Each daemon gets a
//! lock directory of its own (`XDG_RUNTIME_DIR`), as daemons on three machines would have: only
//! the lease keeps them apart. The sandbox logs each request's `User-Agent`, which names the
//! daemon's process, so its request log says which daemon sent what.

mod common;
use common::git::*;
use common::pg::*;
use common::units::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
/// The default --lease-ttl is 6 s: a dead daemon's unit is taken over within this.
const TAKEOVER: Duration = Duration::from_secs(10);
const JOBS: usize = 8;

/// The scenarios time a takeover: one at a time, so two do not share the machine's cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn jobs_yaml(tag: &str) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..JOBS {
        s.push_str(&format!("  job::::web{i}:\n    state: started\n    tags:\n      version: \"{tag}\"\n"));
    }
    s
}

/// One daemon of the fleet, with its own state and lock directories.
struct Member {
    proc: Option<DaemonProc>,
    _state: tempfile::TempDir,
    _locks: tempfile::TempDir,
}

impl Member {
    fn start(repo: &str, store: &str) -> Member {
        Member::start_with(repo, store, &[])
    }

    fn start_with(repo: &str, store: &str, extra: &[&str]) -> Member {
        let state = tempfile::tempdir().unwrap();
        let locks = tempfile::tempdir().unwrap();
        let xdg = locks.path().to_str().unwrap().to_string();
        // One request at a time: an apply of the commit takes a few seconds of sandbox latency.
        let mut args = vec!["--store", store, "--parallelism", "1"];
        args.extend_from_slice(extra);
        let proc = DaemonProc::start(repo, state.path(), &args, &[("XDG_RUNTIME_DIR", xdg.as_str())]);
        Member { proc: Some(proc), _state: state, _locks: locks }
    }

    fn d(&self) -> &DaemonProc {
        self.proc.as_ref().expect("running")
    }

    fn pid(&self) -> u32 {
        self.d().pid()
    }

    /// Whether this daemon says it holds the unit's lease.
    fn holds(&self) -> bool {
        let (_, st) = self.d().get("/v1/status");
        st["leases"][0]["this_daemon"] == true
    }
}

/// Who sent a request: the pid in capstan's `User-Agent`.
fn sender(r: &Value) -> u32 {
    let ua = r["user_agent"].as_str().unwrap_or_default();
    let pid = ua.split("(pid ").nth(1).and_then(|s| s.strip_suffix(')'));
    pid.and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid in the User-Agent {ua:?}"))
}

/// Each mutation (method, path, and the resource a body names) and how often it was sent.
fn mutations(sb: &SandboxProc) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for r in sb.mutating_requests() {
        let named = r["body"]["fqn"].as_str().or(r["body"]["name"].as_str()).unwrap_or_default();
        let key = format!("{} {} {named}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap());
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

fn assert_each_mutation_once(sb: &SandboxProc, what: &str) {
    let dup: Vec<(String, usize)> = mutations(sb).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dup.is_empty(), "{what}: mutations sent more than once: {dup:?}\n{:#?}", sb.mutating_requests());
}

fn versions(sb: &SandboxProc) -> Vec<String> {
    (0..JOBS)
        .map(|i| {
            let job = sb.job(&format!("job::/dev::web{i}")).unwrap_or_else(|| panic!("web{i} is live"));
            job["tags"]["version"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn applied_by_any(fleet: &[&Member], sha: &str) -> bool {
    fleet.iter().any(|m| m.d().status_of(sha).as_deref() == Some("applied"))
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fleet's holder, once exactly one daemon says it holds the unit.
fn holder<'a>(fleet: &[&'a Member]) -> &'a Member {
    let mut found = None;
    wait("exactly one daemon to hold the unit", WAIT, || {
        let holding: Vec<&&Member> = fleet.iter().filter(|m| m.holds()).collect();
        found = (holding.len() == 1).then(|| *holding[0]);
        found.is_some()
    });
    found.unwrap()
}

struct Scene {
    sb: SandboxProc,
    repo: Repo,
    first: String,
    store: String,
    path: String,
}

/// A sandbox whose every answer takes 300 ms, a repository of `JOBS` jobs, a fresh store.
fn scene() -> Scene {
    let sb = SandboxProc::start(&["--latency-ms", "300"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &jobs_yaml("1"));
    let first = repo.commit("web v1");
    let path = repo.path().to_str().unwrap().to_string();
    Scene { sb, repo, first, store: fresh_database(), path }
}

/// Three daemons, one store, one unit: exactly one applies (each mutation once, all from one
/// process); the holder killed with SIGKILL in the middle of an apply is replaced within 10 s
/// and the commit converges with no mutation sent twice and none missing; restarting every
/// daemon loses no history and sends nothing again.
#[test]
fn three_daemons_one_applies_a_killed_holder_is_taken_over_without_duplicates_and_no_history_is_lost() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = scene();
    let first = s.first.clone();
    let (a, b, c) =
        (Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store));
    let fleet = [&a, &b, &c];
    wait("the first commit to apply", WAIT, || applied_by_any(&fleet, &first));
    let h = holder(&fleet);
    let senders: std::collections::BTreeSet<u32> = s.sb.mutating_requests().iter().map(sender).collect();
    assert_eq!(senders.into_iter().collect::<Vec<_>>(), [h.pid()], "one daemon applied, the holder");
    assert_each_mutation_once(&s.sb, "the first commit");
    assert!(mutations(&s.sb).len() >= JOBS, "every job was created: {:?}", mutations(&s.sb));
    for m in fleet {
        let (_, st) = m.d().get("/v1/status");
        let lease = &st["leases"][0];
        assert_eq!(lease["unit"], ".", "{st}");
        assert!(lease["generation"].as_i64().is_some_and(|g| g >= 1), "{st}");
        if m.pid() != h.pid() {
            assert_eq!(st["last_result"], "standby", "a daemon without the lease stays up and does nothing: {st}");
        }
    }

    // Kill the holder part way through the next commit.
    s.sb.clear_requests();
    s.repo.write("web.yaml", &jobs_yaml("2"));
    let second = s.repo.commit("web v2");
    wait("the holder to send two updates of the second commit", WAIT, || s.sb.mutating_count() >= 2);
    let killed = h.pid();
    let killed_at = Instant::now();
    unsafe {
        libc::kill(killed as i32, libc::SIGKILL);
    }
    let rest: Vec<&Member> = fleet.iter().copied().filter(|m| m.pid() != killed).collect();
    wait("another daemon to take the unit over", TAKEOVER, || rest.iter().any(|m| m.holds()));
    let took = killed_at.elapsed();
    assert!(took < TAKEOVER, "taken over in {took:?}");
    wait("the second commit to apply", WAIT, || applied_by_any(&rest, &second));
    assert_eq!(versions(&s.sb), vec!["2"; JOBS], "every job converged to the second commit");
    assert_each_mutation_once(&s.sb, "the second commit, across the takeover");
    let by: std::collections::BTreeSet<u32> = s.sb.mutating_requests().iter().map(sender).collect();
    assert!(by.contains(&killed) && by.len() == 2, "the killed daemon began it, another finished it: {by:?}");
    let sent = mutations(&s.sb).len();
    assert_eq!(sent, JOBS, "one update per job, none missing: {:?}", mutations(&s.sb));

    // Restarting every daemon loses no history, and sends nothing for the applied commit.
    let (_, before) = rest[0].d().get("/v1/history");
    let old = before.as_array().unwrap().clone();
    assert!(old.iter().any(|e| e["sha"] == second && e["outcome"] == "applied"), "{before}");
    drop(rest);
    for m in [a, b, c] {
        let mut m = m;
        if let Some(p) = m.proc.take()
            && p.pid() != killed
        {
            assert_eq!(p.stop(), 0);
        }
    }
    // A clean stop gives the lease up at once: no one need wait for it to expire.
    let mut db = postgres::Client::connect(&s.store, postgres::NoTls).unwrap();
    let released: bool = db.query_one("SELECT expires_at <= now() FROM leases WHERE unit = '.'", &[]).unwrap().get(0);
    assert!(released, "the holder stopped with SIGTERM released its lease");
    let mutated = s.sb.mutating_count();
    let fresh = [Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store)];
    let fleet: Vec<&Member> = fresh.iter().collect();
    let h = holder(&fleet);
    wait("the new holder to settle on the applied commit", WAIT, || {
        h.d().get("/v1/status").1["last_result"] == "unchanged"
    });
    for m in &fleet {
        let (_, after) = m.d().get("/v1/history");
        let new = after.as_array().unwrap();
        assert!(new.len() >= old.len(), "no entry lost: {} before, {} after", old.len(), new.len());
        assert_eq!(new[new.len() - old.len()..], old[..], "the entries before the restart, unchanged");
    }
    assert_eq!(s.sb.mutating_count(), mutated, "nothing sent again after the restart");
}

/// A holder paused (SIGSTOP) past its lease while applying is replaced; let go again (SIGCONT)
/// as soon as another daemon has the unit, while that one is still applying, it sends nothing
/// further for the unit — the fence stops it before its next step — and says so
/// (`lease_lost`); the commit converges with no mutation sent twice.
#[test]
fn a_holder_paused_past_its_lease_sends_nothing_further_once_it_resumes() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = scene();
    let first = s.first.clone();
    let (a, b, c) =
        (Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store));
    let fleet = [&a, &b, &c];
    wait("the first commit to apply", WAIT, || applied_by_any(&fleet, &first));
    let h = holder(&fleet);
    s.sb.clear_requests();
    s.repo.write("web.yaml", &jobs_yaml("2"));
    let second = s.repo.commit("web v2");
    wait("the holder to send an update of the second commit", WAIT, || s.sb.mutating_count() >= 1);
    let paused = h.pid();
    // The reconcile applying the second commit is under way: it is not counted yet.
    let reconciles = h.d().reconciles();
    unsafe {
        libc::kill(paused as i32, libc::SIGSTOP);
    }
    let paused_at = Instant::now();
    let rest: Vec<&Member> = fleet.iter().copied().filter(|m| m.pid() != paused).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait("another daemon to take the unit over", TAKEOVER, || rest.iter().any(|m| m.holds()));
    }));
    // Past its lease (another daemon holds it), and while the new holder is still at work: let
    // it go on, racing the new holder for the steps it had left.
    let sent_while_paused = s.sb.mutating_requests().iter().filter(|r| sender(r) == paused).count();
    eprintln!("paused for {:?} until another daemon held the unit", paused_at.elapsed());
    unsafe {
        libc::kill(paused as i32, libc::SIGCONT);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    wait("the second commit to apply", WAIT, || applied_by_any(&rest, &second));
    // Let its apply end, however it does, and give it time to send anything it still would.
    wait("the resumed daemon's apply to end", WAIT, || h.d().reconciles() > reconciles);
    std::thread::sleep(Duration::from_secs(2));
    let after = s.sb.mutating_requests().iter().filter(|r| sender(r) == paused).count();
    assert_eq!(after, sent_while_paused, "nothing further sent by the paused daemon once it resumed");
    // It ended by lease loss: the fence stopped it.
    let metrics = h.d().text("/metrics");
    assert!(metrics.lines().any(|l| l.starts_with("capstan_reconciles_total{result=\"lease_lost\"} 1")), "{metrics}");
    assert!(sent_while_paused < JOBS, "it was stopped part way");
    assert_eq!(versions(&s.sb), vec!["2"; JOBS]);
    assert_each_mutation_once(&s.sb, "the second commit");
    let (_, history) = h.d().get("/v1/history");
    assert!(
        history.as_array().unwrap().iter().any(|e| e["outcome"] == "lease_lost"
            && e["sha"] == second
            && e["detail"]["daemon"] == h.d().get("/v1/status").1["daemon_id"]),
        "the history says the run ended by lease loss: {history}"
    );
}

/// With the default store (SQLite in the state directory) there is nothing to share: the daemon
/// always holds its unit, with no lease generation, and applies as before — one code path.
#[test]
fn a_daemon_on_sqlite_always_holds_its_unit() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &jobs_yaml("1"));
    let sha = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the commit to apply", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    let (_, st) = d.get("/v1/status");
    let lease = &st["leases"][0];
    assert_eq!(lease["unit"], ".", "{st}");
    assert_eq!(lease["this_daemon"], true, "{st}");
    assert_eq!(lease["holder"], st["daemon_id"], "{st}");
    assert!(lease["generation"].is_null(), "no lease generation without a shared store: {st}");
    assert_eq!(versions(&sb), vec!["1"; JOBS]);
}

/// How many units the fleet test spreads (the 30), and how many jobs each has.
const UNITS: usize = 30;
const UNIT_JOBS: usize = 3;
/// The connections to PostgreSQL a daemon's units share for their histories by default
/// (`--store-connections`); the lease keeper and the shared journal have one more.
const STORE_CONNECTIONS: usize = 4;

fn unit_jobs_yaml(tag: &str) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..UNIT_JOBS {
        s.push_str(&format!("  job::::app{i}:\n    state: started\n    tags:\n      version: \"{tag}\"\n"));
    }
    s
}

fn unit_applied_by_any(fleet: &[&Member], unit: &str, sha: &str) -> bool {
    fleet.iter().any(|m| {
        let (code, v) = m.d().get(&format!("/v1/units/{}/configurations/{sha}", enc(unit)));
        code == 200 && v["status"] == "applied"
    })
}

/// The units this daemon says it holds (its fleet-wide `/v1/status`).
fn held_units(m: &Member) -> Vec<String> {
    let (_, st) = m.d().get("/v1/status");
    let leases = st["leases"].as_array().cloned().unwrap_or_default();
    leases.iter().filter(|l| l["this_daemon"] == true).map(|l| l["unit"].as_str().unwrap().to_string()).collect()
}

/// The clients' connections open to `store`'s database now (the one asking left out, and the
/// server's own autovacuum workers).
fn connections(db: &mut postgres::Client) -> i64 {
    db.query_one(
        "SELECT COUNT(*) FROM pg_stat_activity
          WHERE datname = current_database() AND pid != pg_backend_pid() AND backend_type = 'client backend'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// The must-show: three daemons, one store, a repository of 30 units, each with its
/// own sandbox. Each unit is applied by exactly one daemon (each mutation once, all of a
/// sandbox's from one process); the units spread across the daemons (none holds more than
/// ceil(30/3) once all are live); a daemon killed with SIGKILL in the middle of applying its
/// units is replaced within 10 s, and every unit converges with no mutation sent twice and
/// none missing. Throughout, the daemons keep a bounded number of connections to PostgreSQL
/// (their units share `--store-connections`), not one per unit.
#[test]
fn three_daemons_spread_a_fleet_of_units_and_a_killed_daemons_units_are_taken_over_without_duplicates() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sandboxes: Vec<SandboxProc> = (0..UNITS).map(|_| SandboxProc::start(&["--latency-ms", "100"])).collect();
    let units: Vec<String> = (0..UNITS).map(|i| format!("clusters/c{i:02}")).collect();
    let repo = Repo::new();
    for (u, sb) in units.iter().zip(&sandboxes) {
        repo.write(&format!("{u}/capstan.yaml"), &config_for(sb, ""));
        repo.write(&format!("{u}/web.yaml"), &unit_jobs_yaml("1"));
    }
    let first = repo.commit("30 units, v1");
    let (path, store) = (repo.path().to_str().unwrap().to_string(), fresh_database());
    let mut db = postgres::Client::connect(&store, postgres::NoTls).unwrap();
    let most = std::cell::Cell::new(0i64);
    let counted = |db: &mut postgres::Client| most.set(most.get().max(connections(db)));
    let start = || Member::start_with(&path, &store, &["--path", "clusters/*"]);
    let (a, b, c) = (start(), start(), start());
    let fleet = [&a, &b, &c];
    let mut done = std::collections::BTreeSet::new();
    wait("every unit to apply the first commit", WAIT, || {
        counted(&mut db);
        // Each unit asked until it is applied: 90 questions a round would load the daemons.
        let now: Vec<String> =
            units.iter().filter(|u| !done.contains(*u) && unit_applied_by_any(&fleet, u, &first)).cloned().collect();
        done.extend(now);
        done.len() == UNITS
    });
    for (u, sb) in units.iter().zip(&sandboxes) {
        assert_each_mutation_once(sb, &format!("{u}, the first commit"));
        let created = mutations(sb).keys().filter(|k| k.starts_with("POST ")).count();
        assert_eq!(created, UNIT_JOBS, "{u}: every job created, once: {:?}", mutations(sb));
        let by: std::collections::BTreeSet<u32> = sb.mutating_requests().iter().map(sender).collect();
        assert_eq!(by.len(), 1, "{u} was applied by exactly one daemon: {by:?}");
    }
    // All live: the units spread, none holding more than its fair share, every unit held.
    let share = UNITS.div_ceil(fleet.len());
    let mut spread = Vec::new();
    wait("the units to spread across the three daemons", WAIT, || {
        counted(&mut db);
        spread = fleet.iter().map(|m| held_units(m)).collect::<Vec<_>>();
        spread.iter().all(|h| h.len() <= share) && spread.iter().map(Vec::len).sum::<usize>() == UNITS
    });
    eprintln!("spread: {:?}", spread.iter().map(Vec::len).collect::<Vec<_>>());
    let mut all: Vec<String> = spread.concat();
    all.sort();
    assert_eq!(all, units, "each unit held by exactly one daemon");

    // Kill a daemon part way through applying the next commit to its units.
    let victim = fleet.iter().position(|m| !held_units(m).is_empty()).expect("a daemon holds units");
    let (killed, its_units) = (fleet[victim].pid(), held_units(fleet[victim]));
    for sb in &sandboxes {
        sb.clear_requests();
    }
    for u in &units {
        repo.write(&format!("{u}/web.yaml"), &unit_jobs_yaml("2"));
    }
    let second = repo.commit("30 units, v2");
    let of = |u: &String| &sandboxes[units.iter().position(|x| x == u).unwrap()];
    wait("the daemon to send an update of the second commit", WAIT, || {
        its_units.iter().any(|u| of(u).mutating_requests().iter().any(|r| sender(r) == killed))
    });
    let killed_at = Instant::now();
    unsafe {
        libc::kill(killed as i32, libc::SIGKILL);
    }
    let rest: Vec<&Member> = fleet.iter().copied().filter(|m| m.pid() != killed).collect();
    wait("the killed daemon's units to be taken over", TAKEOVER, || {
        let held: Vec<String> = rest.iter().flat_map(|m| held_units(m)).collect();
        its_units.iter().all(|u| held.contains(u))
    });
    let took = killed_at.elapsed();
    assert!(took < TAKEOVER, "taken over in {took:?}");
    eprintln!("{} units of the killed daemon taken over in {took:?}", its_units.len());
    let mut done = std::collections::BTreeSet::new();
    wait("every unit to apply the second commit", WAIT, || {
        counted(&mut db);
        let now: Vec<String> =
            units.iter().filter(|u| !done.contains(*u) && unit_applied_by_any(&rest, u, &second)).cloned().collect();
        done.extend(now);
        done.len() == UNITS
    });
    // Each daemon: its units' shared connections, the lease keeper's (with the journal) and
    // the event relay's.
    let bound = (fleet.len() * (STORE_CONNECTIONS + 2)) as i64;
    eprintln!("at most {} connections to the store (bound {bound})", most.get());
    assert!(most.get() > 0, "the connections were seen");
    assert!(most.get() <= bound, "{} connections to the store, more than {bound}", most.get());
    for (u, sb) in units.iter().zip(&sandboxes) {
        assert_each_mutation_once(sb, &format!("{u}, the second commit, across the takeover"));
        assert_eq!(mutations(sb).len(), UNIT_JOBS, "{u}: one update per job, none missing: {:?}", mutations(sb));
        for i in 0..UNIT_JOBS {
            let job = sb.job(&format!("job::/dev::app{i}")).unwrap_or_else(|| panic!("{u}: app{i} is live"));
            assert_eq!(job["tags"]["version"], "2", "{u}: app{i} converged to the second commit");
        }
    }
    let by: std::collections::BTreeSet<u32> =
        its_units.iter().flat_map(|u| of(u).mutating_requests().iter().map(sender).collect::<Vec<_>>()).collect();
    assert!(by.contains(&killed) && by.len() >= 2, "the killed daemon began, another finished: {by:?}");

    // The fleet's tables are the default schema's alone: no unit's schema has a copy that code
    // on a unit's connection could read by mistake; every unit's journal is keyed by its name.
    let where_: Vec<(String, String)> = db
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
              WHERE table_name IN ('leases', 'daemons', 'journal_runs', 'journal') ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let schemas: std::collections::BTreeSet<&str> = where_.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(schemas.into_iter().collect::<Vec<_>>(), ["public"], "the fleet's tables: {where_:?}");
    assert_eq!(where_.len(), 4, "{where_:?}");
    let leased: Vec<String> =
        db.query("SELECT unit FROM leases ORDER BY unit", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(leased, units, "one lease per unit, by name");
    let journalled: Vec<String> = db
        .query("SELECT DISTINCT unit FROM journal_runs ORDER BY unit", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(journalled, units, "every unit's runs in the shared journal, by name");
}
