//! Notifications, delivered by a real daemon to receivers this test starts on loopback: a
//! dozen lines of HTTP server that record every request and answer as told.

mod common;

use common::git::{DaemonProc, Repo, config_for};
use common::{SandboxProc, job_yaml};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cr3t-pa55-value";
const HOOK_KEY: &str = "h00k-signing-key";
const GIT_TOKEN: &str = "g1t-h0st-t0ken";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    /// While set, requests are recorded but not answered.
    holding: bool,
}

/// A receiver on 127.0.0.1 answering `status` to every request.
struct Receiver {
    url: String,
    state: Arc<(Mutex<Inner>, Condvar)>,
}

impl Receiver {
    fn start(status: u16, holding: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new((Mutex::new(Inner { got: Vec::new(), holding }), Condvar::new()));
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let mut headers = Vec::new();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            headers.push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let (lock, cv) = &*s;
                    let mut inner = lock.lock().unwrap();
                    inner.got.push(Got { path, headers, body: String::from_utf8_lossy(&body).into() });
                    cv.notify_all();
                    while inner.holding {
                        inner = cv.wait(inner).unwrap();
                    }
                    drop(inner);
                    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                });
            }
        });
        Receiver { url, state }
    }

    fn got(&self) -> Vec<Got> {
        self.state.0.lock().unwrap().got.clone()
    }

    fn release(&self) {
        self.state.0.lock().unwrap().holding = false;
        self.state.1.notify_all();
    }

    /// Wait until `check` holds of what was received (woken by each request).
    fn wait_for(&self, what: &str, check: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let (lock, cv) = &*self.state;
        let mut inner = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while !check(&inner.got) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}; got {:?}", inner.got);
            inner = cv.wait_timeout(inner, left).unwrap().0;
        }
        inner.got.clone()
    }
}

fn applied(d: &DaemonProc, sha: &str) -> bool {
    d.status_of(sha).as_deref() == Some("applied")
}

/// capstan.yaml with a secret variable the job uses, and `notifications`.
fn config(sb: &SandboxProc, notifications: &str) -> String {
    config_for(sb, &format!("variables:\n  db_password: {SECRET}\nnotifications:\n{notifications}"))
}

#[test]
fn a_failed_commit_sends_one_failed_notification_per_receiver_with_its_sha_and_file_line() {
    let sb = SandboxProc::start(&[]);
    let hook = Receiver::start(200, false);
    let slack = Receiver::start(200, false);
    let repo = Repo::new();
    let receivers = format!(
        "  - name: hook\n    on: [invalid, failed, applied]\n    webhook:\n      url: {}/hook\n      secret_env: HOOK_KEY\n  - name: chat\n    on: [invalid, failed, applied]\n    slack:\n      url_env: SLACK_URL\n",
        hook.url
    );
    repo.write("capstan.yaml", &config(&sb, &receivers));
    repo.write("web.yaml", "jobs:\n  job::::web:\n    state: started\n    tags:\n      version: \"${db_password}\"\n");
    let good = repo.commit("good");
    let state = tempfile::tempdir().unwrap();
    let slack_url = format!("{}/services/T0/B0/xyz", slack.url);
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &[],
        &[("HOOK_KEY", HOOK_KEY), ("SLACK_URL", slack_url.as_str())],
    );
    d.wait_for("the good commit", WAIT, |d| applied(d, &good));

    // An unknown field on line 3, column 5 of api.yaml: the commit is invalid.
    repo.write("api.yaml", "jobs:\n  job::::api:\n    stat: started\n");
    let bad = repo.commit("bad");
    d.wait_for("the bad commit to be judged", WAIT, |d| d.status_of(&bad).as_deref() == Some("invalid"));
    repo.write("api.yaml", "jobs:\n  job::::api:\n    state: started\n");
    let fixed = repo.commit("fixed");
    d.wait_for("the fixed commit", WAIT, |d| applied(d, &fixed));

    // Each receiver gets its notifications in order: once the fixed commit's is there, every
    // notification about the bad one has been sent.
    // (Slack's text names a commit by its first ten characters.)
    let fixed_seen = |got: &[Got]| got.iter().any(|g| g.body.contains(&fixed[..10]) && g.body.contains("applied"));
    let hooks = hook.wait_for("the fixed commit's webhook", fixed_seen);
    let chats = slack.wait_for("the fixed commit's slack message", fixed_seen);

    let failed: Vec<Value> = hooks.iter().map(Got::json).filter(|j| j["state"] == "failure").collect();
    assert_eq!(failed.len(), 1, "exactly one failed notification: {hooks:?}");
    assert_eq!((failed[0]["event"].as_str(), failed[0]["sha"].as_str()), (Some("invalid"), Some(bad.as_str())));
    let error = failed[0]["errors"][0].as_str().unwrap();
    assert!(error.starts_with("api.yaml:3:5: error: unknown field `stat`"), "{error}");
    assert_eq!(failed[0]["page"], format!("{}/", d.url));
    // Signed with the key: the receiver can tell it came from this daemon.
    let signed = hooks.iter().find(|g| g.body.contains(&bad)).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(signed.body.as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signed.header("X-Capstan-Signature-256"), Some(want.as_str()));
    assert_eq!(hooks[0].path, "/hook");

    let texts: Vec<String> = chats.iter().map(|g| g.json()["text"].as_str().unwrap_or_default().to_string()).collect();
    let bad_texts: Vec<&String> = texts.iter().filter(|t| t.contains(&bad[..10])).collect();
    assert_eq!(bad_texts.len(), 1, "exactly one slack message about the bad commit: {texts:?}");
    assert!(bad_texts[0].contains("invalid") && bad_texts[0].contains("api.yaml:3:5"), "{}", bad_texts[0]);
    assert!(bad_texts[0].contains(&format!("<{}/|status page>", d.url)), "{}", bad_texts[0]);
    assert_eq!(chats[0].path, "/services/T0/B0/xyz");

    // No secret in any payload: not the variable's value, nor the signing key, nor the URL.
    for g in hooks.iter().chain(&chats) {
        for secret in [SECRET, HOOK_KEY, "/services/T0/B0/xyz"] {
            assert!(!g.body.contains(secret), "{secret} in {}", g.body);
        }
    }
    let (_, st) = d.get("/v1/status");
    let health = &st["notifications"];
    assert_eq!(health.as_array().map(Vec::len), Some(2), "{st}");
    assert!(health.as_array().unwrap().iter().all(|h| h["failing"] == false && h["given_up"] == 0), "{health}");
}

#[test]
fn a_failing_receiver_is_retried_then_given_up_while_the_reconcile_goes_on() {
    let sb = SandboxProc::start(&[]);
    // Answers 500, and holds the first request until the test lets it go.
    let flaky = Receiver::start(500, true);
    let repo = Repo::new();
    let receivers =
        format!("  - name: flaky\n    on: [applying]\n    retries: 2\n    webhook:\n      url: {}/\n", flaky.url);
    repo.write("capstan.yaml", &config(&sb, &receivers));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    flaky.wait_for("the applying notification", |got| !got.is_empty());
    // The receiver has not answered, yet the commit is applied: delivery never holds up a
    // reconcile.
    d.wait_for("the commit to be applied while the receiver holds", WAIT, |d| applied(d, &sha));
    let (_, st) = d.get("/v1/status");
    assert_eq!(st["notifications"][0]["given_up"], 0, "not given up yet: {st}");
    assert_eq!(flaky.got().len(), 1, "the first send is still held");
    flaky.release();

    // The first send and two retries, then it is given up and shows as failing.
    let got = flaky.wait_for("three sends", |got| got.len() >= 3);
    assert!(got.iter().all(|g| g.json()["sha"] == sha && g.json()["event"] == "applying"), "{got:?}");
    d.wait_for("the receiver to show as failing", WAIT, |d| {
        d.get("/v1/status").1["notifications"][0]["failing"] == true
    });
    let (_, st) = d.get("/v1/status");
    let h = &st["notifications"][0];
    assert_eq!(
        (h["name"].as_str(), h["kind"].as_str(), h["given_up"].as_u64()),
        (Some("flaky"), Some("webhook"), Some(1))
    );
    assert!(h["last_error"].as_str().unwrap().contains("500"), "{h}");
    assert_eq!(flaky.got().len(), 3, "no send after giving up");
    let metrics = d.text("/metrics");
    assert!(metrics.contains("capstan_notification_receiver_failing{receiver=\"flaky\"} 1"), "{metrics}");
    assert!(metrics.contains("capstan_notifications_total{receiver=\"flaky\",result=\"given_up\"} 1"), "{metrics}");
    assert!(metrics.contains("capstan_notifications_total{receiver=\"flaky\",result=\"retried\"} 2"), "{metrics}");
}

#[test]
fn git_host_commit_statuses_go_pending_then_success_in_each_hosts_form() {
    let sb = SandboxProc::start(&[]);
    let github = Receiver::start(201, false);
    let gitlab = Receiver::start(201, false);
    let gitea = Receiver::start(201, false);
    let repo = Repo::new();
    let receivers = "  - github:\n      repo: acme/deploy\n      base_url_env: GH_API\n      token_env: GIT_TOKEN\n  - gitlab:\n      project: acme/deploy\n      base_url_env: GL_API\n      token_env: GIT_TOKEN\n  - gitea:\n      repo: acme/deploy\n      base_url_env: GITEA_URL\n      token_env: GIT_TOKEN\n";
    repo.write("capstan.yaml", &config(&sb, receivers));
    repo.write("web.yaml", "jobs:\n  job::::web:\n    state: started\n    tags:\n      version: \"${db_password}\"\n");
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let gl_api = format!("{}/api/v4", gitlab.url);
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &[],
        &[
            ("GH_API", github.url.as_str()),
            ("GL_API", gl_api.as_str()),
            ("GITEA_URL", gitea.url.as_str()),
            ("GIT_TOKEN", GIT_TOKEN),
        ],
    );
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    let page = format!("{}/", d.url);

    let two = |got: &[Got]| got.len() >= 2;
    let gh = github.wait_for("github's two statuses", two);
    assert!(gh.iter().all(|g| g.path == format!("/repos/acme/deploy/statuses/{sha}")), "{gh:?}");
    let states: Vec<Value> = gh.iter().map(|g| g.json()["state"].clone()).collect();
    assert_eq!(states, [json!("pending"), json!("success")]);
    assert_eq!(gh[1].json()["context"], "capstan");
    assert_eq!(gh[1].json()["target_url"], page);
    assert_eq!(gh[0].header("Authorization"), Some(format!("Bearer {GIT_TOKEN}").as_str()));

    let gl = gitlab.wait_for("gitlab's two statuses", two);
    assert!(gl.iter().all(|g| g.path == format!("/api/v4/projects/acme%2Fdeploy/statuses/{sha}")), "{gl:?}");
    let states: Vec<Value> = gl.iter().map(|g| g.json()["state"].clone()).collect();
    assert_eq!(states, [json!("pending"), json!("success")]);
    assert_eq!(gl[0].header("PRIVATE-TOKEN"), Some(GIT_TOKEN));

    let gt = gitea.wait_for("gitea's two statuses", two);
    assert!(gt.iter().all(|g| g.path == format!("/api/v1/repos/acme/deploy/statuses/{sha}")), "{gt:?}");
    let states: Vec<Value> = gt.iter().map(|g| g.json()["state"].clone()).collect();
    assert_eq!(states, [json!("pending"), json!("success")]);
    assert_eq!(gt[0].header("Authorization"), Some(format!("token {GIT_TOKEN}").as_str()));

    // The token goes in a header only; no secret is in any body.
    for g in gh.iter().chain(&gl).chain(&gt) {
        assert!(!g.body.contains(GIT_TOKEN) && !g.body.contains(SECRET), "{}", g.body);
    }
}
