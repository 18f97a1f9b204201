//! Benchmark (issue 15): 200 tsuru apps, each with env (a public and a private variable), two
//! processes (web: 2, worker: 1) and a bind to one of 10 MySQL instances, on a sandbox that
//! adds 20 ms to every answer, with capstan's default settings. Several runs, each on a fresh
//! sandbox: the deploy, a no-op plan and a one-app change (one env value), each with its time
//! and requests; then the median and range over the runs.
//!
//! Run: `cargo bench --bench tsuru_workload` (`TSURU_BENCH_RUNS=N` for N runs; default 3).

mod common;
use common::{Sandbox, clear, measure, median, requests};

const APPS: usize = 200;
const INSTANCES: usize = 10;
const LATENCY_MS: &str = "20";

fn write(dir: &std::path::Path, url: &str) {
    let config = format!(
        "owner: bench\nvariables: {{DB_PASSWORD: s3cret}}\ntargets:\n  t:\n    platform: tsuru\n    url: {url}\ndefault_target: t\n"
    );
    std::fs::write(dir.join("capstan.yaml"), config).unwrap();
    let mut services = String::from("serviceInstances:\n");
    for i in 0..INSTANCES {
        services.push_str(&format!("  mysql/db{i:02}:\n    plan: small\n    teamOwner: bench\n"));
    }
    std::fs::write(dir.join("services.yaml"), services).unwrap();
    for a in 0..APPS {
        let app = format!(
            "apps:\n  app{a:03}:\n    platform: python\n    teamOwner: bench\n    units: {{web: 2, worker: 1}}\n    env:\n      LOG_LEVEL: info\n      DB_PASSWORD: {{value: \"${{DB_PASSWORD}}\", private: true}}\n    binds: [mysql/db{:02}]\n",
            a % INSTANCES
        );
        std::fs::write(dir.join(format!("app{a:03}.yaml")), app).unwrap();
    }
}

/// One step's figures: process time in ms and request count.
struct Step {
    ms: f64,
    requests: usize,
    tally: String,
}

fn step(dir: &std::path::Path, url: &str, args: &[&str], code: i32) -> Step {
    clear(url);
    let m = measure(dir, args, &[("RUST_LOG", "capstan=info")]);
    assert_eq!(m.code, code, "{args:?}\n{}\n{}", m.stdout.chars().take(3000).collect::<String>(), m.stderr);
    let reqs = requests(url);
    Step { ms: m.wall.as_secs_f64() * 1e3, requests: reqs.len(), tally: tally_folded(&reqs) }
}

/// Requests by method and path, the bench's own names (`app042`, `db03`) folded to `*`.
fn tally_folded(reqs: &[serde_json::Value]) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for r in reqs {
        let path: Vec<&str> = r["path"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .map(|seg| {
                let numbered = |p: &str| {
                    seg.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                };
                if numbered("app") || numbered("db") { "*" } else { seg }
            })
            .collect();
        *by.entry(format!("{} {}", r["method"].as_str().unwrap_or_default(), path.join("/"))).or_default() += 1;
    }
    by.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

fn run() -> [Step; 3] {
    let sandbox = Sandbox::start(&["--platform", "tsuru", "--latency-ms", LATENCY_MS]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sandbox.url);
    let deploy = step(dir.path(), &sandbox.url, &["apply", ".", "--yes"], 0);
    let noop = step(dir.path(), &sandbox.url, &["plan", ".", "--detailed-exitcode"], 0);
    assert_eq!(noop.requests, 3 + APPS, "one list per kind and one env read per app: {}", noop.tally);
    let file = dir.path().join("app100.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace("LOG_LEVEL: info", "LOG_LEVEL: debug");
    std::fs::write(&file, text).unwrap();
    let change = step(dir.path(), &sandbox.url, &["apply", ".", "--yes"], 0);
    [deploy, noop, change]
}

fn main() {
    let runs: usize = std::env::var("TSURU_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    println!(
        "{APPS} tsuru apps (env, web: 2 + worker: 1, a bind to one of {INSTANCES} instances), {LATENCY_MS} ms latency, default settings, {runs} runs"
    );
    let all: Vec<[Step; 3]> = (0..runs).map(|_| run()).collect();
    for (i, name) in ["deploy", "no-op plan", "one-app change"].iter().enumerate() {
        let ms: Vec<f64> = all.iter().map(|r| r[i].ms).collect();
        let (lo, hi) = ms.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let first = &all[0][i];
        println!(
            "  {name:15} median {:8.1} ms (range {lo:.1}-{hi:.1}), {} requests: {}",
            median(ms),
            first.requests,
            first.tally
        );
    }
}
