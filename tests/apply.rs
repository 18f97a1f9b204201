//! plan and apply through the real binary against a real sandbox process over HTTP.

mod common;
use common::*;
use serde_json::{Value, json};

fn example() -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::from_example("examples/manifests/apcera");
    w.target(&sb.url);
    (sb, w)
}

fn plan_json(w: &Workdir, extra: &[&str]) -> Value {
    let mut args = vec!["plan", ".", "--output", "json"];
    args.extend_from_slice(extra);
    let out = w.capstan(&args);
    out.ok();
    out.json()
}

#[test]
fn the_example_converges_and_then_plans_empty() {
    let (sb, w) = example();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    assert!(out.stdout.contains("Apply complete"), "{}", out.stdout);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // What the platform now has, read straight from the sandbox.
    let api = sb.job("job::/dev/shop::api").expect("api job");
    assert_eq!(api["state"], "started");
    assert_eq!(api["num_instances"], 2);
    assert_eq!(api["labels"]["capstan-owner"], "shop");
    let bindings: Vec<&Value> = api["bindings"].as_object().unwrap().values().collect();
    assert!(bindings.iter().any(|b| b["service_fqn"] == "service::/dev/shop::orders-db"), "{api}");
    let web = sb.job("job::/dev/shop::web").unwrap();
    assert!(web["bindings"].as_object().unwrap().values().any(|b| b["target_job_fqn"] == "job::/dev/shop::api"));
    let nets = sb.get("/v1/networks");
    let backend = nets.as_array().unwrap().iter().find(|n| n["fqn"] == "network::/dev/shop::backend").unwrap();
    let members: Vec<&str> =
        backend["network_end_points"].as_array().unwrap().iter().map(|e| e["job_fqn"].as_str().unwrap()).collect();
    assert!(members.contains(&"job::/dev/shop::api") && members.contains(&"job::/dev/shop::worker"), "{members:?}");
    let health = sb.get(&format!("/v1/jobs/health?ids={}", api["uuid"].as_str().unwrap()));
    assert_eq!(health[0]["instance_state_count"]["RUNNING"], 2);
}

#[test]
fn one_changed_field_plans_exactly_that_change() {
    let (_sb, w) = example();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let api = w.read("jobs/api.yaml").replace("memory: 536870912", "memory: 1073741824");
    w.write("jobs/api.yaml", &api);

    let plan = plan_json(&w, &[]);
    assert_eq!(changed(&plan), vec![("update".to_string(), "job::/dev/shop::api".to_string())]);
    let change = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["action"] == "update").unwrap();
    assert_eq!(change["changes"], json!([{ "path": "resources.memory", "before": 536870912, "after": 1073741824 }]));
    assert_eq!(change["origin"]["file"], "jobs/api.yaml");
    let text = w.capstan(&["plan", "."]);
    assert!(text.stdout.contains("~ job::/dev/shop::api"), "{}", text.stdout);
    assert!(
        text.stdout.contains("-   memory: 536870912") && text.stdout.contains("+   memory: 1073741824"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete."), "{}", text.stdout);

    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

/// The top-level fields of seed 003's Job object (GET /v1/jobs examples).
const SEED_JOB_FIELDS: &[&str] = &[
    "uuid",
    "fqn",
    "name",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "version_id",
    "state",
    "num_instances",
    "ports",
    "logs",
    "packages",
    "processes",
    "resources",
    "rollout",
    "restart",
    "hard_scheduling_tags",
    "soft_scheduling_tags",
    "tags",
    "labels",
    "weight",
    "bindings",
    "network_ref",
    "drains",
];

#[test]
fn an_update_is_a_full_object_put_of_the_job_as_read() {
    let (sb, w) = example();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let before = sb.job("job::/dev/shop::worker").unwrap();
    w.write("jobs/worker.yaml", &w.read("jobs/worker.yaml").replace("app: worker", "app: worker-2"));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();

    let uuid = before["uuid"].as_str().unwrap();
    let puts: Vec<Value> =
        sb.requests().into_iter().filter(|r| r["method"] == "PUT" && r["path"] == format!("/v1/jobs/{uuid}")).collect();
    assert_eq!(puts.len(), 1, "one PUT of the worker");
    let body = puts[0]["body"].as_object().unwrap();
    // Every field the job had when read goes back, unchanged except what was declared.
    for (k, v) in before.as_object().unwrap() {
        assert!(body.contains_key(k), "the PUT lacks {k}");
        if k != "tags" {
            assert_eq!(&body[k], v, "the PUT changed {k}");
        }
    }
    assert_eq!(body["tags"]["app"], "worker-2");
    // And nothing that is not a field of the seed's Job object.
    for k in body.keys() {
        assert!(SEED_JOB_FIELDS.contains(&k.as_str()), "the PUT sends {k}, which a Job does not have");
    }
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_no_op_plan_makes_one_list_request_per_kind() {
    let (sb, w) = example();
    w.capstan(&["apply", ".", "--yes"]).ok();
    sb.clear_requests();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    let mut seen: Vec<String> = sb
        .requests()
        .iter()
        .map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["GET /v1/jobs", "GET /v1/networks", "GET /v1/packages", "GET /v1/providers", "GET /v1/services"],
        "exactly one list call per kind, nothing per resource"
    );
}

#[test]
fn prune_deletes_only_what_this_owner_created() {
    let (sb, w) = example();
    w.capstan(&["apply", ".", "--yes"]).ok();
    // A job created directly through the API, not by capstan.
    let (status, _) = sb.send(
        "POST",
        "/v1/jobs",
        Some(&json!({ "fqn": "job::/dev/shop::handmade", "name": "handmade", "tags": { "by": "hand" } })),
    );
    assert_eq!(status, 200);
    // The scheduler is no longer declared.
    let worker = w.read("jobs/worker.yaml");
    w.write("jobs/worker.yaml", worker.split("\n---\n").next().unwrap());

    let plan = plan_json(&w, &[]);
    assert!(changed(&plan).is_empty(), "without --prune nothing is deleted: {:?}", changed(&plan));
    assert_eq!(plan["orphans"], json!(["job::/dev/shop::scheduler"]));

    let plan = plan_json(&w, &["--prune"]);
    assert_eq!(changed(&plan), vec![("delete".to_string(), "job::/dev/shop::scheduler".to_string())]);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert!(sb.job("job::/dev/shop::scheduler").is_none(), "the undeclared owned job is gone");
    assert!(sb.job("job::/dev/shop::handmade").is_some(), "the job capstan did not create survives");
    assert_eq!(sb.job("job::/dev/shop::handmade").unwrap()["tags"]["by"], "hand");
    // The seed's system services and providers are not capstan's either.
    assert!(sb.get("/v1/services").as_array().unwrap().iter().any(|s| s["fqn"] == "service::/apcera::http"));
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// Apply a broken manifest directory: exit 1, the error's place, and not one mutating request.
fn rejected(files: &[(&str, &str)], expect: &str) {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    for (f, c) in files {
        w.write(f, c);
    }
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains(expect), "expected {expect:?} in:\n{}", out.stderr);
    assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
    assert_eq!(sb.mutating_requests(), Vec::<Value>::new(), "no mutating request may be sent");
}

const GOOD: (&str, &str) = ("good.yaml", "jobs:\n  job::/d::ok:\n    state: started\n");

#[test]
fn invalid_input_anywhere_sends_no_mutating_request() {
    rejected(&[GOOD, ("bad.yaml", "jobs:\n  job::/d::web: [\n")], "bad.yaml:3:1: error: invalid YAML");
    rejected(
        &[GOOD, ("bad.yaml", "jobs:\n  job::/d::web:\n    colour: blue\n")],
        "bad.yaml:3:5: error: unknown field `colour`",
    );
    rejected(
        &[GOOD, ("bad.yaml", "jobs:\n  job::/d::web:\n    num_instances: two\n")],
        "bad.yaml:3:20: error: wrong type for `jobs.job::/d::web.num_instances`: expected integer, found string",
    );
    rejected(
        &[GOOD, ("bad.yaml", "jobs:\n  job::/d::${APP}: {}\n")],
        "bad.yaml:2:12: error: no value found for variable APP",
    );
    rejected(&[GOOD, ("dup.yaml", "jobs:\n  job::/d::ok: {}\n")], "error: job::/d::ok is declared twice");
    rejected(
        &[GOOD, ("bad.yaml", "jobs:\n  job::/d::web:\n    bindings:\n      db:\n        fqn: service::/d::nowhere\n")],
        "bad.yaml:5:14: error: binding job::/d::web -> service::/d::nowhere points at service::/d::nowhere, which is neither declared nor live",
    );
}

#[test]
fn a_dangling_job_link_or_network_membership_is_an_error_at_its_place() {
    rejected(
        &[GOOD, ("bad.yaml", "jobs:\n  job::/d::web:\n    links:\n      API: {fqn: job::/d::nowhere, port: 80}\n")],
        "bad.yaml:4:18: error: link job::/d::web -> job::/d::nowhere:80 points at job::/d::nowhere, which is neither declared nor live: expected an existing job",
    );
    rejected(
        &[
            GOOD,
            ("net.yaml", "networks:\n  network::/d::net:\n    jobs:\n      - job::/d::ok\n      - job::/d::ghost\n"),
        ],
        "net.yaml:5:9: error: membership job::/d::ghost -> network::/d::net points at job::/d::ghost, which is neither declared nor live: expected an existing job",
    );
}

/// A directory whose target is `sb` with its token in $CAPSTAN_TEST_TOKEN.
fn with_token_env(sb: &SandboxProc) -> Workdir {
    let w = Workdir::new();
    w.write(
        "capstan.yaml",
        &format!(
            "targets:\n  sb:\n    platform: apcera\n    url: {}\n    token_env: CAPSTAN_TEST_TOKEN\ndefault_target: sb\n",
            sb.url
        ),
    );
    w.write("m.yaml", "jobs:\n  job::/tok::web: {}\n");
    w
}

fn run_with_token(w: &Workdir, token: Option<&str>, args: &[&str]) -> Run {
    run_with_env(w.path(), args, &[("CAPSTAN_TEST_TOKEN", token)])
}

#[test]
fn token_env_sends_the_token_and_a_missing_or_wrong_one_is_one_clear_line() {
    let sb = SandboxProc::start(&["--token", "s3cret-t0ken"]);
    let w = with_token_env(&sb);

    // Not set: an error before anything is sent.
    let out = run_with_token(&w, None, &["plan", "."]);
    out.code(1);
    assert_eq!(
        out.stderr.trim(),
        "capstan: error: target \"sb\" reads its token from $CAPSTAN_TEST_TOKEN, which is not set"
    );
    assert!(sb.requests().is_empty(), "{:?}", sb.requests());

    // Wrong: the platform's 401, in one line, and nothing changed.
    let out = run_with_token(&w, Some("wrong"), &["apply", ".", "--yes"]);
    out.code(1);
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("capstan: error: cannot read the live state: GET /v1/"), "{err}");
    assert!(err.ends_with(" answered 401: missing or invalid Authorization header"), "{err}");
    let statuses: Vec<u64> = sb.requests().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(sb.mutating_requests().is_empty());

    // Right: applied, and every request was let in.
    sb.clear_requests();
    run_with_token(&w, Some("s3cret-t0ken"), &["apply", ".", "--yes"]).ok();
    let requests = sb.requests();
    assert!(requests.iter().any(|r| r["method"] == "POST"), "{requests:?}");
    assert!(requests.iter().all(|r| r["status"] != 401), "{requests:?}");
    let jobs: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/jobs", sb.url))
        .bearer_auth("s3cret-t0ken")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(jobs.as_array().unwrap().iter().any(|j| j["fqn"] == "job::/tok::web"), "{jobs}");
    run_with_token(&w, Some("s3cret-t0ken"), &["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn references_to_live_resources_are_accepted() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    // service::/apcera::http is one of the seed's system services.
    w.write("m.yaml", "jobs:\n  job::/d::web:\n    bindings:\n      http:\n        fqn: service::/apcera::http\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    let web = sb.job("job::/d::web").unwrap();
    assert!(web["bindings"].as_object().unwrap().values().any(|b| b["service_fqn"] == "service::/apcera::http"));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn the_sandbox_keeps_its_state_across_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("apcera.json");
    let file = file.to_str().unwrap();
    let sb = SandboxProc::start(&["--state", file]);
    let w = Workdir::from_example("examples/manifests/apcera");
    w.target(&sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let uuid = sb.job("job::/dev/shop::web").unwrap()["uuid"].clone();
    sb.stop();

    let sb = SandboxProc::start(&["--state", file]);
    let w2 = Workdir::from_example("examples/manifests/apcera");
    w2.target(&sb.url);
    w2.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    assert_eq!(sb.job("job::/dev/shop::web").unwrap()["uuid"], uuid);
}

#[test]
fn the_embedded_sandbox_keeps_state_between_two_applies() {
    let w = Workdir::from_example("examples/manifests/apcera");
    let first = w.capstan(&["apply", ".", "--yes"]);
    first.ok();
    assert!(first.stderr.contains("embedded apcera sandbox"), "{}", first.stderr);
    assert!(w.path().join(".capstan/.gitignore").exists());
    let second = w.capstan(&["apply", ".", "--yes"]);
    second.ok();
    assert!(second.stdout.contains("No changes."), "{}", second.stdout);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn apply_refuses_without_yes_when_nobody_can_confirm() {
    let (sb, w) = example();
    let out = w.capstan(&["apply", "."]);
    out.code(1);
    assert!(out.stderr.contains("refusing to apply without --yes"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty());
}

#[test]
fn an_unreachable_target_is_one_plain_line() {
    let w = Workdir::from_example("examples/manifests/apcera");
    // Port 1 on loopback: nothing listens there.
    w.target("http://127.0.0.1:1");
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    let err = out.stderr.trim();
    assert!(err.contains("cannot read the live state: GET /v1/"), "{err}");
    assert!(err.contains("cannot connect to http://127.0.0.1:1"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn the_json_plan_follows_its_schema() {
    let (_sb, w) = example();
    let plan = plan_json(&w, &[]);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/plan.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&plan).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(plan["format_version"], "1.0");
    assert_eq!(plan["summary"]["create"], 10);
}

/// Run capstan in `dir` with `RUST_LOG` set; returns the run.
fn capstan_logged(dir: &std::path::Path, rust_log: &str, args: &[&str]) -> Run {
    run_with_env(dir, args, &[("RUST_LOG", Some(rust_log))])
}

/// Every line of `stderr` is one JSON object with a level and a message (or fields).
fn json_lines(what: &str, stderr: &str) -> Vec<Value> {
    assert!(!stderr.is_empty(), "{what} wrote nothing to stderr");
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: a stderr line is not JSON ({e}): {line:?}\n{stderr}"));
            assert!(v.is_object(), "{what}: not an object: {line}");
            assert!(v["level"].is_string() && v["fields"].is_object(), "{what}: no level or fields: {line}");
            v
        })
        .collect()
}

#[test]
fn with_log_format_json_every_line_of_stderr_is_one_json_object() {
    let (_sb, w) = example();
    let messages = |lines: &[Value]| -> Vec<String> {
        lines.iter().filter_map(|l| l["fields"]["message"].as_str().map(str::to_string)).collect()
    };

    let plan = capstan_logged(w.path(), "capstan=info", &["plan", ".", "--log-format", "json"]);
    plan.ok();
    let lines = json_lines("plan", &plan.stderr);
    assert!(messages(&lines).iter().any(|m| m.starts_with("Planning against target sandbox")), "{}", plan.stderr);
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "planned" && l["fields"]["steps"].is_number()),
        "{}",
        plan.stderr
    );

    let apply = capstan_logged(w.path(), "capstan=debug", &["--log-format", "json", "apply", ".", "--yes"]);
    apply.ok();
    let lines = json_lines("apply", &apply.stderr);
    assert!(messages(&lines).iter().any(|m| m.starts_with("Applying to target sandbox")), "{}", apply.stderr);

    // Errors and their diagnostics, one object each, at their level.
    w.write("broken.yaml", "jobs:\n  job::::broken:\n    stat: started\n");
    let invalid = capstan_logged(w.path(), "capstan=info", &["plan", ".", "--log-format", "json"]);
    invalid.code(1);
    let lines = json_lines("an invalid plan", &invalid.stderr);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["fields"]["message"].as_str().unwrap().starts_with("broken.yaml:3:5: error: unknown field `stat`")),
        "{}",
        invalid.stderr
    );
    assert!(messages(&lines).iter().any(|m| m.contains("error(s) in the manifests; nothing was applied")));
    assert!(!invalid.stderr.contains('\x1b'), "no colour inside JSON");
}

#[test]
fn what_a_person_marks_capstan_prune_false_is_never_pruned() {
    let (sb, w) = example();
    // A mark written in the manifest: the description of a kind without labels.
    let services = w.read("services.yaml");
    w.write(
        "services.yaml",
        &format!("{services}  service::::archive:\n    type: postgres\n    provider_fqn: provider::/apcera/providers::postgres\n    description: Old orders [capstan-prune=false] kept for audits.\n"),
    );
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    // A mark put on by hand: the label of a live job. Not drift, and kept by capstan's writes.
    let mut scheduler = sb.job("job::/dev/shop::scheduler").unwrap();
    scheduler["labels"]["capstan-prune"] = json!("false");
    let (status, _) = sb.send("PUT", &format!("/v1/jobs/{}", scheduler["uuid"].as_str().unwrap()), Some(&scheduler));
    assert!(status < 300, "{status}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.write("jobs/worker.yaml", &w.read("jobs/worker.yaml").replace("--every ${EVERY}", "--every ${EVERY} --quiet"));
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(sb.job("job::/dev/shop::scheduler").unwrap()["labels"]["capstan-prune"], "false");

    // Neither declared any more: pruning leaves both, and the plan says why.
    let worker = w.read("jobs/worker.yaml");
    w.write("jobs/worker.yaml", worker.split("\n---\n").next().unwrap());
    w.write("services.yaml", &services);
    let plan = plan_json(&w, &["--prune"]);
    assert!(changed(&plan).is_empty(), "{:?}", changed(&plan));
    assert_eq!(
        plan["kept"],
        json!([
            {"address": "service::/dev/shop::archive", "reason": "marked to be kept (its description carries [capstan-prune=false])"},
            {"address": "job::/dev/shop::scheduler", "reason": "marked to be kept (label capstan-prune: \"false\")"}
        ])
    );
    let out = w.capstan(&["apply", ".", "--yes", "--prune"]);
    out.ok();
    assert!(
        out.stdout.contains("2 resource(s) created by this owner are no longer declared, and pruning leaves them"),
        "{}",
        out.stdout
    );
    assert!(sb.job("job::/dev/shop::scheduler").is_some());
    assert!(sb.get("/v1/services").as_array().unwrap().iter().any(|s| s["fqn"] == "service::/dev/shop::archive"));
}
