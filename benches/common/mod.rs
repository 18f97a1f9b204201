//! Shared by the benchmarks: run the real binary, measure its wall time and peak RSS, and keep
//! a sandbox process for it to talk to. Everything listens on 127.0.0.1 only.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn capstan() -> &'static str {
    env!("CARGO_BIN_EXE_capstan")
}

pub struct Measured {
    pub code: i32,
    pub wall: Duration,
    pub max_rss_kib: i64,
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
        stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
    }
}

pub struct Sandbox {
    child: Child,
    pub url: String,
}

impl Sandbox {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(capstan())
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
