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
fn what_can_never_apply_is_an_error_at_its_place_offline_and_before_any_request() {
    // Issue 12, item 8: a job listed in two networks validated, then failed with a 409 on every
    // apply; a binding and a link of one job with one name could never both exist.
    let two_networks = (
        "net.yaml",
        "networks:\n  network::/d::a:\n    jobs: [job::/d::ok]\n  network::/d::b:\n    jobs:\n      - job::/d::ok\n",
    );
    let expect = "net.yaml:6:9: error: membership job::/d::ok -> network::/d::b cannot be declared with membership job::/d::ok -> network::/d::a: both take the network of job::/d::ok (a job is on one network at most)";
    rejected(&[GOOD, two_networks], expect);
    let one_name = (
        "web.yaml",
        "jobs:\n  job::/d::web:\n    bindings:\n      db: {fqn: service::/apcera::http}\n    links:\n      db: {fqn: job::/d::ok, port: 80}\n",
    );
    let expect = "web.yaml:6:7: error: link job::/d::web -> job::/d::ok:80 cannot be declared with binding job::/d::web -> service::/apcera::http: both take the name \"db\" among the bindings and links of job::/d::web";
    rejected(&[GOOD, one_name], expect);
    // validate says so too, with no target at all, naming the other place.
    for ((file, content), note) in [
        (two_networks, "net.yaml:3:12: note: membership job::/d::ok -> network::/d::a is declared here"),
        (one_name, "web.yaml:4:7: note: binding job::/d::web -> service::/apcera::http is declared here"),
    ] {
        let w = Workdir::new();
        w.write(GOOD.0, GOOD.1);
        w.write(file, content);
        let out = w.capstan(&["validate", "."]);
        out.code(1);
        assert!(out.stderr.contains(note), "expected {note:?} in:\n{}", out.stderr);
    }
}

#[test]
fn a_declared_reference_to_what_the_plan_deletes_is_an_error_before_any_request() {
    // Issue 12, item 1: the example minus jobs/worker.yaml, while the network still lists
    // job::::worker. `apply --yes --prune` deleted the job, then created a membership to it.
    let (sb, w) = example();
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.remove("jobs/worker.yaml");
    sb.clear_requests();
    for args in [&["plan", ".", "--prune"][..], &["apply", ".", "--yes", "--prune"][..]] {
        let out = w.capstan(args);
        out.code(1);
        let expect = "network.yaml:8:9: error: membership job::/dev/shop::worker -> network::/dev/shop::backend points at job::/dev/shop::worker, which this plan deletes (pruned: no longer declared)";
        assert!(out.stderr.contains(expect), "{args:?}: expected {expect:?} in:\n{}", out.stderr);
        assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
    }
    assert_eq!(sb.mutating_requests(), Vec::<Value>::new(), "no mutating request may be sent");
    assert!(sb.job("job::/dev/shop::worker").is_some());
    // Without --prune nothing is deleted, so the same manifests plan fine.
    w.capstan(&["plan", "."]).ok();
}

#[test]
fn references_through_links_bindings_services_and_providers_to_what_is_pruned_are_errors() {
    // The siblings of item 1: every kind of reference to a resource the plan prunes.
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    let files = [
        (
            "web.yaml",
            "jobs:\n  job::/s::web:\n    links: {API: {fqn: job::/s::api, port: 80}}\n    bindings: {db: {fqn: service::/s::db}}\n",
        ),
        ("api.yaml", "jobs:\n  job::/s::api: {}\n"),
        ("pgjob.yaml", "jobs:\n  job::/s::pgjob: {}\n"),
        ("db.yaml", "services:\n  service::/s::db: {type: postgres, provider_fqn: provider::/s::pg}\n"),
        (
            "pg.yaml",
            "providers:\n  provider::/s::pg:\n    type: postgres\n    backing_job_fqn: job::/s::pgjob\n    backing_job_port: 5432\n    parameters: {url: 'postgres://x'}\n",
        ),
    ];
    for (f, c) in files {
        w.write(f, c);
    }
    w.capstan(&["apply", ".", "--yes"]).ok();
    for (gone, expect) in [
        (
            "api.yaml",
            "web.yaml:3:24: error: link job::/s::web -> job::/s::api:80 points at job::/s::api, which this plan deletes",
        ),
        ("pgjob.yaml", "pg.yaml:4:22: error: provider::/s::pg points at job::/s::pgjob, which this plan deletes"),
        ("pg.yaml", "db.yaml:2:51: error: service::/s::db points at provider::/s::pg, which this plan deletes"),
        (
            "db.yaml",
            "web.yaml:4:26: error: binding job::/s::web -> service::/s::db points at service::/s::db, which this plan deletes",
        ),
    ] {
        let content = w.read(gone);
        w.remove(gone);
        let out = w.capstan(&["plan", ".", "--prune"]);
        out.code(1);
        assert!(out.stderr.contains(expect), "without {gone}: expected {expect:?} in:\n{}", out.stderr);
        w.write(gone, &content);
    }
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_resource_another_owner_marks_is_taken_over_only_with_take_ownership_and_the_plan_shows_it() {
    // Issue 12, item 5: a declaration whose owner differed from the live mark planned "no
    // changes", and an update silently rewrote the mark.
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: team-a\n");
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/o::web: {num_instances: 1}\nnetworks:\n  network::/o::net: {description: x}\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("capstan.yaml", &w.read("capstan.yaml").replace("owner: team-a", "owner: team-b"));
    sb.clear_requests();
    for args in [&["plan", "."][..], &["apply", ".", "--yes"][..]] {
        let out = w.capstan(args);
        out.code(1);
        for expect in [
            "m.yaml:2:3: error: job::/o::web is marked as owner \"team-a\"'s (capstan-owner), and this configuration's owner is \"team-b\"",
            "m.yaml:4:3: error: network::/o::net is marked as owner \"team-a\"'s",
            "pass --take-ownership to take it over",
        ] {
            assert!(out.stderr.contains(expect), "{args:?}: expected {expect:?} in:\n{}", out.stderr);
        }
    }
    // A change to a field is refused the same way: the update would rewrite the mark.
    w.write("m.yaml", &w.read("m.yaml").replace("num_instances: 1", "num_instances: 2"));
    w.capstan(&["apply", ".", "--yes"]).code(1);
    assert_eq!(sb.mutating_requests(), Vec::<Value>::new(), "no mutating request may be sent");
    assert_eq!(sb.job("job::/o::web").unwrap()["labels"]["capstan-owner"], "team-a");

    // With the flag the plan shows the mark changing hands: the job in place, the network (which
    // the API cannot update) by a replace.
    let plan = plan_json(&w, &["--take-ownership"]);
    assert_eq!(
        changed(&plan),
        [("replace".to_string(), "network::/o::net".to_string()), ("update".to_string(), "job::/o::web".to_string())]
    );
    let web = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "job::/o::web").unwrap();
    let owner = web["changes"].as_array().unwrap().iter().find(|c| c["path"] == "capstan-owner").unwrap();
    assert_eq!((&owner["before"], &owner["after"]), (&json!("team-a"), &json!("team-b")));
    let text = w.capstan(&["plan", ".", "--take-ownership"]);
    text.ok();
    assert!(text.stdout.contains("taken over from owner \"team-a\""), "{}", text.stdout);
    w.capstan(&["apply", ".", "--yes", "--take-ownership"]).ok();
    assert_eq!(sb.job("job::/o::web").unwrap()["labels"]["capstan-owner"], "team-b");
    assert_eq!(sb.job("job::/o::web").unwrap()["num_instances"], 2);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_binding_the_api_cannot_remove_fails_its_step_instead_of_reporting_success() {
    // Issue 12, item 7: Apcera's unbind takes a service; for a provider binding it answers 404,
    // which was counted as "already gone": apply said done and exited 0, the binding stayed, and
    // every later plan had changes. Now the 404 is read back, and the step fails.
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write(
        "pg.yaml",
        "jobs:\n  job::/b::pgjob: {}\nproviders:\n  provider::/b::pg: {type: postgres, backing_job_fqn: job::/b::pgjob, backing_job_port: 5432}\n",
    );
    w.write("web.yaml", "jobs:\n  job::/b::web:\n    bindings: {db: {fqn: provider::/b::pg}}\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("web.yaml", "jobs:\n  job::/b::web: {}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let expect = "ERROR delete binding job::/b::web -> provider::/b::pg";
    assert!(out.stdout.contains(expect), "expected {expect:?} in:\n{}", out.stdout);
    assert!(out.stdout.contains("POST /v1/unbind answered 404"), "{}", out.stdout);
    assert!(out.stdout.contains("read back, job::/b::web still has it, so it was not removed"), "{}", out.stdout);
    assert!(!out.stdout.contains("Apply complete"), "{}", out.stdout);
    let web = sb.job("job::/b::web").unwrap();
    assert_eq!(web["bindings"].as_object().map(|m| m.len()), Some(1), "the binding is still there: {web}");
}

#[test]
fn a_create_that_something_live_excludes_is_an_error_at_its_place() {
    // A sibling of item 8: the job is already on a network this configuration does not declare,
    // so joining the declared one could only answer 409, on every apply.
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/e::web: {}\nnetworks:\n  network::/e::mine:\n    jobs: [job::/e::web]\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    // Someone moves the job to a network of their own.
    let job = sb.job("job::/e::web").unwrap();
    let nets = sb.get("/v1/networks");
    let mine = nets.as_array().unwrap().iter().find(|n| n["fqn"] == "network::/e::mine").unwrap();
    let (juuid, nuuid) = (job["uuid"].as_str().unwrap(), mine["uuid"].as_str().unwrap());
    assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{juuid}/networks/{nuuid}"), None).0, 200);
    sb.send("POST", "/v1/networks", Some(&json!({"fqn": "network::/e::theirs"})));
    let body = json!({"job_fqn": "job::/e::web", "network_fqn": "network::/e::theirs"});
    assert_eq!(sb.send("POST", &format!("/v1/jobs/{juuid}/networks"), Some(&body)).0, 200);
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let expect = "m.yaml:5:12: error: membership job::/e::web -> network::/e::mine cannot be created while membership job::/e::web -> network::/e::theirs exists (both take the network of job::/e::web (a job is on one network at most)), which is not this plan's to remove";
    assert!(out.stderr.contains(expect), "expected {expect:?} in:\n{}", out.stderr);
    assert_eq!(sb.mutating_requests(), Vec::<Value>::new());
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
