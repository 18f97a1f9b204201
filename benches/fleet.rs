//! Issue 19: three daemons sharing one PostgreSQL store and one unit of 100 Apcera jobs (the
//! sandbox adds 5 ms to every answer). Per round, on a fresh database: the time from the
//! commit to all applied (three daemons starting together, one taking the lease); the holder's
//! round trips to PostgreSQL (`capstan_store_queries_total`) at rest and per no-op reconcile
//! (`POST /v1/sync`, its keeper's share taken out); and the time from `kill -9` of the holder
//! to another daemon holding the unit (default `--lease-ttl` 6 s).
//!
//! Run: `cargo bench --bench fleet` (`FLEET_RUNS=3`; `CAPSTAN_TEST_POSTGRES_URL` names a
//! server, else `.ci/postgres` starts one). Not yet: 100 units (one daemon has one unit today).

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JOBS: usize = 100;

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

    fn get(&self, path: &str) -> serde_json::Value {
        reqwest::blocking::get(format!("{}{path}", self.url)).and_then(|r| r.json()).unwrap_or_default()
    }

    fn holds(&self) -> bool {
        self.get("/v1/status")["leases"][0]["this_daemon"] == true
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
    cmd.args(["daemon", "--repo", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--store", store, "--state-dir"])
        .arg(state.path())
        .env("XDG_RUNTIME_DIR", locks.path())
        .env("RUST_LOG", "capstan=warn");
    Proc::spawn(&mut cmd, vec![state, locks])
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn main() {
    let runs: usize = std::env::var("FLEET_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let base = server_url();
    let (mut apply, mut idle, mut per_reconcile, mut takeover) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let mut cmd = Command::new(sandbox_bin());
        cmd.args(["sandbox", "serve", "--platform", "apcera", "--listen", "127.0.0.1:0", "--latency-ms", "5"]);
        let sb = Proc::spawn(&mut cmd, vec![]);
        let repo = tempfile::tempdir().unwrap();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        let mut text = format!(
            "owner: bench\ndefault_namespace: /bench\ntargets:\n  sb:\n    platform: apcera\n    url: {}\ndefault_target: sb\n",
            sb.url
        );
        std::fs::write(repo.path().join("capstan.yaml"), &text).unwrap();
        text = String::from("jobs:\n");
        for i in 0..JOBS {
            text.push_str(&format!("  job::::web{i:03}:\n    state: started\n    tags:\n      run: \"{run}\"\n"));
        }
        std::fs::write(repo.path().join("jobs.yaml"), &text).unwrap();
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-q", "-m", "jobs"]);
        let sha = git(repo.path(), &["rev-parse", "HEAD"]);
        let store = fresh_database(&base);

        let started = Instant::now();
        let fleet: Vec<Proc> = (0..3).map(|_| daemon(repo.path(), &store)).collect();
        let applied = |p: &Proc| p.get(&format!("/v1/configurations/{sha}"))["status"] == "applied";
        wait(Duration::from_secs(300), || fleet.iter().any(applied));
        apply.push(started.elapsed().as_secs_f64() * 1e3);
        let holder = fleet.iter().position(Proc::holds).expect("one daemon holds the unit");

        // The holder's round trips to PostgreSQL (`capstan_store_queries_total`): at rest (its
        // lease keeper alone) over 6 s, then over ten no-op reconciles (`POST /v1/sync`, one
        // after the other), the keeper's share over that time taken out.
        let h = &fleet[holder];
        let queries = || {
            let text = reqwest::blocking::get(format!("{}/metrics", h.url)).unwrap().text().unwrap();
            let line = text.lines().find(|l| l.starts_with("capstan_store_queries_total ")).expect("the metric");
            line.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap()
        };
        let window = Duration::from_secs(6);
        let (q0, t0) = (queries(), Instant::now());
        std::thread::sleep(window);
        let rate = (queries() - q0) / t0.elapsed().as_secs_f64();
        idle.push(rate);
        let syncs = 10;
        let (q0, t0) = (queries(), Instant::now());
        for _ in 0..syncs {
            let before = h.get("/v1/status")["last_reconcile"].clone();
            let _ = reqwest::blocking::Client::new().post(format!("{}/v1/sync", h.url)).send();
            wait(Duration::from_secs(60), || h.get("/v1/status")["last_reconcile"] != before);
        }
        per_reconcile.push((queries() - q0 - rate * t0.elapsed().as_secs_f64()) / syncs as f64);

        // kill -9 the holder: how long until another daemon holds the unit.
        let mut fleet = fleet;
        let mut dead = fleet.remove(holder);
        let _ = dead.child.kill();
        takeover.push(wait(Duration::from_secs(60), || fleet.iter().any(Proc::holds)).as_secs_f64() * 1e3);
        drop(dead);
        eprintln!(
            "run {run}: applied in {:.0} ms, {:.2} queries/s at rest, {:.1} queries per reconcile, taken over in {:.0} ms",
            apply[run], idle[run], per_reconcile[run], takeover[run]
        );
    }
    row("fleet: 3 daemons, 1 unit of 100 jobs, commit to all applied (daemons starting)", &spread(&apply, "ms"));
    row("fleet: the holder's PostgreSQL queries per second at rest (its lease keeper)", &spread(&idle, "queries/s"));
    row("fleet: the holder's PostgreSQL queries per no-op reconcile (sync)", &spread(&per_reconcile, "queries"));
    row("fleet: kill -9 of the holder to another daemon holding the unit (ttl 6 s)", &spread(&takeover, "ms"));
}
