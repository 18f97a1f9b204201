//! Real git repositories made with the git CLI, a smart-HTTP server for them (`git
//! http-backend` behind a few lines of HTTP on loopback), and the daemon as a subprocess.
#![allow(dead_code)]

use super::{SandboxProc, capstan_bin, copy_dir, repo_root};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
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
        Self::serve_with(root, None, false)
    }

    /// Over HTTPS (`tests/fixtures/tls/server.pem`, for 127.0.0.1, signed by
    /// `tests/fixtures/tls/ca.pem`: a client must trust that, with `SSL_CERT_FILE`), answering
    /// 401 (Basic) to requests without `user_password` when it is given.
    pub fn serve_tls(root: &Path, user_password: Option<(&str, &str)>) -> Self {
        Self::serve_with(root, user_password, true)
    }

    fn serve_with(root: &Path, user_password: Option<(&str, &str)>, tls: bool) -> Self {
        use base64::Engine;
        let expected = user_password
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let tls = tls.then(tls_config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let root = root.to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (root, expected, tls) = (root.clone(), expected.clone(), tls.clone());
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        std::thread::spawn(move || match tls {
                            Some(config) => {
                                let conn = rustls::ServerConnection::new(config).unwrap();
                                serve_connection(rustls::StreamOwned::new(conn, stream), &root, expected.as_deref())
                            }
                            None => serve_connection(stream, &root, expected.as_deref()),
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        GitHttp { url, stop }
    }
}

/// A TLS server's configuration with `tests/fixtures/tls/server.pem` (for 127.0.0.1 and
/// localhost, signed by `tests/fixtures/tls/ca.pem`).
pub fn tls_config() -> std::sync::Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = repo_root().join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    std::sync::Arc::new(config)
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One keep-alive connection: requests in, `git http-backend` (CGI) answers out.
fn serve_connection(stream: impl Read + Write, root: &Path, auth: Option<&str>) {
    let mut reader = BufReader::new(stream);
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
        if let Some(expected) = auth
            && header("authorization").as_deref() != Some(expected)
        {
            let refusal =
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n";
            if reader.get_mut().write_all(refusal.as_bytes()).and_then(|()| reader.get_mut().flush()).is_err() {
                return;
            }
            continue;
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
        if reader.get_mut().write_all(&response).and_then(|()| reader.get_mut().flush()).is_err() {
            return;
        }
    }
}

/// `capstan daemon` as a subprocess, stopped with SIGTERM (or killed) when dropped.
pub struct DaemonProc {
    child: Option<Child>,
    pub url: String,
    /// What it printed first (`capstan daemon listening on ...`).
    pub first_line: String,
    /// The API token it was started with (`--token-env` and that variable in `env`), which
    /// `get` and `text` send, as a client that knows it does.
    pub token: Option<String>,
    http: reqwest::blocking::Client,
    pub state_dir: PathBuf,
}

impl DaemonProc {
    /// Logs go to the test's stderr (`RUST_LOG=capstan=info`, unless `env` says otherwise).
    pub fn start(repo: &str, state_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(None, repo, state_dir, extra, env, Stdio::inherit(), None)
    }

    /// As `start`, with the daemon's limit on open files set to `soft` (and `hard`).
    pub fn start_with_fd_limit(repo: &str, state_dir: &Path, extra: &[&str], soft: u64, hard: u64) -> Self {
        Self::spawn(None, repo, state_dir, extra, &[], Stdio::inherit(), Some((soft, hard)))
    }

    /// As `start`, with the daemon's stderr written to `log`.
    pub fn start_logged(repo: &str, state_dir: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Self {
        Self::spawn(None, repo, state_dir, extra, env, std::fs::File::create(log).unwrap().into(), None)
    }

    /// As `start`, in the working directory `cwd` (for a relative `repo`).
    pub fn start_in(cwd: &Path, repo: &str, state_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(Some(cwd), repo, state_dir, extra, &[], Stdio::inherit(), None)
    }

    fn spawn(
        cwd: Option<&Path>,
        repo: &str,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
        fd_limit: Option<(u64, u64)>,
    ) -> Self {
        let mut cmd = Command::new(capstan_bin());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        if let Some((soft, hard)) = fd_limit {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
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
        let token_env = extra.iter().position(|a| *a == "--token-env").and_then(|i| extra.get(i + 1));
        let token = token_env.and_then(|var| env.iter().find(|(k, _)| k == var)).map(|(_, v)| v.to_string());
        DaemonProc { child: Some(child), url, first_line: line, token, http, state_dir: state_dir.to_path_buf() }
    }

    /// A GET with the daemon's token, if it has one.
    fn read(&self, path: &str) -> reqwest::blocking::Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self.read(path);
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(Value::Null))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn text(&self, path: &str) -> String {
        self.read(path).text().unwrap()
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

    /// Reconciles run so far, by `/metrics`.
    pub fn reconciles(&self) -> u64 {
        self.text("/metrics")
            .lines()
            .filter(|l| l.starts_with("capstan_reconciles_total{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
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
