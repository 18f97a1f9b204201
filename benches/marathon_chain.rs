//! Benchmark (issue 6): 500 Marathon apps in 50 groups, each group depending on the one before,
//! on a sandbox whose deployments take 100 ms. Deploy, a no-op plan, and a one-app change:
//! wall time and requests for each, against the bound the dependency chain sets (50 levels ×
//! one rollout: no level can start before the one before it has finished deploying).
//!
//! Run: `cargo bench --bench marathon_chain`.

mod common;
use common::*;
use std::fmt::Write as _;

const GROUPS: usize = 50;
const APPS: usize = 10;
const ROLLOUT_MS: u64 = 100;

fn main() {
    let sandbox = Sandbox::start(&["--platform", "marathon", "--rollout-ms", &ROLLOUT_MS.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("owner: bench\ntargets:\n  m:\n    platform: marathon\n    url: {}\ndefault_target: m\n", sandbox.url);
    std::fs::write(dir.path().join("capstan.yaml"), config).unwrap();
    for g in 0..GROUPS {
        let mut text = format!("id: /bench/g{g:02}\n");
        if g > 0 {
            let _ = writeln!(text, "dependencies: [../g{:02}]", g - 1);
        }
        text.push_str("apps:\n");
        for a in 0..APPS {
            let _ =
                writeln!(text, "  - {{id: a{a}, cmd: \"./serve --port $PORT0\", instances: 1, cpus: 0.1, mem: 32}}");
        }
        std::fs::write(dir.path().join(format!("g{g:02}.yaml")), text).unwrap();
    }
    let env = [("RUST_LOG", "capstan=info")];
    let bound_ms = (GROUPS as u64 * ROLLOUT_MS) as f64;
    println!(
        "{} apps in {GROUPS} groups, each depending on the one before, {ROLLOUT_MS} ms rollout, parallelism 16:",
        GROUPS * APPS
    );
    println!("  bound set by the chain: {GROUPS} levels x {ROLLOUT_MS} ms = {bound_ms:.0} ms");

    clear(&sandbox.url);
    let m = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", "16"], &env);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout.chars().rev().take(3000).collect::<String>(), m.stderr);
    let reqs = requests(&sandbox.url);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    println!(
        "  deploy       {:8.1} ms process, {apply_ms:8.1} ms applying ({:.2}x the bound), {} requests: {}",
        m.wall.as_secs_f64() * 1e3,
        apply_ms / bound_ms,
        reqs.len(),
        tally(&reqs)
    );

    clear(&sandbox.url);
    let m = measure(dir.path(), &["plan", ".", "--detailed-exitcode"], &env);
    assert_eq!(m.code, 0, "the plan after apply is empty:\n{}\n{}", m.stdout, m.stderr);
    let reqs = requests(&sandbox.url);
    println!("  no-op plan   {:8.1} ms process, {} requests: {}", m.wall.as_secs_f64() * 1e3, reqs.len(), tally(&reqs));

    let path = dir.path().join("g25.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen("instances: 1", "instances: 2", 1);
    std::fs::write(&path, text).unwrap();
    clear(&sandbox.url);
    let m = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", "16"], &env);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout, m.stderr);
    let reqs = requests(&sandbox.url);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    println!(
        "  one change   {:8.1} ms process, {apply_ms:8.1} ms applying (bound {ROLLOUT_MS} ms), {} requests: {}",
        m.wall.as_secs_f64() * 1e3,
        reqs.len(),
        tally(&reqs)
    );
}
