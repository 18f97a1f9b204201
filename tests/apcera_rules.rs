//! Apcera semantic pipeline rules, through the real binary against `capstan sandbox serve`:
//! made after the service they govern, replaced when changed, empty plans after apply, and —
//! since a rule cannot carry an ownership mark — pruned only when capstan's record holds its
//! uuid (`src/providers/apcera/created.rs`).

mod common;
use common::*;
use serde_json::Value;

const RULES: &str = r#"services:
  service::/r::db:
    type: postgres
sempiperules:
  sempiperule::/r::nodelete:
    action: { commands: [delete], inline: deny }
    service: service::/r::db
"#;

fn workdir(sb: &SandboxProc, manifest: &str) -> Workdir {
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: rules\n");
    w.target(&sb.url);
    w.write("m.yaml", manifest);
    w
}

fn rules(sb: &SandboxProc) -> Vec<Value> {
    sb.get("/v1/rules").as_array().unwrap().clone()
}

#[test]
fn a_rule_protecting_a_database_converges_after_its_service() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, RULES);
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let posts: Vec<String> = sb
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(posts, ["/v1/services", "/v1/rules"], "the rule after its service");
    let all = rules(&sb);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["service"], "service::/r::db");
    assert_eq!(all[0]["action"]["inline"], "deny");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // A changed rule is replaced.
    w.write("m.yaml", &RULES.replace("commands: [delete]", "commands: [delete, drop]"));
    w.capstan(&["apply", ".", "--yes"]).ok();
    let all = rules(&sb);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["action"]["commands"], serde_json::json!(["delete", "drop"]));
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);

    // No longer declared: capstan made it (its uuid is on record), so pruning deletes it.
    let only_db = "services:\n  service::/r::db:\n    type: postgres\n";
    w.write("m.yaml", only_db);
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    assert!(rules(&sb).is_empty(), "{:?}", rules(&sb));
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// The same FQN is not the same rule: one someone made directly (here after deleting capstan's)
/// has another uuid, is shown as not capstan's, and survives every prune.
#[test]
fn a_rule_of_the_same_name_made_directly_is_never_pruned() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, RULES);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let theirs = rules(&sb).remove(0);
    let (code, _) = sb.send("DELETE", &format!("/v1/rules/{}", theirs["uuid"].as_str().unwrap()), None);
    assert_eq!(code, 200);
    let (code, made) = sb.send("POST", "/v1/rules", Some(&theirs));
    assert_eq!(code, 200, "{made}");
    assert_ne!(made["uuid"], theirs["uuid"]);

    // Still declared and equal: nothing to do, and nothing taken from anyone.
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    // No longer declared: not capstan's, so not pruned.
    w.write("m.yaml", "services:\n  service::/r::db:\n    type: postgres\n");
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    let left = rules(&sb);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["uuid"], made["uuid"]);

    // A rule made directly before capstan ever ran is not capstan's either.
    let (code, _) = sb.send(
        "POST",
        "/v1/rules",
        Some(&serde_json::json!({
            "fqn": "sempiperule::/r::nodrop", "name": "nodrop", "type": 0,
            "action": { "commands": ["drop"], "inline": "deny" }, "service": "service::/r::db",
        })),
    );
    assert_eq!(code, 200);
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(rules(&sb).len(), 2);
}

#[test]
fn a_rule_naming_a_service_and_a_job_is_refused_at_its_place() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(
        &sb,
        &RULES.replace("    service: service::/r::db\n", "    service: service::/r::db\n    job: job::/r::x\n"),
    );
    let out = w.capstan(&["plan", "."]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("m.yaml:6:5: error: a rule governs one thing"), "{}", out.stderr);
}

/// Odd but valid inputs plan empty once applied: a rule naming a service with its provider (the
/// seed's second example), one governing a job, `allow`, repeated commands, FQNs in the default
/// namespace, and fields the platform fills in (`type`, `version_id`, nulls) ignored.
#[test]
fn odd_rules_plan_empty_after_apply() {
    let sb = SandboxProc::start(&[]);
    let manifest = r#"default_namespace: /r/odd
providers:
  provider::::pg:
    type: postgres
    parameters: { url: "postgres://pg.example:5432" }
services:
  service::::db:
    type: postgres
    provider_fqn: provider::::pg
jobs:
  job::::worker:
    state: ready
sempiperules:
  sempiperule::::db-nodrop:
    action: { commands: [drop, drop, delete], inline: deny }
    service: service::::db
    provider: provider::::pg
  sempiperule::::worker-allow:
    action: { commands: [update], inline: allow }
    job: job::::worker
"#;
    let w = workdir(&sb, manifest);
    let first = w.capstan(&["apply", ".", "--yes"]);
    first.ok();
    let all = rules(&sb);
    assert_eq!(all.len(), 2, "{all:?}");
    let by = |fqn: &str| all.iter().find(|r| r["fqn"] == fqn).unwrap().clone();
    assert_eq!(by("sempiperule::/r/odd::db-nodrop")["provider"], "provider::/r/odd::pg");
    assert_eq!(by("sempiperule::/r/odd::worker-allow")["job"], "job::/r/odd::worker");
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
    w.capstan(&["plan", ".", "--prune", "--detailed-exitcode"]).code(0);
}

/// The daemon keeps the record in its own state directory: a rule one commit declares and the
/// next no longer does is pruned, and one made directly on the platform meanwhile is not.
#[test]
fn the_daemon_prunes_the_rules_it_made_and_only_those() {
    use common::git::*;
    use std::time::Duration;
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, "prune: true\nmass_delete: { max_percent: 100 }\n"));
    repo.write("m.yaml", RULES);
    let first = repo.commit("a rule");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "300ms"], &[]);
    let wait = Duration::from_secs(120);
    d.wait_for("the rule applied", wait, |d| d.status_of(&first).as_deref() == Some("applied"));
    assert_eq!(rules(&sb).len(), 1);
    let (code, theirs) = sb.send(
        "POST",
        "/v1/rules",
        Some(&serde_json::json!({
            "fqn": "sempiperule::/r::theirs", "name": "theirs", "type": 0,
            "action": { "commands": ["drop"], "inline": "deny" }, "service": "service::/r::db",
        })),
    );
    assert_eq!(code, 200, "{theirs}");
    repo.write("m.yaml", "services:\n  service::/r::db:\n    type: postgres\n");
    let second = repo.commit("no rule");
    d.wait_for("the removal applied", wait, |d| d.status_of(&second).as_deref() == Some("applied"));
    let left = rules(&sb);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["uuid"], theirs["uuid"]);
}

/// A damaged record is never taken for an empty one (that would forget what capstan made):
/// plan and apply stop, naming the file, and leave it as it is.
#[test]
fn a_damaged_record_stops_capstan_and_is_left_alone() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, RULES);
    w.capstan(&["apply", ".", "--yes"]).ok();
    w.write(".capstan/apcera-created.json", "{\"created\": [");
    for args in [&["plan", "."][..], &["apply", ".", "--yes", "--prune"][..]] {
        let out = w.capstan(args);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("apcera-created.json") && out.stderr.contains("is damaged"), "{}", out.stderr);
    }
    assert_eq!(w.read(".capstan/apcera-created.json"), "{\"created\": [");
    assert_eq!(rules(&sb).len(), 1);
}

/// One state directory, two writers: a daemon that started before a CLI apply recorded a rule
/// must not write its older view of the record over it (that would forget the CLI's rule, which
/// then could never be pruned), and sees it as capstan's at its next plan.
#[test]
fn a_daemon_never_forgets_a_rule_a_cli_apply_recorded_in_its_state_directory() {
    use common::git::*;
    use std::time::Duration;
    let rule = |name: &str| {
        format!(
            "  sempiperule::/r::{name}:\n    action: {{ commands: [delete], inline: deny }}\n    service: service::/r::db\n"
        )
    };
    let manifest = |names: &[&str]| {
        let rules: String = names.iter().map(|n| rule(n)).collect();
        format!("services:\n  service::/r::db:\n    type: postgres\nsempiperules:\n{rules}")
    };
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, "prune: true\nmass_delete: { max_percent: 100 }\n"));
    repo.write("m.yaml", &manifest(&["first"]));
    let one = repo.commit("first rule");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "1h"], &[]);
    let wait = Duration::from_secs(120);
    d.wait_for("the first rule applied", wait, |d| d.status_of(&one).as_deref() == Some("applied"));

    // The same owner, the same state directory, from the command line: a second rule.
    let cli = Workdir::new();
    cli.write("capstan.yaml", &config_for(&sb, ""));
    cli.write("m.yaml", &manifest(&["first", "second"]));
    cli.capstan(&["apply", ".", "--yes", "--state-dir", state.path().to_str().unwrap()]).ok();
    let second = rules(&sb).into_iter().find(|r| r["name"] == "second").unwrap();

    // The daemon makes a third one: the record keeps all three.
    repo.write("m.yaml", &manifest(&["first", "second", "third"]));
    let two = repo.commit("third rule");
    d.wait_for("the third rule applied", wait, |d| d.status_of(&two).as_deref() == Some("applied"));
    let record = std::fs::read_to_string(state.path().join("apcera-created.json")).unwrap();
    assert!(record.contains(second["uuid"].as_str().unwrap()), "the CLI's rule was forgotten: {record}");

    // None declared any more: all three are capstan's, all three pruned.
    repo.write("m.yaml", &manifest(&[]).replace("sempiperules:\n", ""));
    let three = repo.commit("no rules");
    d.wait_for("the removal applied", wait, |d| d.status_of(&three).as_deref() == Some("applied"));
    assert!(rules(&sb).is_empty(), "{:?}", rules(&sb));
}

/// A record kept elsewhere through a symbolic link (a state directory rebuilt on each CI run,
/// the record on a lasting volume) is written where the link points and stays a link: replacing
/// the link by a file would leave the lasting record without what this run created.
#[test]
fn a_record_behind_a_symbolic_link_is_written_through_it() {
    let sb = SandboxProc::start(&[]);
    let w = workdir(&sb, RULES);
    let lasting = tempfile::tempdir().unwrap();
    let kept = lasting.path().join("record.json");
    std::fs::write(&kept, "{\"created\": {}}").unwrap();
    std::fs::create_dir_all(w.path().join(".capstan")).unwrap();
    std::os::unix::fs::symlink(&kept, w.path().join(".capstan/apcera-created.json")).unwrap();
    w.capstan(&["apply", ".", "--yes"]).ok();
    let link = std::fs::symlink_metadata(w.path().join(".capstan/apcera-created.json")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced by a file");
    let uuid = rules(&sb)[0]["uuid"].as_str().unwrap().to_string();
    assert!(std::fs::read_to_string(&kept).unwrap().contains(&uuid));

    // Through the link, the rule is known as capstan's and pruned.
    w.write("m.yaml", "services:\n  service::/r::db:\n    type: postgres\n");
    w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]).ok();
    assert!(rules(&sb).is_empty(), "{:?}", rules(&sb));
    assert!(!std::fs::read_to_string(&kept).unwrap().contains(&uuid));
}
