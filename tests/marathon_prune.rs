//! Pruning on Marathon never deletes what is declared (issue 11): the workload Marathon's own
//! deployers are measured on — apps in groups `/bench/gNN`, each app of gNN depending on
//! `../gNN-1` — in its two forms (one file per app; one file per group), through the real
//! binary against a real Marathon sandbox. Also what a deletion counts, what a person keeps,
//! dependencies on groups that only app ids imply, waits that follow the version Marathon
//! answers, and a group document's apps deployed together where Marathon runs them together.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// One JSON file per app.
    Apps,
    /// One JSON file per group, `{"id": "/bench/gNN", "apps": [...]}`.
    Groups,
}

fn bench_app(g: usize, a: usize) -> Value {
    let mut app =
        json!({"id": format!("a{a}"), "cmd": "./serve --port $PORT0", "instances": 1, "cpus": 0.1, "mem": 32});
    if g > 0 {
        app["dependencies"] = json!([format!("../g{:02}", g - 1)]);
    }
    app
}

/// The workload: `groups` groups of `apps` apps, written in `form`, aimed at `sb`.
fn workload(sb: &SandboxProc, form: Form, groups: usize, apps: usize) -> Workdir {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: bench\n");
    w.target_platform("marathon", &sb.url);
    for g in 0..groups {
        write_group(&w, form, g, apps);
    }
    w
}

fn write_group(w: &Workdir, form: Form, g: usize, apps: usize) {
    match form {
        Form::Apps => {
            for a in 0..apps {
                let mut app = bench_app(g, a);
                app["id"] = json!(format!("/bench/g{g:02}/a{a}"));
                w.write(&format!("g{g:02}/a{a}.json"), &serde_json::to_string_pretty(&app).unwrap());
            }
        }
        Form::Groups => {
            let list: Vec<Value> = (0..apps).map(|a| bench_app(g, a)).collect();
            let doc = json!({"id": format!("/bench/g{g:02}"), "apps": list});
            w.write(&format!("g{g:02}.json"), &serde_json::to_string_pretty(&doc).unwrap());
        }
    }
}

fn app_ids(sb: &SandboxProc) -> Vec<String> {
    let apps = sb.get("/v2/apps")["apps"].as_array().cloned().unwrap_or_default();
    let mut ids: Vec<String> = apps.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn deletes(sb: &SandboxProc) -> Vec<String> {
    sb.requests().iter().filter(|r| r["method"] == "DELETE").map(|r| r["path"].as_str().unwrap().to_string()).collect()
}

/// A Marathon time (`2014-03-01T23:17:50.295Z`) in Unix milliseconds.
fn unix_ms(t: &str) -> u64 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as u64
}

#[test]
fn the_bench_workload_in_both_forms_survives_apply_with_prune() {
    for form in [Form::Apps, Form::Groups] {
        let sb = SandboxProc::start_platform("marathon", &[]);
        let w = workload(&sb, form, 2, 10);
        w.capstan(&["apply", ".", "--yes"]).ok();
        w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
        let before = app_ids(&sb);
        assert_eq!(before.len(), 20);
        // Nothing is no longer declared: pruning has nothing to do, and says so.
        let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
        assert_eq!(changed(&plan), Vec::<(String, String)>::new(), "{plan:#}");
        assert_eq!(plan["orphans"], json!([]), "a group above declared apps is no orphan");
        sb.clear_requests();
        w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
        assert_eq!(deletes(&sb), Vec::<String>::new());
        assert_eq!(app_ids(&sb), before);
        w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    }
}

#[test]
fn prune_deletes_exactly_one_undeclared_app_or_the_apps_of_one_removed_group_file() {
    // One app file gone: that app, and nothing else.
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = workload(&sb, Form::Apps, 2, 10);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.remove("g01/a3.json");
    let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
    assert_eq!(changed(&plan), vec![("delete".to_string(), "app /bench/g01/a3".to_string())]);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(deletes(&sb), vec!["/v2/apps/bench/g01/a3".to_string()]);
    assert_eq!(app_ids(&sb).len(), 19);
    assert!(!app_ids(&sb).contains(&"/bench/g01/a3".to_string()));

    // One group file gone: that group and its apps, in one group delete.
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = workload(&sb, Form::Groups, 2, 10);
    w.write("capstan.yaml", &format!("{}mass_delete: {{max_deletes: 20, max_percent: 60}}\n", w.read("capstan.yaml")));
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.remove("g01.json");
    let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
    assert_eq!(changed(&plan), vec![("delete".to_string(), "group /bench/g01".to_string())]);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(deletes(&sb), vec!["/v2/groups/bench/g01".to_string()]);
    let expected: Vec<String> = (0..10).map(|a| format!("/bench/g00/a{a}")).collect();
    assert_eq!(app_ids(&sb), expected);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_group_delete_counts_everything_it_removes_and_25_apps_are_refused() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = workload(&sb, Form::Groups, 1, 2);
    let list: Vec<Value> = (0..25).map(|a| json!({"id": format!("a{a}"), "cmd": "run", "instances": 0})).collect();
    w.write("big.json", &json!({"id": "/bench/big", "apps": list}).to_string());
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.remove("big.json");
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes", "--prune"]);
    out.code(1);
    assert!(out.stderr.contains("refusing to delete 26 of the 29 resources"), "{}", out.stderr);
    assert!(sb.mutating_requests().iter().all(|r| r["query"] == "dryRun=true"), "nothing was changed");
    assert_eq!(app_ids(&sb).len(), 27);
}

#[test]
fn apps_depending_on_an_implied_group_wait_for_all_of_its_apps() {
    let sb = SandboxProc::start_platform("marathon", &["--rollout-ms", "30"]);
    let w = workload(&sb, Form::Apps, 20, 2);
    let plan = w.capstan(&["plan", ".", "--output", "json"]).json();
    let phases = plan["plan"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 20, "one level per group");
    for (n, p) in phases.iter().enumerate() {
        let steps: Vec<&str> = p["steps"].as_array().unwrap().iter().map(|s| s["resource"].as_str().unwrap()).collect();
        assert!(steps.iter().all(|s| s.starts_with(&format!("app /bench/g{n:02}/"))), "phase {n}: {steps:?}");
    }
    w.capstan(&["apply", ".", "--yes"]).ok();
    // When each app's tasks began running (its deployment was done), and when its PUT came.
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    for t in sb.get("/v2/tasks")["tasks"].as_array().unwrap() {
        let at = unix_ms(t["startedAt"].as_str().expect("running"));
        let e = running.entry(t["appId"].as_str().unwrap().to_string()).or_default();
        *e = (*e).max(at);
    }
    let puts: BTreeMap<String, u64> = sb
        .requests()
        .iter()
        .filter(|r| r["method"] == "PUT" && r["query"] != "dryRun=true")
        .map(|r| (r["path"].as_str().unwrap().trim_start_matches("/v2/apps").to_string(), r["at_ms"].as_u64().unwrap()))
        .collect();
    assert_eq!(puts.len(), 40);
    for g in 1..20 {
        let before = (0..2).map(|a| running[&format!("/bench/g{:02}/a{a}", g - 1)]).max().unwrap();
        for a in 0..2 {
            let put = puts[&format!("/bench/g{g:02}/a{a}")];
            assert!(put >= before, "/bench/g{g:02}/a{a} was sent at {put}, before g{:02} ran at {before}", g - 1);
        }
    }
}

#[test]
fn a_dependency_on_nothing_declared_or_live_is_an_error_at_its_place() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = Workdir::new();
    w.target_platform("marathon", &sb.url);
    w.write("web.json", "{\n  \"id\": \"/shop/web\",\n  \"cmd\": \"run\",\n  \"dependencies\": [\"bakend\"]\n}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("web.json:4:20"), "{}", out.stderr);
    assert!(out.stderr.contains("/shop/bakend, which is neither declared nor live"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty());
    // Live is enough: Marathon orders by it, capstan leaves it alone.
    let (code, _) = sb.send("PUT", "/v2/apps/shop/bakend/api", Some(&json!({"cmd": "api"})));
    assert!(code < 300);
    w.capstan(&["apply", ".", "--yes"]).ok();
}

#[test]
fn an_app_a_person_marked_is_kept_and_the_plan_says_why() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = workload(&sb, Form::Apps, 1, 3);
    w.capstan(&["apply", ".", "--yes"]).ok();
    // The mark, put on by hand, is not drift, and survives capstan's own updates.
    let (code, _) = sb.send(
        "PUT",
        "/v2/apps/bench/g00/a1",
        Some(&json!({"labels": {"capstan-owner": "bench", "capstan-prune": "false"}})),
    );
    assert!(code < 300);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.write("g00/a1.json", &w.read("g00/a1.json").replace("\"mem\": 32", "\"mem\": 64"));
    w.capstan(&["apply", ".", "--yes"]).ok();
    let a1 = sb.get("/v2/apps/bench/g00/a1")["app"].clone();
    assert_eq!((a1["mem"].as_f64(), a1["labels"]["capstan-prune"].as_str()), (Some(64.0), Some("false")));

    w.remove("g00/a1.json");
    w.remove("g00/a2.json");
    let out = w.capstan(&["plan", ".", "--prune"]);
    out.ok();
    assert!(
        out.stdout.contains("app /bench/g00/a1: marked to be kept (label capstan-prune: \"false\")"),
        "{}",
        out.stdout
    );
    let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
    assert_eq!(changed(&plan), vec![("delete".to_string(), "app /bench/g00/a2".to_string())]);
    assert_eq!(
        plan["kept"],
        json!([{"address": "app /bench/g00/a1", "reason": "marked to be kept (label capstan-prune: \"false\")"}])
    );
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(app_ids(&sb), ["/bench/g00/a0", "/bench/g00/a1"]);
    // The group holding it is not deleted with it either.
    w.remove("g00/a0.json");
    w.write("other.json", "{\"id\": \"/elsewhere\", \"cmd\": \"run\"}");
    let plan = w.capstan(&["plan", ".", "--prune", "--output", "json"]).json();
    assert_eq!(
        changed(&plan),
        vec![
            ("delete".to_string(), "app /bench/g00/a0".to_string()),
            ("create".to_string(), "app /elsewhere".to_string())
        ]
    );
    let kept: Vec<&str> = plan["kept"].as_array().unwrap().iter().map(|k| k["address"].as_str().unwrap()).collect();
    assert_eq!(kept, ["group /bench/g00", "app /bench/g00/a1"]);
}

#[test]
fn a_group_delete_is_waited_for_although_marathon_answers_only_its_version() {
    let sb = SandboxProc::start_platform("marathon", &["--rollout-ms", "400"]);
    let w = workload(&sb, Form::Groups, 2, 2);
    w.write("capstan.yaml", &format!("{}mass_delete: {{max_deletes: 20, max_percent: 100}}\n", w.read("capstan.yaml")));
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.remove("g01.json");
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    let answer = sb.requests().into_iter().find(|r| r["method"] == "DELETE").unwrap();
    assert_eq!(answer["path"], "/v2/groups/bench/g01");
    // The apply ended only once Marathon was done: no deployment left, no task of the group.
    assert_eq!(sb.get("/v2/deployments"), json!([]));
    let tasks = sb.get("/v2/tasks")["tasks"].as_array().cloned().unwrap();
    assert!(tasks.iter().all(|t| t["appId"].as_str().unwrap().starts_with("/bench/g00/")), "{tasks:#?}");
    assert_eq!(sb.get("/v2/tasks")["tasks"].as_array().unwrap().len(), 2);
}

#[test]
fn the_dry_run_sends_apps_capstan_leaves_alone_exactly_as_read() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let w = Workdir::from_example("examples/manifests/marathon");
    w.target_platform("marathon", &sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    // Someone else's app beside capstan's, marked by another owner, its dependencies unsorted.
    let hand = json!({
        "cmd": "sleep 1000",
        "labels": {"capstan-owner": "someone-else"},
        "dependencies": ["/shop/frontend/web", "/shop/backend/api"]
    });
    let (code, _) = sb.send("PUT", "/v2/apps/shop/frontend/theirs", Some(&hand));
    assert!(code < 300);
    w.write("frontend.json", &w.read("frontend.json").replace("\"instances\": 3", "\"instances\": 4"));
    let plan = w.capstan(&["plan", ".", "--output", "json"]).json();
    assert_eq!(changed(&plan), vec![("update".to_string(), "app /shop/frontend/web".to_string())]);
    assert_eq!(plan["platform_preview"]["disagreements"], json!([]), "{:#}", plan["platform_preview"]);
}

/// Requests by method and path, `PUT /v2/apps/*` for one app's, dry runs apart.
fn tally(sb: &SandboxProc) -> BTreeMap<String, usize> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in sb.requests() {
        let path = r["path"].as_str().unwrap();
        let shape = if path.starts_with("/v2/apps/") { "/v2/apps/*" } else { path };
        let dry = if r["query"] == "dryRun=true" { "?dryRun" } else { "" };
        *by.entry(format!("{} {shape}{dry}", r["method"].as_str().unwrap())).or_default() += 1;
    }
    by
}

#[test]
fn a_group_documents_apps_go_in_one_deployment_where_marathon_runs_them_together() {
    // Marathon 1.x runs independent apps of one deployment in one step: each group's ten apps
    // are one PUT /v2/apps, once the first group's dry run has shown it.
    let sb = SandboxProc::start_platform("marathon", &["--grouped-steps", "--rollout-ms", "20"]);
    let w = workload(&sb, Form::Groups, 2, 10);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let t = tally(&sb);
    assert_eq!(t.get("PUT /v2/apps"), Some(&2), "{t:?}");
    assert_eq!(t.get("PUT /v2/apps/*"), None, "{t:?}");
    assert_eq!(t.get("PUT /v2/groups/bench/g00?dryRun"), Some(&1), "{t:?}");
    assert_eq!(t.get("PUT /v2/groups/bench/g01?dryRun"), None, "{t:?}");
    assert_eq!(app_ids(&sb).len(), 20);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    // A change to every app of one group: one request again.
    w.write("g01.json", &w.read("g01.json").replace("\"mem\": 32", "\"mem\": 48"));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let t = tally(&sb);
    assert_eq!((t.get("PUT /v2/apps"), t.get("PUT /v2/apps/*")), (Some(&1), None), "{t:?}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // Marathon as the seed shows it runs them one step each: after one dry run says so, they
    // go one by one, in parallel, as the plan's steps do.
    let sb = SandboxProc::start_platform("marathon", &["--rollout-ms", "20"]);
    let w = workload(&sb, Form::Groups, 2, 10);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let t = tally(&sb);
    assert_eq!((t.get("PUT /v2/apps/*"), t.get("PUT /v2/apps")), (Some(&20), None), "{t:?}");
    assert_eq!(t.get("PUT /v2/groups/bench/g00?dryRun"), Some(&1), "{t:?}");
    assert_eq!(t.get("PUT /v2/groups/bench/g01?dryRun"), None, "{t:?}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}
