//! Benchmarks (issue 5): how much capstan adds on top of the platform when applying ordered
//! plans.
//!
//! 1. Ordering overhead: a chain of 10 jobs, each depending on the one before, on a sandbox with
//!    no added latency. Goal: under 1 s in all, under 10 ms of capstan's own time per level.
//! 2. Throughput: 1,000 jobs in 10 dependency levels (each job depends on every job of the level
//!    before), 20 ms sandbox latency, `--parallelism 16`, against the critical-path bound: the sum
//!    over levels of ceil(width / 16) × one request's time. Goal: within 1.3× of the bound.
//!    One request's time is taken two ways, and both ratios are printed: the nominal latency
//!    (20 ms), and a plain GET's round trip measured against the same sandbox before the apply.
//!    (Not the steps' own times: those include queueing inside capstan, which would flatter the
//!    ratio.)
//!
//! Run: `cargo bench --bench apply_levels`.

mod common;
use common::*;
use std::fmt::Write as _;

fn config(url: &str) -> String {
    format!("owner: bench\ntargets:\n  sb:\n    platform: apcera\n    url: {url}\ndefault_target: sb\n")
}

fn chain() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("capstan.yaml"), config(&sandbox.url)).unwrap();
    let mut text = String::from("jobs:\n");
    for i in 0..10 {
        let _ = writeln!(text, "  job::/chain::j{i}:\n    state: started");
        if i > 0 {
            let _ = writeln!(text, "    depends_on: [job::/chain::j{}]", i - 1);
        }
    }
    std::fs::write(dir.path().join("chain.yaml"), text).unwrap();
    let m = measure(dir.path(), &["apply", ".", "--yes"], &[("RUST_LOG", "capstan=info")]);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout, m.stderr);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    let phases = log_field(&m.stderr, "phases").unwrap_or(f64::NAN);
    // What the platform itself took: the sum of the steps' own durations, as apply printed them.
    let steps_ms: f64 = m
        .stdout
        .lines()
        .filter_map(|l| {
            l.rsplit_once('(').and_then(|(_, r)| r.strip_suffix(" ms)")).and_then(|n| n.parse::<f64>().ok())
        })
        .sum();
    println!("chain of 10 dependent jobs, no added latency:");
    println!("  whole `capstan apply` process   {:7.1} ms", m.wall.as_secs_f64() * 1e3);
    println!("  apply (all steps, {phases} levels)   {apply_ms:7.1} ms");
    println!("  steps' own time (sum)          {steps_ms:7.1} ms");
    println!("  capstan's overhead per level   {:7.2} ms", (apply_ms - steps_ms) / 10.0);
    row(
        "chain of 10 dependent jobs: capstan's overhead per level",
        &format!("{:.2} ms (1 run)", (apply_ms - steps_ms) / 10.0),
    );
}

fn levels() {
    const LEVELS: usize = 10;
    const WIDTH: usize = 100;
    const PARALLELISM: usize = 16;
    const LATENCY_MS: u64 = 20;
    let sandbox = Sandbox::start(&["--latency-ms", &LATENCY_MS.to_string()]);
    let rtt = round_trip(&sandbox.url);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("capstan.yaml"), config(&sandbox.url)).unwrap();
    for level in 0..LEVELS {
        let mut text = String::from("jobs:\n");
        for i in 0..WIDTH {
            let _ = writeln!(text, "  job::/levels::l{level}-{i:03}:\n    tags: {{level: \"{level}\"}}");
            if level > 0 {
                text.push_str("    depends_on:\n");
                for j in 0..WIDTH {
                    let _ = writeln!(text, "      - job::/levels::l{}-{j:03}", level - 1);
                }
            }
        }
        std::fs::write(dir.path().join(format!("level-{level}.yaml")), text).unwrap();
    }
    let p = PARALLELISM.to_string();
    let m = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", &p], &[("RUST_LOG", "capstan=info")]);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout.chars().rev().take(3000).collect::<String>(), m.stderr);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    // Requests on the critical path: each level's creates (one POST each) in waves of 16.
    let waves = (LEVELS * WIDTH.div_ceil(PARALLELISM)) as f64;
    let bound_nominal = waves * LATENCY_MS as f64;
    let bound_measured = waves * rtt;
    println!("1,000 jobs in {LEVELS} levels of {WIDTH}, {LATENCY_MS} ms latency, parallelism {PARALLELISM}:");
    println!("  whole `capstan apply` process   {:8.1} ms", m.wall.as_secs_f64() * 1e3);
    println!("  apply (all steps)               {apply_ms:8.1} ms");
    println!("  one request, nominal            {:8.1} ms", LATENCY_MS as f64);
    println!("  one request, measured           {rtt:8.1} ms  (round trip, median of {RTT_SAMPLES} GETs)");
    println!("  critical-path bound, nominal    {bound_nominal:8.1} ms  ({waves:.0} requests in a row)");
    println!("  critical-path bound, measured   {bound_measured:8.1} ms");
    println!("  apply / nominal bound           {:8.2}x  (goal: 1.3x)", apply_ms / bound_nominal);
    println!("  apply / measured bound          {:8.2}x  (goal: 1.3x)", apply_ms / bound_measured);
    row(
        "1,000 jobs in 10 levels, 20 ms latency: apply / critical-path bound",
        &format!("{:.2}x nominal, {:.2}x measured (1 run)", apply_ms / bound_nominal, apply_ms / bound_measured),
    );
}

const RTT_SAMPLES: usize = 20;

/// One plain request's round trip to the sandbox, in ms: the median of a few GETs over one
/// kept-alive connection (as capstan's client keeps its connections), after a warm-up.
fn round_trip(url: &str) -> f64 {
    let http = reqwest::blocking::Client::new();
    let get = || {
        let started = std::time::Instant::now();
        let r = http.get(format!("{url}/v1/jobs?FQN=job%3A%3A%2Flevels%3A%3Anone")).send().unwrap();
        assert!(r.status().is_success());
        r.bytes().unwrap();
        started.elapsed().as_secs_f64() * 1e3
    };
    get();
    median((0..RTT_SAMPLES).map(|_| get()).collect())
}

fn main() {
    chain();
    levels();
}
