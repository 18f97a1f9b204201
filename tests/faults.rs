//! Applies that survive faults: injected 5xx answers and dropped connections, a process killed
//! at random moments, a second apply while one runs, and a plan that would delete too much.

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

/// Run apply in the background and kill -9 it after `after`.
fn kill_apply_after(w: &Workdir, after: Duration) -> bool {
    let mut child = Command::new(capstan_bin())
        .args(["apply", ".", "--yes", "--parallelism", "4"])
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let finished = child.try_wait().unwrap().is_some();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    !finished
}

#[test]
fn killed_at_random_moments_an_apply_resumes_without_duplicates() {
    // Every request takes a few milliseconds, so the apply is killed mid-plan.
    let sb = SandboxProc::start(&["--latency-ms", "4", "--latency-jitter-ms", "4"]);
    let w = Workdir::new();
    w.target(&sb.url);
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut killed_mid_way = 0;
    for round in 0..10 {
        // Each round changes every job, so there is always a plan to interrupt.
        w.write("r.yaml", &two_hundred().replace("state: started", &format!("state: started\n    weight: {round}")));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = Duration::from_millis(150 + rng % 900);
        if kill_apply_after(&w, after) {
            killed_mid_way += 1;
        }
        let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "8"]);
        assert_eq!(out.code, 0, "round {round}: resume failed:\n{}\n{}", out.stdout, out.stderr);
        w.capstan(&["plan", ".", "--detailed-exitcode"]).code(0);
        let seen = inventory(&sb);
        let mine: Vec<(&String, &usize)> = seen.iter().filter(|(k, _)| k.contains("/r::")).collect();
        assert!(mine.iter().all(|(_, n)| **n == 1), "round {round}: duplicates after a kill: {mine:?}");
        assert_eq!(mine.len(), 200, "round {round}: missing after a kill");
    }
    assert!(killed_mid_way >= 5, "only {killed_mid_way} of 10 kills landed in the middle of an apply");
}

#[test]
fn the_next_apply_says_what_a_killed_one_left() {
    let sb = SandboxProc::start(&["--latency-ms", "20"]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("r.yaml", &two_hundred());
    assert!(kill_apply_after(&w, Duration::from_millis(800)), "the apply finished before it was killed");
    let out = w.capstan(&["apply", ".", "--yes", "--parallelism", "16"]);
    out.ok();
    assert!(out.stderr.contains("Resuming: an earlier apply (pid "), "{}", out.stderr);
    assert!(out.stderr.contains("stopped after"), "{}", out.stderr);
}

#[test]
fn a_second_apply_fails_at_once_naming_the_first_and_a_dead_holders_lock_is_taken() {
    let sb = SandboxProc::start(&["--latency-ms", "30"]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("r.yaml", &two_hundred());
    let mut first = Command::new(capstan_bin())
        .args(["apply", ".", "--yes", "--parallelism", "2"])
        .current_dir(w.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
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
    unsafe {
        libc::kill(first.id() as i32, libc::SIGKILL);
    }
    let _ = first.wait();
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
        out.stdout.contains("ERROR    create job::/c::bad: POST /v1/jobs answered 404: no package"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("not started: create job::/c::bad failed"), "{}", out.stdout);
    assert!(out.stdout.contains("Apply incomplete: 2 of 4 steps done, 1 failed, 1 not started."), "{}", out.stdout);
    assert!(sb.job("job::/c::ok1").is_some() && sb.job("job::/c::ok2").is_some());
    assert!(sb.job("job::/c::bad").is_none());
}
