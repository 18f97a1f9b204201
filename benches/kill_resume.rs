//! Script (issue 5): kill -9 an apply at 100 seeded random moments, apply again each time, and
//! check the platform converged with nothing duplicated and nothing missing.
//!
//! A moment is "after the Nth change": the apply is killed as soon as the sandbox has seen N
//! (seeded, 1..=140) mutating requests of it, so every kill lands in the middle of an apply,
//! whatever the machine's speed. Every round changes every job, moves every link to a new port
//! (a create and a delete) and shifts the network's members, so kills hit every kind of step.
//!
//! Run: `cargo bench --bench kill_resume` (a few minutes). `KILLS=20` for fewer.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn manifest(round: usize) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..100 {
        let _ = write!(s, "  job::/k::j{i:03}:\n    state: started\n    weight: {round}\n");
        if i % 2 == 1 {
            let _ = writeln!(s, "    links:\n      PREV: {{fqn: job::/k::j{:03}, port: {}}}", i - 1, 80 + round % 1000);
        }
    }
    s.push_str("networks:\n  network::/k::net:\n    jobs:\n");
    let first = (round * 5) % 52;
    for i in first..first + 48 {
        let _ = writeln!(s, "      - job::/k::j{i:03}");
    }
    s
}

/// Mutating requests the sandbox has seen since its log was cleared.
fn mutating(http: &reqwest::blocking::Client, url: &str) -> u64 {
    let v: serde_json::Value = http.get(format!("{url}/_sandbox/requests/count")).send().unwrap().json().unwrap();
    v["mutating"].as_u64().unwrap()
}

fn inventory(url: &str) -> BTreeMap<String, usize> {
    let jobs: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/jobs")).unwrap().json().unwrap();
    let nets: serde_json::Value = reqwest::blocking::get(format!("{url}/v1/networks")).unwrap().json().unwrap();
    let mut seen = BTreeMap::new();
    for j in jobs.as_array().unwrap() {
        let fqn = j["fqn"].as_str().unwrap();
        *seen.entry(fqn.to_string()).or_insert(0) += 1;
        for b in j["bindings"].as_object().into_iter().flat_map(|m| m.values()) {
            *seen.entry(format!("link {fqn} -> {}", b["target_job_fqn"])).or_insert(0) += 1;
        }
    }
    for n in nets.as_array().unwrap() {
        *seen.entry(n["fqn"].as_str().unwrap().to_string()).or_insert(0) += 1;
        for e in n["network_end_points"].as_array().into_iter().flatten() {
            *seen.entry(format!("member {}", e["job_fqn"])).or_insert(0) += 1;
        }
    }
    seen
}

fn main() {
    let kills: usize = std::env::var("KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(100);
    let sandbox = Sandbox::start(&["--latency-ms", "3", "--latency-jitter-ms", "3"]);
    let http = reqwest::blocking::Client::new();
    let dir = tempfile::tempdir().unwrap();
    // Every round replaces 50 links: not a mass delete here.
    std::fs::write(
        dir.path().join("capstan.yaml"),
        format!(
            "owner: bench\nmass_delete: {{max_deletes: 1000, max_percent: 100}}\ntargets:\n  sb:\n    platform: apcera\n    url: {}\ndefault_target: sb\n",
            sandbox.url
        ),
    )
    .unwrap();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let (mut mid_apply, mut converged, mut duplicates, mut missing) = (0, 0, 0, 0);
    let started = Instant::now();
    for round in 0..kills {
        std::fs::write(dir.path().join("k.yaml"), manifest(round)).unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = 1 + rng % 140;
        http.delete(format!("{}/_sandbox/requests", sandbox.url)).send().unwrap();
        let mut child = Command::new(capstan())
            .args(["apply", ".", "--yes", "--parallelism", "4"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let waiting = Instant::now();
        while mutating(&http, &sandbox.url) < n
            && child.try_wait().unwrap().is_none()
            && waiting.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            mid_apply += 1;
        } else {
            eprintln!("round {round}: the apply ended before change #{n}");
        }
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let again = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", "8"], &[]);
        let plan = measure(dir.path(), &["plan", ".", "--detailed-exitcode"], &[]);
        let seen = inventory(&sandbox.url);
        let mine: Vec<_> = seen.iter().filter(|(k, _)| k.contains("/k::")).collect();
        let dup = mine.iter().filter(|(_, n)| **n > 1).count();
        duplicates += dup;
        missing += 199usize.saturating_sub(mine.len());
        if again.code == 0 && plan.code == 0 && dup == 0 && mine.len() == 199 {
            converged += 1;
        } else {
            eprintln!("round {round}: apply {} plan {} dup {dup} present {}", again.code, plan.code, mine.len());
        }
    }
    println!("kill -9 at {kills} seeded random moments ({:.0} s):", started.elapsed().as_secs_f64());
    println!("  killed in the middle of an apply   {mid_apply}");
    println!("  converged on the next apply        {converged} of {kills}");
    println!("  duplicated resources               {duplicates}");
    println!("  missing resources                  {missing}");
    row(
        "kill -9 during apply: converged / duplicated / missing",
        &format!("{converged} of {kills} / {duplicates} / {missing}"),
    );
    assert_eq!(converged, kills);
    assert_eq!(mid_apply, kills, "every kill lands in the middle of an apply");
}
