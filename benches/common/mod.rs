//! Shared by the benchmarks: run the real binary, measure its wall time and peak RSS, and keep
//! a sandbox process for it to talk to. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary measured: this build's, or another named by `CAPSTAN_BENCH_BIN` (an older build,
/// to measure before and after with the same workload).
pub fn capstan() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CAPSTAN_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_capstan").to_string()))
}

/// The binary that serves the sandbox: `capstan()`, or another named by
/// `CAPSTAN_BENCH_SANDBOX_BIN` (to compare two builds of capstan against one sandbox).
pub fn sandbox_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CAPSTAN_BENCH_SANDBOX_BIN").unwrap_or_else(|_| capstan().to_string()))
}

/// One row of the table `benches/run-all` prints: which workload, and its figure.
pub fn row(workload: &str, figure: &str) {
    println!("ROW\t{workload}\t{figure}");
}

/// Median and range of a series, in the unit given (`ms`, `MiB`, `s`).
pub fn spread(xs: &[f64], unit: &str) -> String {
    let lo = xs.iter().cloned().fold(f64::MAX, f64::min);
    let hi = xs.iter().cloned().fold(f64::MIN, f64::max);
    let digits = if unit == "s" { 2 } else { 1 };
    format!("{:.digits$} {unit} ({:.digits$}–{:.digits$}, {} runs)", median(xs.to_vec()), lo, hi, xs.len())
}

/// CPU seconds a process has used so far (utime + stime from /proc/<pid>/stat).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / ticks
}

/// A process's peak resident memory so far, in MiB (VmHWM from /proc/<pid>/status).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// 10,000 Apcera jobs in 500 files (20 a file), each with a package, a process, a route,
/// memory and tags; `${RELEASE}` comes from capstan.yaml. The workload of issues 3 and 18.
pub fn write_apcera_jobs(dir: &Path, url: &str, files: usize, jobs_per_file: usize) {
    use std::fmt::Write as _;
    std::fs::write(
        dir.join("capstan.yaml"),
        format!(
            "owner: bench\ndefault_namespace: /bench\nvariables:\n  RELEASE: \"42\"\ntargets:\n  sb:\n    platform: apcera\n    url: {url}\ndefault_target: sb\n"
        ),
    )
    .unwrap();
    for f in 0..files {
        let mut text = String::from("jobs:\n");
        for j in 0..jobs_per_file {
            let n = f * jobs_per_file + j;
            let _ = write!(
                text,
                "  job::::svc-{n:05}:\n    state: started\n    num_instances: 1\n    packages:\n      - fqn: package::/apcera/pkg/os::ubuntu-14.04-apc3\n    processes:\n      app:\n        start_command: ./run --id {n}\n        environment:\n          SHARD: \"{f}\"\n    ports:\n      - number: 8080\n        routes:\n          - type: http\n            endpoint: svc-{n:05}.example.com\n    resources:\n      memory: 268435456\n    tags:\n      release: ${{RELEASE}}\n      team: t{}\n",
                f % 7
            );
        }
        std::fs::write(dir.join(format!("svc-{f:03}.yaml")), text).unwrap();
    }
}

pub struct Measured {
    pub code: i32,
    pub wall: Duration,
    pub max_rss_kib: i64,
    /// User and system CPU seconds of the process.
    pub cpu: f64,
    pub stdout: String,
    pub stderr: String,
}

/// Run capstan in `dir` and measure it as a whole process (wall time, peak resident memory).
pub fn measure(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Measured {
    let out_path = dir.join(".bench-stdout");
    let err_path = dir.join(".bench-stderr");
    let started = Instant::now();
    let child = Command::new(capstan())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run capstan");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // wait4 reports the child's own peak RSS, which std's wait does not.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    let wall = started.elapsed();
    std::mem::forget(child);
    Measured {
        code: if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 },
        wall,
        max_rss_kib: usage.ru_maxrss,
        cpu: [usage.ru_utime, usage.ru_stime].iter().map(|t| t.tv_sec as f64 + t.tv_usec as f64 / 1e6).sum(),
        stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
    }
}

pub struct Sandbox {
    child: Child,
    pub url: String,
}

impl Sandbox {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(sandbox_bin())
            .args(["sandbox", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sandbox");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.split_whitespace().last().unwrap().to_string();
        Sandbox { child, url }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number from a `key=value` field of capstan's log lines.
pub fn log_field(stderr: &str, key: &str) -> Option<f64> {
    let pat = format!("{key}=");
    stderr.lines().rev().find_map(|l| {
        let i = l.find(&pat)?;
        l[i + pat.len()..].split(|c: char| c.is_whitespace()).next()?.parse().ok()
    })
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// The sandbox's request log.
pub fn requests(url: &str) -> Vec<Value> {
    let r = reqwest::blocking::get(format!("{url}/_sandbox/requests")).unwrap();
    r.json::<Vec<Value>>().unwrap()
}

/// Empty the sandbox's request log.
pub fn clear(url: &str) {
    reqwest::blocking::Client::new().delete(format!("{url}/_sandbox/requests")).send().unwrap();
}

/// Requests by method and path shape (ids folded), e.g. `PUT /v2/apps/*`.
pub fn tally(reqs: &[Value]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in reqs {
        let path = r["path"].as_str().unwrap_or_default();
        let shape = ["/v2/apps/", "/v2/groups/"]
            .iter()
            .find(|p| path.starts_with(**p))
            .map(|p| format!("{p}*"))
            .unwrap_or_else(|| path.to_string());
        let q = if r["query"].as_str().is_some_and(|q| q.contains("dryRun")) { "?dryRun" } else { "" };
        *by.entry(format!("{} {shape}{q}", r["method"].as_str().unwrap_or_default())).or_default() += 1;
    }
    by.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
}
