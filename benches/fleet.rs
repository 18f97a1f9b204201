//! Issue 19 at the size: three daemons sharing one PostgreSQL store and one repository
//! of 100 units (`--path 'clusters/*'`), each of 100 Apcera jobs on a sandbox of its own (the
//! sandbox adds 5 ms to every answer). Per round, on a fresh database and fresh sandboxes:
//!
//! * the time from the first commit to all units applied, the three daemons starting together;
//! * the time from one commit touching all units (every job's tag) to all applied;
//! * the PostgreSQL round trips (`capstan_store_queries_total`, all daemons) per applying
//!   reconcile of a unit, and per no-op one (`POST /v1/sync` on each daemon), the lease
//!   keepers' share (measured at rest) taken out; and the keepers' rate at rest;
//! * the spread of units over the daemons once settled (fewest and most a daemon holds);
//! * the time from `kill -9` of the daemon holding most units to all its units held by the
//!   others, and to each of them reconciled by its new holder (default `--lease-ttl` 6 s);
//! * the most connections the daemons had open to the database (`pg_stat_activity`).
//!
//! "Applied" is counted from the daemons' `capstan_reconciles_total{result="converged"}`, read
//! from `/metrics`, which asks nothing of the store (`/v1/units` would, for every unit).
//!
//! Run: `cargo bench --bench fleet` (`FLEET_RUNS=3`, `FLEET_UNITS=100`, `FLEET_JOBS=100`;
//! `CAPSTAN_TEST_POSTGRES_URL` names a server, else `.ci/postgres` starts one).

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn server_url() -> String {
    if let Ok(url) = std::env::var("CAPSTAN_TEST_POSTGRES_URL") {
        return url;
    }
    let dir = std::env::temp_dir().join(format!("capstan-bench-pg-{}", std::process::id()));
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/postgres"))
        .arg("start")
        .arg(&dir)
        .arg(std::process::id().to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), ".ci/postgres could not start a server");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn fresh_database(base: &str) -> String {
    let name = format!("capstan_bench_{}", uuid::Uuid::new_v4().simple());
    let mut c = postgres::Client::connect(base, postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{name}")
}

struct Proc {
    child: Child,
    url: String,
    _dirs: Vec<tempfile::TempDir>,
}

impl Proc {
    fn spawn(cmd: &mut Command, dirs: Vec<tempfile::TempDir>) -> Proc {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .trim_end_matches(',')
            .trim_end_matches('/')
            .to_string();
        Proc { child, url, _dirs: dirs }
    }

    fn get(&self, path: &str) -> Value {
        reqwest::blocking::get(format!("{}{path}", self.url)).and_then(|r| r.json()).unwrap_or_default()
    }

    /// A counter of `/metrics`, summed over the lines of its family that hold `having`.
    fn metric(&self, family: &str, having: &str) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.url)).and_then(|r| r.text()).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with([' ', '{']) && l.contains(having))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    /// The units this daemon holds, by its `/v1/status`.
    fn held(&self) -> Vec<String> {
        let leases = self.get("/v1/status")["leases"].as_array().cloned().unwrap_or_default();
        leases
            .iter()
            .filter(|l| l["this_daemon"] == true)
            .filter_map(|l| l["unit"].as_str().map(String::from))
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(repo: &Path, store: &str) -> Proc {
    let (state, locks) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cmd = Command::new(capstan());
    cmd.args(["daemon", "--repo", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--path", "clusters/*"])
        .args(["--store", store, "--state-dir"])
        .arg(state.path())
        .env("XDG_RUNTIME_DIR", locks.path())
        .env("RUST_LOG", "capstan=warn");
    Proc::spawn(&mut cmd, vec![state, locks])
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn write_units(repo: &Path, sandboxes: &[Proc], jobs: usize, tag: &str) {
    for (i, sb) in sandboxes.iter().enumerate() {
        let dir = repo.join(format!("clusters/c{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "owner: bench\ndefault_namespace: /bench\ntargets:\n  sb:\n    platform: apcera\n    url: {}\ndefault_target: sb\n",
            sb.url
        );
        std::fs::write(dir.join("capstan.yaml"), config).unwrap();
        let mut text = String::from("jobs:\n");
        for j in 0..jobs {
            text.push_str(&format!("  job::::web{j:03}:\n    state: started\n    tags:\n      version: \"{tag}\"\n"));
        }
        std::fs::write(dir.join("jobs.yaml"), text).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", tag]);
}

/// The most connections to `store`'s database seen so far, sampled on a thread of its own.
struct Connections {
    most: std::sync::Arc<std::sync::atomic::AtomicI64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Connections {
    fn watch(store: &str) -> Connections {
        use std::sync::atomic::Ordering;
        let most = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (m, s, store) = (most.clone(), stop.clone(), store.to_string());
        let thread = std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&store, postgres::NoTls).unwrap();
            while !s.load(Ordering::SeqCst) {
                let n: i64 = db
                    .query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid != pg_backend_pid() AND backend_type = 'client backend'",
                        &[],
                    )
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                m.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Connections { most, stop, thread: Some(thread) }
    }

    fn most(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.most.load(std::sync::atomic::Ordering::SeqCst) as f64
    }
}

#[derive(Default)]
struct Figures {
    first: Vec<f64>,
    commit: Vec<f64>,
    idle: Vec<f64>,
    per_apply: Vec<f64>,
    per_noop: Vec<f64>,
    fewest: Vec<f64>,
    most: Vec<f64>,
    held: Vec<f64>,
    converged: Vec<f64>,
    connections: Vec<f64>,
}

fn main() {
    let runs = env_usize("FLEET_RUNS", 3);
    let (units, jobs) = (env_usize("FLEET_UNITS", 100), env_usize("FLEET_JOBS", 100));
    let base = server_url();
    let mut f = Figures::default();
    let limit = Duration::from_secs(900);
    for run in 0..runs {
        let sandboxes: Vec<Proc> = (0..units)
            .map(|_| {
                let mut cmd = Command::new(sandbox_bin());
                cmd.args(["sandbox", "serve", "--platform", "apcera", "--listen", "127.0.0.1:0", "--latency-ms", "5"]);
                Proc::spawn(&mut cmd, vec![])
            })
            .collect();
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        write_units(repo.path(), &sandboxes, jobs, "1");
        let store = fresh_database(&base);
        let conns = Connections::watch(&store);

        let started = Instant::now();
        let fleet: Vec<Proc> = (0..3).map(|_| daemon(repo.path(), &store)).collect();
        let applied = |fleet: &[Proc]| {
            fleet.iter().map(|p| p.metric("capstan_reconciles_total", "result=\"converged\"")).sum::<f64>()
        };
        let queries = |fleet: &[Proc]| fleet.iter().map(|p| p.metric("capstan_store_queries_total", "")).sum::<f64>();
        let in_sync = |fleet: &[Proc]| {
            fleet.iter().map(|p| p.metric("capstan_reconciles_total", "result=\"in_sync\"")).sum::<f64>()
        };
        wait(limit, || applied(&fleet) >= units as f64);
        f.first.push(started.elapsed().as_secs_f64());
        eprintln!("run {run}: the first commit applied in {:.1} s", f.first[run]);

        // Settled: every unit held, none by a daemon beyond its fair share.
        let share = units.div_ceil(3);
        let mut counts = Vec::new();
        wait(Duration::from_secs(120), || {
            counts = fleet.iter().map(|p| p.held().len()).collect();
            counts.iter().sum::<usize>() == units && counts.iter().all(|c| *c <= share)
        });
        f.fewest.push(*counts.iter().min().unwrap() as f64);
        f.most.push(*counts.iter().max().unwrap() as f64);

        // The keepers at rest, over 6 s (three renewal rounds).
        let (q0, t0) = (queries(&fleet), Instant::now());
        std::thread::sleep(Duration::from_secs(6));
        let rate = (queries(&fleet) - q0) / t0.elapsed().as_secs_f64();
        f.idle.push(rate);

        // One commit touching every unit: every job's tag.
        let (a0, q0, t0) = (applied(&fleet), queries(&fleet), Instant::now());
        write_units(repo.path(), &sandboxes, jobs, "2");
        wait(limit, || applied(&fleet) - a0 >= units as f64);
        f.commit.push(t0.elapsed().as_secs_f64());
        eprintln!("run {run}: the commit touching all units applied in {:.1} s", f.commit[run]);
        f.per_apply.push((queries(&fleet) - q0 - rate * t0.elapsed().as_secs_f64()) / units as f64);

        // A no-op reconcile of every unit: each daemon syncs the units it holds (the others
        // stand by, with no query).
        let (r0, q0, t0) = (in_sync(&fleet), queries(&fleet), Instant::now());
        for p in &fleet {
            let _ = reqwest::blocking::Client::new().post(format!("{}/v1/sync", p.url)).send();
        }
        wait(limit, || in_sync(&fleet) - r0 >= units as f64);
        f.per_noop.push((queries(&fleet) - q0 - rate * t0.elapsed().as_secs_f64()) / units as f64);

        // kill -9 the daemon holding most units.
        let mut fleet = fleet;
        let victim = (0..fleet.len()).max_by_key(|i| fleet[*i].held().len()).unwrap();
        let its = fleet[victim].held();
        let mut dead = fleet.remove(victim);
        let killed = Instant::now();
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        let held = wait(limit, || {
            let now: Vec<String> = fleet.iter().flat_map(Proc::held).collect();
            its.iter().all(|u| now.contains(u))
        });
        f.held.push(held.as_secs_f64());
        // Each reconciled by its new holder: held by it, and its last reconcile found it in sync
        // (or applied it).
        wait(limit, || {
            let done: Vec<String> = fleet
                .iter()
                .flat_map(|p| p.get("/v1/units").as_array().cloned().unwrap_or_default())
                .filter(|u| u["lease"]["this_daemon"] == true)
                .filter(|u| ["unchanged", "in_sync", "converged"].iter().any(|r| u["last_result"] == *r))
                .filter_map(|u| u["name"].as_str().map(String::from))
                .collect();
            its.iter().all(|u| done.contains(u))
        });
        f.converged.push(killed.elapsed().as_secs_f64());
        drop(dead);
        drop(fleet);
        f.connections.push(conns.most());
        eprintln!(
            "run {run}: first commit {:.1} s, commit touching all {:.1} s, {:.1} queries/s at rest, {:.1} queries per \
             applying reconcile, {:.1} per no-op, spread {}–{}, {} units taken over in {:.1} s, converged {:.1} s, \
             at most {} connections",
            f.first[run],
            f.commit[run],
            f.idle[run],
            f.per_apply[run],
            f.per_noop[run],
            f.fewest[run],
            f.most[run],
            its.len(),
            f.held[run],
            f.converged[run],
            f.connections[run]
        );
    }
    let w = format!("fleet: 3 daemons, {units} units × {jobs} jobs");
    row(&format!("{w}, first commit to all applied (daemons starting)"), &spread(&f.first, "s"));
    row(&format!("{w}, one commit touching all units to all applied"), &spread(&f.commit, "s"));
    row(&format!("{w}, PostgreSQL queries per applying reconcile of a unit"), &spread(&f.per_apply, "queries"));
    row(&format!("{w}, PostgreSQL queries per no-op reconcile of a unit"), &spread(&f.per_noop, "queries"));
    row(&format!("{w}, PostgreSQL queries per second at rest (3 lease keepers)"), &spread(&f.idle, "queries/s"));
    row(&format!("{w}, fewest units a daemon holds"), &spread(&f.fewest, "units"));
    row(&format!("{w}, most units a daemon holds"), &spread(&f.most, "units"));
    row(&format!("{w}, kill -9 of the busiest daemon to all its units held"), &spread(&f.held, "s"));
    row(&format!("{w}, kill -9 of the busiest daemon to all its units reconciled"), &spread(&f.converged, "s"));
    row(&format!("{w}, most connections to PostgreSQL (3 daemons)"), &spread(&f.connections, "connections"));
}
