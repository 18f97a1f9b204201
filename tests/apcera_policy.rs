//! Apcera policy as code, through the real binary against `capstan sandbox serve`: documents
//! written in one transactional PUT, never over someone else's change, and policy checks
//! simulated in every preview.

mod common;
use common::git::*;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const DOCS: &str = r#"policies:
  alpha:
    text: |
      on job::/p {
        if (name == "ci") {
          permit update
        }
      }
  beta:
    text: "on service::/p {{ permit read }}\n"
"#;

fn workdir(sb: &SandboxProc, manifest: &str) -> Workdir {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: pol\n");
    w.target(&sb.url);
    w.write("m.yaml", manifest);
    w
}

fn policy_puts(sb: &SandboxProc) -> Vec<Value> {
    sb.requests().into_iter().filter(|r| r["method"] == "PUT" && r["path"] == "/v1/policy").collect()
}

#[test]
fn policy_applies_in_one_put_marked_and_then_plans_empty() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, DOCS);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let puts = policy_puts(&sb);
    assert_eq!(puts.len(), 1, "both documents in one PUT: {puts:?}");
    assert_eq!(puts[0]["body"]["docs"].as_array().unwrap().len(), 2);
    let alpha = sb.get("/v1/policy/alpha");
    assert!(alpha["text"].as_str().unwrap().starts_with("// capstan-owner: pol\non job::/p {"), "{alpha}");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // Two documents changed in one commit: one PUT, each with the version it was read at.
    w.write("m.yaml", &DOCS.replace("permit update", "permit update, read").replace("permit read", "permit all"));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let puts = policy_puts(&sb);
    assert_eq!(puts.len(), 1, "{puts:?}");
    let versions: Vec<&Value> = puts[0]["body"]["docs"].as_array().unwrap().iter().map(|d| &d["for_version"]).collect();
    assert_eq!(versions, [&json!(1), &json!(1)]);
    assert_eq!(sb.get("/v1/policy/beta")["version"], 2);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // Pruning deletes only this owner's documents, in one DELETE.
    sb.send(
        "PUT",
        "/v1/policy",
        Some(&json!({ "docs": [{ "name": "theirs", "text": "on job::/x {{ permit read }}" }] })),
    );
    w.write("m.yaml", "jobs: {}\n");
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    let deletes: Vec<Value> = sb.requests().into_iter().filter(|r| r["method"] == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let list = sb.get("/v1/policy");
    let names: Vec<&str> = list["docs"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["theirs"]);
}

/// Wait (bounded) until the sandbox holds a request.
fn wait_held(sb: &SandboxProc) {
    for _ in 0..600 {
        if sb.get("/_sandbox/requests/count")["held"].as_u64() > Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no request was held");
}

#[test]
fn a_concurrent_edit_is_never_overwritten_and_the_next_plan_shows_it() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, DOCS);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write("m.yaml", &DOCS.replace("permit update", "permit update, read"));
    // Hold the apply after its plan has read the policy (its simulation comes after the reads),
    // change the document directly meanwhile, then let the apply go on.
    sb.send("PUT", "/_sandbox/faults", Some(&json!({ "hold": ["PUT /v1/sim"] })));
    let dir = w.path().to_path_buf();
    let apply = std::thread::spawn(move || run_in(&dir, &["apply", ".", "--yes"]));
    wait_held(&sb);
    let theirs = "// capstan-owner: pol\non job::/p {\n  { permit all }\n}\n";
    let (code, _) =
        sb.send("PUT", "/v1/policy", Some(&json!({ "docs": [{ "name": "alpha", "for_version": 1, "text": theirs }] })));
    assert_eq!(code, 200);
    sb.send("PUT", "/_sandbox/faults", Some(&json!({})));
    let out = apply.join().unwrap();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("policy changed since the plan read it: alpha"), "{all}");
    assert!(all.contains("nothing was written"), "{all}");
    assert_eq!(sb.get("/v1/policy/alpha")["text"], theirs, "their change stays");
    assert_eq!(sb.get("/v1/policy/alpha")["version"], 2);
    // The next plan shows their change as what the declaration would replace.
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    let plan = plan.json();
    let alpha = plan["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "policy alpha").unwrap();
    assert_eq!(alpha["action"], "update");
    assert!(alpha["before"]["text"].as_str().unwrap().contains("permit all"), "{alpha}");
}

const CHECKED: &str = r#"policies:
  deployers:
    text: |
      on job::/prod {
        if (name == "ci") {
          permit update
        }
      }
policy_checks:
  - fqn: job::/prod::web
    input: name=ci
    claim: permit=update
    expect: permit
  - fqn: job::/prod::web
    input: [name=intern]
    claim: permit=update
    expect: deny
"#;

#[test]
fn a_policy_change_that_breaks_a_check_fails_plan_in_text_json_and_markdown() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, CHECKED);
    let out = w.capstan(&["plan", "."]);
    out.ok();
    assert!(out.stdout.contains("Policy checks (simulated):"), "{}", out.stdout);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // The change lets the intern update too.
    let broken = CHECKED
        .replace("        if (name == \"ci\") {\n          permit update\n        }", "        { permit update }");
    assert_ne!(broken, CHECKED);
    w.write("m.yaml", &broken);
    let text = w.capstan(&["plan", "."]);
    text.code(1);
    let line = "permit=update job::/prod::web for name=intern [m.yaml:12:5]: expected deny, deny now, permit after this plan (FAILS)";
    assert!(text.stdout.contains(line), "{}", text.stdout);
    assert!(text.stderr.contains("1 policy check(s) fail"), "{}", text.stderr);
    let json = w.capstan(&["plan", ".", "-o", "json"]);
    json.code(1);
    let checks = &json.json()["policy_checks"];
    assert_eq!(checks["failed"], 1);
    let failed = checks["checks"].as_array().unwrap().iter().find(|c| c["failed"] == true).unwrap();
    assert_eq!(
        (failed["fqn"].as_str(), failed["claim"].as_str(), failed["before"].as_str(), failed["after"].as_str()),
        (Some("job::/prod::web"), Some("permit=update"), Some("deny"), Some("permit"))
    );
    assert_eq!(failed["input"], json!(["name=intern"]));
    let md = w.capstan(&["plan", ".", "-o", "markdown"]);
    md.code(1);
    assert!(md.stdout.contains("1 of 2 fail"), "{}", md.stdout);
    assert!(md.stdout.contains("expected deny, deny now, permit after this plan"), "{}", md.stdout);
    // Allowed on purpose: the plan succeeds and shows the same.
    let allowed = w.capstan(&["plan", ".", "--allow-policy-failures"]);
    allowed.ok();
    assert!(allowed.stdout.contains(line), "{}", allowed.stdout);
    // apply refuses as well, and changes nothing.
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).code(1);
    assert!(policy_puts(&sb).is_empty());
}

#[test]
fn the_daemon_refuses_a_commit_whose_policy_checks_fail() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("m.yaml", CHECKED);
    let good = repo.commit("policy");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
    let wait = Duration::from_secs(120);
    d.wait_for("the good commit applied", wait, |d| d.status_of(&good).as_deref() == Some("applied"));
    let broken = CHECKED
        .replace("        if (name == \"ci\") {\n          permit update\n        }", "        { permit update }");
    repo.write("m.yaml", &broken);
    let bad = repo.commit("let everyone update");
    d.wait_for("the bad commit refused", wait, |d| d.status_of(&bad).as_deref() == Some("refused"));
    let conf = d.configuration(&bad).unwrap();
    assert_eq!(conf["errors"][0]["reason"], "policy_check", "{conf}");
    let message = conf["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("permit=update job::/prod::web for name=intern"), "{message}");
    assert!(message.contains("expected deny, deny now, permit after this plan"), "{message}");
    assert!(sb.get("/v1/policy/deployers")["text"].as_str().unwrap().contains("if (name == \"ci\")"));
}

#[test]
fn a_daemon_started_with_allow_policy_failures_applies_a_commit_whose_checks_fail() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("m.yaml", CHECKED);
    let good = repo.commit("policy");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--resync", "300ms", "--allow-policy-failures"],
        &[],
    );
    let wait = Duration::from_secs(120);
    d.wait_for("the good commit applied", wait, |d| d.status_of(&good).as_deref() == Some("applied"));
    let broken = CHECKED
        .replace("        if (name == \"ci\") {\n          permit update\n        }", "        { permit update }");
    repo.write("m.yaml", &broken);
    let bad = repo.commit("let everyone update, on purpose");
    d.wait_for("the failing commit applied", wait, |d| d.status_of(&bad).as_deref() == Some("applied"));
    assert!(!sb.get("/v1/policy/deployers")["text"].as_str().unwrap().contains("if (name == \"ci\")"));
}

#[test]
fn the_policy_example_applies_with_its_checks_holding() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::from_example("examples/manifests/apcera-policy");
    w.target(&sb.url);
    let plan = w.capstan(&["plan", ".", "-o", "json"]);
    plan.ok();
    let checks = &plan.json()["policy_checks"];
    assert_eq!(checks["failed"], 0, "{checks}");
    assert_eq!(checks["checks"].as_array().unwrap().len(), 3);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    // Its policy text is the .pol file's, its rule and drain are in place.
    let text = sb.get("/v1/policy/shop-deployers")["text"].as_str().unwrap().to_string();
    assert!(text.ends_with(&w.read("shop-deployers.pol")), "{text}");
    let rules = sb.get("/v1/rules");
    assert_eq!(rules[0]["service"], "service::/dev/governed::orders-db", "{rules}");
    let jobs = sb.get("/v1/jobs?FQN=job%3A%3A%2Fdev%2Fgoverned%3A%3Aauditor");
    assert_eq!(jobs[0]["drains"][0]["url"], "syslog://logs.example.com:514", "{jobs}");
}

const FROM_FILE: &str = r#"policies:
  deployers:
    text: file:policy/deployers.pol
"#;

const POL: &str = "on job::/p {\n  if (name == \"ci\") {\n    permit update\n  }\n}\n";

#[test]
fn a_policy_document_can_be_a_pol_file_next_to_the_manifest() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, FROM_FILE);
    w.write("policy/deployers.pol", POL);
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(sb.get("/v1/policy/deployers")["text"], format!("// capstan-owner: pol\n{POL}"));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    // A change to the file alone is a change of the document.
    w.write("policy/deployers.pol", &POL.replace("permit update", "permit update, read"));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(2);
}

#[test]
fn a_pol_file_outside_the_manifest_tree_is_never_read() {
    let sb = SandboxProc::start(&[]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.pol"), POL).unwrap();
    let w = workdir(&sb, "");
    // By `..`: refused at its place, nothing applied.
    let up = std::path::Path::new("..").join(outside.path().file_name().unwrap()).join("secret.pol");
    let rel = format!("{}", up.display());
    w.write("m.yaml", &FROM_FILE.replace("policy/deployers.pol", &rel));
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("m.yaml:3:11"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("file:{rel}: expected a data file")), "{}", out.stderr);
    // By an absolute path: the same.
    let abs = outside.path().join("secret.pol");
    w.write("m.yaml", &FROM_FILE.replace("policy/deployers.pol", &abs.display().to_string()));
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("expected a data file"), "{}", out.stderr);
    // By a symbolic link inside the tree: the snapshot refuses it, nothing is read.
    w.write("m.yaml", FROM_FILE);
    std::fs::create_dir_all(w.path().join("policy")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.pol"), w.path().join("policy/deployers.pol")).unwrap();
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    // A linked directory is refused the same way.
    std::fs::remove_file(w.path().join("policy/deployers.pol")).unwrap();
    std::fs::remove_dir(w.path().join("policy")).unwrap();
    std::os::unix::fs::symlink(outside.path(), w.path().join("policy")).unwrap();
    std::fs::rename(outside.path().join("secret.pol"), outside.path().join("deployers.pol")).unwrap();
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    let list = sb.get("/v1/policy");
    assert!(list["docs"].as_array().unwrap().iter().all(|d| d["name"] != "deployers"), "{list}");
}

#[test]
fn a_pol_file_in_a_commit_is_read_from_the_commit() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("m.yaml", FROM_FILE);
    repo.write("policy/deployers.pol", POL);
    let sha = repo.commit("policy from a file");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
    d.wait_for("the commit applied", Duration::from_secs(120), |d| d.status_of(&sha).as_deref() == Some("applied"));
    assert_eq!(sb.get("/v1/policy/deployers")["text"], format!("// capstan-owner: daemon-test\n{POL}"));
}

/// A `.pol` file gets the document's variables like any string of it: capstan.yaml's, the
/// document's own and `--var`, an undefined one an error at its line and column in the .pol
/// file (nothing applied), a secret one never shown.
#[test]
fn variables_in_a_pol_file_are_expanded_and_placed_in_it_and_secrets_never_shown() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, &format!("variables:\n  TEAM: ci\n{FROM_FILE}"));
    w.write("capstan.yaml", "owner: pol\nvariables:\n  REALM: job::/p\n");
    w.target(&sb.url);
    let pol =
        "on ${REALM} {\n  if (name == \"${TEAM}\" && token != \"${SHARED_TOKEN}\") {\n    permit update\n  }\n}\n";
    w.write("policy/deployers.pol", pol);

    // Undefined: an error in the .pol file, at the reference; nothing written.
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("policy/deployers.pol:2:38: error: no value found for variable SHARED_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(sb.get("/v1/policy")["docs"].as_array().unwrap().iter().all(|d| d["name"] != "deployers"));

    let secret = "s3cr3t-value-9f2c";
    let var = format!("SHARED_TOKEN={secret}");
    let plan = w.capstan(&["plan", ".", "--var", &var, "-o", "json"]);
    plan.ok();
    assert!(!plan.stdout.contains(secret) && !plan.stderr.contains(secret), "{}", plan.stdout);
    let text_plan = w.capstan(&["plan", ".", "--var", &var]);
    assert!(text_plan.stdout.contains("permit update") && !text_plan.stdout.contains(secret), "{}", text_plan.stdout);
    let applied = w.capstan(&["apply", ".", "--yes", "--var", &var]);
    applied.ok();
    assert!(!applied.stdout.contains(secret) && !applied.stderr.contains(secret));
    let expected = format!(
        "// capstan-owner: pol\non job::/p {{\n  if (name == \"ci\" && token != \"{secret}\") {{\n    permit update\n  }}\n}}\n"
    );
    assert_eq!(sb.get("/v1/policy/deployers")["text"], expected);
    w.capstan(&["plan", ".", "--var", &var, "--detailed-exitcode"]).code(0);

    // A changed secret is a change, shown masked on both sides.
    let changed = w.capstan(&["plan", ".", "--var", "SHARED_TOKEN=another-secret-77", "--detailed-exitcode"]);
    changed.code(2);
    assert!(!changed.stdout.contains(secret) && !changed.stdout.contains("another-secret-77"), "{}", changed.stdout);
    // `$${` writes a literal `${`.
    w.write("policy/deployers.pol", "// $${not a variable}\non job::/p {\n  permit read\n}\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(
        sb.get("/v1/policy/deployers")["text"],
        "// capstan-owner: pol\n// ${not a variable}\non job::/p {\n  permit read\n}\n"
    );
}

/// Odd but valid texts plan empty once applied: no final newline, CRLF line ends, a leading
/// blank line, a first line that is a comment (not capstan's mark), non-ASCII text, and a
/// `.pol` file with no newline at all.
#[test]
fn odd_policy_texts_plan_empty_after_apply() {
    let sb = SandboxProc::start(&[]);
    let manifest = "policies:\n  no-newline:\n    text: \"on job::/p { { permit read } }\"\n  crlf:\n    text: \"on job::/p {\\r\\n  { permit read }\\r\\n}\\r\\n\"\n  leading-blank:\n    text: \"\\n\\non job::/p { { permit read } }\\n\"\n  comment-first:\n    text: \"// capstan-ownership is not a mark\\non job::/p { { permit read } }\\n\"\n  unicode:\n    text: \"// équipe Zürich — 日本\\non job::/p { { permit read } }\\n\"\n  from-file:\n    text: file:one-line.pol\n";
    let w = workdir(&sb, manifest);
    w.write("one-line.pol", "on job::/p { { permit read } }");
    w.capstan(&["apply", ".", "--yes"]).ok();
    let docs = sb.get("/v1/policy");
    assert_eq!(docs["docs"].as_array().unwrap().len(), 6, "{docs}");
    assert_eq!(sb.get("/v1/policy/crlf")["text"], "// capstan-owner: pol\non job::/p {\r\n  { permit read }\r\n}\r\n");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// The README's command for the example (`apply --yes` on the directory, the embedded sandbox):
/// it converges, then plans empty, with and without `--prune` (its rule is on record as
/// capstan's, and still declared).
#[test]
fn the_policy_example_converges_with_the_readme_command() {
    let w = Workdir::from_example("examples/manifests/apcera-policy");
    let first = w.capstan(&["apply", "--yes", "."]);
    first.ok();
    assert!(first.stderr.contains("embedded apcera sandbox"), "{}", first.stderr);
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    let record = w.read(".capstan/apcera-created.json");
    assert!(record.contains("sempiperule::/dev/governed::orders-db-nodelete"), "{record}");
}

/// One `.pol` file named by many documents does not multiply into gigabytes: what data files
/// add to a render is bounded, and going over is an error at the `file:` value, nothing applied.
#[test]
fn a_pol_file_named_many_times_is_bounded() {
    let sb = SandboxProc::start(&[]);
    let mut manifest = String::from("policies:\n");
    for i in 0..70 {
        manifest.push_str(&format!("  doc{i}:\n    text: file:big.pol\n"));
    }
    let w = workdir(&sb, &manifest);
    // 1 MiB of comments, seventy times: over the 64 MiB bound.
    let line = format!("// {}\n", "x".repeat(1020));
    w.write("big.pol", &line.repeat(1024));
    let out = w.capstan(&["apply", ".", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("data files would add more than 67108864 bytes"), "{}", out.stderr);
    assert!(out.stderr.contains("m.yaml:"), "{}", out.stderr);
    assert!(sb.get("/v1/policy")["docs"].as_array().unwrap().is_empty());
}

/// A secret substituted into a `.pol` file, rotated by a commit: the daemon never serves it
/// (plan, status, configuration) nor keeps it in any file of its state directory.
#[test]
fn the_daemon_never_shows_nor_stores_a_secret_of_a_pol_file() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    let doc = |secret: &str| {
        format!("variables:\n  SECRET_SAUCE: {secret}\npolicies:\n  deployers:\n    text: file:policy/deployers.pol\n")
    };
    repo.write(
        "policy/deployers.pol",
        "on job::/p {\n  if (token == \"${SECRET_SAUCE}\") {\n    permit update\n  }\n}\n",
    );
    repo.write("m.yaml", &doc("old-sauce-1"));
    let first = repo.commit("first");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    let wait = Duration::from_secs(60);
    d.wait_for("the first commit", wait, |d| d.status_of(&first).as_deref() == Some("applied"));
    repo.write("m.yaml", &doc("new-sauce-2"));
    let second = repo.commit("rotate");
    d.wait_for("the rotation", wait, |d| d.status_of(&second).as_deref() == Some("applied"));
    assert!(sb.get("/v1/policy/deployers")["text"].as_str().unwrap().contains("new-sauce-2"));
    let plan = d.text(&format!("/v1/configurations/{second}/plan"));
    assert!(plan.contains("(sensitive"), "{plan}");
    let events = d.text("/v1/status") + &d.text(&format!("/v1/configurations/{second}"));
    assert_eq!(d.stop(), 0);
    for secret in ["old-sauce-1", "new-sauce-2"] {
        assert!(!plan.contains(secret) && !events.contains(secret), "{secret} served");
        for entry in files_under(state.path()) {
            if entry.components().any(|c| c.as_os_str() == "repos" || c.as_os_str() == "objects") {
                continue;
            }
            let bytes = std::fs::read(&entry).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in {}", entry.display());
        }
    }
}
