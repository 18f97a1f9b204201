//! Benchmark (issue 4): the daemon.
//!
//! 1. Commit → applied: a daemon follows a local repository (50 jobs in 10 files) on a sandbox
//!    with no added latency; 20 commits each change one job. Each is timed from `git commit`
//!    returning to `/v1/configurations/{sha}` saying `applied` (polled every 2 ms). Goal: under
//!    1 s, median and max.
//! 2. A daemon holding 10,000 jobs in 500 files (those of `plan_noop`), which it applied itself:
//!    once converged, its CPU time over 30 s of idling (utime + stime from /proc/<pid>/stat) and
//!    its memory (VmRSS and VmHWM from /proc/<pid>/status); then commit → applied for one-job
//!    changes at that size, with capstan's own timing of the stages and the memory after them.
//!
//! Run: `cargo bench --bench daemon` (`DAEMON_ONLY=50` or `DAEMON_ONLY=10000` for one part;
//! `DAEMON_BENCH_LOG=<file>` keeps the 10,000-job daemon's log, with its stage timings).

mod common;
use common::*;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COMMITS: usize = 20;
const IDLE: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "capstan-bench")
        .env("GIT_AUTHOR_EMAIL", "bench@capstan.invalid")
        .env("GIT_COMMITTER_NAME", "capstan-bench")
        .env("GIT_COMMITTER_EMAIL", "bench@capstan.invalid")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commit everything; returns the moment `git commit` returned and the new commit's id.
fn commit(dir: &Path, message: &str) -> (Instant, String) {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    let at = Instant::now();
    (at, git(dir, &["rev-parse", "HEAD"]))
}

struct Daemon {
    child: Child,
    url: String,
    http: reqwest::blocking::Client,
}

impl Daemon {
    fn start(repo: &Path, state: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(capstan())
            .env("RUST_LOG", "capstan=info")
            .args(["daemon", "--repo"])
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(state.join("daemon.log")).unwrap())
            .spawn()
            .expect("start the daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().trim_end_matches(',').to_string();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Daemon { child, url, http }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let r = self.http.get(format!("{}{path}", self.url)).send();
        r.ok().and_then(|r| r.json().ok()).unwrap_or_default()
    }

    /// The status of commit `sha`: from `/v1/configurations/{sha}`, or (`light`) from
    /// `/v1/configurations/target`, which does not carry a 10,000-job manifest with it.
    fn status_of(&self, sha: &str, light: bool) -> Option<String> {
        let v =
            if light { self.get("/v1/configurations/target") } else { self.get(&format!("/v1/configurations/{sha}")) };
        if light && v["sha"] != sha {
            return None;
        }
        v["status"].as_str().map(str::to_string)
    }

    /// Poll every `every` until `sha` is applied; panics on failure or timeout.
    fn wait_applied(&self, sha: &str, light: bool, every: Duration, timeout: Duration) {
        let start = Instant::now();
        loop {
            match self.status_of(sha, light).as_deref() {
                Some("applied") => return,
                Some(s @ ("failed" | "invalid" | "refused")) => panic!("{sha}: {s}"),
                _ => {}
            }
            assert!(start.elapsed() < timeout, "{sha} not applied after {timeout:?}");
            std::thread::sleep(every);
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn config(url: &str) -> String {
    format!(
        "owner: bench\ndefault_namespace: /bench\ntargets:\n  sb:\n    platform: apcera\n    url: {url}\ndefault_target: sb\n"
    )
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A `Vm...` line of /proc/<pid>/status, in MiB.
fn vm_mib(pid: i32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn report(what: &str, latencies: &[f64]) {
    let max = latencies.iter().cloned().fold(0.0, f64::max);
    let min = latencies.iter().cloned().fold(f64::MAX, f64::min);
    println!(
        "  {what}: median {:.1} ms, max {:.1} ms, min {:.1} ms ({} commits; goal under 1000 ms)",
        median(latencies.to_vec()) * 1e3,
        max * 1e3,
        min * 1e3,
        latencies.len()
    );
}

/// Time `n` one-job commits from `git commit` returning to applied.
fn commit_latencies(repo: &Path, d: &Daemon, n: usize, file: &str, job: &str, light: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        let text = std::fs::read_to_string(repo.join(file)).unwrap();
        let marker = format!("  job::::{job}:\n");
        let at = text.find(&marker).unwrap() + marker.len();
        let mut changed = text.clone();
        // The job's release tag is the first tag line after its key.
        let tag = changed[at..].find("      release: ").unwrap() + at;
        let end = changed[tag..].find('\n').unwrap() + tag;
        changed.replace_range(tag..end, &format!("      release: \"r{i}\""));
        std::fs::write(repo.join(file), changed).unwrap();
        let (committed, sha) = commit(repo, &format!("{job} r{i}"));
        d.wait_applied(&sha, light, Duration::from_millis(2), Duration::from_secs(60));
        out.push(committed.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// `files` files of `per_file` jobs each, as plan_noop declares them.
fn write_jobs(repo: &Path, files: usize, per_file: usize) {
    for f in 0..files {
        let mut text = String::from("jobs:\n");
        for j in 0..per_file {
            let n = f * per_file + j;
            let _ = write!(
                text,
                "  job::::svc-{n:05}:\n    state: started\n    num_instances: 1\n    packages:\n      - fqn: package::/apcera/pkg/os::ubuntu-14.04-apc3\n    processes:\n      app:\n        start_command: ./run --id {n}\n        environment:\n          SHARD: \"{f}\"\n    ports:\n      - number: 8080\n        routes:\n          - type: http\n            endpoint: svc-{n:05}.example.com\n    resources:\n      memory: 268435456\n    tags:\n      release: \"42\"\n      team: t{}\n",
                f % 7
            );
        }
        std::fs::write(repo.join(format!("svc-{f:03}.yaml")), text).unwrap();
    }
}

fn latency() {
    let sandbox = Sandbox::start(&[]);
    let repo = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("capstan.yaml"), config(&sandbox.url)).unwrap();
    write_jobs(repo.path(), 10, 5);
    let (_, first) = commit(repo.path(), "50 jobs");
    let d = Daemon::start(repo.path(), state.path(), &[]);
    d.wait_applied(&first, false, Duration::from_millis(20), Duration::from_secs(60));
    let latencies = commit_latencies(repo.path(), &d, COMMITS, "svc-004.yaml", "svc-00021", false);
    println!("commit → applied, local repository of 50 jobs, one-job change, no added latency:");
    report("commit → applied", &latencies);
    row(
        "daemon, 50 jobs: one-job commit → applied",
        &spread(&latencies.iter().map(|l| l * 1e3).collect::<Vec<_>>(), "ms"),
    );
}

fn ten_thousand() {
    const FILES: usize = 500;
    const PER_FILE: usize = 20;
    let sandbox = Sandbox::start(&[]);
    let repo = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(repo.path().join("capstan.yaml"), config(&sandbox.url)).unwrap();
    write_jobs(repo.path(), FILES, PER_FILE);
    let (_, first) = commit(repo.path(), "10,000 jobs");
    let started = Instant::now();
    let d = Daemon::start(repo.path(), state.path(), &["--parallelism", "64"]);
    d.wait_applied(&first, true, Duration::from_millis(250), Duration::from_secs(900));
    println!("a daemon holding {} jobs in {FILES} files:", FILES * PER_FILE);
    println!("  started → converged (it applied them all, parallelism 64): {:.1} s", started.elapsed().as_secs_f64());
    // Let what converging left behind settle (the allocator's deferred frees, the last responses).
    std::thread::sleep(Duration::from_secs(2));
    let pid = d.pid();
    let (rss_before, cpu_before) = (vm_mib(pid, "VmRSS:"), cpu_seconds(pid));
    let t = Instant::now();
    std::thread::sleep(IDLE);
    let cpu = cpu_seconds(pid) - cpu_before;
    let wall = t.elapsed().as_secs_f64();
    println!("  idle for {wall:.0} s: {:.3} s of CPU = {:.3}% of one core", cpu, cpu / wall * 100.0);
    println!(
        "  memory: VmRSS {:.1} MiB (at the start of the idle period {:.1} MiB), VmHWM {:.1} MiB",
        vm_mib(pid, "VmRSS:"),
        rss_before,
        vm_mib(pid, "VmHWM:")
    );
    row(
        "daemon holding 10,000 jobs: peak RSS during the first apply",
        &format!("{:.1} MiB (1 run)", vm_mib(pid, "VmHWM:")),
    );
    row("daemon holding 10,000 jobs: RSS at rest", &format!("{:.1} MiB (1 run)", vm_mib(pid, "VmRSS:")));
    let mut latencies = Vec::new();
    for round in 0..2 {
        latencies.extend(commit_latencies(repo.path(), &d, 5, "svc-250.yaml", "svc-05003", true));
        // Sampled once the last reconcile has ended (it may store records after `applied`) and
        // handed its memory back.
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "  memory after {} one-job commits: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            (round + 1) * 5,
            vm_mib(pid, "VmRSS:"),
            vm_mib(pid, "VmHWM:")
        );
    }
    report("commit → applied at 10,000 jobs (polling /v1/configurations/target)", &latencies);
    row(
        "daemon holding 10,000 jobs: one-job commit → applied",
        &spread(&latencies.iter().map(|l| l * 1e3).collect::<Vec<_>>(), "ms"),
    );
    let log = std::fs::read_to_string(state.path().join("daemon.log")).unwrap_or_default();
    // The daemon's whole log (its per-stage timings), kept when asked.
    if let Ok(keep) = std::env::var("DAEMON_BENCH_LOG") {
        std::fs::write(keep, &log).unwrap();
    }
    println!(
        "  the last reconcile's stages: render {:.1} ms, observe {:.1} ms, diff + plan {:.1} ms",
        log_field(&log, "render_ms").unwrap_or(f64::NAN),
        log_field(&log, "observe_ms").unwrap_or(f64::NAN),
        log_field(&log, "diff_and_plan_ms").unwrap_or(f64::NAN)
    );
}

fn main() {
    // `DAEMON_ONLY=50` or `DAEMON_ONLY=10000`: one of the two.
    let only = std::env::var("DAEMON_ONLY").ok();
    if only.as_deref() != Some("10000") {
        latency();
    }
    if only.as_deref() != Some("50") {
        ten_thousand();
    }
}
