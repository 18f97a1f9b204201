//! The daemon's incremental plans (issue 18): a commit after one the platform was made equal to
//! is planned reading only what it changes (`engine::plan_since`), and must make the plan a
//! full plan makes of the same commit, delete exactly what it stops declaring, and leave
//! drift to the full reconcile that finds it. The real binary, a real git repository, a sandbox
//! process; each commit's plan is compared with `capstan plan` of the same commit, made before
//! the daemon sees it.

mod common;
use common::git::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn jobs_yaml(names: &[(&str, &str)]) -> String {
    let mut out = String::from("jobs:\n");
    for (name, tag) in names {
        out.push_str(&format!(
            "  job::::{name}:\n    state: started\n    labels: {{tier: web}}\n    tags:\n      version: \"{tag}\"\n"
        ));
    }
    out
}

fn applied(d: &DaemonProc, sha: &str) -> bool {
    d.status_of(sha).as_deref() == Some("applied")
}

/// The live jobs by FQN, without what changes by itself (health, times).
fn jobs(sb: &SandboxProc) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = sb
        .jobs()
        .into_iter()
        .map(|j| {
            (
                j["fqn"].as_str().unwrap().to_string(),
                json!({ "uuid": j["uuid"], "tags": j["tags"], "version_id": j["version_id"] }),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A daemon following `repo`, its log in `log`.
fn daemon(repo: &Repo, state: &Path, log: &Path, extra: &[&str]) -> DaemonProc {
    DaemonProc::start_logged(repo.path().to_str().unwrap(), state, extra, &[], log)
}

/// Make a commit in a clone of `repo` (the daemon does not see it yet), plan it with
/// `capstan plan --output json` against the platform as it is, then bring `repo`'s branch to
/// it. Returns the commit and that plan.
fn commit_planned(repo: &Repo, change: impl FnOnce(&Path), message: &str) -> (String, Value) {
    let side = tempfile::tempdir().unwrap();
    let clone = side.path().join("clone");
    git(side.path(), &["clone", "-q", repo.path().to_str().unwrap(), clone.to_str().unwrap()]);
    change(&clone);
    git(&clone, &["add", "-A"]);
    git(&clone, &["-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-q", "-m", message]);
    let sha = git(&clone, &["rev-parse", "HEAD"]).trim().to_string();
    let cwd = tempfile::tempdir().unwrap();
    let run = run_in(cwd.path(), &["plan", "--repo", clone.to_str().unwrap(), "--ref", &sha, "--output", "json"]);
    assert!(run.code == 0 || run.code == 2, "capstan plan: {}\n{}", run.stdout, run.stderr);
    let plan: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    git(repo.path(), &["fetch", "-q", clone.to_str().unwrap(), "HEAD"]);
    git(repo.path(), &["merge", "-q", "--ff-only", "FETCH_HEAD"]);
    (sha, plan)
}

/// The plan the daemon kept for a commit.
fn daemon_plan(d: &DaemonProc, sha: &str) -> Value {
    serde_json::from_str(&d.text(&format!("/v1/configurations/{sha}/plan"))).unwrap()
}

fn count(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(what).count()
}

/// Three files of jobs, pruning on; a job no one declares that another owner made.
fn setup(extra_config: &str) -> (SandboxProc, Repo) {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, &format!("prune: true\n{extra_config}")));
    repo.write("a.yaml", &jobs_yaml(&[("a1", "1"), ("a2", "1")]));
    repo.write("b.yaml", &jobs_yaml(&[("b1", "1")]));
    repo.write("c.yaml", &jobs_yaml(&[("c1", "1"), ("c2", "1")]));
    let body = json!({ "fqn": "job::/dev::by-hand", "name": "by-hand", "state": "started", "labels": { "capstan-owner": "someone-else" } });
    let (code, answer) = sb.send("POST", "/v1/jobs", Some(&body));
    assert!(code < 300, "{answer}");
    (sb, repo)
}

#[test]
fn a_one_file_commit_is_planned_incrementally_and_makes_the_plan_a_full_plan_makes() {
    let (sb, repo) = setup("");
    let first = repo.commit("jobs");
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("daemon.log");
    let d = daemon(&repo, state.path(), &log, &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    assert_eq!(count(&log, "planned incrementally"), 0, "the first plan is a full one");
    let before = jobs(&sb);

    for round in 2..4 {
        let tag = round.to_string();
        let (sha, full) = commit_planned(
            &repo,
            |dir| std::fs::write(dir.join("a.yaml"), jobs_yaml(&[("a1", &tag), ("a2", "1")])).unwrap(),
            "a1 changes",
        );
        assert_eq!(changed(&full), [("update".to_string(), "job::/dev::a1".to_string())], "{full}");
        d.wait_for("the one-file commit", WAIT, |d| applied(d, &sha));
        assert_eq!(count(&log, "planned incrementally"), round - 1, "{}", std::fs::read_to_string(&log).unwrap());
        assert_eq!(daemon_plan(&d, &sha), full, "the incremental plan is the full plan of the same commit");
    }
    // Only a1 changed on the platform.
    let after = jobs(&sb);
    assert_eq!(after.len(), before.len());
    for ((fqn, b), (_, a)) in before.iter().zip(&after) {
        if fqn == "job::/dev::a1" {
            assert_eq!(a["tags"]["version"], "3", "{fqn}");
            assert_eq!(a["uuid"], b["uuid"], "updated in place");
        } else {
            assert_eq!(a, b, "{fqn} is untouched");
        }
    }

    // A commit that changes no declaration reads nothing one by one, and plans no step.
    let (sha, full) = commit_planned(&repo, |dir| std::fs::write(dir.join("README.md"), "notes\n").unwrap(), "notes");
    assert_eq!(changed(&full), Vec::<(String, String)>::new());
    d.wait_for("the commit with no change", WAIT, |d| applied(d, &sha));
    assert_eq!(daemon_plan(&d, &sha), full);
    assert_eq!(jobs(&sb), after);
}

#[test]
fn a_declaration_removed_by_a_commit_is_deleted_and_nothing_else() {
    let (sb, repo) = setup("mass_delete:\n  max_percent: 100\n");
    let first = repo.commit("jobs");
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("daemon.log");
    let d = daemon(&repo, state.path(), &log, &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    // One incremental commit first, so the baseline is an incremental plan's.
    let (sha, _) = commit_planned(
        &repo,
        |dir| std::fs::write(dir.join("b.yaml"), jobs_yaml(&[("b1", "2")])).unwrap(),
        "b1 changes",
    );
    d.wait_for("b1's commit", WAIT, |d| applied(d, &sha));
    assert_eq!(count(&log, "planned incrementally"), 1);
    let before = jobs(&sb);

    // c2 is no longer declared: deleted (pruning), and nothing else.
    let (sha, full) =
        commit_planned(&repo, |dir| std::fs::write(dir.join("c.yaml"), jobs_yaml(&[("c1", "1")])).unwrap(), "c2 goes");
    assert_eq!(changed(&full), [("delete".to_string(), "job::/dev::c2".to_string())], "{full}");
    d.wait_for("c2's removal", WAIT, |d| applied(d, &sha));
    assert_eq!(daemon_plan(&d, &sha), full);
    let after = jobs(&sb);
    let expected: Vec<(String, Value)> = before.iter().filter(|(f, _)| f != "job::/dev::c2").cloned().collect();
    assert_eq!(after, expected, "exactly c2 is gone; by-hand (another owner's) and every declared job stay");

    // A whole file removed: both its jobs go, and only they.
    let (sha, full) = commit_planned(&repo, |dir| std::fs::remove_file(dir.join("a.yaml")).unwrap(), "a goes");
    let mut deleted = changed(&full);
    deleted.sort();
    assert_eq!(
        deleted,
        [("delete".to_string(), "job::/dev::a1".to_string()), ("delete".to_string(), "job::/dev::a2".to_string())]
    );
    d.wait_for("a.yaml's removal", WAIT, |d| applied(d, &sha));
    assert_eq!(daemon_plan(&d, &sha), full);
    let names: Vec<String> = jobs(&sb).into_iter().map(|(f, _)| f).collect();
    assert_eq!(names, ["job::/dev::b1", "job::/dev::by-hand", "job::/dev::c1"]);
}

#[test]
fn drift_outside_an_incremental_commit_is_found_by_the_full_reconcile() {
    let (sb, repo) = setup("");
    let first = repo.commit("jobs");
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("daemon.log");
    let d = daemon(&repo, state.path(), &log, &["--resync", "1h"]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));

    // b1 is changed behind the daemon's back; then a commit changes a1 only.
    let mut b1 = sb.job("job::/dev::b1").unwrap();
    b1["tags"]["version"] = json!("by-hand");
    let (code, body) = sb.send("PUT", &format!("/v1/jobs/{}", b1["uuid"].as_str().unwrap()), Some(&b1));
    assert_eq!(code, 200, "{body}");
    let (sha, _) = commit_planned(
        &repo,
        |dir| std::fs::write(dir.join("a.yaml"), jobs_yaml(&[("a1", "2"), ("a2", "1")])).unwrap(),
        "a1 changes",
    );
    d.wait_for("a1's commit", WAIT, |d| applied(d, &sha));
    assert_eq!(count(&log, "planned incrementally"), 1);
    let version = |fqn: &str| sb.job(fqn).unwrap()["tags"]["version"].as_str().unwrap().to_string();
    assert_eq!(version("job::/dev::a1"), "2");
    assert_eq!(version("job::/dev::b1"), "by-hand", "an incremental commit reads and changes only what it declares");

    // The full reconcile (a sync; the resync does the same) finds b1 and puts it back.
    let (code, body) = d.post("/v1/sync", None, None);
    assert!(code < 300, "{body}");
    d.wait_for("b1 to be put back", WAIT, |_| version("job::/dev::b1") == "1");
    let history: Value = d.get(&format!("/v1/history?sha={sha}")).1;
    let drift = history.as_array().unwrap().iter().find(|e| e["outcome"] == "drift_found");
    let drift = drift.unwrap_or_else(|| panic!("no drift recorded: {history}"));
    assert_eq!(drift["detail"]["resources"], json!(["job::/dev::b1"]), "{drift}");
    assert_eq!(count(&log, "planned incrementally"), 1, "the drift check is a full plan");
}
