//! The daemon tells the truth and heals what others break: resources deleted, changed or
//! relabelled behind its back are put back; the branch is followed whichever commit it is at;
//! rollback stays within the followed branch; the history never rewrites the past; interrupt and
//! continue behave as seed 000's plans do; one bad template cannot stop it. The real binary, real
//! git repositories, sandbox processes.

mod common;
use common::git::*;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn job_yaml(name: &str, tag: &str) -> String {
    format!(
        "jobs:\n  job::::{name}:\n    state: started\n    labels: {{tier: web}}\n    tags:\n      version: \"{tag}\"\n"
    )
}

fn applied(d: &DaemonProc, sha: &str) -> bool {
    d.status_of(sha).as_deref() == Some("applied")
}

fn version(sb: &SandboxProc, fqn: &str) -> Option<String> {
    sb.job(fqn).and_then(|j| j["tags"]["version"].as_str().map(str::to_string))
}

/// The daemon's history of one commit, oldest first, as (trigger, outcome).
fn history(d: &DaemonProc, sha: &str) -> Vec<(String, String)> {
    let (_, h) = d.get(&format!("/v1/history?sha={sha}"));
    let mut out: Vec<(String, String)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["trigger"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect();
    out.reverse();
    out
}

/// Read the event stream from its start until an event matches; panics after `WAIT`.
fn wait_event(d: &DaemonProc, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let resp = reqwest::blocking::Client::builder()
        .timeout(WAIT)
        .build()
        .unwrap()
        .get(format!("{}/v1/events", d.url))
        .header("Last-Event-ID", "0")
        .send()
        .unwrap();
    for line in BufReader::new(resp).lines() {
        let line = line.unwrap_or_else(|e| panic!("no event {what}: {e}"));
        if let Some(data) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
    panic!("the event stream ended before {what}");
}

fn post_json(d: &DaemonProc, path: &str, body: &Value) -> (u16, Value) {
    d.post(path, None, Some((&body.to_string(), &[("Content-Type", "application/json")])))
}

// ---- 12.4: the branch is the truth ----------------------------------------------------------

#[test]
fn a_branch_reset_to_an_older_applied_commit_is_applied_again() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the second commit", WAIT, |d| applied(d, &second));
    assert_eq!(version(&sb, "job::/dev::web").as_deref(), Some("2"));

    git(repo.path(), &["reset", "-q", "--hard", &first]);
    d.wait_for("the platform to be back at v1", WAIT, |_| version(&sb, "job::/dev::web").as_deref() == Some("1"));
    d.wait_for("the reset to be recorded", WAIT, |d| {
        history(d, &first).iter().filter(|(_, o)| o == "applied").count() == 2
    });
    let (_, status) = d.get("/v1/status");
    assert_eq!(status["live"]["sha"], first, "{status}");
    assert_eq!(status["live"]["why"], "converged to the branch head", "{status}");
    assert_eq!(d.status_of(&second).as_deref(), Some("applied"), "the past is not rewritten");
}

// ---- 13.1: drift and self-heal, on every platform --------------------------------------------

/// What is done behind the daemon's back, and how to tell it was put back.
type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, Box<dyn Fn(&SandboxProc) -> bool + 'a>);

/// Delete, modify and relabel a job behind the daemon's back; each is put back by the next
/// resync (or only reported, without self-heal).
#[test]
fn apcera_jobs_deleted_modified_or_relabelled_out_of_band_are_healed_within_a_resync() {
    for self_heal in [true, false] {
        let sb = SandboxProc::start(&[]);
        let repo = Repo::new();
        repo.write("capstan.yaml", &config_for(&sb, ""));
        repo.write("web.yaml", &job_yaml("web", "1"));
        let sha = repo.commit("web");
        let state = tempfile::tempdir().unwrap();
        let heal = if self_heal { "true" } else { "false" };
        let d = DaemonProc::start(
            repo.path().to_str().unwrap(),
            state.path(),
            &["--resync", "1s", "--self-heal", heal],
            &[],
        );
        d.wait_for("the commit", WAIT, |d| applied(d, &sha));
        let fqn = "job::/dev::web";
        let put = |job: &Value| {
            let (code, body) = sb.send("PUT", &format!("/v1/jobs/{}", job["uuid"].as_str().unwrap()), Some(job));
            assert_eq!(code, 200, "{body}");
        };
        let cases: [Case; 3] = [
            (
                "modify",
                Box::new(|| {
                    let mut job = sb.job(fqn).unwrap();
                    job["tags"]["version"] = json!("by-hand");
                    put(&job);
                }),
                Box::new(|sb| version(sb, fqn).as_deref() == Some("1")),
            ),
            (
                "relabel",
                Box::new(|| {
                    let mut job = sb.job(fqn).unwrap();
                    job["labels"]["tier"] = json!("hijacked");
                    put(&job);
                }),
                Box::new(|sb| sb.job(fqn).is_some_and(|j| j["labels"]["tier"] == "web")),
            ),
            (
                "delete",
                Box::new(|| {
                    let uuid = sb.job(fqn).unwrap()["uuid"].as_str().unwrap().to_string();
                    assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{uuid}"), None).0, 200);
                    assert!(sb.job(fqn).is_none());
                }),
                Box::new(|sb| version(sb, fqn).as_deref() == Some("1")),
            ),
        ];
        for (what, break_it, healed) in cases {
            break_it();
            if self_heal {
                d.wait_for(&format!("{what} to be healed"), WAIT, |_| healed(&sb));
                d.wait_for("no drift left", WAIT, |d| d.get("/v1/status").1["drifted"] == json!([]));
            } else {
                d.wait_for(&format!("{what} to be reported"), WAIT, |d| {
                    d.get("/v1/status").1["drifted"] == json!([fqn])
                });
                assert!(!healed(&sb), "{what} was repaired without self-heal");
                // Put it back by hand for the next case.
                repo.write("web.yaml", &job_yaml("web", "1"));
                let sha = repo.commit(&format!("after {what}"));
                d.wait_for("the next commit", WAIT, |d| applied(d, &sha));
                // (the next commit re-applies the declaration)
                assert!(healed(&sb), "{what}: the next commit applies the declaration again");
            }
        }
        // A sync after a delete behind its back works too (it used to fail on the old id).
        if self_heal {
            let uuid = sb.job(fqn).unwrap()["uuid"].as_str().unwrap().to_string();
            assert_eq!(sb.send("DELETE", &format!("/v1/jobs/{uuid}"), None).0, 200);
            assert_eq!(d.post("/v1/sync", None, None).0, 202);
            d.wait_for("the sync to re-create it", WAIT, |_| version(&sb, fqn).as_deref() == Some("1"));
            let failures: Vec<_> =
                history(&d, &sha).into_iter().filter(|(_, o)| o == "failed" || o == "invalid").collect();
            assert!(failures.is_empty(), "{failures:?}");
        }
    }
}

fn marathon_config(sb: &SandboxProc) -> String {
    format!("owner: daemon-test\ntargets:\n  m:\n    platform: marathon\n    url: {}\ndefault_target: m\n", sb.url)
}

fn marathon_app(sb: &SandboxProc) -> Option<Value> {
    let (code, v) = sb.send("GET", "/v2/apps/shop/web", None);
    (code == 200).then(|| v["app"].clone())
}

#[test]
fn marathon_apps_deleted_modified_or_relabelled_out_of_band_are_healed_within_a_resync() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &marathon_config(&sb));
    repo.write("web.json", r#"{"id": "/shop/web", "cmd": "sleep 1000", "instances": 2, "labels": {"tier": "web"}}"#);
    let sha = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--resync", "1s"], &[]);
    d.wait_for("the commit", WAIT, |d| applied(d, &sha));
    let healthy = |sb: &SandboxProc| {
        marathon_app(sb)
            .is_some_and(|a| a["instances"] == 2 && a["labels"]["tier"] == "web" && a["cmd"] == "sleep 1000")
    };
    assert!(healthy(&sb));
    let change = |patch: Value| {
        let (code, body) = sb.send("PUT", "/v2/apps/shop/web?force=true", Some(&patch));
        assert!(code == 200 || code == 201, "{code} {body}");
    };
    // Each repair is waited for to its end (converged: no drift left) before the next change,
    // or that change would land between the repair's step and its read-back.
    let repaired = |what: &str| {
        d.wait_for(what, WAIT, |_| healthy(&sb));
        d.wait_for("no drift left", WAIT, |d| d.get("/v1/status").1["drifted"] == json!([]));
    };
    change(json!({ "instances": 5 }));
    repaired("the instances to be put back");
    let mut labels = marathon_app(&sb).unwrap()["labels"].clone();
    labels["tier"] = json!("hijacked");
    change(json!({ "labels": labels }));
    repaired("the label to be put back");
    let (code, body) = sb.send("DELETE", "/v2/apps/shop/web?force=true", None);
    assert_eq!(code, 200, "{body}");
    repaired("the app to be created again");
    let failures: Vec<_> = history(&d, &sha).into_iter().filter(|(_, o)| o == "failed").collect();
    assert!(failures.is_empty(), "{failures:?}");
}

// ---- 13.2 and 13.3: rollback within the followed branch; a history that keeps the past ------

#[test]
fn rollback_stays_within_the_followed_branch_and_the_history_keeps_the_past() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    // No retries: a failing request fails its step at once.
    repo.write("capstan.yaml", &config_for(&sb, "retry: {max_attempts: 1}\n"));
    repo.write("web.yaml", &job_yaml("web", "a"));
    let a = repo.commit("a");
    repo.write("web.yaml", &job_yaml("web", "a2"));
    let a2 = repo.commit("a2");
    repo.write("web.yaml", &job_yaml("web", "b"));
    let b = repo.commit("b");
    repo.write("web.yaml", &job_yaml("web", "c"));
    let c = repo.commit("c: main is ahead of deploy");
    git(repo.path(), &["branch", "deploy", &a]);
    git(repo.path(), &["checkout", "-q", "-b", "feature", &b]);
    repo.write("web.yaml", &job_yaml("web", "unreviewed"));
    let f = repo.commit("feature: not merged");
    git(repo.path(), &["checkout", "-q", "main"]);

    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--ref", "deploy"], &[]);
    d.wait_for("deploy at a", WAIT, |d| applied(d, &a));
    git(repo.path(), &["branch", "-f", "deploy", &b]);
    d.wait_for("deploy at b", WAIT, |d| applied(d, &b));
    assert_eq!(d.status_of(&a2).as_deref(), Some("superseded"));

    let refused = |to: &str, code: u16, says: &str| {
        let (got, body) = post_json(&d, "/v1/rollback", &json!({ "to": to }));
        assert_eq!(got, code, "{to}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{to}: {body}");
    };
    refused("@{-1}", 400, "reflog");
    refused("feature", 422, "not in the first-parent history of deploy");
    refused(&f, 422, "not in the first-parent history of deploy");
    refused(&c, 422, "not in the first-parent history of deploy");
    refused("main", 422, "not in the first-parent history of deploy");
    refused(&a2, 422, "never applied by this daemon");
    refused("no-such-commit", 404, "no-such-commit");
    let out = run_in(repo.path(), &["rollback", "--to", "feature", "--daemon", &d.url]);
    out.code(1);
    assert!(out.stderr.contains("422") && out.stderr.contains("first-parent"), "{}", out.stderr);
    assert_eq!(version(&sb, "job::/dev::web").as_deref(), Some("b"), "nothing was rolled back");

    // HEAD~2 is deploy's ~2 (a), not main's (a2, never applied).
    let (code, body) = post_json(&d, "/v1/rollback", &json!({ "to": "HEAD~2" }));
    assert_eq!((code, &body["sha"]), (202, &json!(a)), "{body}");
    d.wait_for("the rollback to a", WAIT, |_| version(&sb, "job::/dev::web").as_deref() == Some("a"));
    d.wait_for("the rollback to be recorded", WAIT, |d| {
        history(d, &a).contains(&("rollback".into(), "applied".into()))
    });
    let (_, status) = d.get("/v1/status");
    assert_eq!((&status["live"]["sha"], &status["pinned"]), (&json!(a), &json!(a)), "{status}");
    assert!(status["live"]["why"].as_str().unwrap().starts_with("pinned by rollback"), "{status}");

    // Forced, an unmerged commit is allowed; then back to b, which is listed first while live.
    let out = run_in(repo.path(), &["rollback", "--to", "feature", "--any-commit", "--daemon", &d.url]);
    out.ok();
    d.wait_for("the forced rollback", WAIT, |_| version(&sb, "job::/dev::web").as_deref() == Some("unreviewed"));
    d.wait_for("f applied", WAIT, |d| applied(d, &f));
    let (code, _) = post_json(&d, "/v1/rollback", &json!({ "to": b }));
    assert_eq!(code, 202);
    d.wait_for("back at b", WAIT, |_| version(&sb, "job::/dev::web").as_deref() == Some("b"));
    d.wait_for("b recorded", WAIT, |d| history(d, &b).contains(&("rollback".into(), "applied".into())));
    let (_, list) = d.get("/v1/configurations");
    assert_eq!(list[0]["sha"], b, "the live commit is listed first: {list}");

    // A rollback that fails does not make an applied commit anything but applied.
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&json!({ "fail_rate": 1.0, "methods": ["PUT"] }))).0, 200);
    let (code, _) = post_json(&d, "/v1/rollback", &json!({ "to": a }));
    assert_eq!(code, 202);
    d.wait_for("the failed rollback and its retry", WAIT, |d| {
        let h = history(d, &a);
        h.contains(&("rollback".into(), "failed".into())) && h.contains(&("retry".into(), "failed".into()))
    });
    let conf = d.configuration(&a).unwrap();
    assert_eq!(conf["status"], "applied", "{conf}");
    let (_, all) = d.get("/v1/configurations?all=true");
    let entry = all.as_array().unwrap().iter().find(|c| c["sha"] == a).unwrap();
    assert_eq!((&entry["last_outcome"], &entry["last_trigger"]), (&json!("failed"), &json!("retry")), "{entry}");
    for c in all.as_array().unwrap() {
        assert!(c["status"] != "applied" || c.get("superseded_by").is_none(), "applied and superseded: {c}");
    }
    // Every entry of the history is still there, oldest first.
    let h = history(&d, &a);
    assert_eq!(h.first(), Some(&("commit".to_string(), "seen".to_string())), "{h:?}");
    assert!(h.contains(&("commit".into(), "applied".into())), "{h:?}");
}

// ---- 13.4 and 13.5: interrupt and continue -------------------------------------------------

#[test]
fn while_interrupted_commits_are_recorded_and_continue_plans_again_against_the_newest() {
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..5 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let x = repo.commit("five jobs");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--parallelism", "1"], &[]);
    d.wait_for("a step to run", WAIT, |d| d.step_statuses().iter().any(|s| s == "IN_PROGRESS"));
    let (code, body) = d.post("/v1/plans/deploy/interrupt", None, None);
    assert_eq!((code, &body["message"]), (200, &json!("Received cmd: interrupt")), "{body}");
    let (code, body) = d.post("/v1/plans/deploy/interrupt", None, None);
    assert_eq!(code, 208, "already interrupted: {body}");
    d.wait_for("the plan to stop", WAIT, |d| d.get("/v1/plans/deploy").1["status"] == "WAITING");
    let done = d.step_statuses().iter().filter(|s| *s == "COMPLETE").count();
    assert!(done < 5);

    // A new commit while interrupted is recorded, and nothing more runs.
    repo.write("j0.yaml", &job_yaml("job-0", "2"));
    let y = repo.commit("job-0 v2");
    d.wait_for("the new commit to be recorded", WAIT, |d| d.status_of(&y).as_deref() == Some("pending"));
    let seen = wait_event(&d, "commit_seen of y", |e| e["type"] == "commit_seen" && e["sha"] == y);
    assert_eq!(seen["deferred"], true, "{seen}");
    let (code, body) = d.post("/v1/sync", None, None);
    assert_eq!(code, 202);
    assert!(body["message"].as_str().unwrap().contains("on continue"), "{body}");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.step_statuses().iter().filter(|s| *s == "COMPLETE").count(), done, "a step ran while interrupted");
    assert_eq!(d.get("/v1/status").1["interrupted"], true);

    // Continue: planned again against y before any other step.
    let (code, _) = d.post("/v1/plans/deploy/continue", None, None);
    assert_eq!(code, 200);
    let replanned = wait_event(&d, "plan_replanned", |e| e["type"] == "plan_replanned");
    assert_eq!((&replanned["from"], &replanned["sha"]), (&json!(x), &json!(y)), "{replanned}");
    d.wait_for("a step of the new plan to run", WAIT, |d| {
        d.get("/v1/plans/deploy").1["commit"] == y && d.step_statuses().iter().any(|s| s == "IN_PROGRESS")
    });
    let statuses = d.step_statuses();
    assert!(!statuses.iter().any(|s| s == "WAITING"), "steps about to run show WAITING: {statuses:?}");
    d.wait_for("y to apply", WAIT, |d| applied(d, &y));
    assert_eq!(version(&sb, "job::/dev::job-0").as_deref(), Some("2"));
    assert_eq!(sb.jobs().len(), 5);
    assert_eq!(d.status_of(&x).as_deref(), Some("partial"), "x had steps applied: it is not merely superseded");
    let (code, _) = d.post("/v1/plans/deploy/continue", None, None);
    assert_eq!(code, 208, "nothing to continue");
}

#[test]
fn an_interrupt_while_idle_holds_the_next_plan_waiting_across_a_restart() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the first commit", WAIT, |d| applied(d, &first));
    let (code, body) = d.post("/v1/plans/deploy/interrupt", None, None);
    assert_eq!(code, 200, "{body}");
    sb.clear_requests();
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the plan to wait", WAIT, |d| {
        let (_, p) = d.get("/v1/plans/deploy");
        p["commit"] == second && p["status"] == "WAITING"
    });
    assert!(d.step_statuses().iter().all(|s| s == "WAITING"));
    // A rollback while interrupted says what it will do.
    let (code, body) = post_json(&d, "/v1/rollback", &json!({ "to": first }));
    assert_eq!(code, 202);
    assert!(body["message"].as_str().unwrap().contains("when the interrupted plan is continued"), "{body}");
    assert_eq!(d.stop(), 0);

    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the restarted daemon to reconcile", WAIT, |d| d.get("/v1/status").1["ready"] == true);
    assert_eq!(d.get("/v1/status").1["interrupted"], true, "the interrupt survives a restart");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.mutating_count(), 0, "applied while interrupted: {:?}", sb.mutating_requests());
    let (code, _) = d.post("/v1/plans/deploy/interrupt", None, None);
    assert_eq!(code, 208);
    // The rollback was made before the restart; the branch has not moved: first is what is
    // applied on continue.
    let (code, _) = d.post("/v1/plans/deploy/continue", None, None);
    assert_eq!(code, 200);
    d.wait_for("the pinned commit to apply", WAIT, |_| version(&sb, "job::/dev::web").as_deref() == Some("1"));
    d.wait_for("recorded", WAIT, |d| history(d, &first).iter().any(|(t, o)| t == "continue" && o == "applied"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        assert_ne!(version(&sb, "job::/dev::web").as_deref(), Some("2"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- 13.6: one template cannot stop the daemon ----------------------------------------------

#[test]
fn a_recursive_template_makes_its_commit_invalid_and_the_daemon_carries_on_across_restarts() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("jobs/web.yaml", &job_yaml("web", "1"));
    let good = repo.commit("web");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the good commit", WAIT, |d| applied(d, &good));
    repo.write("jobs/boom.yaml.hbs", "{{#*inline \"a\"}}x{{> a}}{{/inline}}{{> a}}");
    let boom = repo.commit("boom");
    d.wait_for("the bad commit to be judged", WAIT, |d| d.status_of(&boom).as_deref() == Some("invalid"));
    let errors = d.configuration(&boom).unwrap()["errors"].to_string();
    assert!(errors.contains("jobs/boom.yaml.hbs:1:18: error: the partial \\\"a\\\" includes itself"), "{errors}");
    assert_eq!(d.stop(), 0, "the daemon is alive and stops cleanly");
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &[], &[]);
    d.wait_for("the restarted daemon to reconcile", WAIT, |d| d.get("/v1/status").1["ready"] == true);
    assert_eq!(d.status_of(&boom).as_deref(), Some("invalid"));
    assert_eq!(version(&sb, "job::/dev::web").as_deref(), Some("1"));
}
