//! CI previews: golden text, JSON and markdown plans; --base/--head over a real repository;
//! one plan whether CI or the daemon makes it; secrets in no output, log, event or record.

mod common;
use common::git::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const BASE: &str = r#"jobs:
  job::/g::api:
    state: started
    processes:
      app:
        start_command: ./api
        environment:
          DB_PASSWORD: old-pass-1
          LOG_LEVEL: info
    tags: {app: api}
  job::/g::retired:
    tags: {app: old}
"#;

const HEAD: &str = r#"jobs:
  job::/g::api:
    state: started
    processes:
      app:
        start_command: ./api --port 8080
        environment:
          DB_PASSWORD: new-pass-2
          LOG_LEVEL: info
    tags: {app: api}
  job::/g::web:
    state: started
    tags: {app: web}
    links:
      API: {fqn: job::/g::api, port: 8080}
"#;

/// Compare with a golden file; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = repo_root().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no golden file {name}: run with UPDATE_GOLDEN=1"));
    assert_eq!(actual, expected, "{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)");
}

fn applied_base() -> (SandboxProc, Workdir) {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: golden\n");
    w.target(&sb.url);
    w.write("m.yaml", BASE);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("m.yaml", HEAD);
    (sb, w)
}

#[test]
fn plans_match_their_golden_files_in_text_json_and_markdown() {
    let (_sb, w) = applied_base();
    let text = w.capstan(&["plan", ".", "--prune"]);
    text.ok();
    golden("plan.txt", &text.stdout);
    let json = w.capstan(&["plan", ".", "--prune", "-o", "json"]);
    json.ok();
    golden("plan.json", &json.stdout);
    let md = w.capstan(&["plan", ".", "--prune", "-o", "markdown", "--title", "capstan plan"]);
    md.ok();
    golden("plan.md", &md.stdout);
    for out in [&text.stdout, &json.stdout, &md.stdout] {
        assert!(!out.contains("old-pass-1") && !out.contains("new-pass-2"), "a secret leaked:\n{out}");
        assert!(out.contains("(sensitive, changed)"), "the secret's change is shown:\n{out}");
    }
    // The JSON plan follows its schema.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schemas/plan.schema.json")).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let plan = json.json();
    let errors: Vec<String> = v.iter_errors(&plan).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn a_long_diff_is_cut_in_markdown_with_a_note_and_kept_whole_in_text() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: golden\n");
    w.target(&sb.url);
    // 150 environment variables: the create's diff is 169 lines, over markdown's 120.
    let mut m = String::from("jobs:\n  job::/g::big:\n    processes:\n      app:\n        environment:\n");
    for i in 0..150 {
        m.push_str(&format!("          VAR_{i:03}: value-{i}\n"));
    }
    w.write("m.yaml", &m);
    let md = w.capstan(&["plan", ".", "-o", "markdown"]);
    md.ok();
    golden("plan-long.md", &md.stdout);
    assert!(md.stdout.contains("\n_49 more lines not shown._\n"), "{}", md.stdout);
    assert!(md.stdout.contains("+       VAR_116: value-116\n```\n") && !md.stdout.contains("VAR_117"), "{}", md.stdout);
    let text = w.capstan(&["plan", "."]);
    text.ok();
    assert!(text.stdout.contains("VAR_149: value-149") && !text.stdout.contains("not shown"), "{}", text.stdout);
}

#[test]
fn an_expansion_warning_is_in_the_text_json_and_markdown_plans() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: golden\n");
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/g::web:\n    tags: {release: \"${RELEASE}\", app: web}\n");
    let args = |extra: &[&'static str]| [&["plan", ".", "--allow-missing-vars"], extra].concat();
    let text = w.capstan(&args(&[]));
    text.ok();
    golden("plan-warning.txt", &text.stdout);
    let json = w.capstan(&args(&["-o", "json"]));
    json.ok();
    golden("plan-warning.json", &json.stdout);
    let md = w.capstan(&args(&["-o", "markdown"]));
    md.ok();
    golden("plan-warning.md", &md.stdout);
    let warning = "m.yaml:3:22: warning: no value found for variable RELEASE";
    assert!(text.stdout.starts_with(&format!("{warning}\n")), "{}", text.stdout);
    assert!(
        md.stdout.contains(&format!("<details><summary>1 warning(s)</summary>\n\n- `{warning}`\n")),
        "{}",
        md.stdout
    );
    let warnings = json.json()["warnings"].clone();
    assert_eq!(
        warnings,
        serde_json::json!([{
            "severity": "warning",
            "location": { "file": "m.yaml", "line": 3, "column": 22 },
            "message": "no value found for variable RELEASE",
        }])
    );
    // The variable became empty, as the platform's own expansion does.
    assert_eq!(json.json()["resource_changes"][0]["after"]["tags"]["release"], "");
    // Without the flag it is an error, and nothing is planned.
    let strict = w.capstan(&["plan", "."]);
    strict.code(1);
    assert!(strict.stderr.contains("m.yaml:3:22: error: no value found for variable RELEASE"), "{}", strict.stderr);
}

#[test]
fn a_user_template_renders_the_same_context() {
    let (_sb, w) = applied_base();
    w.write("t.hbs", "{{summary_line}}\n{{#each table}}{{symbol}} {{address}}\n{{/each}}");
    let out = w.capstan(&["plan", ".", "-o", "markdown", "--template", "t.hbs"]);
    out.ok();
    assert_eq!(
        out.stdout,
        "Plan: 2 to create, 1 to update, 0 to replace, 0 to delete.\n~ job::/g::api\n+ job::/g::web\n+ link job::/g::web -> job::/g::api:8080\n"
    );
    w.write("bad.hbs", "{{no_such_field}}");
    let out = w.capstan(&["plan", ".", "-o", "markdown", "--template", "bad.hbs"]);
    out.code(1);
    assert!(out.stderr.contains("cannot render the markdown template"), "{}", out.stderr);
}

#[test]
fn base_and_head_show_the_declared_change_and_the_live_plan() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("deploy/capstan.yaml", &config_for(&sb, ""));
    repo.write("deploy/m.yaml", BASE);
    let base = repo.commit("base");
    repo.write("deploy/m.yaml", HEAD);
    let head = repo.commit("head");
    let state = tempfile::tempdir().unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["plan", "--repo", ".", "--path", "deploy", "--base", &base, "--head", &head, "--state-dir"];
        a.push(state.path().to_str().unwrap());
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| run_in(repo.path(), &a.iter().map(String::as_str).collect::<Vec<_>>());

    // Declared only: web created, retired deleted, api updated.
    let out = run(args(&["--no-live", "-o", "json"]));
    out.ok();
    let v = out.json();
    assert_eq!(v["declared_changes"]["base"], base);
    assert_eq!(v["declared_changes"]["head"], head);
    let s = &v["declared_changes"]["summary"];
    assert_eq!((s["create"].as_u64(), s["update"].as_u64(), s["delete"].as_u64()), (Some(2), Some(1), Some(1)));
    assert!(v.get("plan").is_none(), "--no-live reads nothing live");
    assert!(sb.requests().is_empty(), "--no-live must not contact the target");

    // With the live platform (nothing applied yet): everything of head is created.
    let out = run(args(&["-o", "json", "--detailed-exitcode"]));
    out.code(2);
    let v = out.json();
    assert_eq!(v["summary"]["create"], 3);
    assert_eq!(v["declared_changes"]["summary"]["delete"], 1);
    let text = run(args(&[]));
    text.ok();
    assert!(
        text.stdout.contains(&format!("Changes to the declared state from {} to {}:", &base[..12], &head[..12])),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains(&format!("Using commit {head}")), "{}", text.stderr);
    let md = run(args(&["-o", "markdown"]));
    md.ok();
    assert!(md.stdout.contains("#### Declared changes"), "{}", md.stdout);
    assert!(md.stdout.contains("#### Plan against target sb"), "{}", md.stdout);
    for out in [&text.stdout, &md.stdout, &out.stdout] {
        assert!(!out.contains("old-pass-1") && !out.contains("new-pass-2"));
    }
}

#[test]
fn the_plan_ci_makes_and_the_plan_the_daemon_makes_are_the_same_bytes() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.copy_example("examples/manifests/apcera", "deploy");
    let config = repo.read("deploy/capstan.yaml");
    repo.write(
        "deploy/capstan.yaml",
        &format!("{config}targets:\n  sb:\n    platform: apcera\n    url: {}\ndefault_target: sb\n", sb.url),
    );
    let sha = repo.commit("shop");
    let ci_state = tempfile::tempdir().unwrap();
    let ci = run_in(
        repo.path(),
        &[
            "plan",
            "--repo",
            ".",
            "--ref",
            &sha,
            "--path",
            "deploy",
            "-o",
            "json",
            "--state-dir",
            ci_state.path().to_str().unwrap(),
        ],
    );
    ci.ok();
    assert!(sb.mutating_requests().is_empty());

    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "deploy"], &[]);
    d.wait_for("the commit to apply", Duration::from_secs(30), |d| d.status_of(&sha).as_deref() == Some("applied"));
    let daemon_plan =
        reqwest::blocking::get(format!("{}/v1/configurations/{sha}/plan", d.url)).unwrap().text().unwrap();
    assert_eq!(daemon_plan, ci.stdout, "CI and the daemon made different plans for the same commit and live state");
}

#[test]
fn a_secret_is_in_no_output_log_event_or_stored_record() {
    const SECRET: &str = "s3cr3t-Val-9f2d";
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &config_for(&sb, "sensitive: [UPSTREAM_URL]\nvariables:\n  API_TOKEN: s3cr3t-Val-9f2d\n"),
    );
    repo.write(
        "m.yaml",
        "jobs:\n  job::::api:\n    state: started\n    processes:\n      app:\n        start_command: ./api --token ${API_TOKEN}\n        environment:\n          UPSTREAM_URL: https://user:s3cr3t-Val-9f2d@upstream\n          SERVICE_TOKEN: ${API_TOKEN}\n",
    );
    let sha = repo.commit("api with secrets");
    let mut seen = Vec::new();
    let env_debug = [("RUST_LOG", "debug")];
    for args in [
        vec!["render", "."],
        vec!["render", ".", "-o", "json"],
        vec!["validate", "."],
        vec!["plan", "."],
        vec!["plan", ".", "-o", "json"],
        vec!["plan", ".", "-o", "markdown"],
        vec!["apply", ".", "--yes"],
        vec!["plan", ".", "--detailed-exitcode"],
    ] {
        let out = std::process::Command::new(capstan_bin())
            .args(&args)
            .current_dir(repo.path())
            .envs(env_debug)
            .output()
            .unwrap();
        seen.push((format!("capstan {args:?}"), String::from_utf8_lossy(&out.stdout).to_string()));
        seen.push((format!("capstan {args:?} (stderr)"), String::from_utf8_lossy(&out.stderr).to_string()));
    }
    assert!(sb.requests().iter().any(|r| r.to_string().contains(SECRET)), "the platform did get the secret");

    // The daemon, logging at debug level as text and as JSON: a change of the secret each time,
    // its own stderr, events, API, stored records.
    let rotations = ["s3cr3t-Val-NEW2", "s3cr3t-Val-NEW3"];
    let mut current = SECRET;
    let mut first = sha.clone();
    for (format, rotated) in ["text", "json"].into_iter().zip(rotations) {
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("daemon.log");
        let d = DaemonProc::start_logged(
            repo.path().to_str().unwrap(),
            state.path(),
            &["--log-format", format],
            &env_debug,
            &log,
        );
        d.wait_for("the first commit", Duration::from_secs(30), |d| d.status_of(&first).as_deref() == Some("applied"));
        let events = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
        repo.write("capstan.yaml", &repo.read("capstan.yaml").replace(current, rotated));
        let second = repo.commit("rotate");
        d.wait_for("the rotation", Duration::from_secs(30), |d| d.status_of(&second).as_deref() == Some("applied"));
        for path in [
            "/v1/status".to_string(),
            "/v1/plans/deploy".to_string(),
            "/v1/configurations?all=true".to_string(),
            format!("/v1/configurations/{first}"),
            format!("/v1/configurations/{second}"),
            format!("/v1/configurations/{second}/plan"),
            "/metrics".to_string(),
        ] {
            seen.push((format!("{path} ({format})"), d.text(&path)));
        }
        // The event stream's history, read with Last-Event-ID 0.
        let history = events.get(format!("{}/v1/events", d.url)).header("Last-Event-ID", "0").send().unwrap();
        let mut body = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(history), &mut body);
        seen.push((format!("events ({format})"), body));
        let code = d.stop();
        assert_eq!(code, 0);
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("converged"), "the daemon's log ({format}) is captured:\n{logged}");
        let debug = if format == "json" { "\"level\":\"DEBUG\"" } else { " DEBUG " };
        assert!(logged.contains(debug), "the daemon logs at debug level ({format}):\n{logged}");
        if format == "json" {
            for line in logged.lines() {
                serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
        }
        seen.push((format!("the daemon's stderr (--log-format {format}, RUST_LOG=debug)"), logged));
        for entry in files_under(state.path()) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            if entry.to_string_lossy().contains("sandbox-") || entry.to_string_lossy().contains("repos") {
                continue; // the platform's own state, not capstan's record
            }
            seen.push((entry.display().to_string(), String::from_utf8_lossy(&bytes).to_string()));
        }
        (current, first) = (rotated, second);
    }
    for entry in files_under(&repo.path().join(".capstan")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        if entry.to_string_lossy().contains("sandbox-") || entry.to_string_lossy().contains("repos") {
            continue;
        }
        seen.push((entry.display().to_string(), String::from_utf8_lossy(&bytes).to_string()));
    }
    for (where_, text) in &seen {
        for secret in [SECRET, "s3cr3t-Val-NEW2", "s3cr3t-Val-NEW3"] {
            assert!(!text.contains(secret), "the secret appears in {where_}:\n{}", &text[..text.len().min(3000)]);
        }
    }
    assert!(seen.iter().any(|(_, t)| t.contains("(sensitive)")), "secrets were masked, not dropped");
}
