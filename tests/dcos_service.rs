//! `capstan service …` through the real binary against a real DC/OS sandbox process
//! (`capstan sandbox serve --platform dcos`) over HTTP: reading a service's pods, endpoints and
//! configurations; a pod replaced and followed through the recovery plan; legacy Cassandra's
//! backup followed through its status until done; failures exit 1 with the service's words.

mod common;
use common::*;
use serde_json::{Value, json};

/// The DC/OS example applied to a sandbox (its service's plan COMPLETE).
fn deployed_example(step_ms: &str) -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", step_ms]);
    let w = Workdir::from_example("examples/manifests/dcos");
    w.target_platform("dcos", &sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    (sb, w)
}

/// A legacy DC/OS Apache Cassandra of three nodes, applied.
fn deployed_legacy(step_ms: &str) -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", step_ms]);
    let w = Workdir::new();
    write_legacy_cassandra(&w);
    w.target_platform("dcos", &sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    (sb, w)
}

fn stdout_json(out: &Run) -> Value {
    // Progress lines (indented) come before the pretty JSON, which starts at column 0.
    let start = out.stdout.find("\n{").map(|i| i + 1).unwrap_or(0);
    serde_json::from_str(&out.stdout[start..]).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

#[test]
fn pods_endpoints_and_config_of_an_sdk_service_are_read_from_its_api() {
    let (sb, w) = deployed_example("10");
    let pods = w.capstan(&["service", "pods", "cassandra"]);
    pods.ok();
    let pods = stdout_json(&pods);
    let names: Vec<&String> = pods.as_object().unwrap().keys().collect();
    assert_eq!(names, ["node-0", "node-1", "node-2"], "{pods}");
    assert_eq!(pods["node-1"], sb.send("GET", "/service/cassandra/v1/pod/node-1/info", None).1);

    let endpoints = stdout_json(w.capstan(&["service", "endpoints", "cassandra"]).ok());
    assert_eq!(endpoints["node"], sb.send("GET", "/service/cassandra/v1/endpoints/node", None).1);
    assert_eq!(endpoints["node"]["address"].as_array().unwrap().len(), 3);

    let config = stdout_json(w.capstan(&["service", "config", "cassandra"]).ok());
    let target_id = sb.send("GET", "/service/cassandra/v1/configurations/targetId", None).1[0].clone();
    let target = sb.send("GET", "/service/cassandra/v1/configurations/target", None).1;
    assert_eq!(config["target"], target);
    assert_eq!(config["configurations"][target_id.as_str().unwrap()], target);
    assert_eq!(config["suppressed"], json!(true), "a service with nothing to do is suppressed");
}

#[test]
fn pod_replace_follows_the_recovery_plan_to_its_end() {
    let (sb, w) = deployed_example("100");
    let before = sb.send("GET", "/service/cassandra/v1/pod/node-1/info", None).1;
    let out = w.capstan(&["service", "pod", "replace", "cassandra", "node-1"]);
    out.ok();
    // Its progress, then the recovery plan COMPLETE.
    assert!(out.stdout.contains("COMPLETE    node-1:[server] / node-1:[server]"), "{}", out.stdout);
    let shown = stdout_json(&out);
    assert_eq!(shown["replace"], json!({"pod": "node-1", "tasks": ["node-1-server"]}));
    assert_eq!(shown["recovery"]["status"], "COMPLETE");
    let (code, recovery) = sb.send("GET", "/service/cassandra/v1/plans/recovery", None);
    assert_eq!((code, recovery["status"].as_str()), (200, Some("COMPLETE")), "{recovery}");
    let after = sb.send("GET", "/service/cassandra/v1/pod/node-1/info", None).1;
    assert_ne!(before[0]["info"]["taskId"], after[0]["info"]["taskId"], "the pod runs as a new task");

    // Replaced again: followed to the end of its own new recovery step, not the finished one.
    let again = w.capstan(&["service", "pod", "replace", "cassandra", "node-1"]);
    again.ok();
    assert!(again.stdout.contains("STARTING    node-1:[server]"), "{}", again.stdout);
    let third = sb.send("GET", "/service/cassandra/v1/pod/node-1/info", None).1;
    assert_ne!(after[0]["info"]["taskId"], third[0]["info"]["taskId"], "replaced once more");

    let restart = w.capstan(&["service", "pod", "restart", "cassandra", "node-0"]);
    restart.ok();
    assert!(restart.stdout.contains("COMPLETE    node-0:[server] / node-0:[server]"), "{}", restart.stdout);
}

#[test]
fn a_failing_recovery_step_an_unknown_pod_and_a_hostile_name_exit_1() {
    let (sb, w) = deployed_example("20");
    let faults =
        json!({"fail_step": {"service": "cassandra", "step": "node-2:[server]", "message": "agent 7 is gone"}});
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&faults)).0, 200);
    let out = w.capstan(&["service", "pod", "restart", "cassandra", "node-2"]);
    out.code(1);
    assert!(out.stderr.contains("agent 7 is gone"), "the service's message: {}", out.stderr);
    assert!(out.stderr.contains("node-2:[server]"), "{}", out.stderr);

    let unknown = w.capstan(&["service", "pod", "replace", "cassandra", "node-9"]);
    unknown.code(1);
    assert!(unknown.stderr.contains("Pod node-9 not found"), "{}", unknown.stderr);

    sb.clear_requests();
    for bad in ["../marathon", "cassandra?cmd=interrupt"] {
        let out = w.capstan(&["service", "pods", bad]);
        out.code(1);
        assert!(out.stderr.contains("is not one DC/OS allows"), "{}", out.stderr);
    }
    let bad_pod = w.capstan(&["service", "pod", "replace", "cassandra", "../../marathon/v2/apps"]);
    bad_pod.code(1);
    assert!(sb.requests().iter().all(|r| r["method"] == "GET"), "nothing sent but reads: {:?}", sb.requests());

    let nothing = w.capstan(&["service", "pods", "hdfs"]);
    nothing.code(1);
    assert!(nothing.stderr.contains("no service hdfs on this cluster"), "{}", nothing.stderr);
    let legacy_only = w.capstan(&["service", "cassandra", "repair", "cassandra"]);
    legacy_only.code(1);
    assert!(legacy_only.stderr.contains("has no repair operation"), "{}", legacy_only.stderr);
}

#[test]
fn a_legacy_cassandra_backup_is_followed_until_done_and_its_keys_are_never_shown() {
    let (sb, w) = deployed_legacy("150");
    let env = [("AWS_ACCESS_KEY_ID", Some("AKIAEXAMPLE0001")), ("AWS_SECRET_ACCESS_KEY", Some("s3cr3t-Key-9f2d"))];
    let out = run_with_env(
        w.path(),
        &["service", "cassandra", "backup", "cassandra", "--name", "nightly", "--location", "s3://backups"],
        &env,
    );
    out.ok();
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("s3cr3t-Key-9f2d") && !all.contains("AKIAEXAMPLE0001"), "keys shown:\n{all}");
    let shown = stdout_json(&out);
    assert_eq!(shown["start"], json!({"status": "started", "message": ""}));
    assert_eq!(shown["status"]["status"], "COMPLETE");
    // It polled the status, and saw it progress before it was done.
    assert!(sb.seqs("GET", "/service/cassandra/v1/backup/status").len() > 1);
    assert!(out.stdout.lines().filter(|l| l.starts_with("  ")).count() > 3, "progress shown:\n{}", out.stdout);
    let (code, status) = sb.send("GET", "/service/cassandra/v1/backup/status", None);
    assert_eq!((code, status["status"].as_str()), (200, Some("COMPLETE")));
    // Seed 001's body, with the keys from the environment.
    let start = sb.requests().into_iter().find(|r| r["path"] == "/service/cassandra/v1/backup/start").unwrap();
    assert_eq!(
        start["body"],
        json!({"backup_name": "nightly", "external_location": "s3://backups", "s3_access_key": "AKIAEXAMPLE0001", "s3_secret_key": "s3cr3t-Key-9f2d"})
    );

    let cleanup = w.capstan(&["service", "cassandra", "cleanup", "cassandra", "--key-spaces", "shop"]);
    cleanup.ok();
    let start = sb.requests().into_iter().find(|r| r["path"] == "/service/cassandra/v1/cleanup/start").unwrap();
    assert_eq!(start["body"], json!({"nodes": ["*"], "key_spaces": ["shop"]}));
    assert_eq!(stdout_json(&cleanup)["status"]["status"], "COMPLETE");

    let missing = run_with_env(
        w.path(),
        &["service", "cassandra", "restore", "cassandra", "--name", "nightly", "--location", "s3://backups"],
        &[("AWS_ACCESS_KEY_ID", None)],
    );
    missing.code(1);
    assert!(missing.stderr.contains("$AWS_ACCESS_KEY_ID, which is not set"), "{}", missing.stderr);

    let endpoints = stdout_json(w.capstan(&["service", "endpoints", "cassandra"]).ok());
    assert_eq!(endpoints["nodes"].as_array().unwrap().len(), 3);
    let pods = stdout_json(w.capstan(&["service", "pods", "cassandra"]).ok());
    assert_eq!(pods.as_object().unwrap().len(), 3, "{pods}");
}

#[test]
fn a_services_secret_settings_are_never_shown_by_capstan_service() {
    // The scheduler's environment is the service's configuration: its password reaches the
    // target configuration and the pods' tasks, which `capstan service` reads.
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "10"]);
    let w = Workdir::new();
    w.write("capstan.yaml", "platform: dcos\nowner: data\n");
    w.write(
        "cassandra.json",
        &json!({
            "id": "/cassandra", "cmd": "./scheduler", "instances": 1, "cpus": 1, "mem": 1024,
            "labels": {"DCOS_COMMONS_API_VERSION": "v1", "DCOS_SERVICE_NAME": "cassandra"},
            "env": {"NODES": "2", "NODE_ADMIN_PASSWORD": "pw-Hunter2-77a1"},
        })
        .to_string(),
    );
    w.target_platform("dcos", &sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let target = sb.send("GET", "/service/cassandra/v1/configurations/target", None).1;
    assert!(target.to_string().contains("pw-Hunter2-77a1"), "the service holds it: {target}");
    for command in ["config", "pods", "endpoints"] {
        let out = w.capstan(&["service", command, "cassandra"]);
        out.ok();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!all.contains("pw-Hunter2-77a1"), "capstan service {command} showed the password:\n{all}");
    }
    let config = stdout_json(w.capstan(&["service", "config", "cassandra"]).ok());
    assert!(config.to_string().contains("(sensitive)"), "masked, not dropped: {config}");
}
