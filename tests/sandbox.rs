//! The Apcera sandbox, spoken to directly over HTTP, checked against seed 003's own examples.

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn vector() -> Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/seed/expansion-vector.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn expansion_reproduces_the_seeds_worked_example_byte_for_byte() {
    let sb = SandboxProc::start(&[]);
    let v = vector();
    let raw = reqwest::blocking::Client::new()
        .post(format!("{}/v1/manifests/expansion", sb.url))
        .json(&v["request"])
        .send()
        .unwrap()
        .text()
        .unwrap();
    let answer: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(answer, v["response"]);
    // Key order too: the seed's expanded_json keeps the request's order.
    assert_eq!(answer["expanded_json"].as_str().unwrap(), v["response"]["expanded_json"].as_str().unwrap());
    let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["location", "expanded_manifest", "expanded_json", "warnings"]);
}

#[test]
fn expansion_follows_the_seeds_prose_for_the_other_cases() {
    let sb = SandboxProc::start(&[]);
    let expand = |body: Value| sb.send("POST", "/v1/manifests/expansion", Some(&body));
    let (code, a) =
        expand(json!({"jobs": {"job::/sandbox/admin::${APP_NAME}": {}}, "variables": {"APP_NAME": "my-app"}}));
    assert_eq!(code, 200);
    assert!(a["expanded_manifest"]["jobs"].get("job::/sandbox/admin::my-app").is_some(), "{a}");
    assert_eq!(a["warnings"], "");
    let (_, a) = expand(json!({
        "jobs": {"job::${MY_NAMESPACE}::${APP_NAME}": {}},
        "default_namespace": "/sandbox/admin",
        "variables": {"APP_NAME": "my-app"}
    }));
    assert!(a["expanded_manifest"]["jobs"].get("job::/sandbox/admin::my-app").is_some(), "{a}");
    assert_eq!(a["warnings"], "no value found for variable MY_NAMESPACE");
    let (_, a) = expand(json!({"jobs": {"job::::local-name": {}}, "default_namespace": "/dev"}));
    assert!(a["expanded_manifest"]["jobs"].get("job::/dev::local-name").is_some(), "{a}");
    // Unknown variables are warnings and become empty; several warnings are one per line.
    let (_, a) = expand(json!({"jobs": {"job::/d::x": {"state": "${A}", "tags": {"b": "${B}", "a": "${A}"}}}}));
    assert_eq!(a["warnings"], "no value found for variable A\nno value found for variable B");
    assert_eq!(a["expanded_manifest"]["jobs"]["job::/d::x"]["state"], "");
    // A malformed reference is an APIError with the details the seed lists.
    let (code, a) = expand(json!({"jobs": {"job::/d::${oops": {}}}));
    assert_eq!(code, 400);
    for k in ["errors", "expanded_json", "warnings"] {
        assert!(a["error_details"].get(k).is_some(), "{a}");
    }
}

/// Drop what the server makes up (uuid, times) to compare with the seed's example.
fn strip(mut job: Value) -> Value {
    for k in ["uuid", "created_at", "updated_at", "created_by", "updated_by"] {
        job.as_object_mut().unwrap().remove(k);
    }
    job
}

#[test]
fn a_created_job_has_the_fields_and_defaults_of_the_seeds_example() {
    let sb = SandboxProc::start(&[]);
    // Seed L1088-1144, with the name the seed's answer uses (its request says staticsite2: G1).
    let request = json!({
      "fqn": "job::/test::staticsite",
      "labels": { "team": "documentation", "costcenter": "12345" },
      "name": "staticsite",
      "ports": [{ "number": 0, "optional": false,
                  "routes": [{ "endpoint": "staticsite.vagrant.apcera.net", "type": "http", "weight": 0 }] }],
      "packages": [{ "uuid": "f93d73e2-9047-46b2-82b5-255f12013d2f" }],
      "processes": { "app": { "start_command": "", "start_command_raw": null, "start_command_timeout": 30,
                              "stop_command": "", "stop_command_raw": null, "stop_timeout": 5 } },
      "resources": { "cpu": 0, "disk": 1073741824, "memory": 268435456, "netmax": 0, "network": 5000000 },
      "restart": { "maximum_attempts": 0, "restart_mode": "always" },
      "rollout": { "errored_state_window": 0, "flapping_minimum_restarts": 0, "flapping_percent": 0,
                   "flapping_window": 0, "force_stop_old_instances_after": 0 },
      "tags": { "app": "staticsite" }
    });
    let client = reqwest::blocking::Client::new();
    let resp = client.post(format!("{}/v1/jobs", sb.url)).json(&request).send().unwrap();
    assert_eq!(resp.status(), 200);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let job: Value = resp.json().unwrap();
    assert_eq!(location, format!("{}/v1/jobs/{}", sb.url, job["uuid"].as_str().unwrap()));
    assert_eq!(job["created_at"], job["updated_at"]);
    assert_eq!(job["updated_by"], "");
    // Seed L1150-1244, without the server-made fields and the system packages it resolved.
    let mut expected = json!({
        "fqn": "job::/test::staticsite",
        "hard_scheduling_tags": {},
        "logs": [
            { "channel": "job.$JOB_UUID.stdout", "file": "/logs/stdout.*.log" },
            { "channel": "job.$JOB_UUID.stderr", "file": "/logs/stderr.*.log" }
        ],
        "labels": { "team": "documentation", "costcenter": "12345" },
        "name": "staticsite",
        "num_instances": 1,
        "packages": [
            { "source": "user", "state": "unknown", "uuid": "f93d73e2-9047-46b2-82b5-255f12013d2f" },
            { "source": "system", "state": "ready", "uuid": "f93d73e2-9047-46b2-82b5-255f12013d2f" }
        ],
        "ports": [{ "number": 0, "optional": false,
                    "routes": [{ "endpoint": "staticsite.vagrant.apcera.net", "type": "http", "weight": 0 }] }],
        "processes": { "app": { "start_command": "", "start_command_raw": [], "start_command_timeout": 30,
                                "stop_command": "", "stop_command_raw": [], "stop_timeout": 5 } },
        "resources": { "cpu": 0, "disk": 1073741824, "memory": 268435456, "netmax": 0, "network": 5000000 },
        "restart": { "maximum_attempts": 0, "restart_mode": "always" },
        "rollout": { "errored_state_window": 0, "flapping_minimum_restarts": 3, "flapping_percent": 0.5,
                     "flapping_window": 300, "force_stop_old_instances_after": 120 },
        "soft_scheduling_tags": {},
        "state": "ready",
        "tags": { "app": "staticsite" },
        "version_id": 1,
        "weight": 0,
        "network_ref": null
    });
    let got = strip(job);
    assert_eq!(sorted(&got), sorted(&expected.take()));
}

fn sorted(v: &Value) -> String {
    // serde_json with preserve_order compares objects in order; compare as sorted text instead.
    let mut v: Value = v.clone();
    fn sort(v: &mut Value) {
        match v {
            Value::Object(m) => {
                let mut items: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                for (k, mut x) in items {
                    sort(&mut x);
                    m.insert(k, x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(sort),
            _ => {}
        }
    }
    sort(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn a_full_object_put_checks_the_version_and_starting_runs_instances() {
    let sb = SandboxProc::start(&["--rollout-ms", "300"]);
    let (_, job) = sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::web", "num_instances": 2})));
    let uuid = job["uuid"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{uuid}");
    let mut started = job.clone();
    started["state"] = json!("started");
    started["version_id"] = json!(7);
    let (code, err) = sb.send("PUT", &path, Some(&started));
    assert_eq!(code, 409, "a stale version_id is refused");
    assert_eq!(err["code"], 409);
    started["version_id"] = json!(1);
    let (code, updated) = sb.send("PUT", &path, Some(&started));
    assert_eq!(code, 200);
    assert_eq!(updated["version_id"], 2);
    assert_eq!(updated["updated_by"], "admin@apcera.me");
    // Instances start, and run only once the rollout time has passed.
    let (_, health) = sb.send("GET", &format!("/v1/jobs/health?ids={uuid}"), None);
    assert_eq!(health[0]["instance_state_count"]["STARTING"], 2, "{health}");
    let start = Instant::now();
    loop {
        let (_, instances) = sb.send("GET", &format!("{path}/instances"), None);
        if instances.as_array().unwrap().iter().all(|i| i["state"] == "RUNNING") {
            assert_eq!(instances.as_array().unwrap().len(), 2);
            assert!(start.elapsed() >= Duration::from_millis(150), "instances ran before the rollout time");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, health) = sb.send("GET", &format!("/v1/jobs/health?ids={uuid}"), None);
    assert_eq!(health[0]["score"], 1.0);
}

#[test]
fn job_lists_filter_as_the_seed_says() {
    let sb = SandboxProc::start(&[]);
    for (fqn, labels) in [
        ("job::/dev::a", json!({"costcenter": "12345", "team": "docs"})),
        ("job::/dev/sub::b", json!({"costcenter": "67890", "team": "eng"})),
        ("job::/devops::c", json!({"costcenter": "12345"})),
    ] {
        let (code, _) = sb.send("POST", "/v1/jobs", Some(&json!({"fqn": fqn, "labels": labels, "tags": {"app": "x"}})));
        assert_eq!(code, 200);
    }
    let names = |q: &str| -> Vec<String> {
        sb.get(&format!("/v1/jobs?{q}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("FQN=job::/dev::a"), ["a"]);
    assert_eq!(names("fqn=job::/dev&matchPartialFQN=true"), ["a", "b"], "/dev matches /dev/sub, not /devops");
    assert_eq!(names("label=costcenter=12345&label=team"), ["a"]);
    assert_eq!(names("label=costcenter"), ["a", "b", "c"]);
    assert_eq!(names("tag=app&name=c"), ["c"]);
    assert_eq!(names("count=2&page=2"), ["c"]);
}

#[test]
fn networks_membership_and_their_rules() {
    let sb = SandboxProc::start(&[]);
    let (_, net) =
        sb.send("POST", "/v1/networks", Some(&json!({"fqn": "network::/d::one", "name": "one", "description": "x"})));
    let (_, other) = sb.send("POST", "/v1/networks", Some(&json!({"fqn": "network::/d::two"})));
    assert_eq!(net["network_end_points"], Value::Null, "null, not [], when empty");
    assert_eq!(net["version_id"], 0);
    assert_ne!(net["subnet_info"]["Subnet"], other["subnet_info"]["Subnet"]);
    let (_, job) = sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::app"})));
    let juuid = job["uuid"].as_str().unwrap();
    let join = |n: &str| {
        sb.send(
            "POST",
            &format!("/v1/jobs/{juuid}/networks"),
            Some(&json!({"job_fqn": "job::/d::app", "network_fqn": n})),
        )
    };
    let (code, echo) = join("network::/d::one");
    assert_eq!((code, &echo), (200, &json!({"job_fqn": "job::/d::app", "network_fqn": "network::/d::one"})));
    assert_eq!(sb.job("job::/d::app").unwrap()["version_id"], 2, "a join changes the job's network_ref");
    // Item 9 of issue 12: a second join of the same network was a no-op; the job already has a
    // network_ref, so it is refused like a join of another one.
    assert_eq!(join("network::/d::one").0, 409, "a second join of the same network is refused");
    assert_eq!(join("network::/d::two").0, 409, "a job is on one network at most");
    assert_eq!(sb.job("job::/d::app").unwrap()["version_id"], 2, "refused joins change nothing");
    let nets = sb.get("/v1/networks");
    let one = nets.as_array().unwrap().iter().find(|n| n["fqn"] == "network::/d::one").unwrap();
    assert_eq!(one["network_end_points"][0]["job_fqn"], "job::/d::app");
    assert!(
        one["network_end_points"][0].get("end_point_interface").is_none(),
        "no interface while the job is not started"
    );
    let nuuid = net["uuid"].as_str().unwrap();
    assert_eq!(sb.send("DELETE", &format!("/v1/networks/{nuuid}"), None).0, 409, "a network with members");
    let (code, body) = sb.send("DELETE", &format!("/v1/jobs/{juuid}/networks/{nuuid}"), None);
    assert_eq!((code, body), (200, Value::Null));
    assert_eq!(sb.job("job::/d::app").unwrap()["version_id"], 3, "leaving is a change of the job");
    assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{juuid}/networks/{nuuid}"), None).0, 404);
    assert_eq!(sb.send("DELETE", &format!("/v1/networks/{nuuid}"), None).0, 200);
}

#[test]
fn bindings_and_links_have_the_seeds_shapes_and_live_in_the_job() {
    let sb = SandboxProc::start(&[]);
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/dev::myapp"})));
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/dev::myapp-2"})));
    let (code, b) = sb.send(
        "POST",
        "/v1/bindings",
        Some(&json!({"job_fqn": "job::/dev::myapp", "name": "my_binding", "service_fqn": "service::/apcera::http"})),
    );
    assert_eq!(code, 200);
    assert_eq!(b["env_var"], json!(["HTTP_URI", "MY_BINDING_URI"]));
    let fqn = b["fqn"].as_str().unwrap();
    assert!(fqn.starts_with("binding::/::") && fqn[12..].chars().all(|c| !c.is_ascii_lowercase()), "{fqn}");
    assert_ne!(fqn[12..].to_lowercase(), b["uuid"].as_str().unwrap());
    let (code, l) = sb.send(
        "POST",
        "/v1/bindings",
        Some(&json!({"job_fqn": "job::/dev::myapp", "target_job_fqn": "job::/dev::myapp-2", "target_job_port": 0, "name": "my_link"})),
    );
    assert_eq!(code, 200);
    let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["fqn", "name", "target_job_fqn"], "the seed's link answer has only these");
    let job = sb.job("job::/dev::myapp").unwrap();
    let bindings = job["bindings"].as_object().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[fqn]["service_fqn"], "service::/apcera::http");
    let jobs = sb.get("/v1/jobs?ServiceFQN=service::/apcera::http");
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    // The service cannot go while bound.
    assert_eq!(sb.send("DELETE", "/v1/services/443dda0c-5fd8-44d3-9946-2988ef66911d", None).0, 409);
    let (code, body) =
        sb.send("POST", "/v1/unbind", Some(&json!({"job": "job::/dev::myapp", "service": "service::/apcera::http"})));
    assert_eq!((code, body), (200, Value::Null));
    assert_eq!(
        sb.send("POST", "/v1/unbind", Some(&json!({"job": "job::/dev::myapp", "service": "service::/apcera::http"}))).0,
        404
    );
    let unlink = json!({"from_job": "job::/dev::myapp", "to_job": "job::/dev::myapp-2", "port": 0});
    assert_eq!(sb.send("POST", "/v1/unlink", Some(&unlink)).0, 200);
    assert_eq!(sb.send("POST", "/v1/unlink", Some(&unlink)).0, 404);
    assert!(sb.job("job::/dev::myapp").unwrap().get("bindings").is_none());
}

#[test]
fn deleting_a_job_takes_its_attachments_and_in_use_deletes_are_refused() {
    let sb = SandboxProc::start(&[]);
    let (_, a) = sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::a"})));
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::b"})));
    sb.send("POST", "/v1/bindings", Some(&json!({"job_fqn": "job::/d::b", "target_job_fqn": "job::/d::a"})));
    let (_, p) = sb.send("POST", "/v1/providers", Some(&json!({"fqn": "provider::/d::pg", "type": "postgres", "backing_job_fqn": "job::/d::a", "backing_job_port": 5432, "parameters": {"url": "postgres://u:secret@a"}})));
    assert_eq!(p["backing_job_port"], "5432");
    assert!(p.get("parameters").is_none(), "provider parameters are write-only");
    let auuid = a["uuid"].as_str().unwrap();
    assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{auuid}"), None).0, 409, "a job backing a provider");
    let (_, s) = sb.send(
        "POST",
        "/v1/services",
        Some(&json!({"fqn": "service::/d::db", "type": "postgres", "provider_fqn": "provider::/d::pg"})),
    );
    assert_eq!(s["status"], "created");
    let puuid = p["uuid"].as_str().unwrap();
    assert_eq!(sb.send("DELETE", &format!("/v1/providers/{puuid}"), None).0, 409, "a provider backing a service");
    assert_eq!(
        sb.send(
            "POST",
            "/v1/services",
            Some(&json!({"fqn": "service::/d::x", "type": "pg", "provider_fqn": "provider::/d::none"}))
        )
        .0,
        404
    );
    assert_eq!(sb.send("PUT", &format!("/v1/services/{}", s["uuid"].as_str().unwrap()), Some(&s)).0, 405);
    sb.send("DELETE", &format!("/v1/services/{}", s["uuid"].as_str().unwrap()), None);
    assert_eq!(sb.send("DELETE", &format!("/v1/providers/{puuid}"), None), (200, Value::Null));
    let (code, body) = sb.send("DELETE", &format!("/v1/jobs/{auuid}"), None);
    assert_eq!((code, body), (200, Value::Null), "200 with no body");
    assert!(sb.job("job::/d::b").unwrap().get("bindings").is_none(), "the link to the deleted job went with it");
}

#[test]
fn a_manifest_deploys_through_a_task() {
    let sb = SandboxProc::start(&["--rollout-ms", "200"]);
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/fixtures/seed/manifests-post/manifest.json")).unwrap(),
    )
    .unwrap();
    let (code, answer) = sb.send("POST", "/v1/manifests", Some(&manifest));
    assert_eq!(code, 200);
    assert_eq!(answer["expanded_manifest"], json!({}));
    let location = answer["location"].as_str().unwrap();
    let task_path = location.strip_prefix(&sb.url).unwrap();
    let (_, task) = sb.send("GET", task_path, None);
    assert_eq!(task["state"], "running");
    let last = task["events"].as_array().unwrap().last().unwrap()["time"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, task) = sb.send("GET", &format!("{task_path}?time={last}"), None);
    assert_eq!(task["state"], "done");
    assert_eq!(task["events"].as_array().unwrap().len(), 1, "only events after ?time=");
    let job = sb.job("job::/sandbox/admin::testcapsule").unwrap();
    assert_eq!(job["state"], "started");
    assert_eq!(job["processes"]["app"]["start_command"], "/sbin/init");
    assert_eq!(job["packages"][0]["uuid"], "d45ccbfd-8fc7-43e8-8941-bf713b4ad9b6");
}

#[test]
fn the_token_is_required_in_either_form_when_set() {
    let sb = SandboxProc::start(&["--token", "sekret"]);
    let client = reqwest::blocking::Client::new();
    let get = |auth: Option<&str>| {
        let mut r = client.get(format!("{}/v1/jobs", sb.url));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some("Bearer wrong")), 401);
    assert_eq!(get(Some("Bearer sekret")), 200);
    assert_eq!(get(Some("token=sekret")), 200);
}

#[test]
fn state_survives_a_restart_and_the_request_log_records_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.json");
    let sb = SandboxProc::start(&["--state", file.to_str().unwrap()]);
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::kept", "tags": {"a": "b"}})));
    let log = sb.requests();
    let post = log.iter().find(|r| r["method"] == "POST").unwrap();
    assert_eq!((post["path"].as_str(), post["status"].as_u64()), (Some("/v1/jobs"), Some(200)));
    assert_eq!(post["body"]["tags"]["a"], "b");
    sb.stop();
    let sb = SandboxProc::start(&["--state", file.to_str().unwrap()]);
    assert_eq!(sb.job("job::/d::kept").unwrap()["tags"]["a"], "b");
}

#[test]
fn fault_knobs_fail_and_drop_requests_and_change_at_run_time() {
    let sb = SandboxProc::start(&["--fail-rate", "1", "--seed", "7"]);
    let (code, body) = sb.send("GET", "/v1/jobs", None);
    assert!(matches!(code, 500 | 502 | 503 | 504), "{code}");
    assert_eq!(body["retry"], true);
    // Reset every request: the connection is dropped without an answer.
    let (code, _) = sb.send("PUT", "/_sandbox/faults", Some(&json!({"reset_rate": 1.0})));
    assert_eq!(code, 200);
    let err = reqwest::blocking::Client::new().get(format!("{}/v1/jobs", sb.url)).send().unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    sb.send("PUT", "/_sandbox/faults", Some(&json!({})));
    assert_eq!(sb.send("GET", "/v1/jobs", None).0, 200);
    // A dropped answer after the change: the job exists although the create "failed".
    sb.send("PUT", "/_sandbox/faults", Some(&json!({"reset_rate": 1.0})));
    let mut created_anyway = 0;
    for i in 0..20 {
        let _ = reqwest::blocking::Client::new()
            .post(format!("{}/v1/jobs", sb.url))
            .json(&json!({"fqn": format!("job::/d::j{i}")}))
            .send();
    }
    sb.send("PUT", "/_sandbox/faults", Some(&json!({})));
    created_anyway += sb.jobs().len();
    assert!(
        created_anyway > 0 && created_anyway < 20,
        "about half the resets happen after the change: {created_anyway}"
    );
}

#[test]
fn bindings_and_links_change_the_job_share_a_name_space_and_unbind_takes_services_only() {
    let sb = SandboxProc::start(&[]);
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::web"})));
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::api"})));
    sb.send("POST", "/v1/jobs", Some(&json!({"fqn": "job::/d::pg"})));
    sb.send(
        "POST",
        "/v1/providers",
        Some(&json!({"fqn": "provider::/d::pg", "type": "postgres", "backing_job_fqn": "job::/d::pg", "backing_job_port": 5432})),
    );
    let version = || sb.job("job::/d::web").unwrap()["version_id"].as_u64().unwrap();
    let bind = |body: Value| sb.send("POST", "/v1/bindings", Some(&body));
    assert_eq!(version(), 1);
    assert_eq!(bind(json!({"job_fqn": "job::/d::web", "name": "db", "provider_fqn": "provider::/d::pg"})).0, 200);
    assert_eq!(
        bind(json!({"job_fqn": "job::/d::web", "name": "http", "service_fqn": "service::/apcera::http"})).0,
        200
    );
    assert_eq!(version(), 3, "two bindings: version 3, as the seed's job with two bindings (L636-749)");

    // One name space for bindings and links of a job.
    let (code, err) =
        bind(json!({"job_fqn": "job::/d::web", "name": "db", "target_job_fqn": "job::/d::api", "target_job_port": 80}));
    assert_eq!(code, 409, "a link named like a binding: {err}");
    assert!(err["message"].as_str().unwrap().contains("already has a binding or link named \"db\""), "{err}");
    let (code, _) =
        bind(json!({"job_fqn": "job::/d::web", "name": "http", "service_fqn": "service::/apcera::outside-http"}));
    assert_eq!(code, 409, "a binding named like another binding");
    assert_eq!(
        bind(
            json!({"job_fqn": "job::/d::web", "name": "API", "target_job_fqn": "job::/d::api", "target_job_port": 80})
        )
        .0,
        200
    );
    assert_eq!(version(), 4, "refused creates change nothing; a link is a change");

    // unbind is for services (seed L4151-4170): a provider binding is not found by it.
    let (code, err) =
        sb.send("POST", "/v1/unbind", Some(&json!({"job": "job::/d::web", "service": "provider::/d::pg"})));
    assert_eq!(code, 404, "{err}");
    assert!(err["message"].as_str().unwrap().contains("binding to a provider"), "{err}");
    assert_eq!(sb.job("job::/d::web").unwrap()["bindings"].as_object().unwrap().len(), 3, "the provider binding stays");
    assert_eq!(version(), 4);
    let (code, _) =
        sb.send("POST", "/v1/unbind", Some(&json!({"job": "job::/d::web", "service": "service::/apcera::http"})));
    assert_eq!(code, 200);
    assert_eq!(version(), 5, "an unbind is a change of the job");
    let unlink = json!({"from_job": "job::/d::web", "to_job": "job::/d::api", "port": 80});
    assert_eq!(sb.send("POST", "/v1/unlink", Some(&unlink)).0, 200);
    assert_eq!(version(), 6, "an unlink is a change of the job");

    // A PUT read before a binding change is stale.
    let mut web = sb.job("job::/d::web").unwrap();
    assert_eq!(
        bind(
            json!({"job_fqn": "job::/d::web", "name": "API", "target_job_fqn": "job::/d::api", "target_job_port": 80})
        )
        .0,
        200
    );
    web["num_instances"] = json!(2);
    let uuid = web["uuid"].as_str().unwrap().to_string();
    assert_eq!(sb.send("PUT", &format!("/v1/jobs/{uuid}"), Some(&web)).0, 409, "the bind made the read stale");
    // Deleting the linked job takes the link and changes the linking job.
    let api = sb.job("job::/d::api").unwrap();
    assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{}", api["uuid"].as_str().unwrap()), None).0, 200);
    assert_eq!(version(), 8);
}
