//! Apcera staging pipelines, through the real binary against `capstan sandbox serve`: made after
//! their stager jobs, stagers compared by job FQN, changed with one PUT, plans empty after
//! apply, and — since a pipeline cannot carry an ownership mark — pruned only when capstan's
//! record holds its uuid (`src/providers/apcera/created.rs`).

mod common;
use common::*;
use serde_json::Value;

const PIPELINE: &str = r#"jobs:
  job::/s::fetch:
    state: ready
  job::/s::build:
    state: ready
stagingpipelines:
  stagpipe::/s::site:
    stagers: [job::/s::fetch, job::/s::build]
"#;

fn workdir(sb: &SandboxProc, manifest: &str) -> Workdir {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: pipes\n");
    w.target(&sb.url);
    w.write("m.yaml", manifest);
    w
}

fn uuid(sb: &SandboxProc, fqn: &str) -> Value {
    sb.get(&format!("/v1/jobs?FQN={}", fqn.replace(':', "%3A").replace('/', "%2F")))[0]["uuid"].clone()
}

fn pipelines(sb: &SandboxProc) -> Vec<Value> {
    sb.get("/v1/stagingpipelines").as_array().unwrap().clone()
}

#[test]
fn a_pipeline_converges_after_its_stagers_and_changes_in_one_put() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, PIPELINE);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let posts: Vec<String> = sb
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(posts.last().map(String::as_str), Some("/v1/stagingpipelines"), "after its stagers: {posts:?}");
    let all = pipelines(&sb);
    assert_eq!(all.len(), 1);
    let stagers: Vec<&Value> = all[0]["stagers"].as_array().unwrap().iter().map(|s| &s["uuid"]).collect();
    assert_eq!(stagers, [&uuid(&sb, "job::/s::fetch"), &uuid(&sb, "job::/s::build")]);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // The order of stagers is the pipeline's: a change, one PUT with the version read.
    w.write("m.yaml", &PIPELINE.replace("[job::/s::fetch, job::/s::build]", "[job::/s::build, job::/s::fetch]"));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let puts: Vec<Value> = sb.requests().into_iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0]["body"]["version_id"], 1);
    assert_eq!(pipelines(&sb)[0]["stagers"][0]["uuid"], uuid(&sb, "job::/s::build"));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // No longer declared: capstan made it (its uuid is on record), so pruning deletes it.
    w.write("m.yaml", &PIPELINE[..PIPELINE.find("stagingpipelines").unwrap()]);
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    assert!(pipelines(&sb).is_empty(), "{:?}", pipelines(&sb));
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// A pipeline of the same FQN made directly on the platform (after deleting capstan's) has
/// another uuid: it is not capstan's and survives every prune.
#[test]
fn a_pipeline_of_the_same_name_made_directly_is_never_pruned() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, PIPELINE);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let ours = pipelines(&sb).remove(0);
    let (code, _) = sb.send("DELETE", &format!("/v1/stagingpipelines/{}", ours["uuid"].as_str().unwrap()), None);
    assert_eq!(code, 200);
    let body = serde_json::json!({ "fqn": ours["fqn"], "name": ours["name"], "stagers": ours["stagers"] });
    let (code, made) = sb.send("POST", "/v1/stagingpipelines", Some(&body));
    assert_eq!(code, 200, "{made}");
    assert_ne!(made["uuid"], ours["uuid"]);

    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    w.write("m.yaml", &PIPELINE[..PIPELINE.find("stagingpipelines").unwrap()]);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    let left = pipelines(&sb);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["uuid"], made["uuid"]);
}

/// The step of `name` in `plan -o json`, and the names of the steps it depends on.
fn step_deps(plan: &Value, name: &str) -> Vec<String> {
    let steps: Vec<&Value> =
        plan["plan"]["phases"].as_array().unwrap().iter().flat_map(|p| p["steps"].as_array().unwrap().iter()).collect();
    let name_of = |id: &Value| steps.iter().find(|s| &s["id"] == id).unwrap()["name"].as_str().unwrap().to_string();
    let step = steps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no step {name}: {plan}"));
    step["depends_on"].as_array().unwrap().iter().map(name_of).collect()
}

/// Ordering, as `plan -o json` states it: a job whose package a declared staging pipeline stages
/// (the package's `staging_pipeline_fqn`) is made after that pipeline, the pipeline after its
/// stagers, and a rule after the service it governs; applying follows the same order.
#[test]
fn a_pipeline_comes_before_the_jobs_whose_packages_it_stages_and_a_rule_after_its_service() {
    let sb = SandboxProc::start(&[]);
    let package = serde_json::json!({
        "fqn": "package::/s::site-src", "name": "site-src", "staging_pipeline_fqn": "stagpipe::/s::site",
    });
    let (code, made) = sb.send("POST", "/v1/packages", Some(&package));
    assert_eq!(code, 200, "{made}");
    let manifest = r#"jobs:
  job::/s::fetch:
    state: ready
  job::/s::build:
    state: ready
  job::/s::web:
    state: ready
    packages:
      - fqn: package::/s::site-src
stagingpipelines:
  stagpipe::/s::site:
    stagers: [job::/s::fetch, job::/s::build]
services:
  service::/s::db:
    type: postgres
sempiperules:
  sempiperule::/s::nodelete:
    action: { commands: [delete], inline: deny }
    service: service::/s::db
"#;
    let w = workdir(&sb, manifest);
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    let plan = plan.json();
    assert_eq!(step_deps(&plan, "create job::/s::web"), ["create stagpipe::/s::site"], "{plan}");
    let mut stagers = step_deps(&plan, "create stagpipe::/s::site");
    stagers.sort();
    assert_eq!(stagers, ["create job::/s::build", "create job::/s::fetch"]);
    assert_eq!(step_deps(&plan, "create sempiperule::/s::nodelete"), ["create service::/s::db"]);

    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let seqs = |path: &str| sb.seqs("POST", path);
    let web_created = sb
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1/jobs" && r["body"]["fqn"] == "job::/s::web")
        .map(|r| r["seq"].as_u64().unwrap())
        .next()
        .unwrap();
    assert!(seqs("/v1/stagingpipelines")[0] < web_created);
    assert!(seqs("/v1/services")[0] < seqs("/v1/rules")[0]);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

/// Odd but valid pipelines plan empty once applied: FQNs in the default namespace, one stager
/// used twice, a pipeline of a single stager; fields the platform fills in are ignored.
#[test]
fn odd_pipelines_plan_empty_after_apply() {
    let sb = SandboxProc::start(&[]);
    let manifest = r#"default_namespace: /s/odd
jobs:
  job::::lint:
    state: ready
  job::::build:
    state: ready
stagingpipelines:
  stagpipe::::twice:
    stagers: [job::::lint, job::::build, job::::lint]
  stagpipe::::single:
    stagers: [job::::build]
"#;
    let w = workdir(&sb, manifest);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let all = pipelines(&sb);
    assert_eq!(all.len(), 2, "{all:?}");
    let twice = all.iter().find(|p| p["fqn"] == "stagpipe::/s/odd::twice").unwrap();
    assert_eq!(twice["stagers"].as_array().unwrap().len(), 3);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// A stager whose own package the pipeline stages does not wait for the pipeline (which waits
/// for it): the plan has no cycle, and converges.
#[test]
fn a_stager_using_a_package_its_own_pipeline_stages_is_no_cycle() {
    let sb = SandboxProc::start(&[]);
    let package = serde_json::json!({
        "fqn": "package::/s::stager-src", "name": "stager-src", "staging_pipeline_fqn": "stagpipe::/s::site",
    });
    assert_eq!(sb.send("POST", "/v1/packages", Some(&package)).0, 200);
    let manifest = r#"jobs:
  job::/s::fetch:
    state: ready
    packages:
      - fqn: package::/s::stager-src
stagingpipelines:
  stagpipe::/s::site:
    stagers: [job::/s::fetch]
"#;
    let w = workdir(&sb, manifest);
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    assert_eq!(step_deps(&plan.json(), "create stagpipe::/s::site"), ["create job::/s::fetch"]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

/// Two pipelines whose stagers use each other's packages: the orders capstan infers from live
/// packages would close a cycle through two hops (s1 → k2 → p2 → s2 → k1 → p1 → s1). A valid
/// declaration never fails for an order it did not write: the declared orders (a pipeline after
/// its stagers) all hold, an inferred one that would close the cycle is left out, and it
/// converges.
#[test]
fn pipelines_staging_each_others_stagers_packages_are_no_cycle() {
    let sb = SandboxProc::start(&[]);
    for i in [1, 2] {
        let package = serde_json::json!({
            "fqn": format!("package::/c::k{i}"), "name": format!("k{i}"),
            "staging_pipeline_fqn": format!("stagpipe::/c::p{i}"),
        });
        assert_eq!(sb.send("POST", "/v1/packages", Some(&package)).0, 200);
    }
    let manifest = r#"jobs:
  job::/c::s1:
    state: ready
    packages:
      - fqn: package::/c::k2
  job::/c::s2:
    state: ready
    packages:
      - fqn: package::/c::k1
stagingpipelines:
  stagpipe::/c::p1:
    stagers: [job::/c::s1]
  stagpipe::/c::p2:
    stagers: [job::/c::s2]
"#;
    let w = workdir(&sb, manifest);
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    let plan = plan.json();
    assert_eq!(step_deps(&plan, "create stagpipe::/c::p1"), ["create job::/c::s1"]);
    assert_eq!(step_deps(&plan, "create stagpipe::/c::p2"), ["create job::/c::s2"]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(pipelines(&sb).len(), 2);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

/// A stager pruned while its pipeline stops naming it: the pipeline is changed first, so it
/// never names a job that is gone (and a platform that refuses to delete a stager in use is
/// never asked to).
#[test]
fn a_pipeline_stops_naming_a_stager_before_the_stager_is_pruned() {
    let sb = SandboxProc::start(&[]);
    let manifest = |stagers: &[&str]| {
        let jobs: String = stagers.iter().map(|s| format!("  job::/d::{s}: {{state: ready}}\n")).collect();
        let names: Vec<String> = stagers.iter().map(|s| format!("job::/d::{s}")).collect();
        format!("jobs:\n{jobs}stagingpipelines:\n  stagpipe::/d::p:\n    stagers: [{}]\n", names.join(", "))
    };
    let w = workdir(&sb, &manifest(&["s1", "s2"]));
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("m.yaml", &manifest(&["s1"]));
    let plan = w.capstan(&["plan", ".", "--prune", "-o", "json"]);
    plan.ok();
    assert_eq!(step_deps(&plan.json(), "delete job::/d::s2"), ["update stagpipe::/d::p"]);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    let order: Vec<String> = sb
        .mutating_requests()
        .into_iter()
        .map(|r| {
            format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap().split('/').nth(2).unwrap())
        })
        .collect();
    assert_eq!(order, ["PUT stagingpipelines", "DELETE jobs"]);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}
