//! The Marathon sandbox, spoken to directly over HTTP, checked against seed 004's examples and
//! the research vectors.

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::BufRead;
use std::time::{Duration, Instant};

fn marathon(extra: &[&str]) -> SandboxProc {
    SandboxProc::start_platform("marathon", extra)
}

/// A research vector (copied verbatim from `shared/research/vectors/`).
fn vector(name: &str) -> Value {
    let path = repo_root().join("tests/fixtures/marathon").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Poll `f` until it is true; fails after `limit`.
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A version's time, in Unix milliseconds.
fn unix_ms_of(version: &str) -> u64 {
    let t = time::OffsetDateTime::parse(version, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

fn sleep_until_ms(at: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(at.saturating_sub(now)));
}

fn deployments(sb: &SandboxProc) -> Vec<Value> {
    sb.get("/v2/deployments").as_array().cloned().unwrap()
}

fn app(sb: &SandboxProc, id: &str) -> Value {
    sb.get(&format!("/v2/apps{id}"))["app"].clone()
}

/// Replace the absolute ids of the dry run's actions by their last segment, as the seed
/// writes them.
fn relative_actions(mut plan: Value) -> Value {
    for step in plan["steps"].as_array_mut().unwrap() {
        for action in step["actions"].as_array_mut().unwrap() {
            let app = action["app"].as_str().unwrap();
            assert!(app.starts_with("/product/service/us-east/"), "absolute ids: {app}");
            action["app"] = json!(app.rsplit('/').next().unwrap());
        }
    }
    plan
}

#[test]
fn a_dry_run_answers_the_seeds_plan_and_changes_nothing() {
    let sb = marathon(&[]);
    let (code, plan) =
        sb.send("PUT", "/v2/groups/product?dryRun=true", Some(&vector("marathon-group-dryrun-request.json")));
    assert_eq!(code, 200, "{plan}");
    assert_eq!(relative_actions(plan), vector("marathon-group-dryrun-response.json"));
    assert_eq!(sb.get("/v2/apps"), json!({"apps": []}));
    assert_eq!(sb.get("/v2/groups")["groups"], json!([]));
    assert_eq!(deployments(&sb), Vec::<Value>::new());
    // The same body for real: the deployment has the dry run's steps (under `action`).
    let (code, body) = sb.send("PUT", "/v2/groups/product", Some(&vector("marathon-group-dryrun-request.json")));
    assert_eq!(code, 200, "{body}");
    let service = sb.get("/v2/groups/product/service");
    assert_eq!(service["dependencies"], json!(["/product/database", "/product/backend"]), "../backend resolved");
    assert_eq!(service["groups"][0]["apps"][1]["id"], "/product/service/us-east/app2");
}

#[test]
fn deployments_take_the_dry_runs_steps_and_the_rollout_time() {
    let sb = marathon(&["--rollout-ms", "1000"]);
    let body = vector("marathon-group-dryrun-request.json");
    let (_, dry) = sb.send("PUT", "/v2/groups/product?dryRun=true", Some(&body));
    let started = Instant::now();
    let (code, answer) = sb.send("PUT", "/v2/groups/product", Some(&body));
    assert_eq!(code, 200);
    let list = deployments(&sb);
    assert_eq!(list.len(), 1, "{list:?}");
    let d = &list[0];
    assert_eq!(d["id"], answer["deploymentId"]);
    assert_eq!(d["version"], answer["version"]);
    let as_type: Vec<Value> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let actions: Vec<Value> = s["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| json!({"app": a["app"], "type": a["action"]}))
                .collect();
            json!({ "actions": actions })
        })
        .collect();
    assert_eq!(Value::Array(as_type), dry["steps"], "one planner for both");
    assert_eq!(d["totalSteps"], 3);
    assert_eq!(d["currentStep"], 2, "the start step is immediate, the first scale takes the rollout");
    assert_eq!(d["currentActions"][0]["action"], "ScaleApplication");
    assert_eq!(d["affectedApps"], json!(["/product/service/us-east/app1", "/product/service/us-east/app2"]));
    assert_eq!(d["affectedPods"], json!([]));
    let a1 = app(&sb, "/product/service/us-east/app1");
    assert_eq!((a1["tasksStaged"].as_u64(), a1["tasksRunning"].as_u64()), (Some(1), Some(0)));
    assert_eq!(a1["tasks"][0]["startedAt"], Value::Null);
    assert_eq!(a1["deployments"], json!([{ "id": answer["deploymentId"] }]));
    until(Duration::from_secs(5), "the deployment to finish", || deployments(&sb).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(2000), "two scale steps of 1 s: {:?}", started.elapsed());
    let a1 = app(&sb, "/product/service/us-east/app1");
    assert_eq!((a1["tasksStaged"].as_u64(), a1["tasksRunning"].as_u64()), (Some(0), Some(1)));
    assert!(a1["tasks"][0]["startedAt"].is_string());
    assert_eq!(a1["deployments"], json!([]));
    // A deployment is gone within a few ms of its end. Its version is when it began, on the
    // sandbox's clock (this machine's), so the check does not depend on how busy we are.
    sb.send("PUT", "/_sandbox/faults", Some(&json!({"rollout_ms": 200})));
    let (_, scaled) = sb.send("PUT", "/v2/apps/product/service/us-east/app1", Some(&json!({"instances": 2})));
    sleep_until_ms(unix_ms_of(scaled["version"].as_str().unwrap()) + 200 + 10);
    assert_eq!(deployments(&sb), Vec::<Value>::new(), "gone 10 ms after its one 200 ms step");
    assert_eq!(app(&sb, "/product/service/us-east/app1")["tasksRunning"], 2);
}

#[test]
fn a_created_app_has_the_server_filled_defaults() {
    let sb = marathon(&[]);
    let resp =
        client().post(format!("{}/v2/apps", sb.url)).json(&json!({"id": "my-app", "cmd": "sleep 60"})).send().unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{}/v2/apps/my-app", sb.url));
    let deployment = resp.headers()["marathon-deployment-id"].to_str().unwrap().to_string();
    let created: Value = resp.json().unwrap();
    assert_eq!(created["deployments"], json!([{ "id": deployment }]));
    let a = app(&sb, "/my-app");
    let expected = json!({
        "id": "/my-app", "cmd": "sleep 60", "args": null, "user": null, "env": {}, "instances": 1,
        "cpus": 1.0, "mem": 128.0, "disk": 0.0, "executor": "", "constraints": [], "uris": [], "fetch": [],
        "storeUrls": [], "ports": [10000],
        "portDefinitions": [{"port": 10000, "protocol": "tcp", "labels": {}}],
        "requirePorts": false, "backoffSeconds": 1, "backoffFactor": 1.15, "maxLaunchDelaySeconds": 3600,
        "container": null, "healthChecks": [], "dependencies": [],
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0}, "labels": {},
        "tasksStaged": 0, "tasksRunning": 1, "tasksHealthy": 0, "tasksUnhealthy": 0, "deployments": []
    });
    for (k, v) in expected.as_object().unwrap() {
        assert_eq!(&a[k], v, "{k} in {a}");
    }
    let version = a["version"].as_str().unwrap();
    assert!(version.len() == 24 && version.ends_with('Z') && version.as_bytes()[19] == b'.', "{version}");
    assert_eq!(a["versionInfo"], json!({"lastScalingAt": version, "lastConfigChangeAt": version}));
    let task = &a["tasks"][0];
    assert!(task["id"].as_str().unwrap().starts_with("my-app."), "{task}");
    assert_eq!((task["host"].as_str(), task["appId"].as_str()), (Some("127.0.0.1"), Some("/my-app")));
    assert_eq!(task["servicePorts"], json!([10000]));
    assert_eq!(task["version"], a["version"]);
    // A second app gets the next service port; the list carries counts and deployments.
    sb.send("POST", "/v2/apps", Some(&json!({"id": "/other", "cmd": "x", "instances": 0})));
    let list = sb.get("/v2/apps");
    let other = list["apps"].as_array().unwrap().iter().find(|a| a["id"] == "/other").unwrap().clone();
    assert_eq!(other["ports"], json!([10001]));
    assert_eq!((other["tasksRunning"].as_u64(), other["deployments"].as_array().map(Vec::len)), (Some(0), Some(0)));
    assert!(other.get("tasks").is_none(), "tasks only with embed");
    let list = sb.get("/v2/apps?embed=apps.tasks&embed=app.taskStats");
    assert!(list["apps"][0]["tasks"].is_array() && list["apps"][0]["taskStats"].is_object());
    // Duplicate: the upstream 409 shape.
    let (code, body) = sb.send("POST", "/v2/apps", Some(&json!({"id": "my-app", "cmd": "sleep 60"})));
    assert_eq!(code, 409);
    assert_eq!(body, json!({"id": "my-app", "message": "An app with id [/my-app] already exists."}));
}

#[test]
fn the_upstream_create_example_gets_the_upstream_defaults() {
    let sb = marathon(&[]);
    let (code, created) = sb.send("POST", "/v2/apps", Some(&vector("marathon-app-create-request.upstream.json")));
    assert_eq!(code, 201, "{created}");
    let expected = vector("marathon-app-create-response.upstream.json");
    for k in [
        "args",
        "backoffFactor",
        "backoffSeconds",
        "maxLaunchDelaySeconds",
        "cmd",
        "constraints",
        "container",
        "cpus",
        "dependencies",
        "disk",
        "env",
        "executor",
        "healthChecks",
        "id",
        "instances",
        "mem",
        "requirePorts",
        "upgradeStrategy",
        "uris",
        "user",
    ] {
        assert_eq!(created[k], expected[k], "{k}");
    }
    // Port 0 is given a service port (the upstream example shows it before assignment).
    assert_eq!(created["portDefinitions"][0]["port"], 10000);
}

#[test]
fn put_is_a_partial_update_that_takes_numeric_strings() {
    let sb = marathon(&[]);
    sb.send(
        "POST",
        "/v2/apps",
        Some(&json!({"id": "my-app", "cmd": "sleep 60", "env": {"A": "1"}, "labels": {"l": "v"}})),
    );
    let before = app(&sb, "/my-app");
    let (code, body) = sb.send("PUT", "/v2/apps/my-app", Some(&vector("marathon-app-put-request.json")));
    assert_eq!(code, 200);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["deploymentId", "version"], "the seed's answer");
    let a = app(&sb, "/my-app");
    assert_eq!((a["cpus"].clone(), a["instances"].clone(), a["mem"].clone()), (json!(0.3), json!(2), json!(9.0)));
    assert_eq!(a["cmd"], "sleep 55");
    assert_eq!(a["ports"], json!([9000]));
    assert_eq!(a["portDefinitions"], json!([{"port": 9000, "protocol": "tcp", "labels": {}}]));
    assert_eq!(a["constraints"], json!([["hostname", "UNIQUE", ""]]));
    assert_eq!(a["env"], json!({"A": "1"}), "absent fields keep their values");
    assert_eq!(a["version"], body["version"]);
    assert!(a["version"].as_str() > before["version"].as_str());
    assert_eq!(a["versionInfo"]["lastConfigChangeAt"], body["version"]);
    assert_eq!(a["tasksRunning"], 2);
    // The seed's other PUT: just a scale.
    let (_, body) = sb.send("PUT", "/v2/apps/my-app", Some(&json!({"instances": "3"})));
    let a = app(&sb, "/my-app");
    assert_eq!(a["instances"], 3);
    assert_eq!(a["versionInfo"]["lastScalingAt"], body["version"]);
    assert_ne!(a["versionInfo"]["lastConfigChangeAt"], body["version"], "a scale is no config change");
    // A GET sent back as is changes nothing but the version (read-only fields are ignored).
    let same = app(&sb, "/my-app");
    let tasks: Vec<Value> = same["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(sb.send("PUT", "/v2/apps/my-app", Some(&same)).0, 200);
    let after = app(&sb, "/my-app");
    let tasks_after: Vec<Value> = after["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(tasks, tasks_after, "no restart");
    // partialUpdate=false replaces the definition.
    sb.send("PUT", "/v2/apps/my-app?partialUpdate=false", Some(&json!({"cmd": "sleep 1"})));
    let a = app(&sb, "/my-app");
    assert_eq!((a["env"].clone(), a["instances"].clone(), a["cpus"].clone()), (json!({}), json!(1), json!(1.0)));
    // PUT of an unknown app creates it.
    let resp = client().put(format!("{}/v2/apps/new/one/", sb.url)).json(&json!({"cmd": "x"})).send().unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{}/v2/apps/new/one", sb.url));
    assert_eq!(app(&sb, "/new/one")["cmd"], "x");
    assert_eq!(sb.get("/v2/groups/new")["apps"][0]["id"], "/new/one", "its group was made");
    // PUT /v2/apps: several in one deployment.
    let (code, body) =
        sb.send("PUT", "/v2/apps", Some(&json!([{"id": "/new/one", "instances": 2}, {"id": "/new/two", "cmd": "y"}])));
    assert_eq!(code, 200);
    assert!(body["deploymentId"].is_string());
    assert_eq!(
        (app(&sb, "/new/one")["instances"].clone(), app(&sb, "/new/two")["cmd"].clone()),
        (json!(2), json!("y"))
    );
}

#[test]
fn versions_are_listed_newest_first_and_a_version_can_be_rolled_back_to() {
    let sb = marathon(&[]);
    let (_, _) = sb.send("POST", "/v2/apps", Some(&json!({"id": "my-app", "cmd": "sleep 60", "instances": 4})));
    let v1 = app(&sb, "/my-app")["version"].clone();
    let (_, put) = sb.send("PUT", "/v2/apps/my-app", Some(&json!({"cmd": "sleep 55"})));
    let (_, put2) = sb.send("PUT", "/v2/apps/my-app", Some(&json!({"cmd": "sleep 50"})));
    let versions = sb.get("/v2/apps/my-app/versions");
    assert_eq!(versions, json!({"versions": [put2["version"], put["version"], v1]}));
    let shown = sb.get(&format!("/v2/apps/my-app/versions/{}", v1.as_str().unwrap()));
    assert_eq!(
        (shown["cmd"].clone(), shown["instances"].clone(), shown["version"].clone()),
        (json!("sleep 60"), json!(4), v1.clone())
    );
    assert!(shown.get("app").is_none(), "a bare app, as the seed shows");
    // Rollback: the seed's body with a known version; the rest of the body is ignored.
    let (code, back) =
        sb.send("PUT", "/v2/apps/my-app", Some(&json!({"version": v1, "cmd": "ignored", "instances": 9})));
    assert_eq!(code, 200);
    let a = app(&sb, "/my-app");
    assert_eq!((a["cmd"].clone(), a["instances"].clone()), (json!("sleep 60"), json!(4)));
    assert_eq!(a["version"], back["version"], "a rollback is a new version");
    assert_eq!(sb.get("/v2/apps/my-app/versions")["versions"].as_array().unwrap().len(), 4);
    let (code, body) = sb.send("PUT", "/v2/apps/my-app", Some(&vector("marathon-app-rollback-request.json")));
    assert_eq!(code, 404, "an unknown version: {body}");
    assert!(body["message"].is_string());
    assert_eq!(sb.send("GET", "/v2/apps/my-app/versions/2014-03-01T23:17:50.295Z", None).0, 404);
    // Versions are strictly increasing even for writes in quick succession.
    let mut last = String::new();
    for i in 0..20 {
        let (_, b) = sb.send("PUT", "/v2/apps/my-app", Some(&json!({ "instances": i % 3 })));
        let v = b["version"].as_str().unwrap().to_string();
        assert!(v > last, "{v} after {last}");
        last = v;
    }
}

#[test]
fn a_running_deployment_locks_its_apps_until_it_ends_or_is_forced() {
    let sb = marathon(&["--rollout-ms", "1500"]);
    let (_, created) = sb.send("POST", "/v2/apps", Some(&json!({"id": "locked/test", "cmd": "sleep 1"})));
    let running = created["deployments"][0]["id"].clone();
    assert_eq!(deployments(&sb)[0]["id"], running);
    // The seed's locked update (L254-280).
    let (code, body) = sb.send("PUT", "/v2/apps/locked/test", Some(&json!({"instances": "2"})));
    assert_eq!(code, 409);
    let seed = vector("marathon-app-locked-409.json");
    assert_eq!(body["message"], seed["message"]);
    assert_eq!(body["deployments"], json!([{ "id": running }]));
    let (_, task) = sb.send("GET", "/v2/apps/locked/test/tasks", None);
    let task = task["tasks"][0]["id"].as_str().unwrap().to_string();
    for (method, path) in [
        ("DELETE", "/v2/apps/locked/test".to_string()),
        ("POST", "/v2/apps/locked/test/restart".to_string()),
        ("DELETE", "/v2/groups/locked".to_string()),
        ("PUT", "/v2/groups/locked?scaleBy=2".to_string()),
        ("DELETE", format!("/v2/apps/locked/test/tasks/{task}?scale=true")),
    ] {
        let (code, body) = sb.send(method, &path, None);
        assert_eq!(code, 409, "{method} {path}: {body}");
        assert_eq!(body["deployments"], json!([{ "id": running }]));
    }
    assert_eq!(
        sb.send("PUT", "/v2/apps/locked/test?force=False", Some(&json!({"instances": 2}))).0,
        409,
        "False is false"
    );
    assert_eq!(app(&sb, "/locked/test")["instances"], 1, "a refused write changes nothing");
    assert_eq!(app(&sb, "/locked/test")["tasks"][0]["id"], task.as_str());
    // Once it is done, the same update goes through.
    until(Duration::from_secs(5), "the first deployment to end", || deployments(&sb).is_empty());
    let (code, second) = sb.send("PUT", "/v2/apps/locked/test", Some(&json!({"instances": "2"})));
    assert_eq!(code, 200);
    // force=true at once: the running deployment is cancelled, the new one starts.
    let t = Instant::now();
    let (code, third) = sb.send("PUT", "/v2/apps/locked/test?force=true", Some(&json!({"instances": 3})));
    assert_eq!(code, 200);
    assert!(t.elapsed() < Duration::from_millis(1000), "no waiting for the 1.5 s step: {:?}", t.elapsed());
    let list = deployments(&sb);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], third["deploymentId"]);
    assert_ne!(list[0]["id"], second["deploymentId"]);
    until(Duration::from_secs(5), "the forced deployment to end", || deployments(&sb).is_empty());
    let a = app(&sb, "/locked/test");
    assert_eq!((a["instances"].clone(), a["tasksRunning"].clone()), (json!(3), json!(3)));
    // An app elsewhere is not locked.
    sb.send("PUT", "/v2/apps/locked/test", Some(&json!({"cmd": "sleep 2"})));
    assert_eq!(sb.send("POST", "/v2/apps", Some(&json!({"id": "free", "cmd": "x", "instances": 0}))).0, 201);
}

#[test]
fn the_rollout_time_can_change_while_a_step_runs() {
    let sb = marathon(&["--rollout-ms", "60000"]);
    sb.send("POST", "/v2/apps", Some(&json!({"id": "slow", "cmd": "x"})));
    assert_eq!(deployments(&sb).len(), 1);
    let t = Instant::now();
    let (code, _) = sb.send("PUT", "/_sandbox/faults", Some(&json!({"rollout_ms": 50})));
    assert_eq!(code, 200);
    until(Duration::from_secs(5), "the step to notice the new rollout", || deployments(&sb).is_empty());
    assert!(t.elapsed() < Duration::from_secs(5), "not the 60 s it started with");
}

#[test]
fn a_group_put_without_apps_or_groups_keeps_them_and_changes_only_what_it_names() {
    let sb = marathon(&[]);
    let (code, _) = sb.send(
        "POST",
        "/v2/groups",
        Some(&json!({"id": "shop", "apps": [{"id": "web", "cmd": "web"}], "groups": [{"id": "jobs", "apps": [{"id": "cron", "cmd": "cron"}]}]})),
    );
    assert_eq!(code, 201);
    let version = app(&sb, "/shop/web")["version"].clone();
    let (code, _) = sb.send("PUT", "/v2/groups/shop", Some(&json!({"id": "/shop", "dependencies": ["/db"]})));
    assert_eq!(code, 200);
    let group = sb.get("/v2/groups/shop");
    assert_eq!(group["dependencies"], json!(["/db"]));
    assert_eq!(group["apps"].as_array().unwrap().len(), 1, "{group}");
    assert_eq!(group["groups"][0]["apps"][0]["id"], "/shop/jobs/cron");
    assert_eq!(app(&sb, "/shop/web")["version"], version, "an app the body does not name is not touched");
    // Naming `groups` (and not `apps`) replaces the subgroups and keeps the apps.
    let (code, _) = sb.send("PUT", "/v2/groups/shop", Some(&json!({"groups": []})));
    assert_eq!(code, 200);
    let group = sb.get("/v2/groups/shop");
    assert_eq!(group["groups"], json!([]));
    assert_eq!(group["apps"][0]["id"], "/shop/web");
    assert_eq!(group["dependencies"], json!(["/db"]), "absent dependencies are kept too");
}

#[test]
fn a_group_put_removes_absent_children_and_leaves_unchanged_apps_alone() {
    let sb = marathon(&[]);
    let (code, created) = sb.send(
        "POST",
        "/v2/groups",
        Some(&json!({
            "id": "shop",
            "apps": [{"id": "web", "cmd": "web", "instances": 2}, {"id": "api", "cmd": "api"}],
            "groups": [{"id": "jobs", "apps": [{"id": "cron", "cmd": "cron"}]}]
        })),
    );
    assert_eq!(code, 201, "{created}");
    assert!(created["version"].is_string() && created["deploymentId"].is_string());
    let web = app(&sb, "/shop/web");
    let web_tasks: Vec<Value> = web["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    let api_tasks = app(&sb, "/shop/api")["tasks"][0]["id"].clone();
    // web as it is (from the GET, ports included), api changed, jobs gone, db new.
    let body = json!({
        "apps": [web.clone(), {"id": "api", "cmd": "api --v2"}, {"id": "/shop/db", "cmd": "db"}],
        "groups": []
    });
    let (_, dry) = sb.send("PUT", "/v2/groups/shop?dryRun=true", Some(&body));
    let kinds: Vec<Vec<(String, String)>> = dry["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["type"].as_str().unwrap().into(), a["app"].as_str().unwrap().into()))
                .collect()
        })
        .collect();
    let step = |k: &str, a: &str| vec![(k.to_string(), a.to_string())];
    assert_eq!(
        kinds,
        vec![
            step("StopApplication", "/shop/jobs/cron"),
            step("StartApplication", "/shop/db"),
            step("RestartApplication", "/shop/api"),
            step("KillAllOldTasksOf", "/shop/api"),
            step("ScaleApplication", "/shop/db"),
        ]
    );
    let (code, _) = sb.send("PUT", "/v2/groups/shop", Some(&body));
    assert_eq!(code, 200);
    let group = sb.get("/v2/groups/shop");
    let ids: Vec<&str> = group["apps"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["/shop/api", "/shop/db", "/shop/web"]);
    assert_eq!(group["groups"], json!([]), "the absent subgroup is gone");
    assert_eq!(sb.send("GET", "/v2/apps/shop/jobs/cron", None).0, 404);
    let web_after = app(&sb, "/shop/web");
    assert_eq!(web_after["version"], web["version"], "unchanged: same version");
    let after: Vec<Value> = web_after["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(after, web_tasks, "unchanged: not restarted");
    let api_after = app(&sb, "/shop/api");
    assert_eq!(api_after["cmd"], "api --v2");
    assert_ne!(api_after["tasks"][0]["id"], api_tasks, "changed: restarted");
    assert_eq!(api_after["tasks"].as_array().unwrap().len(), 1, "the old task was killed");
    assert!(group["version"].as_str() > web["version"].as_str(), "the group's version moved");
    // Group scale: 1.5 × 2 = 3, 1.5 × 1 = 2 (rounded up); the query form too.
    sb.send("PUT", "/v2/groups/shop", Some(&vector("marathon-group-scale-request.json")));
    assert_eq!(
        (app(&sb, "/shop/web")["instances"].clone(), app(&sb, "/shop/db")["instances"].clone()),
        (json!(3), json!(2))
    );
    sb.send("PUT", "/v2/groups/shop?scaleBy=2", None);
    assert_eq!(app(&sb, "/shop/web")["instances"], 6);
    // Rollback by version, both ways marathon-python and the seed send it.
    let first = created["version"].as_str().unwrap();
    let (code, _) = sb.send("PUT", "/v2/groups/shop", Some(&json!({ "version": first })));
    assert_eq!(code, 200);
    assert_eq!(app(&sb, "/shop/jobs/cron")["cmd"], "cron", "the removed subgroup is back");
    assert_eq!(app(&sb, "/shop/api")["cmd"], "api");
    assert_eq!(sb.send("GET", "/v2/apps/shop/db", None).0, 404);
    let (code, _) = sb.send("PUT", &format!("/v2/groups/shop/versions/{}", group["version"].as_str().unwrap()), None);
    assert_eq!(code, 200);
    assert_eq!(app(&sb, "/shop/api")["cmd"], "api --v2");
    assert_eq!(sb.send("PUT", "/v2/groups/shop", Some(&vector("marathon-group-rollback-request.json"))).0, 404);
    // Delete: the group and its apps.
    let (code, body) = sb.send("DELETE", "/v2/groups/shop", None);
    assert_eq!(code, 200);
    assert!(body["version"].is_string());
    assert_eq!(sb.get("/v2/apps"), json!({"apps": []}));
    assert_eq!(sb.send("DELETE", "/v2/groups/shop", None).0, 404);
}

#[test]
fn the_seeds_group_examples_work() {
    let sb = marathon(&[]);
    let resp = client()
        .post(format!("{}/v2/groups", sb.url))
        .json(&vector("marathon-group-post-request.json"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{}/v2/groups/product", sb.url));
    let (code, body) = sb.send("POST", "/v2/groups", Some(&vector("marathon-group-post-request.json")));
    assert_eq!(code, 409);
    assert!(body["message"].as_str().unwrap().contains("/product"));
    let (code, _) = sb.send("PUT", "/v2/groups/test/project", Some(&vector("marathon-group-put-request.json")));
    assert_eq!(code, 200);
    let a = app(&sb, "/test/project/app");
    assert_eq!(
        (a["instances"].clone(), a["cpus"].clone(), a["executor"].clone()),
        (json!(6), json!(0.2), json!("//cmd"))
    );
    assert_eq!(a["ports"], json!([19970]));
    let hc = &a["healthChecks"][0];
    assert_eq!(
        (hc["path"].clone(), hc["intervalSeconds"].clone(), hc["timeoutSeconds"].clone()),
        (json!("/health"), json!(5), json!(15))
    );
    assert_eq!(hc["command"], Value::Null);
    assert_eq!(a["tasksHealthy"], 6, "tasks of an app with health checks are healthy once running");
    // The root group has the seed's shape.
    let root = sb.get("/v2/groups");
    let keys: Vec<&String> = root.as_object().unwrap().keys().collect();
    let seed = vector("marathon-groups-root.json");
    let seed_keys: Vec<&String> = seed.as_object().unwrap().keys().collect();
    assert_eq!(keys, seed_keys);
    assert_eq!(root["id"], "/");
    let only_groups = sb.get("/v2/groups?embed=group.groups");
    assert!(only_groups.get("apps").is_none() && only_groups["groups"].is_array());
    let counts = sb.get("/v2/groups/test/project?embed=group.apps&embed=group.apps.counts");
    assert_eq!(counts["apps"][0]["tasksRunning"], 6);
    // The seed's DELETE of a path that is an app, not a group.
    assert_eq!(sb.send("DELETE", "/v2/groups/test/project/app", None).0, 404);
}

#[test]
fn deleting_a_deployment_rolls_it_back_and_with_force_just_stops_it() {
    let sb = marathon(&[]);
    sb.send("POST", "/v2/apps", Some(&json!({"id": "app", "cmd": "v1", "instances": 2})));
    sb.send("PUT", "/_sandbox/faults", Some(&json!({"rollout_ms": 1500})));
    let (_, changed) = sb.send("PUT", "/v2/apps/app", Some(&json!({"cmd": "v2"})));
    let id = changed["deploymentId"].as_str().unwrap();
    let (code, body) = sb.send("DELETE", &format!("/v2/deployments/{id}"), None);
    assert_eq!(code, 200);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    let upstream = vector("marathon-deployment-cancel-response.upstream.json");
    assert_eq!(keys, upstream.as_object().unwrap().keys().collect::<Vec<_>>());
    let list = deployments(&sb);
    assert!(list.iter().all(|d| d["id"] != id), "the cancelled one is gone");
    assert_eq!(app(&sb, "/app")["cmd"], "v1", "rolled back");
    until(Duration::from_secs(5), "the rollback", || deployments(&sb).is_empty());
    // force=true: 202, no body, no rollback.
    let (_, changed) = sb.send("PUT", "/v2/apps/app", Some(&json!({"cmd": "v3"})));
    let id = changed["deploymentId"].as_str().unwrap();
    let resp = client().delete(format!("{}/v2/deployments/{id}?force=true", sb.url)).send().unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.text().unwrap(), "");
    assert_eq!(deployments(&sb), Vec::<Value>::new());
    let a = app(&sb, "/app");
    assert_eq!(a["cmd"], "v3");
    assert_eq!(a["tasks"].as_array().unwrap().len(), 2, "its tasks are brought to the definition");
    assert!(a["tasks"].as_array().unwrap().iter().all(|t| t["version"] == a["version"]));
    assert_eq!(sb.send("DELETE", "/v2/deployments/nope", None).0, 404);
}

/// The event types of a stream, until `stop` has been seen or `limit` passes.
fn read_events(resp: reqwest::blocking::Response, stop: &str, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            let done = v["eventType"] == stop;
            out.push(v);
            if done {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no {stop} in {out:?}");
    }
    out
}

#[test]
fn the_event_stream_tells_one_deployment_in_order() {
    let sb = marathon(&["--rollout-ms", "100"]);
    let stream = client().get(format!("{}/v2/events", sb.url)).header("Accept", "text/event-stream").send().unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream;charset=UTF-8");
    let url = sb.url.clone();
    let reader = std::thread::spawn(move || read_events(stream, "group_change_success", Duration::from_secs(5)));
    // The stream is attached once its first event has been sent; give it a moment.
    std::thread::sleep(Duration::from_millis(100));
    let (_, created) = {
        let r = client().post(format!("{url}/v2/apps")).json(&json!({"id": "/g/ev", "cmd": "x"})).send().unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    let events = reader.join().unwrap();
    let kinds: Vec<&str> =
        events.iter().map(|e| e["eventType"].as_str().unwrap()).filter(|k| *k != "status_update_event").collect();
    assert_eq!(
        kinds,
        [
            "event_stream_attached",
            "api_post_event",
            "deployment_info",
            "deployment_step_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_success",
            "group_change_success"
        ]
    );
    let deployment = created["deployments"][0]["id"].clone();
    assert_eq!(events[1]["appDefinition"]["id"], "/g/ev");
    assert_eq!(events[2]["plan"]["id"], deployment);
    assert_eq!(events[2]["currentStep"]["actions"][0]["action"], "StartApplication");
    let success = events.iter().find(|e| e["eventType"] == "deployment_success").unwrap();
    assert_eq!(success["id"], deployment);
    let change = events.last().unwrap();
    assert_eq!((change["groupId"].as_str(), &change["version"]), (Some("/g"), &created["version"]));
    for e in &events {
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    // The step that launches the task ends at least the rollout time after it began.
    let t = |e: &Value| {
        time::OffsetDateTime::parse(e["timestamp"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let scale_info = events.iter().filter(|e| e["eventType"] == "deployment_info").nth(1).unwrap();
    assert!(t(success) - t(scale_info) >= time::Duration::milliseconds(100));
    // event_type filters.
    let filtered = client().get(format!("{}/v2/events?event_type=app_terminated_event", sb.url)).send().unwrap();
    let reader = std::thread::spawn(move || read_events(filtered, "app_terminated_event", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(100));
    sb.send("DELETE", "/v2/apps/g/ev", None);
    let events = reader.join().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["appId"], "/g/ev");
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marathon.json");
    let state = file.to_str().unwrap();
    let sb = marathon(&["--state", state]);
    sb.send(
        "POST",
        "/v2/groups",
        Some(&json!({"id": "kept", "dependencies": ["../other"], "apps": [{"id": "a", "cmd": "v1", "instances": 2}]})),
    );
    sb.send("PUT", "/v2/apps/kept/a", Some(&json!({"cmd": "v2"})));
    sb.send("POST", "/v2/eventSubscriptions?callbackUrl=http://localhost:9292/callback", None);
    let before = app(&sb, "/kept/a");
    let versions = sb.get("/v2/apps/kept/a/versions");
    let group = sb.get("/v2/groups/kept");
    // A deployment still running when the sandbox stops goes on after the restart (stopping
    // takes up to 2 s: idle keep-alive connections get a grace period).
    sb.send("PUT", "/_sandbox/faults", Some(&json!({"rollout_ms": 3000})));
    let (_, slow) = sb.send("POST", "/v2/apps", Some(&json!({"id": "slow", "cmd": "x"})));
    sb.stop();
    let sb = marathon(&["--state", state, "--rollout-ms", "3000"]);
    let after = app(&sb, "/kept/a");
    for k in ["cmd", "version", "versionInfo", "ports", "tasks", "instances"] {
        assert_eq!(after[k], before[k], "{k}");
    }
    assert_eq!(sb.get("/v2/apps/kept/a/versions"), versions);
    assert_eq!(sb.get("/v2/groups/kept"), group);
    assert_eq!(sb.get("/v2/eventSubscriptions"), vector("marathon-event-subscriptions-list.json"));
    let list = deployments(&sb);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], slow["deployments"][0]["id"]);
    until(Duration::from_secs(5), "the deployment from before the restart", || deployments(&sb).is_empty());
    assert_eq!(app(&sb, "/slow")["tasksRunning"], 1);
    // New ports do not collide with the ones in the state file.
    sb.send("POST", "/v2/apps", Some(&json!({"id": "fresh", "cmd": "x", "instances": 0})));
    let ports: Vec<Value> =
        sb.get("/v2/apps")["apps"].as_array().unwrap().iter().map(|a| a["ports"][0].clone()).collect();
    let unique: std::collections::HashSet<String> = ports.iter().map(|p| p.to_string()).collect();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
}

#[test]
fn every_route_is_also_served_under_service_marathon() {
    let sb = marathon(&[]);
    let resp = client()
        .post(format!("{}/service/marathon/v2/apps", sb.url))
        .json(&json!({"id": "dcos", "cmd": "x"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("{}/service/marathon/v2/apps/dcos", sb.url));
    assert_eq!(
        sb.get("/service/marathon/v2/apps/dcos/?embed=app.counts")["app"]["id"],
        "/dcos",
        "dcos-deploy's trailing slash"
    );
    assert_eq!(sb.get("/service/marathon/v2/groups")["apps"][0]["id"], "/dcos");
    assert_eq!(sb.get("/service/marathon/v2/deployments"), json!([]));
    assert_eq!(sb.get("/service/marathon/v2/leader")["leader"], sb.url.trim_start_matches("http://"));
    let pong = client().get(format!("{}/service/marathon/ping", sb.url)).send().unwrap().text().unwrap();
    assert_eq!(pong, "pong\n");
    let log = sb.requests();
    assert!(
        log.iter().any(|r| r["path"] == "/service/marathon/v2/apps" && r["status"] == 201),
        "the request log sees them"
    );
}

#[test]
fn errors_are_json_with_a_message() {
    let sb = marathon(&[]);
    let c = client();
    let check = |resp: reqwest::blocking::Response, code: u16| -> Value {
        assert_eq!(resp.status().as_u16(), code);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let body: Value = resp.json().unwrap();
        assert!(body["message"].is_string(), "{body}");
        body
    };
    let b = check(c.get(format!("{}/v2/apps/x", sb.url)).send().unwrap(), 404);
    assert_eq!(b["message"], "App '/x' does not exist");
    let b = check(c.get(format!("{}/v2/groups/x", sb.url)).send().unwrap(), 404);
    assert_eq!(b["message"], "Group '/x' does not exist");
    // Malformed JSON, sent as text: the body is parsed as JSON whatever the Content-Type.
    let b = check(
        c.post(format!("{}/v2/apps", sb.url)).header("Content-Type", "text/plain").body("{nope").send().unwrap(),
        400,
    );
    assert!(b["details"].is_array());
    let ok = c.post(format!("{}/v2/apps", sb.url)).body(r#"{"id": "plain", "cmd": "x"}"#).send().unwrap();
    assert_eq!(ok.status(), 201, "no Content-Type at all");
    let b =
        check(c.post(format!("{}/v2/apps", sb.url)).json(&json!({"id": "Bad_Id", "cmd": "x"})).send().unwrap(), 422);
    assert_eq!(b["message"], "Object is not valid");
    assert_eq!(b["details"][0]["path"], "/id");
    assert!(b["details"][0]["errors"][0].as_str().unwrap().contains("regular expression"));
    let b = check(
        c.post(format!("{}/v2/apps", sb.url)).json(&json!({"id": "x", "cmd": "x", "cpu": 1})).send().unwrap(),
        422,
    );
    assert_eq!(b["details"][0]["path"], "/cpu", "misspelt fields are refused");
    let b = check(c.post(format!("{}/v2/apps", sb.url)).json(&json!({"id": "x"})).send().unwrap(), 422);
    assert!(b["details"][0]["errors"][0].as_str().unwrap().contains("'cmd' or 'args'"));
    let b = check(
        c.post(format!("{}/v2/groups", sb.url))
            .json(&json!({"id": "g", "apps": [{"id": "a", "cmd": "x", "mem": "lots"}]}))
            .send()
            .unwrap(),
        422,
    );
    assert_eq!(b["details"][0]["path"], "/apps(0)/mem");
    check(c.put(format!("{}/v2/apps/plain?force=maybe", sb.url)).json(&json!({})).send().unwrap(), 400);
    check(c.patch(format!("{}/v2/apps", sb.url)).send().unwrap(), 405);
    check(c.get(format!("{}/v2/nothing", sb.url)).send().unwrap(), 404);
    check(c.post(format!("{}/v2/apps/plain/x", sb.url)).json(&json!({})).send().unwrap(), 405);
    // An app cannot live where a group is, nor below an app.
    check(c.post(format!("{}/v2/apps", sb.url)).json(&json!({"id": "plain/sub", "cmd": "x"})).send().unwrap(), 409);
    // The shared layer's answers are Marathon-shaped too.
    let sb = marathon(&["--token", "sekret", "--fail-rate", "0"]);
    let b = check(c.get(format!("{}/v2/apps", sb.url)).send().unwrap(), 401);
    assert!(b.get("retry").is_none(), "not Apcera's APIError: {b}");
    assert_eq!(
        c.get(format!("{}/v2/apps", sb.url)).header("Authorization", "token=sekret").send().unwrap().status(),
        200
    );
    let sb = marathon(&["--fail-rate", "1", "--seed", "3"]);
    let resp = c.get(format!("{}/v2/apps", sb.url)).send().unwrap();
    let code = resp.status().as_u16();
    assert!(matches!(code, 500 | 502 | 503 | 504));
    check(resp, code);
}

#[test]
fn tasks_can_be_listed_and_killed_with_and_without_scaling() {
    let sb = marathon(&[]);
    sb.send("POST", "/v2/apps", Some(&json!({"id": "/web/app", "cmd": "x", "instances": 3, "ports": [0, 0]})));
    let tasks = sb.get("/v2/apps/web/app/tasks")["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks.len(), 3);
    let keys: std::collections::BTreeSet<&str> = tasks[0].as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["host", "id", "ports", "stagedAt", "startedAt", "version"] {
        assert!(keys.contains(k), "the seed's task keys: {k}");
    }
    assert!(tasks[0]["id"].as_str().unwrap().starts_with("web_app."));
    assert_eq!(tasks[0]["ports"].as_array().unwrap().len(), 2);
    assert_eq!(sb.get("/v2/tasks?status=running")["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(sb.get("/v2/tasks?status=staging")["tasks"].as_array().unwrap().len(), 0);
    // Text forms: one line per service port, the running tasks' host:port.
    let text = client()
        .get(format!("{}/v2/apps/web/app/tasks", sb.url))
        .header("Accept", "text/plain")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!((fields[0], fields[1], fields.len()), ("web_app", "10000", 5), "{text}");
    assert!(fields[2].starts_with("127.0.0.1:"));
    let all =
        client().get(format!("{}/v2/tasks", sb.url)).header("Accept", "text/plain").send().unwrap().text().unwrap();
    assert_eq!(all, text);
    // Kill one without scale: a replacement starts.
    let id = tasks[0]["id"].as_str().unwrap();
    let (code, body) = sb.send("DELETE", &format!("/v2/apps/web/app/tasks/{id}"), None);
    assert_eq!(code, 200);
    assert_eq!(body["task"]["id"], id);
    let now: Vec<Value> = sb.get("/v2/apps/web/app/tasks")["tasks"].as_array().unwrap().clone();
    assert_eq!(now.len(), 3);
    assert!(now.iter().all(|t| t["id"] != id));
    // Kill one with scale: instances go down, the answer is a deployment.
    let id = now[0]["id"].as_str().unwrap();
    let (_, body) = sb.send("DELETE", &format!("/v2/apps/web/app/tasks/{id}?scale=true"), None);
    assert!(body["deploymentId"].is_string(), "{body}");
    let a = app(&sb, "/web/app");
    assert_eq!((a["instances"].clone(), a["tasks"].as_array().unwrap().len()), (json!(2), 2));
    assert_eq!(sb.send("DELETE", "/v2/apps/web/app/tasks/web_app.nope", None).0, 404);
    assert_eq!(
        sb.send("DELETE", "/v2/apps/web/app/tasks?scale=true&wipe=true", None).0,
        400,
        "wipe only without scale"
    );
    // POST /v2/tasks/delete: the seed's empty 200.
    let ids: Vec<Value> = a["tasks"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    let resp = client()
        .post(format!("{}/v2/tasks/delete?scale=true", sb.url))
        .json(&json!({"ids": [ids[0], "other.x"]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().unwrap(), "");
    assert_eq!(app(&sb, "/web/app")["instances"], 1);
    // DELETE /v2/apps/{id}/tasks: all of them, replaced; with a host that is not ours, none.
    let (_, body) = sb.send("DELETE", "/v2/apps/web/app/tasks?host=elsewhere&scale=false", None);
    assert_eq!(body, vector("marathon-app-tasks-kill-response.json"));
    let (_, body) = sb.send("DELETE", "/v2/apps/web/app/tasks", None);
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(app(&sb, "/web/app")["tasks"].as_array().unwrap().len(), 1);
}

#[test]
fn info_leader_ping_metrics_queue_and_subscriptions() {
    let sb = marathon(&["--rollout-ms", "2000"]);
    let info = sb.get("/v2/info");
    let seed = vector("marathon-info.json");
    for k in seed.as_object().unwrap().keys() {
        assert!(info.get(k).is_some(), "{k}");
    }
    for k in seed["marathon_config"].as_object().unwrap().keys() {
        assert!(info["marathon_config"].get(k).is_some(), "marathon_config.{k}");
    }
    let host_port = sb.url.trim_start_matches("http://");
    assert_eq!(info["leader"], host_port);
    assert_eq!(sb.get("/v2/leader"), json!({ "leader": host_port }));
    assert_eq!(sb.send("DELETE", "/v2/leader", None), (200, vector("marathon-leader-delete-response.json")));
    let ping = client().get(format!("{}/ping", sb.url)).send().unwrap();
    assert_eq!(ping.headers()["content-type"], "text/plain;charset=ISO-8859-1");
    assert_eq!(ping.text().unwrap(), "pong\n");
    let metrics = sb.get("/metrics");
    for k in ["counters", "gauges", "histograms", "meters", "timers", "version"] {
        assert!(metrics.get(k).is_some(), "{k}");
    }
    for page in ["/help", "/logging"] {
        let r = client().get(format!("{}{page}", sb.url)).send().unwrap();
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
    // The queue holds apps whose tasks are still staged.
    sb.send("POST", "/v2/apps", Some(&json!({"id": "foo", "cmd": "tail -f /dev/null", "instances": 2})));
    let queue = sb.get("/v2/queue");
    assert_eq!(queue["queue"][0]["count"], 2);
    assert_eq!(queue["queue"][0]["app"]["id"], "/foo");
    assert_eq!(queue["queue"][0]["delay"]["overdue"], true);
    let resp = client().delete(format!("{}/v2/queue/foo/delay", sb.url)).send().unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(sb.send("DELETE", "/v2/queue/none/delay", None).0, 404);
    // Subscriptions as the seed shows them.
    let (_, body) = sb.send("POST", "/v2/eventSubscriptions?callbackUrl=http://localhost:9292/callback", None);
    let mut expected = vector("marathon-event-subscription-post-response.json");
    expected["clientIp"] = json!("127.0.0.1");
    assert_eq!(body, expected);
    assert_eq!(sb.get("/v2/eventSubscriptions"), vector("marathon-event-subscriptions-list.json"));
    let (_, body) = sb.send("DELETE", "/v2/eventSubscriptions?callbackUrl=http://localhost:9292/callback", None);
    assert_eq!(body["eventType"], "unsubscribe_event");
    assert_eq!(sb.get("/v2/eventSubscriptions"), json!({"callbackUrls": []}));
}

#[test]
fn ids_resolve_relative_to_their_group_and_dependencies_order_the_steps() {
    let sb = marathon(&[]);
    let body = json!({
        "id": "product",
        "groups": [
            {"id": "frontend", "dependencies": ["../backend"], "apps": [{"id": "web", "cmd": "web"}]},
            {"id": "backend", "apps": [{"id": "api", "cmd": "api", "dependencies": ["./db"]}, {"id": "db", "cmd": "db"}]}
        ]
    });
    let (code, dry) = sb.send("PUT", "/v2/groups/product?dryRun=true", Some(&body));
    assert_eq!(code, 200, "{dry}");
    let scales: Vec<&str> =
        dry["steps"].as_array().unwrap()[1..].iter().map(|s| s["actions"][0]["app"].as_str().unwrap()).collect();
    assert_eq!(scales, ["/product/backend/db", "/product/backend/api", "/product/frontend/web"]);
    sb.send("POST", "/v2/groups", Some(&body));
    assert_eq!(sb.get("/v2/groups/product/frontend")["dependencies"], json!(["/product/backend"]));
    assert_eq!(app(&sb, "/product/backend/api")["dependencies"], json!(["/product/backend/db"]));
    // A cycle is refused.
    let cycle = json!({"apps": [{"id": "a", "cmd": "x", "dependencies": ["b"]}, {"id": "b", "cmd": "x", "dependencies": ["a"]}]});
    assert_eq!(sb.send("PUT", "/v2/groups/loop", Some(&cycle)).0, 422);
    // An app inside a group body must be a child of that group.
    let (code, b) = sb.send("PUT", "/v2/groups/x", Some(&json!({"apps": [{"id": "/elsewhere/a", "cmd": "x"}]})));
    assert_eq!((code, b["details"][0]["path"].as_str()), (422, Some("/apps(0)/id")));
}

#[test]
fn five_hundred_apps_in_fifty_groups_are_listed_quickly() {
    let sb = marathon(&[]);
    for g in 0..50 {
        let apps: Vec<Value> =
            (0..10).map(|a| json!({"id": format!("app{a}"), "cmd": "sleep 1", "cpus": 0.1, "mem": 32})).collect();
        let (code, _) = sb.send("POST", "/v2/groups", Some(&json!({"id": format!("/bench/g{g}"), "apps": apps})));
        assert_eq!(code, 201);
    }
    let c = client();
    let url = format!("{}/v2/groups?embed=group.groups&embed=group.apps", sb.url);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let body = c.get(&url).send().unwrap().bytes().unwrap();
        best = best.min(t.elapsed());
        assert!(body.len() > 100_000);
    }
    let root: Value = c.get(&url).send().unwrap().json().unwrap();
    let groups = root["groups"][0]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 50);
    assert!(groups.iter().all(|g| g["apps"].as_array().unwrap().len() == 10));
    // Debug build on a shared machine: generous, but far from O(n²).
    assert!(best < Duration::from_millis(250), "GET /v2/groups took {best:?}");
    let t = Instant::now();
    assert_eq!(sb.get("/v2/apps")["apps"].as_array().unwrap().len(), 500);
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[test]
fn the_state_file_is_written_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.json");
    let sb = marathon(&["--state", file.to_str().unwrap()]);
    sb.send("POST", "/v2/apps", Some(&json!({"id": "w", "cmd": "x"})));
    until(Duration::from_secs(3), "the state file", || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"/w\""))
    });
}

#[test]
fn an_unknown_platform_is_refused_naming_both() {
    let out = run_in(&repo_root(), &["sandbox", "serve", "--platform", "nope"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("apcera or marathon"), "{}", out.stderr);
    // The list comes from the registry: every emulator is named, in registry order.
    let names: Vec<&str> = capstan::sandbox::EMULATORS.iter().map(|e| e.name).collect();
    assert!(out.stderr.contains(&names.join(" or ")), "{}", out.stderr);
}

#[test]
fn a_group_delete_answers_its_version_alone_and_stops_take_the_rollout() {
    let sb = marathon(&["--rollout-ms", "300"]);
    let apps = json!([{"id": "a", "cmd": "x"}, {"id": "b", "cmd": "x"}]);
    let (code, _) = sb.send("PUT", "/v2/groups/gone", Some(&json!({ "apps": apps })));
    assert_eq!(code, 200);
    until(Duration::from_secs(5), "the group to run", || deployments(&sb).is_empty());
    let stream = client().get(format!("{}/v2/events?event_type=group_change_success", sb.url)).send().unwrap();
    let reader = std::thread::spawn(move || read_events(stream, "group_change_success", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(100));
    let (code, answer) = sb.send("DELETE", "/v2/groups/gone", None);
    assert_eq!(code, 200);
    let version = answer["version"].as_str().unwrap().to_string();
    assert_eq!(answer, json!({ "version": version }), "the seed's answer (L1106-1110)");
    // The apps are gone from the tree at once; their tasks are stopped over the rollout, by a
    // deployment of that version.
    assert_eq!(sb.get("/v2/apps"), json!({"apps": []}));
    let running = deployments(&sb);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(
        (running[0]["version"].as_str(), running[0]["steps"][0]["actions"][0]["action"].as_str()),
        (Some(version.as_str()), Some("StopApplication"))
    );
    let tasks = sb.get("/v2/tasks")["tasks"].as_array().cloned().unwrap();
    assert!(tasks.is_empty(), "tasks of apps no longer there are not listed: {tasks:?}");
    let events = reader.join().unwrap();
    let change = events.last().unwrap();
    assert_eq!((change["groupId"].as_str(), change["version"].as_str()), (Some("/gone"), Some(version.as_str())));
    assert!(unix_ms_of(change["timestamp"].as_str().unwrap()) >= unix_ms_of(&version) + 300, "{change}");
    assert_eq!(deployments(&sb), Vec::<Value>::new());
    // An app's delete takes the rollout too.
    sb.send("PUT", "/v2/apps/one", Some(&json!({"cmd": "x"})));
    until(Duration::from_secs(5), "the app to run", || deployments(&sb).is_empty());
    let (_, deleted) = sb.send("DELETE", "/v2/apps/one", None);
    assert_eq!(deployments(&sb)[0]["id"], deleted["deploymentId"]);
    until(Duration::from_secs(5), "the stop to end", || deployments(&sb).is_empty());
}

#[test]
fn ping_answers_json_to_a_client_that_asks_for_json() {
    let sb = marathon(&[]);
    let json = client().get(format!("{}/ping", sb.url)).header("Accept", "application/json").send().unwrap();
    assert_eq!(json.status(), 200);
    assert_eq!(json.headers()["content-type"], "application/json");
    assert_eq!(json.json::<Value>().unwrap(), json!("pong"));
    let any = client().get(format!("{}/ping", sb.url)).header("Accept", "*/*").send().unwrap();
    assert_eq!(any.headers()["content-type"], "text/plain;charset=ISO-8859-1");
    assert_eq!(any.text().unwrap(), "pong\n");
}

#[test]
fn with_grouped_steps_independent_apps_share_a_step() {
    let body = json!({
        "apps": [
            {"id": "db", "cmd": "db"},
            {"id": "api", "cmd": "api", "dependencies": ["db"]},
            {"id": "worker", "cmd": "worker", "dependencies": ["db"]},
            {"id": "cache", "cmd": "cache"}
        ]
    });
    let steps = |sb: &SandboxProc| -> Vec<Vec<String>> {
        let (_, dry) = sb.send("PUT", "/v2/groups/shop?dryRun=true", Some(&body));
        dry["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut step: Vec<String> = s["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| format!("{} {}", a["type"].as_str().unwrap(), a["app"].as_str().unwrap()))
                    .collect();
                step.sort();
                step
            })
            .collect()
    };
    let seed = steps(&marathon(&[]));
    assert_eq!(seed.len(), 5, "one app per step: {seed:?}");
    let sb = marathon(&["--grouped-steps", "--rollout-ms", "200"]);
    let grouped = steps(&sb);
    assert_eq!(
        grouped,
        vec![
            vec![
                "StartApplication /shop/api",
                "StartApplication /shop/cache",
                "StartApplication /shop/db",
                "StartApplication /shop/worker"
            ],
            vec!["ScaleApplication /shop/cache", "ScaleApplication /shop/db"],
            vec!["ScaleApplication /shop/api", "ScaleApplication /shop/worker"],
        ]
    );
    // Two scale steps: two rollouts, not four.
    let started = Instant::now();
    sb.send("PUT", "/v2/groups/shop", Some(&body));
    until(Duration::from_secs(5), "the deployment", || deployments(&sb).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
}
