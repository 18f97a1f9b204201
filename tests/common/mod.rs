//! Test harness: the real `capstan` binary, a real sandbox process on a loopback port, real
//! files in a temporary directory. Nothing is mocked.
#![allow(dead_code)]

pub mod git;
pub mod pg;
pub mod units;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// One started Apcera job `name` whose `version` tag is `tag`, as a manifest.
pub fn job_yaml(name: &str, tag: &str) -> String {
    format!("jobs:\n  job::::{name}:\n    state: started\n    tags:\n      version: \"{tag}\"\n")
}

/// The binary under test; `CAPSTAN_TEST_BIN` names another (an older build, to see a
/// regression test fail on the code before a fix).
pub fn capstan_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CAPSTAN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_capstan").to_string()))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `capstan sandbox serve` process, stopped when dropped.
pub struct SandboxProc {
    child: Option<Child>,
    pub url: String,
    http: reqwest::blocking::Client,
}

impl SandboxProc {
    /// An Apcera sandbox.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_platform("apcera", extra)
    }

    /// A sandbox of `platform` (`apcera`, `marathon`).
    pub fn start_platform(platform: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(capstan_bin())
            .args(["sandbox", "serve", "--platform", platform, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the sandbox");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read the sandbox's first line");
        let url = line.split_whitespace().last().expect("the sandbox prints its URL").to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "unexpected first line {line:?}");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        SandboxProc { child: Some(child), url, http }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.get("/_sandbox/requests").as_array().cloned().unwrap_or_default()
    }

    pub fn clear_requests(&self) {
        self.http.delete(format!("{}/_sandbox/requests", self.url)).send().unwrap();
    }

    /// Sequence numbers of the requests matching a method and path.
    pub fn seqs(&self, method: &str, path: &str) -> Vec<u64> {
        self.requests()
            .iter()
            .filter(|r| r["method"] == method && r["path"] == path)
            .filter_map(|r| r["seq"].as_u64())
            .collect()
    }

    /// Requests that could change something (anything but GET).
    pub fn mutating_requests(&self) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r["method"] != "GET").collect()
    }

    /// How many mutating requests the sandbox has seen since its log was last cleared (cheap
    /// to poll: the log itself is not sent).
    pub fn mutating_count(&self) -> u64 {
        self.get("/_sandbox/requests/count")["mutating"].as_u64().expect("a count")
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap_or(Value::Null)
    }

    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every job the sandbox has.
    pub fn jobs(&self) -> Vec<Value> {
        self.get("/v1/jobs").as_array().cloned().unwrap_or_default()
    }

    pub fn job(&self, fqn: &str) -> Option<Value> {
        self.jobs().into_iter().find(|j| j["fqn"] == fqn)
    }

    /// Stop with SIGTERM, so the sandbox writes its state file.
    pub fn stop(mut self) {
        // Close the idle keep-alive connections first: the sandbox gives open connections a
        // grace period before it stops.
        self.http = reqwest::blocking::Client::new();
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for SandboxProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A manifest directory in a temporary place.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir { dir: tempfile::tempdir().unwrap() }
    }

    /// A copy of one of the repository's example directories.
    pub fn from_example(rel: &str) -> Self {
        let w = Workdir::new();
        copy_dir(&repo_root().join(rel), w.path());
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path().join(rel)).unwrap();
    }

    /// Point capstan.yaml's default target at a sandbox (keeping what else it says).
    pub fn target(&self, url: &str) {
        self.target_platform("apcera", url);
    }

    /// Point capstan.yaml's default target at a sandbox of `platform`.
    pub fn target_platform(&self, platform: &str, url: &str) {
        let path = self.path().join("capstan.yaml");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&format!(
            "\ntargets:\n  sandbox:\n    platform: {platform}\n    url: {url}\ndefault_target: sandbox\n"
        ));
        std::fs::write(path, text).unwrap();
    }

    /// Run capstan with the manifest directory as working directory.
    pub fn capstan(&self, args: &[&str]) -> Run {
        run_in(self.path(), args)
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "expected exit {code}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Poll `f` until it is true; fails after `limit`.
pub fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    run_with_env(dir, args, &[])
}

/// Run capstan in `dir` with these environment variables set (`None` removes one).
pub fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
    let mut cmd = Command::new(capstan_bin());
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").stdin(Stdio::null());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out: Output = cmd.output().expect("run capstan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The resources a JSON plan changes, as (action, address), in plan order.
pub fn changed(plan: &Value) -> Vec<(String, String)> {
    plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| (c["action"].as_str().unwrap().to_string(), c["address"].as_str().unwrap().to_string()))
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != ".capstan" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, recursively (none when it cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A DC/OS manifest directory holding a legacy Apache Cassandra of three nodes (seed 001: its
/// framework label and no `DCOS_COMMONS_API_VERSION`), owner `data`.
pub fn write_legacy_cassandra(w: &Workdir) {
    w.write("capstan.yaml", "platform: dcos\nowner: data\n");
    let app = serde_json::json!({
        "id": "/cassandra", "cmd": "./scheduler", "instances": 1, "cpus": 1, "mem": 1024,
        "labels": {"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra"},
        "env": {"NODES": "3"},
    });
    w.write("cassandra.json", &app.to_string());
}
