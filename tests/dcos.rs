//! The DC/OS provider through the real binary, against a real DC/OS sandbox process
//! (`capstan sandbox serve --platform dcos`) over HTTP: an SDK service's scheduler is deployed
//! through Marathon behind the admin router, and its step is done when the service's own deploy
//! plan is COMPLETE; a failing plan step fails capstan's step with the service's message.

mod common;
use common::*;
use serde_json::{Value, json};

fn example(extra: &[&str]) -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start_platform("dcos", extra);
    let w = Workdir::from_example("examples/manifests/dcos");
    w.target_platform("dcos", &sb.url);
    (sb, w)
}

#[test]
fn apply_follows_the_services_deploy_plan_to_complete_before_its_dependent_starts() {
    // Steps slow enough that a plan nobody waited for would still be running when apply ends.
    let (sb, w) = example(&["--step-ms", "150"]);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    // Its progress shows the service's steps under capstan's step, as they change.
    for node in ["node-0", "node-1", "node-2"] {
        assert!(out.stdout.contains(&format!("COMPLETE    node / {node}:[server]")), "{}", out.stdout);
    }

    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plans/deploy", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    let steps = plan["phases"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "three nodes: {plan}");
    // The dependent app was sent only after capstan had read the plan COMPLETE.
    let reads = sb.seqs("GET", "/service/cassandra/v1/plans/deploy");
    let put_reports = sb.seqs("PUT", "/service/marathon/v2/apps/reports");
    assert!(!reads.is_empty(), "capstan read the service's plan");
    assert!(!put_reports.is_empty(), "the dependent app was deployed");
    assert!(reads.iter().any(|&r| r < put_reports[0]), "plan reads {reads:?}, PUT /reports {put_reports:?}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_failing_plan_step_fails_the_step_with_the_services_message_and_nothing_after_it_runs() {
    let (sb, w) = example(&["--step-ms", "20"]);
    let faults =
        json!({"fail_step": {"service": "cassandra", "step": "node-1:[server]", "message": "disk full on agent 3"}});
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&faults)).0, 200);

    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("disk full on agent 3"), "the service's message\n{all}");
    assert!(all.contains("node-1:[server]"), "the failing step is named\n{all}");
    assert!(sb.seqs("PUT", "/service/marathon/v2/apps/reports").is_empty(), "the dependent was not started");
    let reports = sb.send("GET", "/service/marathon/v2/apps/reports", None);
    assert_eq!(reports.0, 404, "{}", reports.1);
}

#[test]
fn a_legacy_cassandra_is_followed_through_its_v1_plan() {
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "100"]);
    let w = Workdir::new();
    write_legacy_cassandra(&w);
    w.target_platform("dcos", &sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let (code, plan): (u16, Value) = sb.send("GET", "/service/cassandra/v1/plan", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    assert!(!sb.seqs("GET", "/service/cassandra/v1/plan").is_empty());
}

/// The statuses of the steps of a service's deploy plan, as the sandbox shows them.
fn service_steps(sb: &SandboxProc, service: &str) -> Vec<String> {
    let plan = sb.send("GET", &format!("/service/{service}/v1/plans/deploy",), None).1;
    plan["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["steps"].as_array().cloned().unwrap_or_default())
        .map(|s| s["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn interrupt_and_continue_through_the_daemon_reach_the_services_plan() {
    use common::git::*;
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "400"]);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!("owner: data\ntargets:\n  sb:\n    platform: dcos\n    url: {}\ndefault_target: sb\n", sb.url),
    );
    repo.write(
        "cassandra.json",
        &std::fs::read_to_string(repo_root().join("examples/manifests/dcos/cassandra.json")).unwrap(),
    );
    let sha = repo.commit("a three-node service");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    until(WAIT, "the service's first step to run", || {
        service_steps(&sb, "cassandra").first().is_some_and(|s| s != "PENDING")
    });
    let (code, body) = d.post("/v1/plans/deploy/interrupt", Some("Bearer t0k3n"), None);
    assert_eq!(code, 200, "{body}");
    // The service's plan is interrupted: its current step finishes and no other starts.
    until(WAIT, "the service's plan to be interrupted", || {
        sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"] == "WAITING"
    });
    // The step that was running finishes; the others stay PENDING.
    until(WAIT, "the running step to finish", || {
        service_steps(&sb, "cassandra").iter().all(|s| s == "COMPLETE" || s == "PENDING")
    });
    let held = service_steps(&sb, "cassandra");
    assert!(held.iter().any(|s| s == "PENDING"), "steps left to run: {held:?}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(service_steps(&sb, "cassandra"), held, "no step of the service started while interrupted");
    assert_ne!(d.status_of(&sha).as_deref(), Some("applied"));

    let (code, _) = d.post("/v1/plans/deploy/continue", Some("token=t0k3n"), None);
    assert_eq!(code, 200);
    d.wait_for("the commit applied", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    assert_eq!(sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"], "COMPLETE");
    assert!(service_steps(&sb, "cassandra").iter().all(|s| s == "COMPLETE"));
}

#[test]
fn after_a_kill_mid_plan_the_next_apply_follows_the_running_plan_without_deploying_again() {
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let (sb, w) = example(&["--step-ms", "400"]);
    let mut child = std::process::Command::new(capstan_bin())
        .args(["apply", ".", "--yes"])
        .current_dir(w.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until(WAIT, "the service's plan to run", || {
        service_steps(&sb, "cassandra").iter().any(|s| s != "PENDING" && s != "COMPLETE")
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let puts = sb.seqs("PUT", "/service/marathon/v2/apps/cassandra");
    assert_eq!(puts.len(), 1, "one Marathon deployment of the scheduler");
    assert_ne!(sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"], "COMPLETE");

    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    assert_eq!(sb.seqs("PUT", "/service/marathon/v2/apps/cassandra"), puts, "no second deployment\n{}", out.stdout);
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plans/deploy", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    assert_eq!(sb.send("GET", "/service/marathon/v2/apps/reports", None).0, 200, "the dependent followed");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn the_token_goes_as_token_equals_to_marathon_and_to_the_services_plan() {
    // The sandbox takes only `Authorization: token=<T>` for dcos (a bearer token is refused).
    let sb = SandboxProc::start_platform("dcos", &["--token", "s3cret", "--step-ms", "20"]);
    let w = Workdir::from_example("examples/manifests/dcos");
    w.write(
        "capstan.yaml",
        &format!(
            "{}\ntargets:\n  c:\n    platform: dcos\n    url: {}\n    token_env: DCOS_TOKEN\ndefault_target: c\n",
            w.read("capstan.yaml"),
            sb.url
        ),
    );
    let out = run_with_env(w.path(), &["apply", ".", "--yes"], &[("DCOS_TOKEN", Some("s3cret"))]);
    out.ok();
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"), "the token is never shown");
    let plan = reqwest::blocking::Client::new()
        .get(format!("{}/service/cassandra/v1/plans/deploy", sb.url))
        .header("Authorization", "token=s3cret")
        .send()
        .unwrap();
    assert_eq!(plan.status().as_u16(), 200);
    assert_eq!(plan.json::<Value>().unwrap()["status"], "COMPLETE");
    assert!(!sb.seqs("GET", "/service/cassandra/v1/plans/deploy").is_empty(), "capstan followed the plan");
    let wrong = run_with_env(w.path(), &["plan", "."], &[("DCOS_TOKEN", Some("wrong"))]);
    wrong.code(1);
    assert!(wrong.stderr.contains("401"), "{}", wrong.stderr);
}

#[test]
fn a_dcos_ca_cert_that_is_no_certificate_is_an_error_before_any_request() {
    let sb = SandboxProc::start_platform("dcos", &[]);
    let w = Workdir::from_example("examples/manifests/dcos");
    w.write(
        "capstan.yaml",
        &format!(
            "targets:\n  c:\n    platform: dcos\n    url: {}\n    ca_cert: cluster-ca.pem\ndefault_target: c\n",
            sb.url
        ),
    );
    w.write("cluster-ca.pem", "not a certificate\n");
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("ca_cert cluster-ca.pem is not a PEM certificate"), "{}", out.stderr);
    assert!(sb.requests().is_empty(), "{:?}", sb.requests());
}

/// The sub-steps of the daemon's step for `resource`, as its `/v1/plans/deploy` shows them:
/// `(phase / step, status)`.
fn daemon_substeps(d: &common::git::DaemonProc, resource: &str) -> Vec<(String, String)> {
    let plan = d.get("/v1/plans/deploy").1;
    plan["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["steps"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["resource"].as_str().is_some_and(|r| r.contains(resource)))
        .flat_map(|s| s["substeps"].as_array().cloned().unwrap_or_default())
        .map(|x| {
            let text = |k: &str| x[k].as_str().unwrap_or_default().to_string();
            (format!("{} / {}", text("phase"), text("step")), text("status"))
        })
        .collect()
}

#[test]
fn the_daemon_deploys_a_service_from_git_and_shows_its_plan_steps_as_sub_steps() {
    use common::git::*;
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "300"]);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!("owner: data\ntargets:\n  c:\n    platform: dcos\n    url: {}\ndefault_target: c\n", sb.url),
    );
    repo.write("web.json", &json!({"id": "/web", "cmd": "./web", "instances": 1, "cpus": 0.1, "mem": 64}).to_string());
    let first = repo.commit("a plain app");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit applied", WAIT, |d| d.status_of(&first).as_deref() == Some("applied"));

    repo.write(
        "cassandra.json",
        &std::fs::read_to_string(repo_root().join("examples/manifests/dcos/cassandra.json")).unwrap(),
    );
    let second = repo.commit("add a three-node data service");
    // Watch the daemon's plan while the service's own plan runs: every distinct view of the
    // scheduler's sub-steps.
    let mut views: Vec<Vec<(String, String)>> = Vec::new();
    until(WAIT, "the commit adding the service applied", || {
        let view = daemon_substeps(&d, "cassandra");
        if !view.is_empty() && views.last() != Some(&view) {
            views.push(view);
        }
        d.status_of(&second).as_deref() == Some("applied")
    });
    let names: Vec<&str> = views.last().unwrap().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["node / node-0:[server]", "node / node-1:[server]", "node / node-2:[server]"]);
    assert!(views.last().unwrap().iter().all(|(_, s)| s == "COMPLETE"), "{views:?}");
    // Seen as they progressed: a view with a node done and another not yet.
    assert!(
        views.iter().any(|v| v.iter().any(|(_, s)| s == "COMPLETE") && v.iter().any(|(_, s)| s == "PENDING")),
        "the service's steps were shown as they progressed: {views:?}"
    );
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plans/deploy", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    // The daemon's plan, its commit aside, is a plan as schemas/plan.schema.json describes it.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/plan.schema.json")).unwrap()).unwrap();
    let plan_schema = json!({"$defs": schema["$defs"], "$ref": "#/$defs/plan"});
    let mut daemon_plan = d.get("/v1/plans/deploy").1;
    daemon_plan.as_object_mut().unwrap().remove("commit");
    let validator = jsonschema::validator_for(&plan_schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(&daemon_plan).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{daemon_plan}");

    // `plan status` against the daemon shows them under the step.
    let status = run_in(repo.path(), &["plan", "status", "--daemon", &d.url]);
    status.ok();
    assert!(status.stdout.contains("COMPLETE    node / node-2:[server]"), "{}", status.stdout);
    // And the event stream carried them.
    let events = reqwest::blocking::Client::new()
        .get(format!("{}/v1/events", d.url))
        .header("Last-Event-ID", "0")
        .timeout(Duration::from_secs(2))
        .send()
        .unwrap();
    let mut body = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(events), &mut body);
    assert!(body.contains("\"step_progress\"") && body.contains("node-1:[server]"), "{body}");
}

/// Apply in the background and watch the service's deploy plan in the sandbox until apply
/// ends: the names of the steps seen not COMPLETE, and apply's exit code.
fn apply_watching_steps(sb: &SandboxProc, w: &Workdir) -> (std::collections::BTreeSet<String>, i32) {
    let mut child = std::process::Command::new(capstan_bin())
        .args(["apply", ".", "--yes"])
        .current_dir(w.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ran = std::collections::BTreeSet::new();
    let mut code = None;
    until(std::time::Duration::from_secs(60), "apply to end", || {
        let plan = sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1;
        for s in plan["phases"].as_array().into_iter().flatten().flat_map(|p| p["steps"].as_array().unwrap()) {
            if s["status"] != "COMPLETE" {
                ran.insert(s["name"].as_str().unwrap().to_string());
            }
        }
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    (ran, code.unwrap())
}

fn task_of(sb: &SandboxProc, pod: &str) -> Value {
    sb.send("GET", &format!("/service/cassandra/v1/pod/{pod}/info"), None).1[0]["info"]["taskId"].clone()
}

#[test]
fn a_config_change_reruns_every_node_and_a_count_change_runs_only_the_new_nodes() {
    let (sb, w) = example(&["--step-ms", "200"]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let target = |sb: &SandboxProc| sb.send("GET", "/service/cassandra/v1/configurations/targetId", None).1[0].clone();
    let (first_target, first_tasks) = (target(&sb), ["node-0", "node-1", "node-2"].map(|p| task_of(&sb, p)));

    // One env var changed: a new target configuration, and every node runs again.
    let mut service: Value = serde_json::from_str(&w.read("cassandra.json")).unwrap();
    service["env"]["CASSANDRA_VERSION"] = json!("3.11.7");
    w.write("cassandra.json", &service.to_string());
    let (ran, code) = apply_watching_steps(&sb, &w);
    assert_eq!(code, 0);
    assert_eq!(ran.into_iter().collect::<Vec<_>>(), ["node-0:[server]", "node-1:[server]", "node-2:[server]"]);
    assert_ne!(target(&sb), first_target, "a new target configuration");
    let second_tasks = ["node-0", "node-1", "node-2"].map(|p| task_of(&sb, p));
    for (a, b) in first_tasks.iter().zip(&second_tasks) {
        assert_ne!(a, b, "every node ran again");
    }
    assert_eq!(sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"], "COMPLETE");

    // Three nodes to five: only the two new ones run.
    service["env"]["NODES"] = json!("5");
    w.write("cassandra.json", &service.to_string());
    let (ran, code) = apply_watching_steps(&sb, &w);
    assert_eq!(code, 0);
    assert_eq!(ran.into_iter().collect::<Vec<_>>(), ["node-3:[server]", "node-4:[server]"]);
    assert_eq!(["node-0", "node-1", "node-2"].map(|p| task_of(&sb, p)), second_tasks, "the old nodes kept running");
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plans/deploy", None);
    assert_eq!((code, plan["phases"][0]["steps"].as_array().unwrap().len()), (200, 5), "{plan}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

/// A repository whose capstan.yaml targets the sandbox, with these files, committed; and a
/// daemon following it (token `t0k3n`).
fn daemon_on(
    sb: &SandboxProc,
    files: &[(&str, String)],
) -> (common::git::Repo, String, tempfile::TempDir, common::git::DaemonProc) {
    use common::git::*;
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!("owner: data\ntargets:\n  c:\n    platform: dcos\n    url: {}\ndefault_target: c\n", sb.url),
    );
    for (name, text) in files {
        repo.write(name, text);
    }
    let sha = repo.commit("the service");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    (repo, sha, state, d)
}

/// The statuses of the legacy Cassandra's Deploy blocks, as the sandbox shows them.
fn legacy_blocks(sb: &SandboxProc) -> Vec<String> {
    let plan = sb.send("GET", "/service/cassandra/v1/plan", None).1;
    plan["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "Deploy")
        .flat_map(|p| p["blocks"].as_array().cloned().unwrap_or_default())
        .map(|b| b["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn interrupt_and_proceed_through_the_daemon_reach_a_legacy_cassandras_plan() {
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "400"]);
    let legacy = json!({
        "id": "/cassandra", "cmd": "./scheduler", "instances": 1, "cpus": 1, "mem": 1024,
        "labels": {"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra"},
        "env": {"NODES": "3"},
    });
    let (repo, sha, _state, d) = daemon_on(&sb, &[("cassandra.json", legacy.to_string())]);
    // `capstan plan interrupt|continue --daemon`, as a person would.
    let drive = |action: &str| {
        let args = ["plan", action, "--daemon", &d.url, "--token-env", "CAPSTAN_TOKEN"];
        run_with_env(repo.path(), &args, &[("CAPSTAN_TOKEN", Some("t0k3n"))]).ok().stdout.clone()
    };
    until(WAIT, "a Deploy block to run", || legacy_blocks(&sb).iter().any(|s| s != "PENDING"));
    drive("interrupt");
    until(WAIT, "the legacy plan interrupted", || {
        sb.send("GET", "/service/cassandra/v1/plan", None).1["status"] == "WAITING"
    });
    until(WAIT, "the running block to finish", || legacy_blocks(&sb).iter().all(|s| s == "COMPLETE" || s == "PENDING"));
    let held = legacy_blocks(&sb);
    assert!(held.iter().any(|s| s == "PENDING"), "blocks left to run: {held:?}");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(legacy_blocks(&sb), held, "no block started while interrupted");
    let sent = |cmd: &str| sb.requests().iter().any(|r| r["path"] == "/service/cassandra/v1/plan" && r["query"] == cmd);
    assert!(sent("cmd=interrupt"), "seed 001's interrupt was sent");

    // `plan status` shows the legacy plan's blocks under the step while it waits.
    let status = drive("status");
    assert!(status.contains("Deploy / node-2"), "{status}");
    drive("continue");
    d.wait_for("the commit applied", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    assert!(sent("cmd=proceed"), "seed 001's proceed was sent");
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plan", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
}

#[test]
fn a_failing_plan_step_makes_the_daemons_commit_failed_with_the_services_message() {
    use std::time::Duration;
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "20"]);
    let faults =
        json!({"fail_step": {"service": "cassandra", "step": "node-1:[server]", "message": "disk full on agent 3"}});
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&faults)).0, 200);
    let service = std::fs::read_to_string(repo_root().join("examples/manifests/dcos/cassandra.json")).unwrap();
    let (_repo, sha, _state, d) = daemon_on(&sb, &[("cassandra.json", service)]);
    d.wait_for("the commit failed", Duration::from_secs(60), |d| d.status_of(&sha).as_deref() == Some("failed"));
    let (_, history) = d.get(&format!("/v1/history?sha={sha}"));
    assert!(history.to_string().contains("disk full on agent 3"), "the service's message: {history}");
    // The daemon's plan shows the failing sub-step with the service's message. A failed apply
    // is planned once more (from what is live), so the plan read may be that retry's, still
    // pending: wait for its end, which the same failing step makes ERROR again.
    // (The plan that shows it is kept: the retry may replace it again right after.)
    let mut plan = Value::Null;
    d.wait_for("the daemon's plan to show the failed step", Duration::from_secs(60), |d| {
        plan = d.get("/v1/plans/deploy").1;
        plan["phases"][0]["steps"][0]["status"] == "ERROR"
    });
    let step = &plan["phases"][0]["steps"][0];
    assert_eq!(step["status"], "ERROR", "{plan}");
    let message = step["message"].as_str().unwrap();
    assert!(message.contains("node-1:[server]") && message.contains("disk full on agent 3"), "{plan}");
    let failing: Vec<&Value> = step["substeps"].as_array().unwrap().iter().filter(|s| s["status"] == "ERROR").collect();
    assert_eq!(failing.len(), 1, "{plan}");
    assert_eq!(failing[0]["step"], "node-1:[server]");
}

/// An HTTPS front for the sandbox, as a cluster's admin router with its own CA would be: TLS
/// with `tests/fixtures/tls/server.pem` (signed by `ca.pem`), each request passed on over
/// loopback HTTP and its answer streamed back (event streams too), one request per connection.
fn tls_front(backend: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (config, backend) = (common::git::tls_config(), backend.to_string());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (config, backend) = (config.clone(), backend.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let _ = pass_on(&mut tls, &backend);
                tls.conn.send_close_notify();
                let _ = std::io::Write::flush(&mut tls);
            });
        }
    });
    url
}

fn pass_on(
    tls: &mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>,
    backend: &str,
) -> std::io::Result<()> {
    use std::io::{BufRead, Read, Write};
    let mut reader = std::io::BufReader::new(tls);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("GET").to_string(), parts.next().unwrap_or("/").to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{backend}{target}"));
    for (k, v) in headers.iter().filter(|(k, _)| !["host", "connection", "content-length"].contains(&k.as_str())) {
        req = req.header(k, v);
    }
    let mut resp = req.body(body).send().map_err(std::io::Error::other)?;
    let out = reader.get_mut();
    write!(out, "HTTP/1.1 {}\r\n", resp.status())?;
    for (k, v) in resp.headers().iter().filter(|(k, _)| !["transfer-encoding", "connection"].contains(&k.as_str())) {
        write!(out, "{k}: {}\r\n", v.to_str().unwrap_or_default())?;
    }
    write!(out, "connection: close\r\n\r\n")?;
    std::io::copy(&mut resp, out)?;
    out.flush()
}

#[test]
fn a_cluster_behind_https_is_trusted_through_ca_cert_only() {
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "20"]);
    let front = tls_front(&sb.url);
    let w = Workdir::from_example("examples/manifests/dcos");
    let pem = std::fs::read_to_string(repo_root().join("tests/fixtures/tls/ca.pem")).unwrap();
    w.write("cluster-ca.pem", &pem);
    let config = |ca: &str| {
        format!("owner: data\ntargets:\n  c:\n    platform: dcos\n    url: {front}\n{ca}default_target: c\n")
    };

    // Without the cluster's CA, nothing is sent past the TLS handshake.
    w.write("capstan.yaml", &config(""));
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.to_lowercase().contains("certificate"), "{}", out.stderr);
    assert!(sb.requests().is_empty(), "{:?}", sb.requests());

    w.write("capstan.yaml", &config("    ca_cert: cluster-ca.pem\n"));
    w.capstan(&["apply", ".", "--yes"]).ok();
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plans/deploy", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    assert!(!sb.seqs("GET", "/service/cassandra/v1/plans/deploy").is_empty(), "the plan was followed over HTTPS");
    assert_eq!(sb.send("GET", "/service/marathon/v2/apps/reports", None).0, 200);
    let pods = w.capstan(&["service", "pods", "cassandra"]);
    pods.ok();
    assert!(pods.stdout.contains("node-2"), "{}", pods.stdout);
}

#[test]
fn after_a_kill_mid_plan_a_legacy_cassandras_plan_is_followed_without_deploying_again() {
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "400"]);
    let w = Workdir::new();
    write_legacy_cassandra(&w);
    w.target_platform("dcos", &sb.url);
    let mut child = std::process::Command::new(capstan_bin())
        .args(["apply", ".", "--yes"])
        .current_dir(w.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until(WAIT, "a Deploy block to run", || legacy_blocks(&sb).iter().any(|s| s != "PENDING"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let puts = sb.seqs("PUT", "/service/marathon/v2/apps/cassandra");
    assert_eq!(puts.len(), 1, "one Marathon deployment of the scheduler");
    assert_eq!(sb.send("GET", "/service/cassandra/v1/plan", None).0, 503, "the plan still runs");

    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    assert_eq!(sb.seqs("PUT", "/service/marathon/v2/apps/cassandra"), puts, "no second deployment\n{}", out.stdout);
    let (code, plan) = sb.send("GET", "/service/cassandra/v1/plan", None);
    assert_eq!((code, plan["status"].as_str()), (200, Some("COMPLETE")), "{plan}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn terminal_controls_in_a_services_messages_never_reach_the_terminal() {
    // A step's message that would erase the line and write COMPLETE over the ERROR.
    let (sb, w) = example(&["--step-ms", "20"]);
    let message = "\u{1b}[2K\r\u{1b}[32mCOMPLETE\u{1b}[0m disk full\u{7}\u{9b}31m";
    let faults = json!({"fail_step": {"service": "cassandra", "step": "node-1:[server]", "message": message}});
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&faults)).0, 200);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    // And a pod's recovery that fails with it, on a service deployed first.
    let (sb2, w2) = example(&["--step-ms", "20"]);
    w2.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(sb2.send("PUT", "/_sandbox/faults", Some(&faults)).0, 200);
    let restart = w2.capstan(&["service", "pod", "restart", "cassandra", "node-1"]);
    restart.code(1);
    for run in [&out, &restart] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains("disk full"), "the service's message is still shown\n{all}");
        let controls: Vec<char> = all.chars().filter(|c| c.is_control() && *c != '\n').collect();
        assert!(controls.is_empty(), "terminal controls {controls:?} in\n{all:?}");
    }
}

#[test]
fn a_service_name_that_would_leave_the_services_path_is_refused_with_its_place_before_any_change() {
    // The label's name goes into the URLs of the service's plan: `..` there would make an
    // interrupt a POST to another app's restart.
    let (sb, w) = example(&["--step-ms", "20"]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let mut app: Value = serde_json::from_str(&w.read("cassandra.json")).unwrap();
    app["labels"]["DCOS_SERVICE_NAME"] = json!("x/../marathon/v2/apps/reports/restart?force=true&");
    app["env"]["NODES"] = json!("4");
    w.write("cassandra.json", &serde_json::to_string_pretty(&app).unwrap());
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("cassandra.json:"), "the file is named: {}", out.stderr);
    assert!(out.stderr.contains("DCOS_SERVICE_NAME"), "{}", out.stderr);
    assert!(sb.requests().iter().all(|r| r["method"] == "GET"), "nothing changed: {:?}", sb.requests());
}

#[test]
fn an_interrupt_survives_a_daemon_killed_and_restarted_and_continue_then_reaches_the_service() {
    use common::git::*;
    use std::time::Duration;
    const WAIT: Duration = Duration::from_secs(60);
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "300"]);
    let service = std::fs::read_to_string(repo_root().join("examples/manifests/dcos/cassandra.json")).unwrap();
    let (repo, sha, state, d) = daemon_on(&sb, &[("cassandra.json", service)]);
    until(WAIT, "the service's first step to run", || {
        service_steps(&sb, "cassandra").first().is_some_and(|s| s != "PENDING")
    });
    assert_eq!(d.post("/v1/plans/deploy/interrupt", Some("Bearer t0k3n"), None).0, 200);
    until(WAIT, "the service's plan to be interrupted", || {
        sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"] == "WAITING"
    });
    d.signal(libc::SIGKILL);
    let puts = sb.seqs("PUT", "/service/marathon/v2/apps/cassandra").len()
        + sb.seqs("POST", "/service/marathon/v2/apps").len();

    // Restarted: still interrupted (nothing of the service's plan runs)...
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--token-env", "CAPSTAN_TOKEN"],
        &[("CAPSTAN_TOKEN", "t0k3n")],
    );
    let held = service_steps(&sb, "cassandra");
    assert!(held.iter().any(|s| s == "PENDING"), "{held:?}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"], "WAITING");
    // ...and continue reaches the service's plan, which runs to COMPLETE with no second deployment.
    let (code, body) = d.post("/v1/plans/deploy/continue", Some("Bearer t0k3n"), None);
    assert!(code == 200 || code == 208, "{code} {body}");
    d.wait_for("the commit applied", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    assert_eq!(sb.send("GET", "/service/cassandra/v1/plans/deploy", None).1["status"], "COMPLETE");
    let after = sb.seqs("PUT", "/service/marathon/v2/apps/cassandra").len()
        + sb.seqs("POST", "/service/marathon/v2/apps").len();
    assert_eq!(after, puts, "no second Marathon deployment");
}

/// A plain HTTP front for the sandbox whose `GET <service>/v1/plans/deploy` answers 417 with
/// `body` (not a plan), everything else passed on: a scheduler failing in its own words.
fn front_with_417(backend: &str, body: &'static str) -> String {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let backend = backend.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let backend = backend.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = std::io::BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let mut parts = line.split_whitespace();
                let (method, target) =
                    (parts.next().unwrap_or("GET").to_string(), parts.next().unwrap_or("/").to_string());
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let len =
                    headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap_or(0));
                let mut req_body = vec![0; len];
                reader.read_exact(&mut req_body)?;
                let out = reader.get_mut();
                if method == "GET" && target.ends_with("/v1/plans/deploy") {
                    write!(
                        out,
                        "HTTP/1.1 417 Expectation Failed\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )?;
                    return out.flush();
                }
                let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
                let mut req = client
                    .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{backend}{target}"));
                for (k, v) in
                    headers.iter().filter(|(k, _)| !["host", "connection", "content-length"].contains(&k.as_str()))
                {
                    req = req.header(k, v);
                }
                let mut resp = req.body(req_body).send().map_err(std::io::Error::other)?;
                write!(out, "HTTP/1.1 {}\r\n", resp.status())?;
                for (k, v) in
                    resp.headers().iter().filter(|(k, _)| !["transfer-encoding", "connection"].contains(&k.as_str()))
                {
                    write!(out, "{k}: {}\r\n", v.to_str().unwrap_or_default())?;
                }
                write!(out, "connection: close\r\n\r\n")?;
                std::io::copy(&mut resp, out)?;
                out.flush()
            });
        }
    });
    url
}

#[test]
fn a_417_that_is_not_a_plan_fails_the_step_with_the_services_words() {
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "20"]);
    let front = front_with_417(&sb.url, "scheduler: \u{1b}[31mstate store corrupt");
    let w = Workdir::new();
    w.write("capstan.yaml", "platform: dcos\nowner: data\ntimeouts: {app: 5}\n");
    w.write(
        "cassandra.json",
        &std::fs::read_to_string(repo_root().join("examples/manifests/dcos/cassandra.json")).unwrap(),
    );
    w.target_platform("dcos", &front);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("state store corrupt"), "the service's words, not a timeout:\n{all}");
    assert!(all.contains("417") && !all.contains("not COMPLETE after"), "{all}");
    assert!(!all.contains('\u{1b}'), "{all:?}");
}
