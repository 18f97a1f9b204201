//! The daemon as a subprocess, following real git repositories made with the git CLI, applying
//! to a sandbox process over HTTP.

mod common;
use common::git::*;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn job_yaml(name: &str, tag: &str) -> String {
    format!("jobs:\n  job::::{name}:\n    state: started\n    tags:\n      version: \"{tag}\"\n")
}

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
    let (_, plan) = d.get("/v1/plans/deploy");
    plan["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap().to_string()))
        .collect()
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
fn mutating_calls_need_the_token_in_either_header_form() {
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
        assert!(matches!(d.post(path, Some("Bearer t0k3n"), None).0, 200 | 202), "{path} with Bearer");
        assert!(matches!(d.post(path, Some("token=t0k3n"), None).0, 200 | 202), "{path} with token=");
    }
    // Reading needs no token.
    assert_eq!(d.get("/v1/status").0, 200);
}

/// Reads the daemon's server-sent events on a thread.
struct EventReader {
    rx: std::sync::mpsc::Receiver<Value>,
}

impl EventReader {
    fn open(d: &DaemonProc) -> Self {
        let url = format!("{}/v1/events", d.url);
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
            let resp = client.get(url).send().unwrap();
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
fn events_arrive_in_order_and_metrics_are_prometheus_text() {
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

    let text = d.text("/metrics");
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // name{labels} value
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        value.parse::<f64>().unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name = name_labels.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad name in {line:?}");
        names.insert(name.to_string());
    }
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
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
}

#[test]
fn a_rollback_applies_an_earlier_commit_and_holds_until_the_next_one() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
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
