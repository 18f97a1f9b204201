//! The Marathon provider through the real binary, against a real Marathon sandbox process over
//! HTTP: convergence in dependency order, normalisation (apply → plan is empty), one-call
//! observing, deployment locks (wait, or --force), Marathon's own dry run beside the plan,
//! cycles, pruning and ownership, the embedded sandbox, and rollback.

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Point the manifests at a Marathon sandbox.
fn target(w: &Workdir, url: &str) {
    let path = w.path().join("capstan.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&format!(
        "\ntargets:\n  sandbox:\n    platform: marathon\n    url: {url}\ndefault_target: sandbox\n"
    ));
    std::fs::write(path, text).unwrap();
}

fn example(extra: &[&str]) -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start_platform("marathon", extra);
    let w = Workdir::from_example("examples/manifests/marathon");
    target(&w, &sb.url);
    (sb, w)
}

fn apps(sb: &SandboxProc) -> Vec<Value> {
    sb.get("/v2/apps")["apps"].as_array().cloned().unwrap_or_default()
}

fn app(sb: &SandboxProc, id: &str) -> Value {
    sb.get(&format!("/v2/apps{id}"))["app"].clone()
}

/// Sequence numbers of the sandbox's requests matching a method and path.
fn seqs(sb: &SandboxProc, method: &str, path: &str) -> Vec<u64> {
    sb.requests()
        .iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_example_converges_in_dependency_order_and_then_plans_empty() {
    let (sb, w) = example(&["--rollout-ms", "40"]);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    let ids: Vec<String> = apps(&sb).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    for id in ["/shop/database/postgres", "/shop/backend/api", "/shop/backend/worker", "/shop/frontend/web"] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
    let web = app(&sb, "/shop/frontend/web");
    assert_eq!(web["instances"], 3);
    assert_eq!(web["labels"]["capstan-owner"], "shop");
    assert_eq!(web["env"]["SERVER_NAME"], "shop.example.com");
    let api = app(&sb, "/shop/backend/api");
    assert_eq!(api["cmd"], "./api --port ${PORT0} --db postgres.database.shop.marathon.mesos", "task variables stay");
    let groups = sb.get("/v2/groups/shop/frontend");
    assert_eq!(groups["dependencies"], json!(["/shop/backend"]));
    let backend = sb.get("/v2/groups/shop/backend");
    assert_eq!(backend["dependencies"], json!(["/shop/database"]));

    // The order follows the dependencies: a dependency's deployment was over before the change
    // to its dependent was sent.
    let put = |id: &str| seqs(&sb, "PUT", &format!("/v2/apps{id}"))[0];
    let (db, api, worker, web) = (
        put("/shop/database/postgres"),
        put("/shop/backend/api"),
        put("/shop/backend/worker"),
        put("/shop/frontend/web"),
    );
    assert!(db < api && api < worker && worker < web, "db {db}, api {api}, worker {worker}, web {web}");
    // Observing is one call: one per plan or apply, and one more for the apply's read-back of
    // what it changed (`engine::verify`).
    assert_eq!(seqs(&sb, "GET", "/v2/groups").len(), 4, "one GET /v2/groups per plan or apply, and the read-back");
}

#[test]
fn a_no_op_plan_is_one_request_and_one_change_is_exactly_that_change() {
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    sb.clear_requests();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    let reqs = sb.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0]["path"], "/v2/groups");

    let text = w.read("frontend.json").replace("\"instances\": 3", "\"instances\": 5");
    w.write("frontend.json", &text);
    let out = w.capstan(&["plan", ".", "--output", "json"]);
    out.ok();
    let plan = out.json();
    assert_eq!(changed(&plan), vec![("update".to_string(), "app /shop/frontend/web".to_string())]);
    let change = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["action"] == "update").unwrap();
    assert_eq!(change["changes"], json!([{ "path": "instances", "before": 3, "after": 5 }]));
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(app(&sb, "/shop/frontend/web")["instances"], 5);
    // The assigned port was kept, not traded for a new one.
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn marathons_dry_run_is_shown_beside_the_plan_and_agrees() {
    let (sb, w) = example(&[]);
    let out = w.capstan(&["plan", "."]);
    out.ok();
    assert!(out.stdout.contains("The platform's own preview (PUT /v2/groups/shop?dryRun=true)"), "{}", out.stdout);
    assert!(out.stdout.contains("StartApplication /shop/frontend/web"), "{}", out.stdout);
    assert!(out.stdout.contains("It agrees with capstan's plan."), "{}", out.stdout);
    assert!(sb.mutating_requests().iter().all(|r| r["query"] == "dryRun=true"), "a plan changes nothing");
    assert!(apps(&sb).is_empty());

    let plan = w.capstan(&["plan", ".", "--output", "json"]).json();
    let preview = &plan["platform_preview"];
    assert_eq!(preview["request"], "PUT /v2/groups/shop?dryRun=true");
    assert_eq!(preview["disagreements"], json!([]));
    let steps: Vec<Vec<(String, String)>> = preview["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|a| (a["action"].as_str().unwrap().into(), a["resource"].as_str().unwrap().into()))
                .collect()
        })
        .collect();
    let first = |action: &str, app: &str| {
        steps.iter().position(|s| s.iter().any(|(a, r)| a == action && r == &format!("app {app}"))).unwrap()
    };
    assert!(first("ScaleApplication", "/shop/database/postgres") < first("ScaleApplication", "/shop/backend/api"));
    assert!(first("ScaleApplication", "/shop/backend/api") < first("ScaleApplication", "/shop/frontend/web"));

    // Changed by hand on the platform (drift), the preview says what Marathon would do to it.
    w.capstan(&["apply", ".", "--yes"]).ok();
    let (code, _) = sb.send("PUT", "/v2/apps/shop/frontend/web", Some(&json!({ "cmd": "sleep 1000" })));
    assert!(code < 300, "{code}");
    let out = w.capstan(&["plan", "."]);
    assert!(out.stdout.contains("RestartApplication /shop/frontend/web"), "{}", out.stdout);
}

#[test]
fn a_change_to_an_app_a_deployment_holds_waits_for_it_or_forces_through() {
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let slow = json!({ "rollout_ms": 1500 });
    let (code, _) = sb.send("PUT", "/_sandbox/faults", Some(&slow));
    assert_eq!(code, 200);

    // Someone else's deployment is running on web...
    let (code, body) = sb.send("PUT", "/v2/apps/shop/frontend/web", Some(&json!({ "instances": 4 })));
    assert!(code < 300, "{code} {body}");
    let text = w.read("frontend.json").replace("\"instances\": 3", "\"instances\": 6");
    w.write("frontend.json", &text);
    // ...so capstan's change is refused with 409, waits for it, and then goes through.
    let started = Instant::now();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "waited for the running deployment: {took:?}");
    let refused =
        sb.requests().iter().filter(|r| r["path"] == "/v2/apps/shop/frontend/web" && r["status"] == 409).count();
    assert!(refused >= 1, "the sandbox refused it first");
    assert_eq!(app(&sb, "/shop/frontend/web")["instances"], 6);

    // With --force, the change goes through at once.
    let (code, _) = sb.send("PUT", "/v2/apps/shop/frontend/web", Some(&json!({ "instances": 2 })));
    assert!(code < 300);
    sb.clear_requests();
    let started = Instant::now();
    let w2 = w.read("frontend.json").replace("\"instances\": 6", "\"instances\": 7");
    w.write("frontend.json", &w2);
    w.capstan(&["apply", ".", "--yes", "--force"]).ok();
    let puts: Vec<Value> = sb
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "PUT" && r["path"] == "/v2/apps/shop/frontend/web")
        .collect();
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(puts[0]["query"], "force=true");
    assert_eq!(puts[0]["status"], 200);
    assert!(started.elapsed() < Duration::from_millis(1500) + Duration::from_millis(1400), "not blocked");
    assert_eq!(app(&sb, "/shop/frontend/web")["instances"], 7);
}

#[test]
fn a_dependency_cycle_is_an_error_naming_both_places_and_nothing_is_sent() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = Workdir::new();
    w.write("a.yaml", "id: /a\ndependencies: [/b]\napps:\n  - {id: x, cmd: run}\n");
    w.write(
        "b.json",
        "{\n  \"id\": \"/b\",\n  \"dependencies\": [\"../a\"],\n  \"apps\": [{\"id\": \"y\", \"cmd\": \"run\"}]\n}\n",
    );
    target(&w, &sb.url);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("cycle"), "{}", out.stderr);
    assert!(out.stderr.contains("a.yaml:2:"), "{}", out.stderr);
    assert!(out.stderr.contains("b.json:3:"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty());
}

#[test]
fn bad_input_names_its_place_and_sends_nothing() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = Workdir::new();
    target(&w, &sb.url);
    w.write("web.json", "{\n  \"id\": \"web\",\n  \"cmd\": \"run\",\n  \"instancez\": 2\n}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("web.json:4:3") && out.stderr.contains("did you mean `instances`"), "{}", out.stderr);
    w.write("web.json", "{\"id\": \"Web_1\", \"cmd\": \"run\"}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("not a valid Marathon id"), "{}", out.stderr);
    w.write("web.json", "{\"id\": \"web\", \"cmd\": \"run ${UNSET}\"}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("web.json:1:") && out.stderr.contains("UNSET"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty());
}

#[test]
fn prune_deletes_only_what_this_owner_made() {
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let (code, _) =
        sb.send("PUT", "/v2/apps/shop/frontend/handmade", Some(&json!({ "cmd": "sleep 1", "instances": 1 })));
    assert!(code < 300);
    w.remove("frontend.json");
    let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
    assert_eq!(changed(&plan), vec![("delete".to_string(), "app /shop/frontend/web".to_string())]);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    let ids: Vec<String> = apps(&sb).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert!(!ids.contains(&"/shop/frontend/web".to_string()), "{ids:?}");
    assert!(ids.contains(&"/shop/frontend/handmade".to_string()), "{ids:?}");
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

#[test]
fn the_embedded_sandbox_serves_marathon_and_keeps_its_state() {
    let w = Workdir::from_example("examples/manifests/marathon");
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    assert!(w.path().join(".capstan/sandbox-marathon.json").exists());
}

#[test]
fn rollback_applies_an_earlier_commit_again() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let repo = common::git::Repo::new();
    repo.write(
        "capstan.yaml",
        &format!("targets:\n  m:\n    platform: marathon\n    url: {}\ndefault_target: m\n", sb.url),
    );
    repo.write("web.yaml", "id: /web\ncmd: run\ninstances: 2\n");
    let first = repo.commit("two instances");
    repo.write("web.yaml", "id: /web\ncmd: run\ninstances: 5\n");
    repo.commit("five instances");
    let dir = repo.path().to_str().unwrap().to_string();
    run_in(repo.path(), &["apply", "--repo", &dir, "--yes"]).ok();
    assert_eq!(app(&sb, "/web")["instances"], 5);

    let out = run_in(repo.path(), &["rollback", "--repo", &dir, "--to", &first, "--yes"]);
    out.ok();
    assert!(out.stderr.contains(&first), "{}", out.stderr);
    assert!(out.stdout.contains("instances"), "the usual preview: {}", out.stdout);
    assert_eq!(app(&sb, "/web")["instances"], 2);
    // Without --yes and no terminal, it refuses like apply.
    run_in(repo.path(), &["rollback", "--repo", &dir, "--to", "HEAD"]).code(1);
    assert_eq!(app(&sb, "/web")["instances"], 2);
}

#[test]
fn the_json_plan_with_marathons_preview_follows_the_plan_schema() {
    let (_sb, w) = example(&[]);
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/plan.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let plan = w.capstan(&["plan", ".", "--output", "json"]).json();
    assert_eq!(plan["platform"], "marathon");
    assert!(plan["platform_preview"].is_object());
    let errors: Vec<String> = validator.iter_errors(&plan).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the markdown report carries the preview.
    let md = w.capstan(&["plan", ".", "--output", "markdown"]);
    md.ok();
    assert!(
        md.stdout.contains("The platform's own preview (<code>PUT /v2/groups/shop?dryRun=true</code>)"),
        "{}",
        md.stdout
    );
    assert!(md.stdout.contains("StartApplication `app /shop/frontend/web`"), "{}", md.stdout);
}

#[test]
fn the_example_converges_through_injected_failures_and_dropped_connections() {
    for seed in ["1", "2", "3"] {
        let (sb, w) = example(&["--fail-rate", "0.1", "--reset-rate", "0.1", "--seed", seed, "--rollout-ms", "20"]);
        w.capstan(&["apply", ".", "--yes"]).ok();
        let (code, _) = sb.send("PUT", "/_sandbox/faults", Some(&json!({})));
        assert_eq!(code, 200);
        w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
        let mut ids: Vec<String> = apps(&sb).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["/shop/backend/api", "/shop/backend/worker", "/shop/database/postgres", "/shop/frontend/web"]);
    }
}

#[test]
fn a_deployment_that_outlasts_its_timeout_fails_its_step_with_one_line() {
    let (_sb, w) = example(&["--rollout-ms", "4000"]);
    let mut config = w.read("capstan.yaml");
    config.push_str("timeouts: {app: 1}\n");
    w.write("capstan.yaml", &config);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let line = out.stdout.lines().find(|l| l.contains("ERROR") && l.contains("/shop/database/postgres")).unwrap_or("");
    assert!(line.contains("still running after 1s"), "{}", out.stdout);
    assert!(line.contains("database.json:"), "names where it is declared: {line}");
    // A kind Marathon does not wait for is not a timeout it can take.
    let config = w.read("capstan.yaml").replace("timeouts: {app: 1}", "timeouts: {job: 1}");
    w.write("capstan.yaml", &config);
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    assert!(out.stderr.contains("job"), "{}", out.stderr);
}

#[test]
fn a_dependency_on_what_the_plan_prunes_is_an_error_at_its_place() {
    // Issue 12, item 1, on Marathon: a dependency declared nowhere orders nothing (Marathon
    // accepts one on nothing), but pruning what it names would break what is declared.
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    // The backend group depends on ../database; without database.json, the group is pruned.
    let database = w.read("database.json");
    w.remove("database.json");
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes", "--prune"]);
    out.code(1);
    let expect = "backend.yaml:3:16: error: group /shop/backend points at group /shop/database, which this plan deletes (pruned: no longer declared, with the 1 resource under it)";
    assert!(out.stderr.contains(expect), "expected {expect:?} in:\n{}", out.stderr);
    w.write("database.json", &database);
    // The worker app depends on the api app; without it, the api app is pruned.
    let backend = w.read("backend.yaml");
    let (head, worker) = backend.split_once("  - id: api").unwrap();
    let worker = &worker[worker.find("  - id: worker").unwrap()..];
    w.write("backend.yaml", &format!("{head}{worker}"));
    let out = w.capstan(&["plan", ".", "--prune"]);
    out.code(1);
    assert!(
        out.stderr.contains("app /shop/backend/worker points at app /shop/backend/api, which this plan deletes"),
        "{}",
        out.stderr
    );
    assert_eq!(sb.mutating_requests(), Vec::<Value>::new());
    // Without --prune nothing is deleted: the same manifests plan fine.
    w.capstan(&["plan", "."]).ok();
}

#[test]
fn an_app_another_owner_marks_is_taken_over_only_with_take_ownership() {
    // Issue 12, item 5, on Marathon.
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("capstan.yaml", &w.read("capstan.yaml").replace("owner: shop", "owner: team-b"));
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(
        out.stderr.contains("error: app /shop/frontend/web is marked as owner \"shop\"'s (capstan-owner), and this configuration's owner is \"team-b\""),
        "{}",
        out.stderr
    );
    assert!(sb.mutating_requests().is_empty());
    let plan = w.capstan(&["plan", ".", "--take-ownership", "-o", "json"]);
    plan.ok();
    let plan = plan.json();
    let changed = changed(&plan);
    assert_eq!(changed.len(), 4, "{changed:?}");
    assert!(
        changed.iter().all(|(action, address)| action == "update" && address.starts_with("app /shop/")),
        "{changed:?}"
    );
    for c in plan["resource_changes"].as_array().unwrap().iter().filter(|c| c["action"] == "update") {
        assert_eq!(c["changes"], json!([{ "path": "capstan-owner", "before": "shop", "after": "team-b" }]), "{c}");
    }
    w.capstan(&["apply", ".", "--yes", "--take-ownership"]).ok();
    assert_eq!(app(&sb, "/shop/frontend/web")["labels"]["capstan-owner"], "team-b");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}
