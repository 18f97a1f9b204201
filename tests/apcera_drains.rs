//! Apcera log drains as part of a job, through the real binary against `capstan sandbox serve`:
//! created with the job, changed by removing and adding, the declared list the whole set, a job
//! that declares none left alone, and plans empty after each apply.

mod common;
use common::*;
use serde_json::{Value, json};

const JOB: &str = r#"jobs:
  job::/d::web:
    state: started
    log_drains:
      - url: syslog://logs.example:514
        max_size: 4096
        conf: { protocol: udp }
      - url: syslog://audit.example:601
  job::/d::quiet:
    state: started
"#;

fn workdir(sb: &SandboxProc, manifest: &str) -> Workdir {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: drains\n");
    w.target(&sb.url);
    w.write("m.yaml", manifest);
    w
}

fn uuid(sb: &SandboxProc, fqn: &str) -> String {
    let jobs = sb.get(&format!("/v1/jobs?FQN={}", fqn.replace(':', "%3A").replace('/', "%2F")));
    jobs[0]["uuid"].as_str().unwrap().to_string()
}

/// A job's drains as (url, max_size, protocol), sorted.
fn drains(sb: &SandboxProc, fqn: &str) -> Vec<(String, u64, String)> {
    let list = sb.get(&format!("/v1/jobs/{}/logs/drains", uuid(sb, fqn)));
    let mut out: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["url"].as_str().unwrap().to_string(),
                d["max_size"].as_u64().unwrap(),
                d["conf"]["protocol"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn drain_calls(sb: &SandboxProc) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or_default().contains("/logs/drains") && r["method"] != "GET")
        .map(|r| r["method"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn drains_converge_with_their_job_and_plan_empty_after() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, JOB);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let both = vec![
        ("syslog://audit.example:601".to_string(), 0, String::new()),
        ("syslog://logs.example:514".to_string(), 4096, "udp".to_string()),
    ];
    assert_eq!(drains(&sb, "job::/d::web"), both);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // A changed drain is removed and added again; the other one is not touched.
    w.write("m.yaml", &JOB.replace("max_size: 4096", "max_size: 8192"));
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    let changes = plan.json()["resource_changes"].as_array().unwrap().clone();
    let web = changes.iter().find(|c| c["address"] == "job::/d::web").unwrap();
    assert_eq!(web["action"], "update", "{web}");
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(drain_calls(&sb), ["DELETE", "POST"]);
    assert_eq!(drains(&sb, "job::/d::web")[1].1, 8192);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn the_declared_list_is_the_whole_set_and_undeclared_drains_are_left_alone() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, JOB);
    w.capstan(&["apply", ".", "--yes"]).ok();
    // Someone adds a drain to each job by hand.
    for fqn in ["job::/d::web", "job::/d::quiet"] {
        let (code, _) = sb.send(
            "POST",
            &format!("/v1/jobs/{}/logs/drains", uuid(&sb, fqn)),
            Some(&json!({ "url": "syslog://theirs.example:1" })),
        );
        assert_eq!(code, 200);
    }
    // On the job that declares its drains, it is drift and goes; on the other, it stays.
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(drains(&sb, "job::/d::web").len(), 2);
    assert_eq!(drains(&sb, "job::/d::quiet"), [("syslog://theirs.example:1".to_string(), 0, String::new())]);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // Pruning the job takes its drains with it.
    w.write("m.yaml", "jobs:\n  job::/d::quiet:\n    state: started\n");
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    let left: Vec<Value> = sb.get("/v1/jobs?FQN=job%3A%3A%2Fd%3A%3Aweb").as_array().unwrap().clone();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_drain_without_a_scheme_is_refused_with_its_place() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, &JOB.replace("syslog://audit.example:601", "audit.example"));
    let out = w.capstan(&["plan", "."]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("m.yaml:8:"), "{}", out.stderr);
}
