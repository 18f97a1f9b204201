//! Benchmarks (issue 5): how much capstan adds on top of the platform when applying ordered
//! plans.
//!
//! 1. Ordering overhead: a chain of 10 jobs, each depending on the one before, on a sandbox with
//!    no added latency. Goal: under 1 s in all, under 10 ms of capstan's own time per level.
//! 2. Throughput: 1,000 jobs in 10 dependency levels (each job depends on every job of the level
//!    before), 20 ms sandbox latency, `--parallelism 16`, against the critical-path bound: the sum
//!    over levels of ceil(width / 16) × one request's time. Goal: within 1.3× of the bound.
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
}

fn levels() {
    const LEVELS: usize = 10;
    const WIDTH: usize = 100;
    const PARALLELISM: usize = 16;
    const LATENCY_MS: u64 = 20;
    let sandbox = Sandbox::start(&["--latency-ms", &LATENCY_MS.to_string()]);
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
    // One request's time, as the steps measured it: each create here is one POST.
    let mut step_ms: Vec<f64> = m
        .stdout
        .lines()
        .filter_map(|l| {
            l.rsplit_once('(').and_then(|(_, r)| r.strip_suffix(" ms)")).and_then(|n| n.parse::<f64>().ok())
        })
        .collect();
    let one = median(std::mem::take(&mut step_ms));
    let bound = (LEVELS * WIDTH.div_ceil(PARALLELISM)) as f64 * one;
    let bound_nominal = (LEVELS * WIDTH.div_ceil(PARALLELISM)) as f64 * LATENCY_MS as f64;
    println!("1,000 jobs in {LEVELS} levels of {WIDTH}, {LATENCY_MS} ms latency, parallelism {PARALLELISM}:");
    println!("  whole `capstan apply` process   {:8.1} ms", m.wall.as_secs_f64() * 1e3);
    println!("  apply (all steps)               {apply_ms:8.1} ms");
    println!("  one request, median             {one:8.1} ms");
    println!("  critical-path bound             {bound:8.1} ms  ({bound_nominal:.0} ms at exactly {LATENCY_MS} ms)");
    println!("  apply / bound                   {:8.2}x  (goal: 1.3x)", apply_ms / bound);
}

fn main() {
    chain();
    levels();
}
