//! The daemon as a subprocess, following real git repositories made with the git CLI, applying
//! to a sandbox process over HTTP.

mod common;
use common::git::*;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn applied(d: &DaemonProc, sha: &str) -> bool {
    d.status_of(sha).as_deref() == Some("applied")
}

#[test]
fn a_commit_to_a_local_repository_is_applied_and_listed_with_its_sha() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "1");

    // A new commit is seen through the refs watcher and applied.
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    let started = Instant::now();
    d.wait_for("the second commit to apply", WAIT, |d| applied(d, &second));
    eprintln!("commit → applied in {:?}", started.elapsed());
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    let (_, list) = d.get("/v1/configurations");
    let shas: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["sha"].as_str().unwrap()).collect();
    assert_eq!(shas, [second.as_str(), first.as_str()], "applied commits, newest first");
    let (_, target) = d.get("/v1/configurations/target");
    assert_eq!(target["sha"], second);
}

#[test]
fn a_push_to_a_file_url_is_picked_up_by_polling() {
    let sb = SandboxProc::start(&[]);
    let bare = bare_repo();
    let repo = Repo::new();
    git(repo.path(), &["remote", "add", "origin", bare.path().to_str().unwrap()]);
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("api.yaml", &job_yaml("api", "1"));
    let first = repo.commit("api v1");
    repo.push("origin");
    let url = format!("file://{}", bare.path().display());
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(&url, state.path(), &["--interval", "300ms"], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    repo.write("api.yaml", &job_yaml("api", "2"));
    let second = repo.commit("api v2");
    repo.push("origin");
    d.wait_for("the pushed commit, by polling", WAIT, |d| applied(d, &second));
    assert_eq!(sb.job("job::/dev::api").unwrap()["tags"]["version"], "2");
}

#[test]
fn a_push_served_over_smart_http_is_polled_and_a_webhook_fetches_at_once() {
    let sb = SandboxProc::start(&[]);
    let root = tempfile::tempdir().unwrap();
    git(root.path(), &["init", "-q", "--bare", "-b", "main", "shop.git"]);
    let server = GitHttp::serve(root.path());
    let repo = Repo::new();
    git(repo.path(), &["remote", "add", "origin", root.path().join("shop.git").to_str().unwrap()]);
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("api.yaml", &job_yaml("api", "1"));
    let first = repo.commit("api v1");
    repo.push("origin");
    let url = format!("{}/shop.git", server.url);

    // Polling over HTTP.
    let state = tempfile::tempdir().unwrap();
    let polling = DaemonProc::start(&url, state.path(), &["--interval", "300ms"], &[]);
    polling.wait_for("the first commit over HTTP", WAIT, |d| applied(d, &first));
    drop(polling);

    // No useful polling (an hour): only the webhook can make it see the push.
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        &url,
        state.path(),
        &["--interval", "1h", "--ref", "main", "--webhook-secret-env", "HOOK_SECRET"],
        &[("HOOK_SECRET", "s3cret-hook")],
    );
    d.wait_for("the daemon to be ready", WAIT, |d| d.get("/v1/status").1["ready"] == true);
    repo.write("api.yaml", &job_yaml("api", "2"));
    let second = repo.commit("api v2");
    repo.push("origin");

    let payload =
        json!({ "ref": "refs/heads/main", "after": second, "repository": { "full_name": "acme/shop" } }).to_string();
    let (code, _) = d.post("/v1/webhook", None, Some((&payload, &[("X-Hub-Signature-256", "sha256=00")])));
    assert_eq!(code, 401, "a wrong signature is refused");
    let signature = format!("sha256={}", hmac_hex("s3cret-hook", payload.as_bytes()));
    let sent = Instant::now();
    let (code, _) = d.post(
        "/v1/webhook",
        None,
        Some((&payload, &[("X-Hub-Signature-256", &signature), ("X-GitHub-Event", "push")])),
    );
    assert_eq!(code, 202);
    d.wait_for("the webhook's commit", Duration::from_secs(10), |d| applied(d, &second));
    eprintln!("webhook → applied in {:?}", sent.elapsed());
    assert_eq!(sb.job("job::/dev::api").unwrap()["tags"]["version"], "2");

    // Gitea signs with a bare hex digest; GitLab sends the secret as a token.
    let gitea = hmac_hex("s3cret-hook", payload.as_bytes());
    assert_eq!(d.post("/v1/webhook", None, Some((&payload, &[("X-Gitea-Signature", &gitea)]))).0, 202);
    assert_eq!(d.post("/v1/webhook", None, Some((&payload, &[("X-Gitlab-Token", "s3cret-hook")]))).0, 202);
    assert_eq!(d.post("/v1/webhook", None, Some((&payload, &[("X-Gitlab-Token", "wrong")]))).0, 401);
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn an_invalid_commit_applies_nothing_and_the_next_good_one_applies() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let good = repo.commit("good");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the good commit", WAIT, |d| applied(d, &good));
    let events = EventReader::open(&d);

    // A valid change in one file, an unknown field in another: nothing of it may be applied.
    repo.write("web.yaml", &job_yaml("web", "2"));
    repo.write("api.yaml", "jobs:\n  job::::api:\n    stat: started\n");
    sb.clear_requests();
    let bad = repo.commit("bad");
    d.wait_for("the bad commit to be judged", WAIT, |d| d.status_of(&bad).as_deref() == Some("invalid"));
    let conf = d.configuration(&bad).unwrap();
    let text = conf["errors"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("api.yaml:3:5: error: unknown field `stat`"), "{text}");
    let failed = events.until(|e| e["type"] == "render_failed");
    assert_eq!(failed["sha"], bad);
    assert!(failed["errors"][0]["text"].as_str().unwrap().contains("api.yaml:3:5"), "{failed}");
    assert!(sb.mutating_requests().is_empty(), "the invalid commit changed something: {:?}", sb.mutating_requests());
    assert_eq!(
        sb.job("job::/dev::web").unwrap()["tags"]["version"],
        "1",
        "the live state stays as the last good commit left it"
    );

    repo.write("api.yaml", "jobs:\n  job::::api:\n    state: started\n");
    let fixed = repo.commit("fixed");
    d.wait_for("the fixed commit", WAIT, |d| applied(d, &fixed));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    assert!(sb.job("job::/dev::api").is_some());
}

fn retag(sb: &SandboxProc, fqn: &str, version: &str) {
    let mut job = sb.job(fqn).unwrap();
    job["tags"]["version"] = json!(version);
    let (code, _) = sb.send("PUT", &format!("/v1/jobs/{}", job["uuid"].as_str().unwrap()), Some(&job));
    assert_eq!(code, 200);
}

#[test]
fn drift_is_put_back_within_the_resync_interval() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "1s"], &[]);
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    let events = EventReader::open(&d);
    retag(&sb, "job::/dev::web", "changed-by-hand");
    let drift = events.until(|e| e["type"] == "drift_found");
    assert_eq!(drift["resources"], json!(["job::/dev::web"]));
    assert_eq!(drift["repairing"], true);
    let start = Instant::now();
    while sb.job("job::/dev::web").unwrap()["tags"]["version"] != "1" {
        assert!(start.elapsed() < Duration::from_secs(10), "drift was not repaired");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_self_heal_drift_is_reported_and_left() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--resync", "500ms", "--self-heal", "false"],
        &[],
    );
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    retag(&sb, "job::/dev::web", "changed-by-hand");
    d.wait_for("the drift to be reported", WAIT, |d| d.get("/v1/status").1["drifted"] == json!(["job::/dev::web"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "changed-by-hand", "left as it is");
    let metrics = d.text("/metrics");
    assert!(metrics.lines().any(|l| l == "capstan_drifted_resources 1"), "{metrics}");
}

fn step_statuses(d: &DaemonProc) -> Vec<String> {
    d.step_statuses()
}

#[test]
fn interrupt_stops_new_steps_and_continue_completes_the_plan() {
    // Each job takes 400 ms to have its instances running, one step at a time.
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..6 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("six jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--parallelism", "1", "--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    d.wait_for("a step to run", WAIT, |d| step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));
    let (code, body) = d.post("/v1/plans/deploy/interrupt", Some("Bearer t0k3n"), None);
    assert_eq!((code, body["message"].as_str()), (200, Some("Received cmd: interrupt")));
    // The running step finishes; no other starts.
    d.wait_for("the running step to finish", WAIT, |d| !step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));
    let done = step_statuses(&d).iter().filter(|s| *s == "COMPLETE").count();
    assert!(done < 6, "the plan went on despite the interrupt");
    std::thread::sleep(Duration::from_millis(1200));
    let statuses = step_statuses(&d);
    assert_eq!(
        statuses.iter().filter(|s| *s == "COMPLETE").count(),
        done,
        "a step started while interrupted: {statuses:?}"
    );
    assert!(statuses.iter().any(|s| s == "WAITING"), "{statuses:?}");
    assert_eq!(d.get("/v1/plans/deploy").1["status"], "WAITING");

    let (code, _) = d.post("/v1/plans/deploy/continue", Some("token=t0k3n"), None);
    assert_eq!(code, 200);
    d.wait_for("the plan to complete", WAIT, |d| applied(d, &sha));
    assert!(step_statuses(&d).iter().all(|s| s == "COMPLETE"));
    assert_eq!(sb.jobs().iter().filter(|j| j["fqn"].as_str().unwrap().starts_with("job::/dev::job-")).count(), 6);
}

#[test]
fn a_restarted_daemon_keeps_its_history_and_applies_nothing_twice() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    assert_eq!(d.stop(), 0, "SIGTERM ends the daemon cleanly");

    sb.clear_requests();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the restarted daemon to reconcile", WAIT, |d| d.get("/v1/status").1["ready"] == true);
    let (_, list) = d.get("/v1/configurations");
    assert_eq!(list[0]["sha"], sha, "history survives the restart");
    assert_eq!(d.get("/v1/status").1["last_applied"], sha);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sb.mutating_requests().is_empty(), "the applied commit was applied again: {:?}", sb.mutating_requests());
}

#[test]
fn every_call_but_health_and_metrics_needs_the_token_in_either_header_form() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    for path in ["/v1/sync", "/v1/plans/deploy/interrupt", "/v1/plans/deploy/continue"] {
        assert_eq!(d.post(path, None, None).0, 401, "{path} without a token");
        assert_eq!(d.post(path, Some("Bearer nope"), None).0, 401, "{path} with a wrong token");
        // 208: seed 000's answer to an interrupt or continue that has nothing to do.
        assert!(matches!(d.post(path, Some("Bearer t0k3n"), None).0, 200 | 202 | 208), "{path} with Bearer");
        assert!(matches!(d.post(path, Some("token=t0k3n"), None).0, 200 | 202 | 208), "{path} with token=");
        assert!(
            matches!(d.post(path, Some("bearer t0k3n"), None).0, 200 | 202 | 208),
            "{path}: the scheme in any case"
        );
        assert!(matches!(d.post(path, Some("TOKEN=t0k3n"), None).0, 200 | 202 | 208), "{path}: the scheme in any case");
    }
    // Reading needs it too (history and plans say what runs where); health and metrics do not.
    let bare = reqwest::blocking::Client::new();
    for path in
        ["/v1/status", "/v1/plans", "/v1/plans/deploy", "/v1/configurations", "/v1/configurations/target", "/v1/events"]
    {
        let r = bare.get(format!("{}{path}", d.url)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
        let r = bare.get(format!("{}{path}", d.url)).header("Authorization", "BEARER t0k3n").send().unwrap();
        assert_ne!(r.status().as_u16(), 401, "{path} with the token");
    }
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert_ne!(bare.get(format!("{}{path}", d.url)).send().unwrap().status().as_u16(), 401, "{path}");
    }
    assert_eq!(d.get("/v1/status").0, 200);
}

/// Reads the daemon's server-sent events on a thread.
struct EventReader {
    rx: std::sync::mpsc::Receiver<Value>,
}

impl EventReader {
    /// Events from now on.
    fn open(d: &DaemonProc) -> Self {
        Self::open_after(d, None)
    }

    /// Events from the first still in the daemon's history (`Last-Event-ID: 0`) on.
    fn open_from_start(d: &DaemonProc) -> Self {
        Self::open_after(d, Some(0))
    }

    fn open_after(d: &DaemonProc, last: Option<u64>) -> Self {
        let url = format!("{}/v1/events", d.url);
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
            let mut req = client.get(url);
            if let Some(id) = last {
                req = req.header("Last-Event-ID", id.to_string());
            }
            let resp = req.send().unwrap();
            ready_tx.send(()).unwrap();
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if let Some(data) = line.strip_prefix("data:")
                    && tx.send(serde_json::from_str(data.trim()).unwrap()).is_err()
                {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        EventReader { rx }
    }

    fn next(&self) -> Value {
        self.rx.recv_timeout(WAIT).expect("an event")
    }

    /// The next event, or None once the daemon has closed the stream.
    fn next_until_closed(&self) -> Option<Value> {
        match self.rx.recv_timeout(WAIT) {
            Ok(e) => Some(e),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(e) => panic!("the event stream neither sent nor closed: {e}"),
        }
    }

    fn until(&self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let e = self.next();
            if pred(&e) {
                return e;
            }
        }
    }
}

#[test]
fn events_arrive_in_order_and_metrics_are_openmetrics_text() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    let events = EventReader::open(&d);
    repo.write("web.yaml", &job_yaml("web", "2"));
    repo.write("api.yaml", &job_yaml("api", "1"));
    let second = repo.commit("two jobs");
    let mut seen = Vec::new();
    loop {
        let e = events.next();
        let done = e["type"] == "converged";
        seen.push(e);
        if done {
            break;
        }
    }
    let ids: Vec<u64> = seen.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "ids in order with no gap: {ids:?}");
    let types: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"commit_seen"), "{types:?}");
    assert_eq!(seen[0]["sha"], second);
    let plan_at = types.iter().position(|t| *t == "plan_started").expect("plan_started");
    let first_step = types.iter().position(|t| *t == "step_started").expect("step_started");
    assert!(plan_at < first_step, "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "step_finished").count(), 2, "{types:?}");
    assert_eq!(*types.last().unwrap(), "converged");

    let r = reqwest::blocking::get(format!("{}/metrics", d.url)).unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "the body is OpenMetrics text and says so"
    );
    let text = r.text().unwrap();
    let names = openmetrics_samples(&text);
    for want in [
        "capstan_reconcile_duration_seconds_bucket",
        "capstan_last_applied_commit_timestamp_seconds",
        "capstan_steps_total",
        "capstan_api_requests_total",
        "capstan_drifted_resources",
    ] {
        assert!(names.contains(want), "{want} missing from:\n{text}");
    }
    assert!(text.contains("capstan_steps_total{outcome=\"complete\"} 3"), "{text}");
}

/// Check OpenMetrics 1.0 text line by line (metric families of `# TYPE`, `# HELP` and `# UNIT`
/// lines followed by their samples, `# EOF` last) and return the sample names.
fn openmetrics_samples(text: &str) -> std::collections::BTreeSet<String> {
    fn is_name(s: &str, colon: bool) -> bool {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    fn is_number(s: &str) -> bool {
        matches!(s, "+Inf" | "-Inf" | "NaN") || (s.parse::<f64>().is_ok() && !s.contains(['i', 'I', 'n', 'N']))
    }
    /// `{name="value",...}` at the start of `s`: the labels, and what follows.
    fn labels(s: &str, line: &str) -> (Vec<(String, String)>, String) {
        let mut out = Vec::new();
        let mut rest = s.strip_prefix('{').unwrap();
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                return (out, r.to_string());
            }
            let (name, r) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
            assert!(is_name(name, false), "bad label name {name:?} in {line:?}");
            let mut value = String::new();
            let mut chars = r.chars();
            loop {
                match chars.next().unwrap_or_else(|| panic!("unterminated label value in {line:?}")) {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some(c @ ('\\' | '"')) => value.push(c),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    '\n' => panic!("newline in a label value in {line:?}"),
                    c => value.push(c),
                }
            }
            assert!(!out.iter().any(|(n, _)| *n == name), "label {name} twice in {line:?}");
            out.push((name.to_string(), value));
            rest = chars.as_str();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF and a newline:\n{text}");
    let lines: Vec<&str> = text.strip_suffix('\n').unwrap().split('\n').collect();
    assert_eq!(lines.iter().filter(|l| **l == "# EOF").count(), 1, "# EOF once, last");
    let mut families: std::collections::BTreeMap<String, String> = Default::default();
    let mut done_families = std::collections::BTreeSet::new();
    let mut current: Option<(String, String)> = None; // (family, type)
    let mut samples = std::collections::BTreeSet::new();
    for line in &lines[..lines.len() - 1] {
        assert!(!line.is_empty(), "empty line in OpenMetrics text");
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, family, rest) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next());
            assert!(is_name(family, true), "bad metric family name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = rest.unwrap_or_else(|| panic!("no type in {line:?}"));
                    assert!(
                        ["counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary", "unknown"]
                            .contains(&t),
                        "unknown type in {line:?}"
                    );
                    assert!(families.insert(family.to_string(), t.to_string()).is_none(), "{family} typed twice");
                }
                "HELP" | "UNIT" => {
                    assert!(rest.is_some(), "{kind} without text in {line:?}");
                }
                _ => panic!("a # line that is not TYPE, HELP, UNIT or EOF: {line:?}"),
            }
            if current.as_ref().is_none_or(|(f, _)| f != family) {
                if let Some((f, _)) = current.take() {
                    done_families.insert(f);
                }
                assert!(!done_families.contains(family), "family {family} is split: {line:?}");
                current = Some((family.to_string(), families.get(family).cloned().unwrap_or_default()));
            } else if kind == "TYPE" {
                current = Some((family.to_string(), families[family].clone()));
            }
            continue;
        }
        // name[{labels}] value [timestamp]
        let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let (name, rest) = line.split_at(end);
        assert!(is_name(name, true), "bad sample name in {line:?}");
        let (labels, rest) = if rest.starts_with('{') { labels(rest, line) } else { (Vec::new(), rest.to_string()) };
        let fields: Vec<&str> =
            rest.strip_prefix(' ').unwrap_or_else(|| panic!("no value in {line:?}")).split(' ').collect();
        assert!(matches!(fields.len(), 1 | 2), "value [timestamp] expected in {line:?}");
        assert!(fields.iter().all(|f| is_number(f)), "not a number in {line:?}");
        let (family, kind) = current.clone().unwrap_or_else(|| panic!("a sample before any # TYPE: {line:?}"));
        let suffix = name.strip_prefix(family.as_str()).unwrap_or_else(|| panic!("{name} outside its family {family}"));
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{name} is no sample of a {kind} {family}");
        if suffix == "_bucket" {
            assert!(labels.iter().any(|(n, _)| n == "le"), "a bucket without le: {line:?}");
        }
        if kind == "counter" && suffix == "_total" {
            assert!(fields[0].parse::<f64>().unwrap() >= 0.0, "a negative counter: {line:?}");
        }
        samples.insert(name.to_string());
    }
    samples
}

#[test]
fn a_rollback_applies_an_earlier_commit_and_holds_until_the_next_one() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
    // A rollback goes back only to a commit the daemon applied.
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the newest commit to apply", WAIT, |d| applied(d, &second));

    // Through the CLI, which asks the daemon.
    let out = run_in(repo.path(), &["rollback", "--to", "HEAD~1", "--daemon", &d.url]);
    out.ok();
    assert!(out.stdout.contains(&first), "{}", out.stdout);
    let version = || sb.job("job::/dev::web").unwrap()["tags"]["version"].as_str().unwrap().to_string();
    d.wait_for("the rollback to apply", WAIT, |_| version() == "1");
    let (_, target) = d.get("/v1/configurations/target");
    assert_eq!(target["sha"], first);
    // Resyncs keep to it (self-heal would otherwise put the branch's head back).
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(version(), "1");

    // The next commit moves on.
    repo.write("web.yaml", &job_yaml("web", "3"));
    let third = repo.commit("web v3");
    d.wait_for("the next commit to apply", WAIT, |d| applied(d, &third));
    assert_eq!(version(), "3");
    let (code, _) = d.post("/v1/rollback", None, Some(("{\"to\": \"no-such-commit\"}", &[])));
    assert_eq!(code, 404);
}

fn jobs_named(sb: &SandboxProc, prefix: &str) -> Vec<String> {
    sb.jobs().iter().map(|j| j["fqn"].as_str().unwrap().to_string()).filter(|f| f.starts_with(prefix)).collect()
}

#[test]
fn a_commit_that_would_delete_everything_is_refused_and_the_next_acceptable_one_applies() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, "prune: true\n"));
    for name in ["a", "b", "c", "d"] {
        repo.write(&format!("{name}.yaml"), &job_yaml(name, "1"));
    }
    let full = repo.commit("four jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
    d.wait_for("the four jobs", WAIT, |d| applied(d, &full));
    let events = EventReader::open(&d);
    sb.clear_requests();

    for name in ["a", "b", "c", "d"] {
        std::fs::remove_file(repo.path().join(format!("{name}.yaml"))).unwrap();
    }
    let empty = repo.commit("delete every manifest");
    let refused = events.until(|e| e["type"] == "plan_refused");
    assert_eq!(
        (&refused["sha"], &refused["reason"], &refused["deletes"]),
        (&json!(empty), &json!("mass_delete"), &json!(4))
    );
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("refusing to delete 4 of the 4 resources"), "{message}");
    assert!(message.contains("nothing is declared at all"), "{message}");
    d.wait_for("the refusal to be recorded", WAIT, |d| d.status_of(&empty).as_deref() == Some("refused"));
    let conf = d.configuration(&empty).unwrap();
    assert_eq!(conf["errors"][0]["reason"], "mass_delete");
    assert!(conf["errors"][0]["message"].as_str().unwrap().contains("refusing to delete"), "{conf}");
    // Resyncs do not try it again; nothing is deleted.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(sb.mutating_requests().is_empty(), "the refused plan changed something: {:?}", sb.mutating_requests());
    assert_eq!(jobs_named(&sb, "job::/dev::").len(), 4);
    assert_eq!(d.get("/v1/configurations").1[0]["sha"], full, "the refused commit is not listed as applied");

    // Three of the four back: one deletion, within the limits, is applied.
    for name in ["a", "b", "c"] {
        repo.write(&format!("{name}.yaml"), &job_yaml(name, "1"));
    }
    let three = repo.commit("three jobs");
    d.wait_for("the acceptable commit", WAIT, |d| applied(d, &three));
    let mut left = jobs_named(&sb, "job::/dev::");
    left.sort();
    assert_eq!(left, ["job::/dev::a", "job::/dev::b", "job::/dev::c"]);
}

#[test]
fn with_allow_mass_delete_a_refused_commit_is_applied_when_the_daemon_starts_again() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, "prune: true\n"));
    repo.write("a.yaml", &job_yaml("a", "1"));
    repo.write("b.yaml", &job_yaml("b", "1"));
    let both = repo.commit("two jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the two jobs", WAIT, |d| applied(d, &both));
    std::fs::remove_file(repo.path().join("a.yaml")).unwrap();
    std::fs::remove_file(repo.path().join("b.yaml")).unwrap();
    let empty = repo.commit("nothing");
    d.wait_for("the refusal", WAIT, |d| d.status_of(&empty).as_deref() == Some("refused"));
    assert_eq!(jobs_named(&sb, "job::/dev::").len(), 2);
    assert_eq!(d.stop(), 0);

    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--allow-mass-delete"], &[]);
    d.wait_for("the refused commit, allowed now", WAIT, |d| applied(d, &empty));
    assert!(jobs_named(&sb, "job::/dev::").is_empty());
}

#[test]
fn while_the_daemon_applies_a_cli_apply_to_the_same_target_fails_at_once_naming_its_pid() {
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..4 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("four jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--parallelism", "1"], &[]);
    d.wait_for("a step to run", WAIT, |d| step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));

    let w = Workdir::new();
    w.target(&sb.url);
    w.write("cli.yaml", "jobs:\n  job::/cli::x:\n    state: started\n");
    let t = Instant::now();
    let out = w.capstan(&["apply", ".", "--yes"]);
    let waited = t.elapsed();
    out.code(1);
    assert!(out.stderr.contains(&format!("another apply to {} is running", sb.url)), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("pid {}", d.pid())), "the daemon is named: {}", out.stderr);
    assert!(waited < Duration::from_secs(5), "it failed at once, not after waiting ({waited:?})");
    assert!(sb.job("job::/cli::x").is_none());

    // Once the daemon has converged the lock is free.
    d.wait_for("the daemon's plan", WAIT, |d| applied(d, &sha));
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert!(sb.job("job::/cli::x").is_some());
}

#[test]
fn a_daemon_that_finds_the_target_locked_by_an_apply_tries_again_and_applies_once_it_is_free() {
    let sb = SandboxProc::start(&["--rollout-ms", "300"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    let events = EventReader::open(&d);

    // A slow CLI apply of other jobs on the same target: six creates, one at a time.
    let w = Workdir::new();
    w.target(&sb.url);
    let mut text = String::from("jobs:\n");
    for i in 0..6 {
        text.push_str(&format!("  job::/cli::j{i}:\n    state: started\n"));
    }
    w.write("cli.yaml", &text);
    sb.clear_requests();
    let mut cli = std::process::Command::new(capstan_bin())
        .args(["apply", ".", "--yes", "--parallelism", "1"])
        .current_dir(w.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while sb.mutating_requests().is_empty() {
        assert!(start.elapsed() < WAIT, "the CLI apply never started");
        std::thread::sleep(Duration::from_millis(10));
    }

    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    let locked = events.until(|e| e["type"] == "target_locked");
    assert_eq!(locked["sha"], second);
    assert!(locked["message"].as_str().unwrap().contains(&format!("pid {}", cli.id())), "{locked}");
    assert!(cli.try_wait().unwrap().is_none(), "the CLI apply is still running");
    assert_eq!(d.status_of(&second).as_deref(), Some("pending"));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "1", "nothing applied under another's lock");
    let (_, status) = d.get("/v1/status");
    assert!(status["locked_by"].as_str().unwrap().contains(&format!("pid {}", cli.id())), "{status}");

    assert!(cli.wait().unwrap().success(), "the CLI apply succeeds");
    let freed = Instant::now();
    d.wait_for("the daemon to apply once the lock is free", WAIT, |d| applied(d, &second));
    eprintln!("lock freed → applied in {:?}", freed.elapsed());
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    assert_eq!(d.get("/v1/status").1["locked_by"], Value::Null);
}

/// Stop the daemon with `signal` while a step runs, then start it again on the same state.
fn stopped_mid_step_it_finishes_the_step_and_a_restart_the_rest(signal: i32) {
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..4 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("four jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--parallelism", "1"], &[]);
    // An open event stream must not hold the shutdown up.
    let events = EventReader::open_from_start(&d);
    d.wait_for("a step to run", WAIT, |d| step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));
    let (_, plan) = d.get("/v1/plans/deploy");
    let steps: Vec<Value> =
        plan["phases"].as_array().unwrap().iter().flat_map(|p| p["steps"].as_array().unwrap().clone()).collect();
    let running = steps.iter().find(|s| s["status"] == "IN_PROGRESS").unwrap()["name"].as_str().unwrap().to_string();

    let code = d.signal(signal);
    assert_eq!(code, 0, "signal {signal} ends the daemon cleanly");

    // What it recorded: the running step complete, the rest waiting, the commit still to do.
    let db = rusqlite::Connection::open(state.path().join("capstan.db")).unwrap();
    let (status, outcome): (String, String) = db
        .query_row("SELECT status, outcome FROM configurations WHERE sha = ?1", [&sha], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(status, "pending");
    let outcome: Value = serde_json::from_str(&outcome).unwrap();
    let recorded: Vec<(String, String)> = outcome["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap().clone())
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect();
    assert!(recorded.contains(&(running.clone(), "COMPLETE".to_string())), "{running} not complete in {recorded:?}");
    let complete = recorded.iter().filter(|(_, s)| s == "COMPLETE").count();
    assert!(complete < 4, "the whole plan ran: {recorded:?}");
    assert!(recorded.iter().all(|(_, s)| s == "COMPLETE" || s == "WAITING"), "{recorded:?}");
    // No step started after the signal: the platform has the completed steps' jobs only.
    assert_eq!(jobs_named(&sb, "job::/dev::job-").len(), complete, "{recorded:?}");
    let mut seen = Vec::new();
    while let Some(e) = events.next_until_closed() {
        seen.push(e);
    }
    let count = |t: &str| seen.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("step_started"), complete, "every step started finished: {seen:?}");
    assert_eq!(count("step_finished"), complete);

    // Started again, it does the rest, and nothing twice.
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--parallelism", "1"], &[]);
    d.wait_for("the rest of the plan", WAIT, |d| applied(d, &sha));
    let mut jobs = jobs_named(&sb, "job::/dev::job-");
    jobs.sort();
    assert_eq!(jobs, ["job::/dev::job-0", "job::/dev::job-1", "job::/dev::job-2", "job::/dev::job-3"]);
    let (_, plan) = d.get("/v1/plans/deploy");
    let redone: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(redone.len(), 4 - complete, "only what was left is planned: {redone:?}");
    assert!(!redone.contains(&running.as_str()), "{running} was done again");
}

#[test]
fn sigterm_mid_step_finishes_the_step_exits_0_and_a_restart_does_the_rest() {
    stopped_mid_step_it_finishes_the_step_and_a_restart_the_rest(libc::SIGTERM);
}

#[test]
fn sigint_mid_step_finishes_the_step_exits_0_and_a_restart_does_the_rest() {
    stopped_mid_step_it_finishes_the_step_and_a_restart_the_rest(libc::SIGINT);
}

fn get_text(d: &DaemonProc, path: &str) -> (u16, String) {
    let r = reqwest::blocking::get(format!("{}{path}", d.url)).unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn health_is_live_at_once_and_ready_only_after_the_first_reconcile() {
    // Every platform request takes 500 ms, so the first reconcile takes a while.
    let sb = SandboxProc::start(&["--latency-ms", "500"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    assert_eq!(get_text(&d, "/health/live"), (200, "ok\n".to_string()));
    assert_eq!(get_text(&d, "/health/ready"), (503, "starting\n".to_string()), "not ready before the first reconcile");
    assert_eq!(d.get("/v1/status").1["ready"], false);
    assert_eq!(d.get("/v1/plans"), (200, json!(["deploy"])));
    d.wait_for("readiness", WAIT, |d| get_text(d, "/health/ready").0 == 200);
    assert_eq!(get_text(&d, "/health/ready").1, "ready\n");
    assert_eq!(d.status_of(&sha).as_deref(), Some("applied"), "ready once the first reconcile is done");
    assert_eq!(get_text(&d, "/health/live").0, 200);
}

/// `capstan` with the token in the environment.
fn capstan_with_token(args: &[&str]) -> Run {
    run_with_env(std::path::Path::new("."), args, &[("CAPSTAN_TOKEN", Some("t0k3n"))])
}

#[test]
fn the_cli_interrupts_shows_and_continues_a_daemons_plan_and_continue_is_also_a_put() {
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..5 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("five jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--parallelism", "1", "--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    let url = d.url.clone();
    let plan_cli = |action: &str, extra: &[&str]| {
        let mut args = vec!["plan", action, "--daemon", url.as_str(), "--token-env", "CAPSTAN_TOKEN"];
        args.extend_from_slice(extra);
        capstan_with_token(&args)
    };
    d.wait_for("a step to run", WAIT, |d| step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));

    // Without the token the daemon refuses, and the CLI says so.
    let out = capstan_with_token(&["plan", "interrupt", "--daemon", &url]);
    out.code(1);
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    let out = plan_cli("interrupt", &[]);
    out.ok();
    assert_eq!(out.stdout, "Received cmd: interrupt\n");
    d.wait_for("the running step to finish", WAIT, |d| !step_statuses(d).iter().any(|s| s == "IN_PROGRESS"));
    let statuses = step_statuses(&d);
    let done = statuses.iter().filter(|s| *s == "COMPLETE").count();
    assert!(done < 5, "{statuses:?}");

    // Status as text: a header, then one line per step with its status.
    let out = plan_cli("status", &[]);
    out.ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next().unwrap(), format!("plan deploy ({}): WAITING", &sha[..12]));
    let step_lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("create job::/dev::job-")).collect();
    assert_eq!(step_lines.len(), 5, "{}", out.stdout);
    assert_eq!(step_lines.iter().filter(|l| l.trim_start().starts_with("COMPLETE ")).count(), done, "{}", out.stdout);
    assert_eq!(
        step_lines.iter().filter(|l| l.trim_start().starts_with("WAITING ")).count(),
        5 - done,
        "{}",
        out.stdout
    );
    // And as JSON: the daemon's plan.
    let out = plan_cli("status", &["-o", "json"]);
    out.ok();
    let plan = out.json();
    assert_eq!((&plan["status"], &plan["commit"]), (&json!("WAITING"), &json!(sha)));
    let json_statuses: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap())
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(json_statuses, statuses);

    // Continue as a PUT (seed 000's verb).
    let r = reqwest::blocking::Client::new()
        .put(format!("{url}/v1/plans/deploy/continue"))
        .bearer_auth("t0k3n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["message"], "Received cmd: continue");
    let unauthorized = reqwest::blocking::Client::new().put(format!("{url}/v1/plans/deploy/continue")).send().unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    d.wait_for("another step to complete", WAIT, |d| {
        step_statuses(d).iter().filter(|s| *s == "COMPLETE").count() > done
    });

    // Interrupt again with JSON output, and continue from the CLI.
    let out = plan_cli("interrupt", &["-o", "json"]);
    out.ok();
    assert_eq!(out.json(), json!({ "message": "Received cmd: interrupt" }));
    let out = plan_cli("continue", &[]);
    out.ok();
    assert_eq!(out.stdout, "Received cmd: continue\n");
    d.wait_for("the plan to complete", WAIT, |d| applied(d, &sha));
    let out = plan_cli("status", &["-o", "json"]);
    out.ok();
    assert_eq!(out.json()["status"], "COMPLETE");
    // Nothing left to continue: seed 000's 208, which is a success.
    let out = plan_cli("continue", &["-o", "json"]);
    out.ok();
    assert_eq!(out.json()["message"], "Command has already been reported or completed");
    assert_eq!(jobs_named(&sb, "job::/dev::job-").len(), 5);
}

#[test]
fn a_burst_of_commits_during_an_apply_coalesces_into_the_newest_and_the_others_are_superseded() {
    let sb = SandboxProc::start(&["--rollout-ms", "300"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--parallelism", "1"], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    let events = EventReader::open(&d);

    // A commit that keeps the daemon busy for a while: three creates, one at a time.
    for i in 0..3 {
        repo.write(&format!("slow{i}.yaml"), &job_yaml(&format!("slow-{i}"), "1"));
    }
    let busy = repo.commit("three more jobs");
    d.wait_for("the busy commit's plan to run", WAIT, |d| {
        d.get("/v1/plans/deploy").1["commit"] == busy && step_statuses(d).iter().any(|s| s == "IN_PROGRESS")
    });
    sb.clear_requests();
    // The burst, while it applies.
    let burst: Vec<String> = (1..=3)
        .map(|n| {
            repo.write("web.yaml", &job_yaml("web", &format!("burst-{n}")));
            repo.commit(&format!("web burst {n}"))
        })
        .collect();
    let newest = &burst[2];
    d.wait_for("the newest commit", WAIT, |d| applied(d, newest));
    assert_eq!(d.status_of(&busy).as_deref(), Some("applied"), "the running plan was finished");
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "burst-3");

    // The older commits of the burst were not applied in turn: each is superseded by the newest.
    for older in &burst[..2] {
        let conf = d.configuration(older).unwrap_or_else(|| panic!("{older} is not recorded"));
        assert_eq!((&conf["status"], &conf["superseded_by"]), (&json!("superseded"), &json!(newest)), "{conf}");
    }
    let sent = sb.mutating_requests();
    for version in ["burst-1", "burst-2"] {
        assert!(!sent.iter().any(|r| r["body"].to_string().contains(version)), "{version} was applied: {sent:?}");
    }
    let (_, all) = d.get("/v1/configurations?all=true");
    let listed: Vec<(&str, &str)> =
        all.as_array().unwrap().iter().map(|c| (c["sha"].as_str().unwrap(), c["status"].as_str().unwrap())).collect();
    assert_eq!(
        listed,
        [
            (newest.as_str(), "applied"),
            (burst[1].as_str(), "superseded"),
            (burst[0].as_str(), "superseded"),
            (busy.as_str(), "applied"),
            (first.as_str(), "applied")
        ]
    );
    let seen = events.until(|e| e["type"] == "commit_seen" && e["sha"] == *newest);
    assert_eq!(seen["superseded"], json!([burst[0], burst[1]]));
}

/// Reconciles so far, from `/metrics`.
#[test]
fn an_idle_daemon_does_not_wake_itself_by_reading_its_repository() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    d.wait_for("the daemon to be idle", WAIT, |d| d.get("/v1/status").1["phase"] == "idle");
    // Every reconcile reads HEAD and the refs; those reads are no reason for another.
    let before = d.reconciles();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(d.reconciles(), before, "the daemon reconciled with nothing new");
    assert_eq!(d.get("/v1/status").1["phase"], "idle");
}

#[test]
fn a_daemon_given_a_relative_repository_path_sees_new_commits() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    // No polling to fall back on: only the refs watcher can see the next commit.
    let d = DaemonProc::start_in(repo.path(), ".", state.path(), &["--interval", "1h", "--resync", "1h"]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the next commit, seen by the watcher", Duration::from_secs(10), |d| applied(d, &second));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
}

#[test]
fn a_takeover_is_invalid_without_take_ownership_and_a_step_that_did_not_happen_fails_the_commit() {
    // Issue 12, items 5 and 7, in the daemon.
    let sb = SandboxProc::start(&[]);
    // Another owner's job, made by a one-shot apply.
    let other = Workdir::new();
    other.write("capstan.yaml", "owner: team-a\ndefault_namespace: /dev\n");
    other.target(&sb.url);
    other.write("web.yaml", &job_yaml("web", "1"));
    other.capstan(&["apply", ".", "--yes"]).ok();

    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let first = repo.commit("web, marked by team-a");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the commit to be judged", WAIT, |d| d.status_of(&first).as_deref() == Some("invalid"));
    let text = d.configuration(&first).unwrap()["errors"][0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with("web.yaml:2:3: error: job::/dev::web is marked as owner \"team-a\"'s"), "{text}");
    assert_eq!(sb.job("job::/dev::web").unwrap()["labels"]["capstan-owner"], "team-a");
    d.stop();

    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--take-ownership"], &[]);
    d.wait_for("the takeover to apply", WAIT, |d| applied(d, &first));
    let web = sb.job("job::/dev::web").unwrap();
    assert_eq!((&web["labels"]["capstan-owner"], &web["tags"]["version"]), (&json!("daemon-test"), &json!("2")));

    // A provider binding, then its removal, which the API cannot do: the commit fails.
    repo.write(
        "pg.yaml",
        "jobs:\n  job::::pgjob: {}\nproviders:\n  provider::::pg: {type: postgres, backing_job_fqn: job::::pgjob, backing_job_port: 5432}\n",
    );
    repo.write("web.yaml", &format!("{}    bindings: {{db: {{fqn: provider::::pg}}}}\n", job_yaml("web", "2")));
    let bound = repo.commit("bind web to a provider");
    d.wait_for("the binding", WAIT, |d| applied(d, &bound));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let unbound = repo.commit("unbind it");
    d.wait_for("the unbinding to fail", WAIT, |d| d.status_of(&unbound).as_deref() == Some("failed"));
    let errors = d.configuration(&unbound).unwrap()["errors"].clone();
    assert!(errors[0]["message"].as_str().unwrap().contains("still has it, so it was not removed"), "{errors}");
}

#[test]
fn a_daemon_whose_newest_capstan_yaml_is_invalid_refuses_to_start_instead_of_using_the_embedded_sandbox() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    // The target is named, but a typo elsewhere makes the file invalid: its defaults would be
    // the embedded sandbox, another target.
    repo.write("capstan.yaml", &config_for(&sb, "prnue: true\n"));
    repo.write("web.yaml", &job_yaml("web", "1"));
    repo.commit("web v1, a typo in capstan.yaml");
    let state = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(capstan_bin())
        .args(["daemon", "--repo", repo.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a daemon that started anyway runs until it is stopped.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("the daemon started with an invalid capstan.yaml: {stderr}"));
    assert!(!status.success(), "the daemon must not start: {stderr}");
    assert!(
        stderr.contains("capstan.yaml is invalid") && stderr.contains("prnue"),
        "the error names the file and the problem: {stderr}"
    );
    let sandboxes: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sandbox-"))
        .collect();
    assert!(sandboxes.is_empty(), "no embedded sandbox was started: {sandboxes:?}");
    assert_eq!(sb.mutating_count(), 0);
}
