//! The DC/OS sandbox (`capstan sandbox serve --platform dcos`), spoken to over HTTP through its
//! admin router: Marathon at `/service/marathon`, the schedulers it runs at `/service/<name>`.

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

fn dcos(extra: &[&str]) -> SandboxProc {
    SandboxProc::start_platform("dcos", extra)
}

/// A research vector (copied verbatim from `shared/research/vectors/`).
fn vector(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures/dcos").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Any request: status and body text.
fn raw(sb: &SandboxProc, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> (u16, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client().request(m, format!("{}{path}", sb.url));
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.header("Authorization", format!("token={t}"));
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn call(sb: &SandboxProc, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (code, text) = raw(sb, method, path, body, None);
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const LONG: Duration = Duration::from_secs(60);

fn sdk_app(name: &str, env: Value) -> Value {
    json!({
        "id": format!("/{name}"), "cmd": "./scheduler", "instances": 1, "cpus": 1, "mem": 1024,
        "labels": {"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": name, "DCOS_PACKAGE_NAME": name},
        "env": env,
    })
}

fn deploy_app(sb: &SandboxProc, app: &Value) {
    let (code, body) = call(sb, "POST", "/service/marathon/v2/apps", Some(app));
    assert_eq!(code, 201, "{body}");
}

/// `GET /v1/plans/<plan>` of a service once its scheduler serves.
fn plan(sb: &SandboxProc, service: &str, name: &str) -> (u16, Value) {
    let path = format!("/service/{service}/v1/plans/{name}");
    let mut out = (0, Value::Null);
    until(LONG, &format!("the scheduler of {service}"), || {
        out = call(sb, "GET", &path, None);
        out.0 != 503 && out.0 != 404
    });
    out
}

fn steps(plan: &Value) -> Vec<(String, String)> {
    plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["steps"].as_array().unwrap())
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
        .collect()
}

fn active(status: &str) -> bool {
    matches!(status, "PREPARED" | "STARTING" | "IN_PROGRESS")
}

fn wait_complete(sb: &SandboxProc, service: &str, name: &str) -> Value {
    let mut last = Value::Null;
    until(LONG, &format!("{service}'s {name} plan COMPLETE"), || {
        let (code, body) = plan(sb, service, name);
        assert!(code == 200 || code == 202, "{code}: {body}");
        assert_eq!(code == 200, body["status"] == "COMPLETE", "{code}: {body}");
        last = body;
        code == 200
    });
    last
}

fn target_id(sb: &SandboxProc, service: &str) -> String {
    let (code, body) = call(sb, "GET", &format!("/service/{service}/v1/configurations/targetId"), None);
    assert_eq!(code, 200, "{body}");
    body[0].as_str().unwrap().to_string()
}

fn task_id(sb: &SandboxProc, service: &str, pod: &str) -> String {
    let (code, body) = call(sb, "GET", &format!("/service/{service}/v1/pod/{pod}/info"), None);
    assert_eq!(code, 200, "{body}");
    body[0]["info"]["taskId"]["value"].as_str().unwrap().to_string()
}

#[test]
fn an_sdk_app_deployed_through_marathon_runs_its_deploy_plan_step_by_step() {
    let sb = dcos(&["--step-ms", "150"]);
    assert_eq!(call(&sb, "GET", "/service/hello/v1/plans", None).0, 404, "no scheduler before its app");
    deploy_app(&sb, &sdk_app("hello", json!({"NODES": "3"})));
    let mut seen_202 = false;
    let mut seen_active = Vec::new();
    let done = wait_complete_watching(&sb, "hello", |code, body| {
        seen_202 |= code == 202;
        let st = steps(body);
        let running: Vec<_> = st.iter().filter(|(_, s)| active(s)).collect();
        assert!(running.len() <= 1, "serial: one step at a time: {st:?}");
        if let Some((name, _)) = running.first() {
            let idx = st.iter().position(|(n, _)| n == name).unwrap();
            assert!(st[..idx].iter().all(|(_, s)| s == "COMPLETE"), "earlier steps done: {st:?}");
            assert!(st[idx + 1..].iter().all(|(_, s)| s == "PENDING"), "later steps wait: {st:?}");
            if !seen_active.contains(name) {
                seen_active.push(name.clone());
            }
        }
    });
    assert!(seen_202, "202 while the plan ran");
    assert!(!seen_active.is_empty(), "steps were seen running");
    assert_eq!(
        steps(&done).iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["node-0:[server]", "node-1:[server]", "node-2:[server]"]
    );
    assert_eq!(done["phases"][0]["name"], "node");
    assert_eq!(done["errors"], json!([]));
    assert_eq!(call(&sb, "GET", "/service/hello/v1/plans", None).1, vector("dcos-plans-list.synth.json"));
    assert_eq!(call(&sb, "GET", "/service/hello/v1/pod", None).1, vector("dcos-pod-list.synth.json"));
    let (code, suppressed) = call(&sb, "GET", "/service/hello/v1/state/properties/suppressed", None);
    assert_eq!((code, suppressed), (200, json!(true)));
    let target = target_id(&sb, "hello");
    assert_eq!(call(&sb, "GET", "/service/hello/v1/configurations", None).1, json!([target]));
    let (code, config) = call(&sb, "GET", &format!("/service/hello/v1/configurations/{target}"), None);
    assert_eq!(code, 200);
    assert_eq!(config, call(&sb, "GET", "/service/hello/v1/configurations/target", None).1);
    assert_eq!(config["pod-specs"][0]["count"], 3);
    // Removing the app removes the scheduler.
    assert_eq!(call(&sb, "DELETE", "/service/marathon/v2/apps/hello", None).0, 200);
    until(LONG, "the scheduler gone", || call(&sb, "GET", "/service/hello/v1/plans", None).0 == 404);
}

fn wait_complete_watching(sb: &SandboxProc, service: &str, mut watch: impl FnMut(u16, &Value)) -> Value {
    let mut last = Value::Null;
    until(LONG, "the deploy plan COMPLETE", || {
        let (code, body) = plan(sb, service, "deploy");
        assert!(code == 200 || code == 202, "{code}: {body}");
        watch(code, &body);
        last = body;
        code == 200
    });
    last
}

#[test]
fn a_config_change_reruns_every_node_and_growing_runs_only_the_new_ones() {
    let sb = dcos(&["--step-ms", "20"]);
    deploy_app(&sb, &sdk_app("hello", json!({"NODES": "3"})));
    wait_complete(&sb, "hello", "deploy");
    let first = target_id(&sb, "hello");
    let before: Vec<String> = (0..3).map(|i| task_id(&sb, "hello", &format!("node-{i}"))).collect();
    let (code, body) = call(
        &sb,
        "PUT",
        "/service/marathon/v2/apps/hello",
        Some(&sdk_app("hello", json!({"NODES": "3", "NODE_HEAP": "2g"}))),
    );
    assert_eq!(code, 200, "{body}");
    until(LONG, "a new target configuration", || target_id(&sb, "hello") != first);
    let second = target_id(&sb, "hello");
    wait_complete(&sb, "hello", "deploy");
    let after: Vec<String> = (0..3).map(|i| task_id(&sb, "hello", &format!("node-{i}"))).collect();
    for i in 0..3 {
        assert_ne!(before[i], after[i], "node-{i} re-ran with the new configuration");
    }
    let (_, config) = call(&sb, "GET", "/service/hello/v1/configurations/target", None);
    assert_eq!(config["pod-specs"][0]["task-specs"][0]["command-spec"]["environment"]["NODE_HEAP"], "2g");
    // 3 → 5: only node-3 and node-4 run.
    let (code, body) = call(
        &sb,
        "PUT",
        "/service/marathon/v2/apps/hello",
        Some(&sdk_app("hello", json!({"NODES": "5", "NODE_HEAP": "2g"}))),
    );
    assert_eq!(code, 200, "{body}");
    until(LONG, "a third target configuration", || target_id(&sb, "hello") != second);
    let done = wait_complete(&sb, "hello", "deploy");
    assert_eq!(steps(&done).len(), 5);
    for (i, id) in after.iter().enumerate() {
        assert_eq!(&task_id(&sb, "hello", &format!("node-{i}")), id, "node-{i} did not re-run");
    }
    assert_eq!(
        call(&sb, "GET", "/service/hello/v1/pod", None).1,
        json!(["node-0", "node-1", "node-2", "node-3", "node-4"])
    );
}

#[test]
fn interrupt_lets_the_current_step_finish_and_continue_resumes_with_208_when_nothing_to_do() {
    let sb = dcos(&["--step-ms", "300"]);
    deploy_app(&sb, &sdk_app("hello", json!({"NODES": "4"})));
    until(LONG, "a step running", || steps(&plan(&sb, "hello", "deploy").1).iter().any(|(_, s)| active(s)));
    let (code, body) = call(&sb, "POST", "/service/hello/v1/plans/deploy/interrupt", None);
    assert_eq!((code, body), (200, vector("dcos-plan-command-result.synth.json")));
    let (code, text) = raw(&sb, "POST", "/service/hello/v1/plans/deploy/interrupt", None, None);
    assert_eq!((code, text.as_str()), (208, "Command has already been reported or completed"));
    let running: Vec<String> =
        steps(&plan(&sb, "hello", "deploy").1).into_iter().filter(|(_, s)| active(s)).map(|(n, _)| n).collect();
    // The step under way finishes; then nothing else starts.
    let mut settled = Vec::new();
    until(LONG, "the current step finished", || {
        settled = steps(&plan(&sb, "hello", "deploy").1);
        !settled.iter().any(|(_, s)| active(s))
    });
    for name in &running {
        assert!(settled.iter().any(|(n, s)| n == name && s == "COMPLETE"), "{name} finished: {settled:?}");
    }
    assert!(settled.iter().any(|(_, s)| s == "PENDING"), "{settled:?}");
    std::thread::sleep(Duration::from_millis(1000));
    let (code, held) = plan(&sb, "hello", "deploy");
    assert_eq!(code, 202);
    assert_eq!(held["status"], "WAITING");
    assert_eq!(steps(&held), settled, "no step started while interrupted");
    let (code, body) = call(&sb, "POST", "/service/hello/v1/plans/deploy/continue", None);
    assert_eq!((code, body), (200, json!({"message": "Received cmd: continue"})));
    wait_complete(&sb, "hello", "deploy");
    for cmd in ["interrupt", "continue"] {
        let (code, text) = raw(&sb, "POST", &format!("/service/hello/v1/plans/deploy/{cmd}"), None, None);
        assert_eq!(
            (code, text.as_str()),
            (208, "Command has already been reported or completed"),
            "{cmd} when complete"
        );
    }
}

#[test]
fn a_failing_named_step_makes_the_plan_417_with_its_message() {
    let sb = dcos(&["--step-ms", "20"]);
    let faults = json!({"step_ms": 20, "fail_step": {"service": "hello", "step": "node-1:[server]", "message": "disk full on agent 3"}});
    assert_eq!(call(&sb, "PUT", "/_sandbox/faults", Some(&faults)).0, 200);
    deploy_app(&sb, &sdk_app("hello", json!({"NODES": "3"})));
    let mut body = Value::Null;
    until(LONG, "417", || {
        let (code, b) = plan(&sb, "hello", "deploy");
        body = b;
        code == 417
    });
    assert_eq!(body["status"], "ERROR");
    assert_eq!(body["errors"], json!(["disk full on agent 3"]));
    let st = steps(&body);
    assert_eq!(st[0].1, "COMPLETE");
    assert_eq!(st[1].1, "ERROR");
    assert_eq!(st[2].1, "PENDING");
}

#[test]
fn pod_replace_runs_a_recovery_plan_and_endpoints_show_the_pods() {
    let sb = dcos(&["--step-ms", "20"]);
    deploy_app(&sb, &sdk_app("cassandra", json!({"NODES": "3", "NODE_PORT": "9042"})));
    wait_complete(&sb, "cassandra", "deploy");
    assert_eq!(call(&sb, "GET", "/service/cassandra/v1/endpoints", None).1, json!(["node"]));
    let (code, endpoint) = call(&sb, "GET", "/service/cassandra/v1/endpoints/node", None);
    assert_eq!(code, 200);
    let expected = vector("dcos-endpoint.synth.json");
    assert_eq!(endpoint["dns"], expected["dns"]);
    assert_eq!(endpoint["vip"], expected["vip"]);
    assert_eq!(endpoint["address"].as_array().unwrap().len(), 3);
    assert_eq!(call(&sb, "GET", "/service/cassandra/v1/endpoints/nope", None).0, 404);
    let before = task_id(&sb, "cassandra", "node-1");
    let (code, body) = call(&sb, "POST", "/service/cassandra/v1/pod/node-1/replace", None);
    assert_eq!((code, body), (200, json!({"pod": "node-1", "tasks": ["node-1-server"]})));
    let recovery = wait_complete(&sb, "cassandra", "recovery");
    assert_eq!(steps(&recovery), [("node-1:[server]".to_string(), "COMPLETE".to_string())]);
    assert_ne!(task_id(&sb, "cassandra", "node-1"), before, "replaced");
    let (_, endpoint2) = call(&sb, "GET", "/service/cassandra/v1/endpoints/node", None);
    assert_ne!(endpoint2["address"][1], endpoint["address"][1], "replaced onto another agent");
    assert_eq!(call(&sb, "POST", "/service/cassandra/v1/pod/node-9/replace", None).0, 404);
}

fn legacy_app(env: Value) -> Value {
    json!({
        "id": "/cassandra", "cmd": "./scheduler", "instances": 1,
        "labels": {"DCOS_PACKAGE_FRAMEWORK_NAME": "cassandra", "DCOS_PACKAGE_NAME": "cassandra"},
        "env": env,
    })
}

#[test]
fn legacy_cassandra_plan_interrupt_proceed_and_a_backup_that_finishes() {
    let sb = dcos(&["--step-ms", "200"]);
    deploy_app(&sb, &legacy_app(json!({"NODES": "3"})));
    let legacy = |sb: &SandboxProc| {
        let mut out = (0, Value::Null);
        until(LONG, "the legacy plan", || {
            out = call(sb, "GET", "/service/cassandra/v1/plan", None);
            out.1.get("phases").is_some()
        });
        out
    };
    let (code, body) = call(&sb, "POST", "/service/cassandra/v1/plan?cmd=interrupt", None);
    let (code, body) = if code == 503 {
        until(LONG, "the scheduler", || call(&sb, "GET", "/service/cassandra/v1/plan", None).1.get("phases").is_some());
        call(&sb, "POST", "/service/cassandra/v1/plan?cmd=interrupt", None)
    } else {
        (code, body)
    };
    assert_eq!(code, 200, "{body}");
    until(LONG, "WAITING", || legacy(&sb).1["status"] == "WAITING");
    let (code, _) = call(&sb, "PUT", "/service/cassandra/v1/plan?cmd=proceed", None);
    assert_eq!(code, 200);
    until(LONG, "the plan COMPLETE", || legacy(&sb).0 == 200);
    let (_, done) = legacy(&sb);
    assert_eq!(done["status"], "COMPLETE");
    assert_eq!(done["phases"][1]["blocks"].as_array().unwrap().len(), 3);
    let (code, conn) = call(&sb, "GET", "/service/cassandra/v1/connection", None);
    assert_eq!(code, 200);
    assert_eq!(
        conn["nodes"].as_array().unwrap().len(),
        vector("dcos-cassandra-connection-response.json")["nodes"].as_array().unwrap().len()
    );
    assert_eq!(call(&sb, "GET", "/cassandra/v1/connection", None).1, conn, "seed 001's path without /service");
    let request = vector("dcos-cassandra-backup-request.json");
    let (code, started) = call(&sb, "PUT", "/service/cassandra/v1/backup/start", Some(&request));
    assert_eq!((code, started), (200, vector("dcos-cassandra-backup-start-response.normalized.json")));
    let mut seen = Vec::new();
    until(LONG, "the backup done", || {
        let (code, status) = call(&sb, "GET", "/service/cassandra/v1/backup/status", None);
        assert_eq!(code, 200);
        let s = status["status"].as_str().unwrap().to_string();
        if !seen.contains(&s) {
            seen.push(s.clone());
        }
        s == "COMPLETE"
    });
    assert!(seen.len() > 1, "the status progressed: {seen:?}");
    // Seed 001's restore names a backup this cluster never made: refused; the one just made
    // restores.
    let (code, _) =
        call(&sb, "PUT", "/service/cassandra/v1/restore/start", Some(&vector("dcos-cassandra-restore-request.json")));
    assert_eq!(code, 400);
    let mut restore = vector("dcos-cassandra-restore-request.json");
    restore["backup_name"] = request["backup_name"].clone();
    restore["external_location"] = request["external_location"].clone();
    let (code, restored) = call(&sb, "PUT", "/service/cassandra/v1/restore/start", Some(&restore));
    assert_eq!((code, restored), (200, json!({"status": "started", "message": ""})));
}

#[test]
fn the_token_guards_schedulers_and_marathon_behind_the_admin_router() {
    let sb = dcos(&["--token", "s3cret", "--step-ms", "10"]);
    let app = sdk_app("hello", json!({"NODES": "1"}));
    assert_eq!(raw(&sb, "POST", "/service/marathon/v2/apps", Some(&app), None).0, 401);
    assert_eq!(raw(&sb, "POST", "/service/marathon/v2/apps", Some(&app), Some("wrong")).0, 401);
    // The admin router reads `token=` only (seeds 000/001): the right token as a bearer is refused.
    let bearer = client()
        .post(format!("{}/service/marathon/v2/apps", sb.url))
        .header("Authorization", "Bearer s3cret")
        .json(&app)
        .send()
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 401);
    assert_eq!(raw(&sb, "POST", "/service/marathon/v2/apps", Some(&app), Some("s3cret")).0, 201);
    until(LONG, "the scheduler with the token", || {
        raw(&sb, "GET", "/service/hello/v1/plans/deploy", None, Some("s3cret")).0 == 200
    });
    assert_eq!(raw(&sb, "GET", "/service/hello/v1/plans/deploy", None, None).0, 401);
    assert_eq!(raw(&sb, "GET", "/service/marathon/v2/apps", None, None).0, 401);
}

#[test]
fn a_plan_in_progress_resumes_after_a_restart_from_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("dcos.json");
    let state_arg = state.to_str().unwrap();
    let sb = dcos(&["--step-ms", "400", "--state", state_arg]);
    deploy_app(&sb, &sdk_app("hello", json!({"NODES": "4"})));
    until(LONG, "node-0 done and the plan still running", || {
        let (code, body) = plan(&sb, "hello", "deploy");
        code == 202 && steps(&body)[0].1 == "COMPLETE"
    });
    let target = target_id(&sb, "hello");
    let node0 = task_id(&sb, "hello", "node-0");
    sb.stop();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"marathon\"") && text.contains("\"dcos\""), "{text}");
    let sb = dcos(&["--step-ms", "20", "--state", state_arg]);
    let done = wait_complete(&sb, "hello", "deploy");
    assert_eq!(steps(&done).len(), 4);
    assert_eq!(target_id(&sb, "hello"), target, "same configuration");
    assert_eq!(task_id(&sb, "hello", "node-0"), node0, "node-0 not run again");
}
