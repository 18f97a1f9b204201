//! The tsuru provider through the real binary, against a real `capstan sandbox serve --platform
//! tsuru` process over HTTP: the example converges, private env values compare by hash and never
//! leak, env set by hand or by another manager survives, units scale per process, a cname moves
//! between apps in one apply, an unbind precedes an instance's deletion, a stream's `Error` line
//! fails its step, and a no-op plan's request count.

mod common;
use common::*;
use serde_json::{Value, json};

fn example(extra: &[&str]) -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start_platform("tsuru", extra);
    let w = Workdir::from_example("examples/manifests/tsuru");
    w.target_platform("tsuru", &sb.url);
    (sb, w)
}

fn env(sb: &SandboxProc, app: &str) -> Vec<Value> {
    sb.get(&format!("/1.0/apps/{app}/env")).as_array().cloned().unwrap_or_default()
}

fn var(sb: &SandboxProc, app: &str, name: &str) -> Option<Value> {
    env(sb, app).into_iter().find(|v| v["name"] == name)
}

fn units(sb: &SandboxProc, app: &str) -> Vec<String> {
    let mut u: Vec<String> = sb.get(&format!("/1.0/apps/{app}"))["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["processname"].as_str().unwrap().to_string())
        .collect();
    u.sort();
    u
}

/// Sequence numbers of the sandbox's requests matching a method and path.
fn seqs(sb: &SandboxProc, method: &str, path: &str) -> Vec<u64> {
    sb.requests()
        .iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

fn set_env(sb: &SandboxProc, app: &str, body: Value) {
    let (code, _) = sb.send("POST", &format!("/1.0/apps/{app}/env"), Some(&body));
    assert_eq!(code, 200);
}

#[test]
fn the_example_converges_and_every_kind_reads_back_equal() {
    let (sb, w) = example(&["--rollout-ms", "20"]);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    let app = sb.get("/1.0/apps/shop-web");
    assert_eq!(app["tags"], json!(["shop", "web", "capstan-owner=shop"]), "marked with the owner tag");
    assert_eq!(app["teamOwner"], "shop");
    assert_eq!(app["cname"], json!(["shop.example.com"]));
    assert_eq!(units(&sb, "shop-web"), ["web", "web", "worker"]);
    assert_eq!(var(&sb, "shop-web", "LOG_LEVEL").unwrap()["managedBy"], "shop");
    let pw = var(&sb, "shop-web", "DB_PASSWORD").unwrap();
    assert_eq!(pw["public"], false, "sent private");
    assert_eq!(var(&sb, "shop-web", "MYSQL_HOST").unwrap()["managedBy"], "mysql/shop-db", "the bind injected its env");
    let db = sb.get("/1.0/services/mysql/instances/shop-db");
    assert_eq!(db["apps"], json!(["shop-web"]));
    assert_eq!(db["jobs"], json!(["nightly-report"]));
    assert_eq!(db["planname"], "small");
    let job = sb.get("/1.13/jobs/nightly-report");
    assert_eq!(job["job"]["spec"]["schedule"], "0 3 * * *");
    assert_eq!(job["job"]["spec"]["container"]["image"], "registry.example/report:1.2");

    // The plan's JSON agrees: nothing left to change.
    let plan = w.capstan(&["plan", ".", "-o", "json"]).json();
    assert!(changed(&plan).is_empty(), "{:?}", changed(&plan));
}

#[test]
fn a_changed_private_value_shows_as_sensitive_changed_and_never_appears() {
    let (sb, w) = example(&[]);
    let (one, two) = ("pw-one-7d1f3a", "pw-two-9c2e8b");
    w.capstan(&["apply", ".", "--yes", "--var", &format!("DB_PASSWORD={one}")]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode", "--var", &format!("DB_PASSWORD={one}")]).code(0);

    let plan = w.capstan(&["plan", ".", "--detailed-exitcode", "--var", &format!("DB_PASSWORD={two}")]);
    plan.code(2);
    assert!(plan.stdout.contains("(sensitive, changed)"), "{}", plan.stdout);
    let json_plan = w.capstan(&["plan", ".", "-o", "json", "--var", &format!("DB_PASSWORD={two}")]);
    let markdown = w.capstan(&["plan", ".", "-o", "markdown", "--var", &format!("DB_PASSWORD={two}")]);
    let apply = w.capstan(&["apply", ".", "--yes", "--var", &format!("DB_PASSWORD={two}")]);
    apply.ok();
    w.capstan(&["plan", ".", "--detailed-exitcode", "--var", &format!("DB_PASSWORD={two}")]).code(0);

    // The sandbox has the new value (the plan above compared its hash), private.
    assert_eq!(var(&sb, "shop-web", "DB_PASSWORD").unwrap()["value"], "*** (private variable)");
    // Nowhere in capstan's output or stored files.
    for run in [&plan, &json_plan, &markdown, &apply] {
        for secret in [one, two] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{secret} leaked:\n{}{}",
                run.stdout,
                run.stderr
            );
        }
    }
    for f in files_under(w.path()) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if f.ends_with("capstan.yaml") {
            continue;
        }
        for secret in [one, two] {
            assert!(!text.contains(secret), "{secret} stored in {}", f.display());
        }
    }
    // Nor in what the platform shows to anyone who reads the env.
    assert!(!serde_json::to_string(&env(&sb, "shop-web")).unwrap().contains(two));
}

#[test]
fn env_set_by_hand_or_by_another_manager_survives_apply_and_prune() {
    let (sb, w) = example(&[]);
    w.capstan(&["apply", ".", "--yes"]).ok();
    set_env(&sb, "shop-web", json!({"envs": [{"name": "HAND", "value": "h"}], "noRestart": true}));
    set_env(&sb, "shop-web", json!({"envs": [{"name": "OTHER", "value": "o"}], "managedBy": "ops", "noRestart": true}));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // capstan drops LOG_LEVEL and adds MODE: only its own variables change.
    let apps = w.read("apps.yaml").replace("LOG_LEVEL: info", "MODE: web");
    w.write("apps.yaml", &apps);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert!(var(&sb, "shop-web", "LOG_LEVEL").is_none(), "capstan's own variable it no longer declares is gone");
    assert_eq!(var(&sb, "shop-web", "MODE").unwrap()["value"], "web");
    assert_eq!(var(&sb, "shop-web", "HAND").unwrap()["value"], "h");
    assert_eq!(var(&sb, "shop-web", "OTHER").unwrap()["managedBy"], "ops");
    w.capstan(&["plan", ".", "--detailed-exitcode", "--prune"]).code(0);
}

#[test]
fn units_scale_per_process_and_a_cname_moves_between_apps_in_one_apply() {
    let (sb, w) = example(&[]);
    w.write(
        "api.yaml",
        "apps:\n  shop-api:\n    platform: go\n    teamOwner: shop\n    units: {web: 1}\n    cnames: [api.example.com]\n",
    );
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(units(&sb, "shop-web"), ["web", "web", "worker"]);

    // web down to 1, worker up to 3; shop.example.com moves from shop-web to shop-api.
    let apps = w.read("apps.yaml").replace("units: {web: 2, worker: 1}", "units: {web: 1, worker: 3}");
    let apps = apps.replace("cnames: [\"${DOMAIN}\"]", "cnames: []");
    w.write("apps.yaml", &apps);
    w.write(
        "api.yaml",
        "apps:\n  shop-api:\n    platform: go\n    teamOwner: shop\n    units: {web: 1}\n    cnames: [api.example.com, shop.example.com]\n",
    );
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(units(&sb, "shop-web"), ["web", "worker", "worker", "worker"]);
    assert_eq!(sb.get("/1.0/apps/shop-web")["cname"], json!([]));
    assert_eq!(sb.get("/1.0/apps/shop-api")["cname"], json!(["api.example.com", "shop.example.com"]));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // Two declared apps cannot both hold one cname: refused before any request.
    w.write("apps.yaml", &w.read("apps.yaml").replace("cnames: []", "cnames: [shop.example.com]"));
    sb.clear_requests();
    let refused = w.capstan(&["plan", "."]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("cname shop.example.com is declared by app"), "{}", refused.stderr);
    assert_eq!(sb.mutating_count(), 0);
}

#[test]
fn an_unbind_precedes_the_deletion_of_an_instance() {
    let (sb, w) = example(&[]);
    w.write("cache.yaml", "serviceInstances:\n  redis/cache:\n    plan: basic\n    teamOwner: shop\n");
    let apps = w.read("apps.yaml").replace("binds: [mysql/shop-db]", "binds: [mysql/shop-db, redis/cache]");
    w.write("apps.yaml", &apps);
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(sb.get("/1.0/services/redis/instances/cache")["apps"], json!(["shop-web"]));
    assert!(var(&sb, "shop-web", "REDIS_HOST").is_some());

    w.remove("cache.yaml");
    w.write("apps.yaml", &w.read("apps.yaml").replace(", redis/cache]", "]"));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    let unbind = seqs(&sb, "DELETE", "/1.0/services/redis/instances/cache/shop-web");
    let delete = seqs(&sb, "DELETE", "/1.0/services/redis/instances/cache");
    assert!(!unbind.is_empty() && delete.len() == 1, "unbind {unbind:?}, delete {delete:?}");
    assert!(unbind[0] < delete[0], "the unbind ({unbind:?}) came before the delete ({delete:?})");
    assert!(var(&sb, "shop-web", "REDIS_HOST").is_none());
    let (code, _) = sb.send("GET", "/1.0/services/redis/instances/cache", None);
    assert_eq!(code, 404);
    w.capstan(&["plan", ".", "--detailed-exitcode", "--prune"]).code(0);
}

#[test]
fn a_stream_that_ends_with_an_error_line_fails_its_step_with_the_servers_text() {
    let (sb, w) = example(&[]);
    let (code, _) = sb.send(
        "PUT",
        "/_sandbox/faults",
        Some(&json!({"stream_error": {"path_contains": "/env", "message": "unit shop-web-1 failed to start"}})),
    );
    assert_eq!(code, 200);
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("unit shop-web-1 failed to start"), "{all}");
    assert!(var(&sb, "shop-web", "LOG_LEVEL").is_none(), "the failed env set changed nothing");
    // With the fault gone, the next apply finishes the job.
    sb.send("PUT", "/_sandbox/faults", Some(&json!({})));
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn a_no_op_plan_lists_each_kind_once_and_reads_each_declared_apps_env() {
    let (sb, w) = example(&[]);
    // An app nobody declares costs nothing to observe.
    let (code, _) = sb.send("POST", "/1.0/apps", Some(&json!({"name": "by-hand", "platform": "go"})));
    assert_eq!(code, 201);
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
        ["GET /1.0/apps", "GET /1.0/apps/shop-web/env", "GET /1.0/services/instances", "GET /1.13/jobs"],
        "one list per kind and one env read per declared app"
    );
}

#[test]
fn default_namespace_is_an_error_for_tsuru() {
    let w = Workdir::from_example("examples/manifests/tsuru");
    let text = w.read("capstan.yaml") + "default_namespace: /dev\n";
    w.write("capstan.yaml", &text);
    let out = w.capstan(&["validate", "."]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("default_namespace") && out.stderr.contains("tsuru"), "{}", out.stderr);
}

/// The daemon against tsuru: an app's fields, units and env changed or removed behind its
/// back, and the app deleted, are each put back by the next resync.
#[test]
fn the_daemon_heals_an_app_and_its_env_changed_or_deleted_out_of_band() {
    use common::git::{DaemonProc, Repo};
    const SECRET: &str = "pw-daemon-5e1c9a";
    let wait = std::time::Duration::from_secs(60);
    let sb = SandboxProc::start_platform("tsuru", &[]);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!(
            "owner: daemon-test\nvariables: {{DB_PASSWORD: {SECRET}}}\ntargets:\n  t:\n    platform: tsuru\n    url: {}\ndefault_target: t\n",
            sb.url
        ),
    );
    repo.write(
        "apps.yaml",
        "apps:\n  web:\n    platform: python\n    teamOwner: shop\n    description: front\n    units: {web: 2}\n    env:\n      LOG_LEVEL: info\n      DB_PASSWORD: {value: \"${DB_PASSWORD}\", private: true}\n",
    );
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "1s"], &[]);
    d.wait_for("the commit", wait, |d| d.status_of(&sha).as_deref() == Some("applied"));
    let healthy = |sb: &SandboxProc| {
        let (code, app) = sb.send("GET", "/1.0/apps/web", None);
        code == 200
            && app["description"] == "front"
            && units(sb, "web") == ["web", "web"]
            && var(sb, "web", "LOG_LEVEL").is_some_and(|v| v["value"] == "info" && v["managedBy"] == "daemon-test")
            && var(sb, "web", "DB_PASSWORD").is_some_and(|v| v["public"] == false)
    };
    assert!(healthy(&sb));
    // Each repair is waited for to its end (no drift left) before the next change, or that
    // change would land between the repair's step and its read-back.
    let repaired = |what: &str| {
        d.wait_for(what, wait, |_| healthy(&sb));
        d.wait_for("no drift left", wait, |d| d.get("/v1/status").1["drifted"] == json!([]));
    };
    let ok = |(code, body): (u16, Value)| assert_eq!(code, 200, "{body}");
    ok(sb.send("PUT", "/1.0/apps/web", Some(&json!({"description": "by hand"}))));
    repaired("the description to be put back");
    ok(sb.send("PUT", "/1.0/apps/web/units?process=web&units=3", None));
    repaired("the units to be put back");
    set_env(
        &sb,
        "web",
        json!({"envs": [{"name": "LOG_LEVEL", "value": "debug"}], "managedBy": "daemon-test", "noRestart": true}),
    );
    repaired("the env value to be put back");
    ok(sb.send("DELETE", "/1.0/apps/web/env?env=LOG_LEVEL&noRestart=true", None));
    repaired("the env var to be set again");
    ok(sb.send("DELETE", "/1.0/apps/web", None));
    repaired("the app to be created again");
    let (_, h) = d.get(&format!("/v1/history?sha={sha}"));
    let failed: Vec<&Value> = h.as_array().unwrap().iter().filter(|e| e["outcome"] == "failed").collect();
    assert!(failed.is_empty(), "{failed:?}");
    // The private value was applied again after the delete, and the daemon never shows or
    // stores it: not in its API's answers, not in any file of its state directory.
    for path in ["/v1/status", &format!("/v1/history?sha={sha}")] {
        assert!(!d.get(path).1.to_string().contains(SECRET), "{path} shows the secret");
    }
    // Nor in its event stream: every event from the first (`Last-Event-ID: 0`), read until
    // the daemon stops and closes the stream.
    let url = format!("{}/v1/events", d.url);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
        let resp = client.get(url).header("Last-Event-ID", "0").send().unwrap();
        ready_tx.send(()).unwrap();
        resp.text().unwrap()
    });
    ready_rx.recv_timeout(wait).expect("the event stream answers");
    d.stop();
    let events = reader.join().unwrap();
    assert!(events.contains("\"converged\""), "the stream carried the daemon's events: {events}");
    assert!(!events.contains(SECRET), "the event stream shows the secret");
    let stored = files_under(state.path());
    assert!(!stored.is_empty(), "the daemon keeps its state under its state directory");
    for f in stored {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(SECRET), "the secret is stored in {}", f.display());
    }
}

/// An API error whose body echoes a declared secret (a stream's `Error` line that quotes the
/// private value it was sent) reaches no journal record, event, stored row or log line: the
/// daemon, logging at debug, fails the step and says why with the value masked.
#[test]
fn an_api_error_that_echoes_a_secret_reaches_no_journal_event_store_or_log() {
    use common::git::{DaemonProc, Repo};
    const SECRET: &str = "pw-echoed-7d3f21";
    let wait = std::time::Duration::from_secs(60);
    let sb = SandboxProc::start_platform("tsuru", &[]);
    let fault = json!({"stream_error": {"path_contains": "/env", "message": format!("cannot set DB_PASSWORD={SECRET}: unit web-1 refused it")}});
    let (code, _) = sb.send("PUT", "/_sandbox/faults", Some(&fault));
    assert_eq!(code, 200);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!(
            "owner: daemon-test\nvariables: {{DB_PASSWORD: {SECRET}}}\ntargets:\n  t:\n    platform: tsuru\n    url: {}\ndefault_target: t\n",
            sb.url
        ),
    );
    repo.write(
        "apps.yaml",
        "apps:\n  web:\n    platform: python\n    teamOwner: shop\n    units: {web: 1}\n    env:\n      DB_PASSWORD: {value: \"${DB_PASSWORD}\", private: true}\n",
    );
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("daemon.log");
    let d = DaemonProc::start_logged(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--resync", "1h"],
        &[("RUST_LOG", "debug")],
        &log,
    );
    d.wait_for("the commit to fail", wait, |d| d.status_of(&sha).as_deref() == Some("failed"));
    // It failed for the fault's reason, which the daemon shows masked.
    let (_, history) = d.get(&format!("/v1/history?sha={sha}"));
    let shown = history.to_string();
    assert!(shown.contains("unit web-1 refused it"), "the failure is shown: {shown}");
    for path in ["/v1/status", "/v1/plans/deploy", &format!("/v1/history?sha={sha}")] {
        assert!(!d.get(path).1.to_string().contains(SECRET), "{path} shows the secret");
    }
    let url = format!("{}/v1/events", d.url);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
        let resp = client.get(url).header("Last-Event-ID", "0").send().unwrap();
        ready_tx.send(()).unwrap();
        resp.text().unwrap()
    });
    ready_rx.recv_timeout(wait).expect("the event stream answers");
    d.stop();
    let events = reader.join().unwrap();
    assert!(events.contains("\"step_failed\"") && events.contains("unit web-1 refused it"), "{events}");
    assert!(!events.contains(SECRET), "the event stream shows the secret");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("DEBUG"), "the daemon logged at debug");
    assert!(!logged.contains(SECRET), "a log line shows the secret");
    // The journal, the history and every other file the daemon keeps.
    let stored = files_under(state.path());
    assert!(stored.iter().any(|f| f.ends_with("journal.db")), "the run was journalled: {stored:?}");
    for f in stored {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(!text.contains(SECRET), "the secret is stored in {}", f.display());
    }
}
