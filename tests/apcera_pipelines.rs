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
