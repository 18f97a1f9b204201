//! Real git repositories made with the git CLI, a smart-HTTP server for them (`git
//! http-backend` behind a few lines of HTTP on loopback), and the daemon as a subprocess.
#![allow(dead_code)]

use super::{SandboxProc, capstan_bin, copy_dir, repo_root};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "capstan-test")
        .env("GIT_AUTHOR_EMAIL", "test@capstan.invalid")
        .env("GIT_COMMITTER_NAME", "capstan-test")
        .env("GIT_COMMITTER_EMAIL", "test@capstan.invalid")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A working repository whose commits the daemon follows.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        Repo { dir }
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

    pub fn copy_example(&self, example: &str, into: &str) {
        copy_dir(&repo_root().join(example), &self.path().join(into));
    }

    /// Commit everything; returns the new commit's id.
    pub fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", message]);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    pub fn push(&self, remote: &str) {
        git(self.path(), &["push", "-q", remote, "main"]);
    }
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

/// A bare repository to push to, as a remote is.
pub fn bare_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "--bare", "-b", "main"]);
    dir
}

/// Serves the bare repositories under `root` over smart HTTP on 127.0.0.1, until dropped.
pub struct GitHttp {
    pub url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GitHttp {
    pub fn serve(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let root = root.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let root = root.clone();
                        std::thread::spawn(move || serve_connection(stream, &root));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        GitHttp { url, stop }
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One keep-alive connection: requests in, `git http-backend` (CGI) answers out.
fn serve_connection(stream: TcpStream, root: &Path) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_string();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = header("content-length") {
            body.resize(len.parse().unwrap(), 0);
            reader.read_exact(&mut body).unwrap();
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk).unwrap();
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("REQUEST_METHOD", &method)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "safe.directory")
            .env("GIT_CONFIG_VALUE_0", "*")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        cgi.stdin.take().unwrap().write_all(&body).unwrap();
        let out = cgi.wait_with_output().unwrap();
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
        let (head, payload) = match split {
            Some((i, n)) => (String::from_utf8_lossy(&raw[..i]).to_string(), &raw[i + n..]),
            None => (String::new(), &raw[..]),
        };
        let mut status = "200 OK".to_string();
        let mut response = Vec::new();
        let mut extra = String::new();
        for line in head.lines() {
            if let Some(s) = line.strip_prefix("Status:") {
                status = s.trim().to_string();
            } else if !line.trim().is_empty() {
                extra.push_str(line.trim());
                extra.push_str("\r\n");
            }
        }
        write!(response, "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n", payload.len()).unwrap();
        response.extend_from_slice(payload);
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// `capstan daemon` as a subprocess, stopped with SIGTERM (or killed) when dropped.
pub struct DaemonProc {
    child: Option<Child>,
    pub url: String,
    http: reqwest::blocking::Client,
    pub state_dir: PathBuf,
}

impl DaemonProc {
    /// Logs go to the test's stderr (`RUST_LOG=capstan=info`, unless `env` says otherwise).
    pub fn start(repo: &str, state_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(None, repo, state_dir, extra, env, Stdio::inherit())
    }

    /// As `start`, with the daemon's stderr written to `log`.
    pub fn start_logged(repo: &str, state_dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        Self::spawn(None, repo, state_dir, extra, env, std::fs::File::create(log).unwrap().into())
    }

    /// As `start`, in the working directory `cwd` (for a relative `repo`).
    pub fn start_in(cwd: &Path, repo: &str, state_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(Some(cwd), repo, state_dir, extra, &[], Stdio::inherit())
    }

    fn spawn(
        cwd: Option<&Path>,
        repo: &str,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Self {
        let mut cmd = Command::new(capstan_bin());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .args(["daemon", "--repo", repo, "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .env("RUST_LOG", "capstan=info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start the daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("the daemon prints its URL first, got {line:?}"))
            .trim_end_matches(',')
            .to_string();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        DaemonProc { child: Some(child), url, http, state_dir: state_dir.to_path_buf() }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap();
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(Value::Null))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.url)).send().unwrap().text().unwrap()
    }

    pub fn post(&self, path: &str, auth: Option<&str>, body: Option<(&str, &[(&str, &str)])>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some((b, headers)) = body {
            req = req.body(b.to_string());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
        }
        let r = req.send().unwrap();
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(Value::Null))
    }

    /// Wait until `check` holds, polling; panics with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn configuration(&self, sha: &str) -> Option<Value> {
        let (code, v) = self.get(&format!("/v1/configurations/{sha}"));
        (code == 200).then_some(v)
    }

    /// The statuses of the steps of the running or last plan, in order.
    pub fn step_statuses(&self) -> Vec<String> {
        let (_, plan) = self.get("/v1/plans/deploy");
        plan["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap().to_string()))
            .collect()
    }

    pub fn status_of(&self, sha: &str) -> Option<String> {
        self.configuration(sha).and_then(|c| c["status"].as_str().map(str::to_string))
    }

    /// Stop with SIGTERM and wait; returns the exit code.
    pub fn stop(self) -> i32 {
        self.signal(libc::SIGTERM)
    }

    /// Send `signal` and wait for the daemon to exit (killed after 30 s); returns the exit code.
    pub fn signal(mut self, signal: i32) -> i32 {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// capstan.yaml text that sends everything to a sandbox process.
pub fn config_for(sandbox: &SandboxProc, extra: &str) -> String {
    format!(
        "owner: daemon-test\ndefault_namespace: /dev\ntargets:\n  sb:\n    platform: apcera\n    url: {}\ndefault_target: sb\n{extra}",
        sandbox.url
    )
}
