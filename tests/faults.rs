//! Applies that survive faults: injected 5xx answers and dropped connections, a process killed
//! at seeded moments (after the Nth change reached the platform), a second apply while one
//! runs, and a plan that would delete too much; and failures that are reported plainly: retries
//! given up, a job not ready in its timeout, a step's error with where its resource is declared.

mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 100 jobs, 50 job links, 2 networks and 48 memberships: 200 resources.
fn two_hundred() -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..100 {
        s.push_str(&format!("  job::/r::j{i:03}:\n    state: started\n    tags: {{n: \"{i}\"}}\n"));
        if i % 2 == 1 {
            s.push_str(&format!("    links:\n      PREV: {{fqn: job::/r::j{:03}, port: 80}}\n", i - 1));
        }
    }
    s.push_str("networks:\n");
    for n in 0..2 {
        s.push_str(&format!("  network::/r::net{n}:\n    jobs:\n"));
        for i in (n * 24)..(n * 24 + 24) {
            s.push_str(&format!("      - job::/r::j{i:03}\n"));
        }
    }
    s
}

/// What the sandbox has, by kind: FQNs and bindings, to check for duplicates and gaps.
fn inventory(sb: &SandboxProc) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    // Read with faults off, so the check itself cannot fail.
    for j in sb.jobs() {
        *seen.entry(j["fqn"].as_str().unwrap().to_string()).or_insert(0) += 1;
        for b in j["bindings"].as_object().into_iter().flat_map(|m| m.values()) {
            let key = format!("link {} -> {}", j["fqn"].as_str().unwrap(), b["target_job_fqn"].as_str().unwrap_or("?"));
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    for n in sb.get("/v1/networks").as_array().unwrap() {
        *seen.entry(n["fqn"].as_str().unwrap().to_string()).or_insert(0) += 1;
        for e in n["network_end_points"].as_array().into_iter().flatten() {
            *seen.entry(format!("member {}", e["job_fqn"].as_str().unwrap())).or_insert(0) += 1;
        }
    }
    seen
}

fn faults(sb: &SandboxProc, f: Value) {
    assert_eq!(sb.send("PUT", "/_sandbox/faults", Some(&f)).0, 200);
}

#[test]
fn two_hundred_resources_converge_through_failures_and_resets_every_time() {
    for seed in 1..=10 {
        let sb = SandboxProc::start(&["--seed", &seed.to_string()]);
        let w = Workdir::new();
        // One send fails 19 % of the time here (a 10 % failure, else a 10 % reset), so with the
        // default 8 sends a request gives up with probability 0.19^8 ≈ 1.7e-6; over the ~6,000
        // requests of the ten seeds (the apply of seed 3 alone sent 574) that is about one run
        // in a hundred — the test's own flake, seen once in CI. With 16 sends it is ≈ 1e-8: what this test asserts is convergence through
        // faults, and how many sends the user allows is capstan.yaml's to say.
        w.write("capstan.yaml", "retry: {max_attempts: 16}\n");
        w.target(&sb.url);
        w.write("r.yaml", &two_hundred());
        faults(&sb, json!({ "fail_rate": 0.1, "reset_rate": 0.1 }));
        let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "16"]);
        assert_eq!(out.code, 0, "seed {seed} did not converge:\n{}\n{}", out.stdout, out.stderr);
        let again = w.capstan(&["plan", ".", "--detailed-exitcode"]);
        assert_eq!(again.code, 0, "seed {seed}: the second plan is not empty:\n{}", again.stdout);
        faults(&sb, json!({}));
        let seen = inventory(&sb);
        let mine: Vec<(&String, &usize)> = seen.iter().filter(|(k, _)| k.contains("/r::")).collect();
        assert!(mine.iter().all(|(_, n)| **n == 1), "seed {seed}: duplicates: {mine:?}");
        assert_eq!(mine.len(), 200, "seed {seed}: missing resources: {mine:?}");
        let injected = sb.requests().iter().filter(|r| matches!(r["status"].as_u64(), Some(0 | 500..=504))).count();
        assert!(injected > 20, "seed {seed}: only {injected} faults were injected");
    }
}

fn spawn_apply(w: &Workdir, parallelism: &str) -> std::process::Child {
    Command::new(capstan_bin())
        .args(["apply", ".", "--yes", "--parallelism", parallelism])
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kill9(child: &mut std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Run apply in the background and kill -9 it as soon as `n` mutating requests of it have
/// reached the sandbox (whose log is cleared first). Returns the killed process's pid, or
/// None when the apply ended before that.
fn kill_apply_after_changes(w: &Workdir, sb: &SandboxProc, n: u64) -> Option<u32> {
    sb.clear_requests();
    let mut child = spawn_apply(w, "4");
    let start = Instant::now();
    while sb.mutating_count() < n {
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(20) {
            kill9(&mut child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = child.try_wait().unwrap().is_none();
    kill9(&mut child);
    running.then(|| child.id())
}

/// 100 jobs with 50 links and 48 memberships on two networks; every round changes every job,
/// moves every link to another port (a create and a delete each) and shifts the memberships,
/// so a kill can land in a create, an update or a delete of every kind.
fn rotating(round: usize) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..100 {
        s.push_str(&format!(
            "  job::/r::j{i:03}:\n    state: started\n    weight: {round}\n    tags: {{n: \"{i}\"}}\n"
        ));
        if i % 2 == 1 {
            s.push_str(&format!("    links:\n      PREV: {{fqn: job::/r::j{:03}, port: {}}}\n", i - 1, 80 + round));
        }
    }
    s.push_str("networks:\n");
    let first = (round * 5) % 52;
    for n in 0..2 {
        s.push_str(&format!("  network::/r::net{n}:\n    jobs:\n"));
        for i in (first + n * 24)..(first + n * 24 + 24) {
            s.push_str(&format!("      - job::/r::j{i:03}\n"));
        }
    }
    s
}

#[test]
fn killed_at_seeded_moments_an_apply_resumes_without_duplicates() {
    // A few milliseconds per request, so the work left after the Nth change outlasts the
    // poll that notices it by far.
    let sb = SandboxProc::start(&["--latency-ms", "4", "--latency-jitter-ms", "2"]);
    let w = Workdir::new();
    // Every round replaces 50 links: not a mass delete here.
    w.write("capstan.yaml", "mass_delete: {max_deletes: 1000, max_percent: 100}\n");
    w.target(&sb.url);
    let mut rng = 0x9e3779b97f4a7c15u64;
    for round in 0..10 {
        w.write("r.yaml", &rotating(round));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Round 0 sends 300 changes (everything is created), later rounds 220.
        let n = 1 + rng % 140;
        let pid = kill_apply_after_changes(&w, &sb, n)
            .unwrap_or_else(|| panic!("round {round}: the apply ended before its change #{n} reached the sandbox"));
        let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "8"]);
        assert_eq!(out.code, 0, "round {round}: resume failed:\n{}\n{}", out.stdout, out.stderr);
        // The journal shows the kill landed mid-apply: the run was unfinished, steps were left.
        let resumed = out.stderr.lines().find(|l| l.contains(&format!("an earlier apply (pid {pid},")));
        let resumed =
            resumed.unwrap_or_else(|| panic!("round {round}: the resume does not name pid {pid}:\n{}", out.stderr));
        let counts = resumed.split("stopped after ").nth(1).unwrap();
        let mut words = counts.split(' ');
        let done: usize = words.next().unwrap().parse().unwrap();
        let total: usize = words.nth(1).unwrap().parse().unwrap();
        assert!(done < total, "round {round}: the kill after change #{n} left nothing to do: {resumed}");
        w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
        let seen = inventory(&sb);
        let mine: Vec<(&String, &usize)> = seen.iter().filter(|(k, _)| k.contains("/r::")).collect();
        assert!(mine.iter().all(|(_, n)| **n == 1), "round {round}: duplicates after a kill: {mine:?}");
        assert_eq!(mine.len(), 200, "round {round}: missing after a kill");
        let ports: Vec<u64> = sb
            .jobs()
            .iter()
            .flat_map(|j| j["bindings"].as_object().cloned().unwrap_or_default().into_values())
            .filter_map(|b| b["target_job_port"].as_u64())
            .collect();
        assert!(ports.len() == 50 && ports.iter().all(|p| *p == 80 + round as u64), "round {round}: links {ports:?}");
    }
}

#[test]
fn the_next_apply_says_what_a_killed_one_left() {
    let sb = SandboxProc::start(&["--latency-ms", "5"]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("r.yaml", &two_hundred());
    let pid = kill_apply_after_changes(&w, &sb, 40).expect("the apply finished before it was killed");
    let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "16"]);
    out.ok();
    assert!(out.stderr.contains(&format!("Resuming: an earlier apply (pid {pid}, started 20")), "{}", out.stderr);
    assert!(out.stderr.contains(" of 200 steps"), "{}", out.stderr);
}

#[test]
fn a_second_apply_fails_at_once_naming_the_first_and_a_dead_holders_lock_is_taken() {
    let sb = SandboxProc::start(&["--latency-ms", "30"]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("r.yaml", &two_hundred());
    let mut first = spawn_apply(&w, "2");
    // Wait until the first apply is sending changes, so it holds the lock.
    let start = Instant::now();
    while sb.mutating_requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the first apply never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let second = w.capstan(&["apply", ".", "--yes"]);
    let waited = t.elapsed();
    second.code(1);
    assert!(second.stderr.contains(&format!("another apply to {} is running", sb.url)), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "the holder is named: {}", second.stderr);
    assert!(second.stderr.contains("since 20"), "{}", second.stderr);
    assert!(waited < Duration::from_secs(5), "it failed at once, not after waiting ({waited:?})");
    kill9(&mut first);
    // The dead holder's lock file is still there, with its pid; the next apply takes over.
    let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "16"]);
    out.ok();
    w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
}

#[test]
fn deleting_the_whole_manifest_directory_trips_the_mass_delete_guard() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::from_example("examples/manifests/apcera");
    w.target(&sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    for f in ["network.yaml", "services.yaml", "jobs/web.yaml", "jobs/api.yaml", "jobs/worker.yaml"] {
        w.remove(f);
    }
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes", "--prune"]);
    out.code(1);
    assert!(out.stderr.contains("refusing to delete"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing is declared at all"), "{}", out.stderr);
    assert!(out.stderr.contains("--allow-mass-delete"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty(), "the guard let something through");
    let out = w.capstan(&["apply", ".", "--yes", "--prune", "--allow-mass-delete"]);
    out.ok();
    assert!(sb.job("job::/dev/shop::web").is_none());
    assert!(sb.get("/v1/services").as_array().unwrap().iter().all(|s| s["fqn"] != "service::/dev/shop::orders-db"));
}

#[test]
fn a_failed_step_stops_its_dependents_and_the_rest_still_finish() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    // job::/c::bad names a package uuid the platform does not have: its create fails, so
    // its link cannot be made; the other jobs are independent and are created.
    w.write(
        "m.yaml",
        "jobs:\n  job::/c::bad:\n    packages: [{uuid: 00000000-0000-0000-0000-000000000000}]\n    links:\n      OK: {fqn: job::/c::ok1, port: 1}\n  job::/c::ok1: {}\n  job::/c::ok2: {}\n",
    );
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(
        out.stdout.contains("ERROR    create job::/c::bad (m.yaml:2:3): POST /v1/jobs answered 404: no package"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "PENDING  create link job::/c::bad -> job::/c::ok1:1 (m.yaml:5:7): not started: create job::/c::bad failed"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Apply incomplete: 2 of 4 steps done, 1 failed, 1 not started."), "{}", out.stdout);
    assert!(sb.job("job::/c::ok1").is_some() && sb.job("job::/c::ok2").is_some());
    assert!(sb.job("job::/c::bad").is_none());
}

/// `n` jobs owned by capstan in namespace /m, with nothing else declared.
fn jobs(n: usize) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..n {
        s.push_str(&format!("  job::/m::j{i:02}: {{}}\n"));
    }
    s
}

/// Declare `n` jobs, apply, then declare only the first `keep`: the plan with --prune.
fn apply_then_keep(sb: &SandboxProc, w: &Workdir, n: usize, keep: usize) -> Run {
    w.write("m.yaml", &jobs(n));
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(sb.jobs().iter().filter(|j| j["fqn"].as_str().unwrap().starts_with("job::/m::")).count(), n);
    w.write("m.yaml", &jobs(keep));
    sb.clear_requests();
    w.capstan(&["apply", ".", "--yes", "--prune"])
}

fn m_jobs(sb: &SandboxProc) -> usize {
    sb.jobs().iter().filter(|j| j["fqn"].as_str().unwrap().starts_with("job::/m::")).count()
}

#[test]
fn more_than_ten_deletes_are_refused_even_under_thirty_percent() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    // 11 of 41: 27%, under the share but over the count.
    let out = apply_then_keep(&sb, &w, 41, 30);
    out.code(1);
    assert!(
        out.stderr.contains(
            "refusing to delete 11 of the 41 resources this owner manages (27%): the limits are 10 resources or 30%"
        ),
        "{}",
        out.stderr
    );
    assert!(sb.mutating_requests().is_empty(), "the guard let something through");
    assert_eq!(m_jobs(&sb), 41);
    // Exactly 10 (24%) is within both limits.
    w.write("m.yaml", &jobs(31));
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(m_jobs(&sb), 31);
    assert_eq!(sb.mutating_requests().iter().filter(|r| r["method"] == "DELETE").count(), 10);
}

#[test]
fn over_thirty_percent_is_refused_even_with_few_deletes() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    // 4 of 10: 40%.
    let out = apply_then_keep(&sb, &w, 10, 6);
    out.code(1);
    assert!(out.stderr.contains("refusing to delete 4 of the 10 resources this owner manages (40%)"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty(), "the guard let something through");
    // 3 of 10 is exactly 30%: allowed.
    w.write("m.yaml", &jobs(7));
    w.capstan(&["apply", ".", "--yes", "--prune"]).ok();
    assert_eq!(m_jobs(&sb), 7);
    assert_eq!(sb.mutating_requests().iter().filter(|r| r["method"] == "DELETE").count(), 3);
}

#[test]
fn mass_delete_in_capstan_yaml_raises_the_limits() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "mass_delete: {max_deletes: 20, max_percent: 50}\n");
    w.target(&sb.url);
    // 15 of 40 (38%) is over both default limits and under both of these.
    let out = apply_then_keep(&sb, &w, 40, 25);
    out.ok();
    assert_eq!(m_jobs(&sb), 25);
    assert_eq!(sb.mutating_requests().iter().filter(|r| r["method"] == "DELETE").count(), 15);
    // The raised limits still hold: 13 of 25 is 52%.
    let out = apply_then_keep(&sb, &w, 25, 12);
    out.code(1);
    assert!(out.stderr.contains("the limits are 20 resources or 50%"), "{}", out.stderr);
    assert!(sb.mutating_requests().is_empty());
}

#[test]
fn a_manifest_directory_that_does_not_exist_is_an_error_that_deletes_nothing() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::from_example("examples/manifests/apcera");
    w.target(&sb.url);
    w.capstan(&["apply", ".", "--yes"]).ok();
    let before = sb.jobs().len();
    sb.clear_requests();
    // A mistyped directory, with every flag that would let deletions through.
    for args in [
        vec!["apply", "no-such-dir", "--config", "capstan.yaml", "--yes", "--prune", "--allow-mass-delete"],
        vec!["plan", "no-such-dir", "--config", "capstan.yaml", "--prune"],
    ] {
        let out = w.capstan(&args);
        out.code(1);
        assert_eq!(out.stderr.trim(), "capstan: error: the manifest directory no-such-dir does not exist", "{args:?}");
        assert_eq!(out.stdout, "", "{args:?}");
    }
    assert!(sb.requests().is_empty(), "nothing was even read from the target: {:?}", sb.requests());
    assert_eq!(sb.jobs().len(), before);
}

#[test]
fn a_job_that_does_not_become_ready_in_its_timeout_fails_with_one_line() {
    // Instances take a minute to start; jobs may take one second.
    let sb = SandboxProc::start(&["--rollout-ms", "60000"]);
    let w = Workdir::new();
    w.write("capstan.yaml", "timeouts: {job: 1}\n");
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/t::web:\n    state: started\n  job::/t::idle: {}\n");
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let expected = "job::/t::web is not ready after 1s: 0 of 1 instances running (the readiness timeout for jobs; `timeouts: {job: SECONDS}` in capstan.yaml)";
    let errors: Vec<&str> = out.stdout.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(
        errors,
        [
            format!("  ERROR create job::/t::web (m.yaml:2:3): {expected}"),
            format!("  ERROR    create job::/t::web (m.yaml:2:3): {expected}"),
        ],
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Apply incomplete: 1 of 2 steps done, 1 failed, 0 not started."), "{}", out.stdout);
    // A kind the platform does not have is an error before anything is read.
    w.write("capstan.yaml", "timeouts: {jobs: 1}\n");
    w.target(&sb.url);
    sb.clear_requests();
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    assert!(
        out.stderr.contains(
            "capstan.yaml: timeouts names \"jobs\", which is not a kind the apcera provider waits for (expected job)"
        ),
        "{}",
        out.stderr
    );
    assert!(sb.requests().is_empty());
}

#[test]
fn retry_max_attempts_bounds_the_sends_of_one_request() {
    let sb = SandboxProc::start(&["--fail-rate", "1", "--seed", "7"]);
    let w = Workdir::new();
    w.write("capstan.yaml", "retry: {max_attempts: 2}\n");
    w.target(&sb.url);
    w.write("m.yaml", "jobs:\n  job::/t::web: {}\n");
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    let requests = sb.requests();
    // Observing jobs lists /v1/jobs and /v1/packages; each was sent exactly twice.
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        *sent.entry(format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap())).or_default() += 1;
    }
    assert!(!sent.is_empty() && sent.values().all(|n| *n == 2), "{sent:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    let (path, status) = requests
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .find(|(p, _)| err.contains(&format!("GET {p} answered")))
        .unwrap_or_else(|| panic!("the message names no request that was sent: {err}"));
    assert!((500..=504).contains(&status));
    let expected = format!(
        "GET {path} answered {status} after 2 attempts: injected fault: the platform is unavailable, try again"
    );
    assert!(err.starts_with("capstan: error: cannot read the live state: "), "{err}");
    assert!(err.ends_with(&expected), "expected {expected:?} in {err:?}");
}

#[test]
fn a_step_that_keeps_failing_is_one_line_naming_its_file_the_request_and_the_api_message() {
    let sb = SandboxProc::start(&["--seed", "3"]);
    let w = Workdir::new();
    w.write("capstan.yaml", "retry: {max_attempts: 3}\n");
    w.target(&sb.url);
    w.write("m.yaml", "# the web job\njobs:\n  job::/f::web:\n    tags: {v: \"1\"}\n  job::/f::api: {}\n");
    w.capstan(&["apply", ".", "--yes"]).ok();
    let uuid = sb.job("job::/f::web").unwrap()["uuid"].as_str().unwrap().to_string();
    // Reads still work; every change fails.
    faults(&sb, json!({ "fail_rate": 1.0, "methods": ["PUT", "POST", "DELETE"] }));
    w.write("m.yaml", "# the web job\njobs:\n  job::/f::web:\n    tags: {v: \"2\"}\n  job::/f::api: {}\n");
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    let puts: Vec<Value> = sb.requests().into_iter().filter(|r| r["method"] == "PUT").collect();
    assert_eq!(puts.len(), 3, "sent three times, then given up: {puts:?}");
    let status = puts.last().unwrap()["status"].as_u64().unwrap();
    let line = format!(
        "  ERROR    update job::/f::web (m.yaml:3:3): PUT /v1/jobs/{uuid} answered {status} after 3 attempts: injected fault: the platform is unavailable, try again"
    );
    let errors: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  ERROR    ")).collect();
    assert_eq!(errors, [line.as_str()], "{}", out.stdout);
    faults(&sb, json!({}));
    assert_eq!(sb.job("job::/f::web").unwrap()["tags"]["v"], "1", "nothing was changed");
}
