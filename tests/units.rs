//! A fleet of deployment units in one daemon (issue 19, item 1): `capstan daemon --path
//! 'clusters/*'` follows every directory of the repository that holds its own capstan.yaml,
//! each applied to its own target. Real daemon, real git repositories, real sandboxes over HTTP.

mod common;
use common::git::*;
use common::pg::*;
use common::units::*;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

/// Every event of the daemon's stream, from the first it still has, read in the background.
struct Events {
    rx: std::sync::mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    fn open(d: &DaemonProc) -> Self {
        Self::open_at(d, "/v1/events")
    }

    fn open_at(d: &DaemonProc, path: &str) -> Self {
        let url = format!("{}{path}", d.url);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
            let Ok(resp) = client.get(url).header("Last-Event-ID", "0").send() else { return };
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if let Some(data) = line.strip_prefix("data:")
                    && tx.send(serde_json::from_str(data.trim()).unwrap()).is_err()
                {
                    return;
                }
            }
        });
        Events { rx, seen: Vec::new() }
    }

    /// The first event (seen so far or to come) that `f` accepts.
    fn find(&mut self, f: impl Fn(&Value) -> bool) -> Value {
        if let Some(e) = self.seen.iter().find(|e| f(e)) {
            return e.clone();
        }
        let start = Instant::now();
        loop {
            let left = WAIT.saturating_sub(start.elapsed());
            let e = self.rx.recv_timeout(left).expect("the event looked for");
            self.seen.push(e.clone());
            if f(&e) {
                return e;
            }
        }
    }
}

#[test]
fn twenty_units_on_twenty_sandboxes_converge_and_a_broken_manifest_in_one_blocks_none() {
    const N: usize = 20;
    let sandboxes: Vec<SandboxProc> = (0..N).map(|_| SandboxProc::start(&[])).collect();
    let units: Vec<String> = (0..N).map(|i| format!("clusters/c{i:02}")).collect();
    let repo = Repo::new();
    for (u, sb) in units.iter().zip(&sandboxes) {
        repo.write(&format!("{u}/capstan.yaml"), &config_for(sb, ""));
        repo.write(&format!("{u}/web.yaml"), &job_yaml("web", "1"));
    }
    // Matches the pattern but has no capstan.yaml of its own: not a unit. Nor is a directory
    // the pattern does not match.
    repo.write("clusters/notes/web.yaml", &job_yaml("stray", "1"));
    repo.write("other/x/capstan.yaml", &config_for(&sandboxes[0], ""));
    repo.write("other/x/stray.yaml", &job_yaml("stray", "1"));
    let first = repo.commit("twenty units, web v1");
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    let mut events = Events::open(&d);
    d.wait_for("all twenty units to apply the first commit", WAIT, |d| {
        units.iter().all(|u| unit_status(d, u, &first).as_deref() == Some("applied"))
    });
    eprintln!("start → 20 units applied in {:?}", started.elapsed());
    for (u, sb) in units.iter().zip(&sandboxes) {
        let jobs: Vec<String> = sb.jobs().iter().map(|j| j["fqn"].as_str().unwrap().to_string()).collect();
        assert_eq!(jobs, ["job::/dev::web"], "{u}'s sandbox holds its own unit's job, and only it");
        assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "1", "{u}");
    }

    // /v1/units: every unit, with its platform, its target (its own sandbox) and what it applied.
    let (code, list) = d.get("/v1/units");
    assert_eq!(code, 200);
    let list = list.as_array().unwrap().clone();
    let names: Vec<&str> = list.iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, units.iter().map(String::as_str).collect::<Vec<_>>(), "the units, by name; no stray directory");
    for (u, sb) in list.iter().zip(&sandboxes) {
        assert_eq!(u["platform"], "apcera", "{u}");
        assert!(u["target"].as_str().unwrap().contains(&sb.url), "{u}: its own sandbox");
        assert_eq!(u["last_applied"], first, "{u}");
        assert_eq!(u["status"], "applied", "{u}");
        assert!(u["phase"].is_string(), "{u}");
    }
    // The paths without a unit cannot say which one: 409, naming /v1/units.
    for path in ["/v1/plans/deploy", "/v1/configurations", "/v1/history"] {
        let (code, body) = d.get(path);
        assert_eq!(code, 409, "{path}: {body}");
        assert!(body["message"].as_str().unwrap().contains("/v1/units"), "{path}: {body}");
    }
    let (code, status) = d.get("/v1/status");
    assert_eq!(code, 200);
    assert_eq!(status["units"].as_array().unwrap().len(), N, "{status}");
    let (code, plan) = d.get(&format!("/v1/units/{}/plans/deploy", enc(&units[3])));
    assert_eq!(code, 200, "{plan}");
    assert_eq!(plan["commit"], first);
    let (code, _) = d.get("/v1/units/clusters%2Fnotes/plans/deploy");
    assert_eq!(code, 404, "not a unit");

    // A unit's events carry its name.
    let converged = events.find(|e| e["type"] == "converged" && e["unit"] == "clusters/c07");
    assert_eq!(converged["sha"], first);

    // One commit: every unit's web goes to v2, and c13 gets a manifest that does not validate.
    let broken = 13;
    for u in &units {
        repo.write(&format!("{u}/web.yaml"), &job_yaml("web", "2"));
    }
    repo.write(&format!("{}/api.yaml", units[broken]), "jobs:\n  job::::api:\n    stat: started\n");
    sandboxes[broken].clear_requests();
    let second = repo.commit("web v2 everywhere, c13 broken");
    let started = Instant::now();
    d.wait_for("the second commit to be judged in every unit", WAIT, |d| {
        units.iter().enumerate().all(|(i, u)| {
            let want = if i == broken { "invalid" } else { "applied" };
            unit_status(d, u, &second).as_deref() == Some(want)
        })
    });
    eprintln!("commit → 19 applied, 1 invalid in {:?}", started.elapsed());
    for (i, (u, sb)) in units.iter().zip(&sandboxes).enumerate() {
        let want = if i == broken { "1" } else { "2" };
        assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], want, "{u}");
    }
    assert!(
        sandboxes[broken].mutating_requests().is_empty(),
        "nothing of the invalid commit was applied: {:?}",
        sandboxes[broken].mutating_requests()
    );
    let (_, conf) = d.get(&format!("/v1/units/{}/configurations/{second}", enc(&units[broken])));
    let text = conf["errors"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("clusters/c13/api.yaml:3:5: error: unknown field `stat`"), "{text}");
    let failed = events.find(|e| e["type"] == "render_failed");
    assert_eq!(failed["unit"], "clusters/c13", "{failed}");
    assert_eq!(failed["sha"], second);
    let (_, list) = d.get("/v1/units");
    for (i, u) in list.as_array().unwrap().iter().enumerate() {
        let (want_status, want_applied) = if i == broken { ("invalid", &first) } else { ("applied", &second) };
        assert_eq!(u["status"], want_status, "{u}");
        assert_eq!(u["last_applied"], *want_applied, "{u}");
    }
    // Each unit's history is its own: c13's has no `applied` for the second commit.
    let (_, history) = d.get(&format!("/v1/units/{}/history", enc(&units[broken])));
    let outcomes: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["sha"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert!(outcomes.contains(&(second.as_str(), "invalid")), "{outcomes:?}");
    assert!(!outcomes.contains(&(second.as_str(), "applied")), "{outcomes:?}");
    // Per-unit metrics carry the unit.
    let metrics = d.text("/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("capstan_reconciles_total{") && l.contains("unit=\"clusters/c13\"")),
        "{metrics}"
    );
    let applied_at: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("capstan_unit_last_applied_commit_timestamp_seconds{")).collect();
    assert_eq!(applied_at.len(), N, "one per unit: {applied_at:?}");
    assert!(applied_at.iter().any(|l| l.contains("unit=\"clusters/c13\"")), "{applied_at:?}");
}

#[test]
fn a_unit_that_appears_is_started_one_that_disappears_is_left_as_it_is_and_history_survives_a_restart() {
    let (sa, sb) = (SandboxProc::start(&[]), SandboxProc::start(&[]));
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_for(&sa, ""));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("unit a");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    d.wait_for("unit a to apply", WAIT, |d| unit_status(d, "clusters/a", &first).as_deref() == Some("applied"));

    // A new directory with its own capstan.yaml is a new unit, started at the commit.
    repo.write("clusters/b/capstan.yaml", &config_for(&sb, ""));
    repo.write("clusters/b/web.yaml", &job_yaml("web", "b1"));
    let second = repo.commit("unit b");
    d.wait_for("unit b to apply", WAIT, |d| unit_status(d, "clusters/b", &second).as_deref() == Some("applied"));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "b1");

    // Unit a's directory goes: it is no longer reconciled, and nothing of it is deleted.
    std::fs::remove_dir_all(repo.path().join("clusters/a")).unwrap();
    repo.write("clusters/b/web.yaml", &job_yaml("web", "b2"));
    sa.clear_requests();
    let third = repo.commit("unit a gone, b v2");
    d.wait_for("unit b to apply the third commit", WAIT, |d| {
        unit_status(d, "clusters/b", &third).as_deref() == Some("applied")
    });
    d.wait_for("unit a to leave /v1/units", WAIT, |d| {
        let (_, list) = d.get("/v1/units");
        list.as_array().unwrap().iter().all(|u| u["name"] != "clusters/a")
    });
    assert_eq!(sa.job("job::/dev::web").unwrap()["tags"]["version"], "1", "a retired unit is not pruned");
    assert!(sa.mutating_requests().is_empty(), "{:?}", sa.mutating_requests());
    // With one unit left, the paths without a unit answer for it.
    let (code, target) = d.get("/v1/configurations/target");
    assert_eq!(code, 200, "{target}");
    assert_eq!(target["sha"], third);
    assert_eq!(d.stop(), 0);

    // Restarted on the same state directory: each unit's history is there, nothing is applied
    // again.
    sb.clear_requests();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    d.wait_for("the restarted daemon to be ready", WAIT, |d| d.get("/health/ready").0 == 200);
    assert_eq!(unit_status(&d, "clusters/b", &second).as_deref(), Some("applied"));
    assert_eq!(unit_status(&d, "clusters/b", &third).as_deref(), Some("applied"));
    assert_eq!(unit_status(&d, "clusters/b", &first), None, "unit a's commit is not in b's history");
    assert!(sb.mutating_requests().is_empty(), "applied again: {:?}", sb.mutating_requests());
}

#[test]
fn several_paths_name_several_units_and_each_takes_its_own_target() {
    let (sa, sb) = (SandboxProc::start(&[]), SandboxProc::start(&[]));
    let repo = Repo::new();
    repo.write("eu/capstan.yaml", &config_for(&sa, ""));
    repo.write("eu/web.yaml", &job_yaml("web", "eu"));
    repo.write("us/capstan.yaml", &config_for(&sb, ""));
    repo.write("us/web.yaml", &job_yaml("web", "us"));
    let first = repo.commit("two units");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(
        repo.path().to_str().unwrap(),
        state.path(),
        &["--path", "eu", "--path", "us", "--unit-parallelism", "1"],
        &[],
    );
    d.wait_for("both units to apply", WAIT, |d| {
        ["eu", "us"].iter().all(|u| unit_status(d, u, &first).as_deref() == Some("applied"))
    });
    assert_eq!(sa.job("job::/dev::web").unwrap()["tags"]["version"], "eu");
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "us");
    // A unit's own event stream carries that unit's events only.
    let mut eu = Events::open_at(&d, "/v1/units/eu/events");
    let converged = eu.find(|e| e["type"] == "converged");
    assert_eq!((&converged["unit"], &converged["sha"]), (&Value::from("eu"), &Value::from(first.clone())));
    assert!(eu.seen.iter().all(|e| e["unit"] == "eu"), "{:?}", eu.seen);
    // The CLI drives one unit's plan with --unit; without it, the daemon says to name one.
    let run = run_in(repo.path(), &["plan", "status", "--daemon", &d.url, "--unit", "us", "-o", "json"]);
    run.ok();
    assert_eq!(run.json()["commit"], first);
    let run = run_in(repo.path(), &["plan", "status", "--daemon", &d.url]);
    run.code(1);
    assert!(run.stderr.contains("409") && run.stderr.contains("/v1/units"), "{}", run.stderr);
    // A sync reaches every unit.
    let before = d.reconciles();
    let (code, _) = d.post("/v1/sync", None, None);
    assert_eq!(code, 202);
    d.wait_for("both units to reconcile again", WAIT, |d| d.reconciles() >= before + 2);
}

#[test]
fn plan_and_apply_take_a_pattern_report_per_unit_and_exit_with_the_worst() {
    let sandboxes: Vec<SandboxProc> = (0..3).map(|_| SandboxProc::start(&[])).collect();
    let w = Workdir::new();
    for (u, sb) in ["a", "b", "c"].iter().zip(&sandboxes) {
        w.write(&format!("clusters/{u}/capstan.yaml"), &config_for(sb, ""));
        w.write(&format!("clusters/{u}/web.yaml"), &job_yaml("web", u));
    }
    w.write("clusters/c/api.yaml", "jobs:\n  job::::api:\n    stat: started\n");
    w.write("clusters/notes/web.yaml", &job_yaml("stray", "1")); // no capstan.yaml: not a unit

    // JSON: one object per unit, with its `unit`; the invalid one with its file:line:column.
    let run = w.capstan(&["plan", "clusters/*", "--output", "json"]);
    run.code(1);
    let list: Value = serde_json::from_str(&run.stdout).unwrap();
    let list = list.as_array().unwrap();
    let units: Vec<&str> = list.iter().map(|p| p["unit"].as_str().unwrap()).collect();
    assert_eq!(units, ["clusters/a", "clusters/b", "clusters/c"]);
    for p in &list[..2] {
        assert_eq!(changed(p), [("create".to_string(), "job::/dev::web".to_string())], "{p}");
    }
    let errors = list[2]["errors"].as_array().unwrap();
    assert!(errors[0].as_str().unwrap().contains("api.yaml:3:5"), "{errors:?}");

    // Text: a heading per unit; changes but no error exit 2 with --detailed-exitcode.
    let run = w.capstan(&["plan", "clusters/[ab]", "--detailed-exitcode"]);
    run.code(2);
    let a = run.stdout.find("=== unit clusters/a ===").expect(&run.stdout);
    let b = run.stdout.find("=== unit clusters/b ===").expect(&run.stdout);
    assert!(a < b && !run.stdout.contains("clusters/c"), "{}", run.stdout);
    assert_eq!(run.stdout.matches("# job::/dev::web will be created").count(), 2, "{}", run.stdout);

    // Apply: every valid unit to its own target; the invalid one changes nothing; exit 1.
    let run = w.capstan(&["apply", "clusters/*", "--yes"]);
    run.code(1);
    assert!(run.stdout.contains("=== unit clusters/c ==="), "{}", run.stdout);
    for (u, sb) in ["a", "b"].iter().zip(&sandboxes) {
        assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], *u);
    }
    assert!(sandboxes[2].mutating_requests().is_empty(), "{:?}", sandboxes[2].mutating_requests());
    // Now planned again: nothing to do in a and b.
    let run = w.capstan(&["plan", "clusters/[ab]", "--detailed-exitcode"]);
    run.code(0);
}

#[test]
fn on_postgres_each_units_history_is_apart_and_a_restart_loses_none_of_it() {
    let (sa, sb) = (SandboxProc::start(&[]), SandboxProc::start(&[]));
    let store = fresh_database();
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_for(&sa, ""));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "a1"));
    repo.write("clusters/b/capstan.yaml", &config_for(&sb, ""));
    repo.write("clusters/b/web.yaml", &job_yaml("web", "b1"));
    let first = repo.commit("two units");
    let args = ["--path", "clusters/*", "--store", store.as_str()];
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &args, &[]);
    d.wait_for("both units to apply", WAIT, |d| {
        ["clusters/a", "clusters/b"].iter().all(|u| unit_status(d, u, &first).as_deref() == Some("applied"))
    });
    // Only b's manifest changes; b's is invalid: a has nothing to do, b records it invalid.
    repo.write("clusters/b/api.yaml", "jobs:\n  job::::api:\n    stat: started\n");
    let second = repo.commit("b broken");
    d.wait_for("b to judge the second commit", WAIT, |d| {
        unit_status(d, "clusters/b", &second).as_deref() == Some("invalid")
    });
    d.wait_for("a to judge the second commit", WAIT, |d| {
        unit_status(d, "clusters/a", &second).as_deref() == Some("applied")
    });
    let history = |d: &DaemonProc, u: &str| {
        let (code, h) = d.get(&format!("/v1/units/{}/history", enc(u)));
        assert_eq!(code, 200, "{h}");
        h
    };
    let (ha, hb) = (history(&d, "clusters/a"), history(&d, "clusters/b"));
    let has = |h: &Value, sha: &str, outcome: &str| {
        h.as_array().unwrap().iter().any(|e| e["sha"] == sha && e["outcome"] == outcome)
    };
    assert!(has(&hb, &second, "invalid") && !has(&ha, &second, "invalid"), "a: {ha}\nb: {hb}");
    assert_eq!(d.stop(), 0);

    // A new state directory: everything the units knew is in the store.
    sa.clear_requests();
    sb.clear_requests();
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &args, &[]);
    d.wait_for("the restarted daemon to be ready", WAIT, |d| d.get("/health/ready").0 == 200);
    assert_eq!(history(&d, "clusters/a"), ha, "a's history, unchanged");
    assert_eq!(unit_status(&d, "clusters/b", &second).as_deref(), Some("invalid"));
    assert_eq!(unit_status(&d, "clusters/a", &first).as_deref(), Some("applied"));
    assert!(sa.mutating_requests().is_empty() && sb.mutating_requests().is_empty(), "applied again");
}

#[test]
fn a_unit_whose_capstan_yaml_is_invalid_does_not_start_and_blocks_no_other() {
    let sa = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_for(&sa, ""));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "a1"));
    // Its target cannot be chosen: it must not fall back to anything.
    repo.write("clusters/bad/capstan.yaml", "targets:\n  sb:\n    platfrom: apcera\n");
    repo.write("clusters/bad/web.yaml", &job_yaml("web", "bad"));
    let first = repo.commit("a good unit, a bad one");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    d.wait_for("unit a to apply", WAIT, |d| unit_status(d, "clusters/a", &first).as_deref() == Some("applied"));
    let (_, list) = d.get("/v1/units");
    let bad = list.as_array().unwrap().iter().find(|u| u["name"] == "clusters/bad").cloned().expect("listed");
    assert_eq!(bad["phase"], "not_started", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("clusters/bad/capstan.yaml:3:"), "{bad}");
    let (code, _) = d.get("/v1/units/clusters%2Fbad/plans/deploy");
    assert_eq!(code, 404);

    // Fixed in a later commit, it starts then.
    let sb = SandboxProc::start(&[]);
    repo.write("clusters/bad/capstan.yaml", &config_for(&sb, ""));
    let second = repo.commit("bad fixed");
    d.wait_for("the fixed unit to apply", WAIT, |d| {
        unit_status(d, "clusters/bad", &second).as_deref() == Some("applied")
    });
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "bad");
}

/// Two units that mark what they make with one owner on one target would each take the
/// other's resources for their own and prune what the other declares: both are refused (which
/// units run depends on the commit alone, not on which one a daemon happened to start first),
/// named in `/v1/units` with why, and neither sends anything; given an owner each, both start.
#[test]
fn two_units_with_one_owner_on_one_target_are_refused_not_left_to_prune_each_other() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_for(&sb, "prune: true\n"));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "a1"));
    repo.write("clusters/b/capstan.yaml", &config_for(&sb, "prune: true\n"));
    repo.write("clusters/b/api.yaml", &job_yaml("api", "b1"));
    repo.commit("two units, one target, one owner");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    let (_, list) = d.get("/v1/units");
    for u in ["clusters/a", "clusters/b"] {
        let line = list.as_array().unwrap().iter().find(|l| l["name"] == u).cloned().expect("listed");
        assert_eq!(line["phase"], "not_started", "{line}");
        let why = line["error"].as_str().unwrap();
        assert!(why.contains("units clusters/a and clusters/b both apply to") && why.contains("daemon-test"), "{line}");
    }
    assert!(sb.mutating_requests().is_empty(), "a refused unit sent something: {:?}", sb.mutating_requests());

    // Given its own owner, it starts; neither unit's job is pruned by the other.
    repo.write(
        "clusters/b/capstan.yaml",
        &config_for(&sb, "prune: true\n").replace("owner: daemon-test", "owner: team-b"),
    );
    let second = repo.commit("b has its own owner");
    d.wait_for("unit b to apply", WAIT, |d| unit_status(d, "clusters/b", &second).as_deref() == Some("applied"));
    d.wait_for("unit a to judge the second commit", WAIT, |d| {
        unit_status(d, "clusters/a", &second).as_deref() == Some("applied")
    });
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "a1");
    assert_eq!(sb.job("job::/dev::api").unwrap()["tags"]["version"], "b1");
}

/// The same on the command line: `capstan apply 'clusters/*'` refuses, before any unit
/// changes anything, two units that would apply to one target with one owner.
#[test]
fn apply_refuses_two_units_with_one_owner_on_one_target_before_changing_anything() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    for u in ["a", "b"] {
        w.write(&format!("clusters/{u}/capstan.yaml"), &config_for(&sb, "prune: true\n"));
        w.write(&format!("clusters/{u}/{u}.yaml"), &job_yaml(u, "1"));
    }
    let run = w.capstan(&["apply", "clusters/*", "--yes"]);
    run.code(1);
    assert!(
        run.stderr.contains("units clusters/a and clusters/b both apply to") && run.stderr.contains("daemon-test"),
        "{}",
        run.stderr
    );
    assert!(sb.mutating_requests().is_empty(), "{:?}", sb.mutating_requests());

    // With an owner each, both apply and neither prunes the other's job.
    w.write(
        "clusters/b/capstan.yaml",
        &config_for(&sb, "prune: true\n").replace("owner: daemon-test", "owner: team-b"),
    );
    w.capstan(&["apply", "clusters/*", "--yes"]).code(0);
    w.capstan(&["apply", "clusters/*", "--yes"]).code(0);
    assert!(sb.job("job::/dev::a").is_some() && sb.job("job::/dev::b").is_some());
}
