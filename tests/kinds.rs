//! Every Apcera kind converges: created, then changed in each way the API allows, and after
//! each apply the next plan is empty (what was applied reads back as declared).

mod common;
use common::*;
use serde_json::Value;

const MANIFEST: &str = r#"
providers:
  provider::/k::pg:
    type: postgres
    description: pg-v1
    backing_job_fqn: job::/k::db
    backing_job_port: 5432
    parameters:
      url: postgres://orders:hunter22@db
services:
  service::/k::orders:
    type: postgres
    provider_fqn: provider::/k::pg
    description: orders-v1
networks:
  network::/k::net-a:
    description: net-a-v1
    jobs: [job::/k::api]
  network::/k::net-b:
    description: net-b-v1
jobs:
  job::/k::db:
    state: started
    ports:
      - number: 5432
  job::/k::api:
    state: started
    num_instances: 2
    processes:
      app:
        start_command: ./api
        environment:
          LOG_LEVEL: info
    bindings:
      orders:
        fqn: service::/k::orders
    links:
      DB:
        fqn: job::/k::db
        port: 5432
"#;

fn actions(w: &Workdir) -> Vec<(String, String)> {
    let out = w.capstan(&["plan", ".", "-o", "json"]);
    out.ok();
    let mut v: Vec<(String, String)> = out.json()["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no-op")
        .map(|c| (c["action"].as_str().unwrap().to_string(), c["address"].as_str().unwrap().to_string()))
        .collect();
    v.sort();
    v
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// Apply, then the plan must be empty.
fn converge(w: &Workdir) {
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    assert!(out.stdout.contains("Apply complete"), "{}", out.stdout);
    let again = w.capstan(&["plan", ".", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "not converged:\n{}", again.stdout);
}

fn edit(w: &Workdir, from: &str, to: &str) {
    let text = w.read("m.yaml");
    assert!(text.contains(from), "{from:?} not in the manifest");
    w.write("m.yaml", &text.replacen(from, to, 1));
}

#[test]
fn every_kind_is_created_changed_and_read_back_equal() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("m.yaml", MANIFEST);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    converge(&w);
    let api = sb.job("job::/k::api").unwrap();
    assert_eq!(api["bindings"].as_object().unwrap().len(), 2, "the binding and the link: {api}");

    // A service cannot be updated: it is replaced, and its binding with it.
    edit(&w, "orders-v1", "orders-v2");
    assert_eq!(
        actions(&w),
        [pair("replace", "binding job::/k::api -> service::/k::orders"), pair("replace", "service::/k::orders")]
    );
    converge(&w);
    assert!(
        sb.job("job::/k::api").unwrap()["bindings"]
            .as_object()
            .unwrap()
            .values()
            .any(|b| b["service_fqn"] == "service::/k::orders")
    );

    // A network likewise, with its membership.
    edit(&w, "net-a-v1", "net-a-v2");
    assert_eq!(
        actions(&w),
        [pair("replace", "membership job::/k::api -> network::/k::net-a"), pair("replace", "network::/k::net-a")]
    );
    converge(&w);

    // Moving a job to another network: it leaves one before it joins the other.
    edit(&w, "jobs: [job::/k::api]\n", "\n");
    edit(&w, "net-b-v1\n", "net-b-v1\n    jobs: [job::/k::api]\n");
    assert_eq!(
        actions(&w),
        [
            pair("create", "membership job::/k::api -> network::/k::net-b"),
            pair("delete", "membership job::/k::api -> network::/k::net-a")
        ]
    );
    converge(&w);

    // A link's port is part of its identity: a new link, the old one removed.
    edit(&w, "        port: 5432\n", "        port: 5433\n");
    assert_eq!(
        actions(&w),
        [
            pair("create", "link job::/k::api -> job::/k::db:5433"),
            pair("delete", "link job::/k::api -> job::/k::db:5432")
        ]
    );
    converge(&w);

    // A binding no longer declared by its (declared) job is removed, without --prune.
    edit(&w, "    bindings:\n      orders:\n        fqn: service::/k::orders\n", "");
    assert_eq!(actions(&w), [pair("delete", "binding job::/k::api -> service::/k::orders")]);
    converge(&w);
    assert!(
        !sb.job("job::/k::api").unwrap()["bindings"]
            .as_object()
            .unwrap()
            .values()
            .any(|b| b.get("service_fqn").is_some())
    );

    // A provider change replaces the provider and the service it backs.
    edit(&w, "pg-v1", "pg-v2");
    assert_eq!(actions(&w), [pair("replace", "provider::/k::pg"), pair("replace", "service::/k::orders")]);
    converge(&w);

    // Jobs change in place: a process's environment, the number of instances.
    edit(&w, "LOG_LEVEL: info", "LOG_LEVEL: debug");
    edit(&w, "num_instances: 2", "num_instances: 3");
    let out = w.capstan(&["plan", ".", "-o", "json"]);
    let plan = out.json();
    let change = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["action"] == "update").unwrap();
    let paths: Vec<&str> = change["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["num_instances", "processes.app.environment.LOG_LEVEL"]);
    converge(&w);
    let api = sb.job("job::/k::api").unwrap();
    assert_eq!(api["num_instances"], 3);
    assert_eq!(api["processes"]["app"]["environment"]["LOG_LEVEL"], "debug");

    // The provider's write-only parameters never show, not even in the plan of its creation.
    let text: String = sb.requests().iter().map(Value::to_string).collect();
    assert!(text.contains("hunter22"), "the platform did receive the parameters");
    let plan_text = w.capstan(&["plan", ".", "-o", "json"]).stdout;
    assert!(!plan_text.contains("hunter22"));
}
