//! Benchmark (issue 18): 10,000 resources on each platform.
//!
//! 1. Apcera: 10,000 creates (the jobs of `plan_noop`, 10,000 in 500 files) against a fresh
//!    sandbox with no added latency, `--parallelism 16`. Besides capstan's wall time, the CPU
//!    seconds of capstan and of the sandbox process, which say where the time goes.
//! 2. Marathon: 10,000 apps in 500 group files of 20, applied, then a no-op plan (wall, peak RSS).
//! 3. tsuru: 10,000 apps (an env variable each) in 500 files of 20, applied, then a no-op plan.
//!
//! Run: `cargo bench --bench scale` (`SCALE_RUNS=N` runs of each figure, default 3;
//! `SCALE_ONLY=apcera|marathon|tsuru` for one part). Goals: creates ≤ 4 s, no-op plans ≤ 0.3 s
//! and ≤ 100 MB.

mod common;
use common::*;
use std::fmt::Write as _;
use std::path::Path;

const FILES: usize = 500;
const PER_FILE: usize = 20;

fn runs() -> usize {
    std::env::var("SCALE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

fn wanted(part: &str) -> bool {
    std::env::var("SCALE_ONLY").map(|only| only == part).unwrap_or(true)
}

fn ok(m: &Measured, what: &str) {
    assert_eq!(
        m.code,
        0,
        "{what} failed:\n{}\n{}",
        m.stdout.chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>(),
        m.stderr.chars().rev().take(4000).collect::<String>().chars().rev().collect::<String>()
    );
}

fn apcera_creates() {
    let (mut walls, mut ours, mut theirs, mut rss, mut sandbox_rss) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs() {
        let sandbox = Sandbox::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        write_apcera_jobs(dir.path(), &sandbox.url, FILES, PER_FILE);
        let before = cpu_seconds(sandbox.pid());
        let m = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", "16"], &[]);
        ok(&m, "apply");
        walls.push(m.wall.as_secs_f64());
        ours.push(m.cpu);
        theirs.push(cpu_seconds(sandbox.pid()) - before);
        rss.push(m.max_rss_kib as f64 / 1024.0);
        sandbox_rss.push(peak_rss_mib(sandbox.pid()));
    }
    println!("10,000 Apcera creates, 0 ms latency, --parallelism 16:");
    println!("  wall                {}", spread(&walls, "s"));
    println!("  capstan CPU         {}", spread(&ours, "s"));
    println!("  sandbox CPU         {}", spread(&theirs, "s"));
    println!("  capstan peak RSS    {}", spread(&rss, "MiB"));
    println!("  sandbox peak RSS    {}", spread(&sandbox_rss, "MiB"));
    row("10,000 Apcera creates, 0 ms latency, parallelism 16: wall", &spread(&walls, "s"));
    row("  the same: capstan CPU / sandbox CPU", &format!("{} / {}", spread(&ours, "s"), spread(&theirs, "s")));
    row("  the same: capstan peak RSS", &spread(&rss, "MiB"));
}

/// Apply once, then time no-op plans: wall and peak RSS.
fn noop_plans(dir: &Path, label: &str) {
    let m = measure(dir, &["apply", ".", "--yes", "--parallelism", "16"], &[]);
    ok(&m, "apply");
    println!("{label}: applied in {:.1} s", m.wall.as_secs_f64());
    row(
        &format!("{label}: first apply, 0 ms latency, parallelism 16"),
        &format!("{:.1} s (1 run)", m.wall.as_secs_f64()),
    );
    let (mut walls, mut rss) = (vec![], vec![]);
    for _ in 0..runs().max(3) {
        let m = measure(dir, &["plan", ".", "--detailed-exitcode"], &[]);
        ok(&m, "the no-op plan (exit 0: nothing to change)");
        walls.push(m.wall.as_secs_f64() * 1e3);
        rss.push(m.max_rss_kib as f64 / 1024.0);
    }
    println!("  no-op plan wall     {}", spread(&walls, "ms"));
    println!("  no-op plan peak RSS {}", spread(&rss, "MiB"));
    row(&format!("{label}: no-op plan, wall"), &spread(&walls, "ms"));
    row(&format!("{label}: no-op plan, peak RSS"), &spread(&rss, "MiB"));
}

fn marathon() {
    let sandbox = Sandbox::start(&["--platform", "marathon"]);
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("owner: bench\ntargets:\n  m:\n    platform: marathon\n    url: {}\ndefault_target: m\n", sandbox.url);
    std::fs::write(dir.path().join("capstan.yaml"), config).unwrap();
    for g in 0..FILES {
        let apps: Vec<serde_json::Value> = (0..PER_FILE)
            .map(|a| {
                serde_json::json!({"id": format!("a{a:02}"), "cmd": format!("./serve --shard {g} --port $PORT0"),
                    "instances": 1, "cpus": 0.1, "mem": 32, "labels": {"team": format!("t{}", g % 7)}})
            })
            .collect();
        let doc = serde_json::json!({"id": format!("/bench/g{g:03}"), "apps": apps});
        std::fs::write(dir.path().join(format!("g{g:03}.json")), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    noop_plans(dir.path(), "10,000 Marathon apps in 500 group files");
}

fn tsuru() {
    let sandbox = Sandbox::start(&["--platform", "tsuru"]);
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("owner: bench\ntargets:\n  t:\n    platform: tsuru\n    url: {}\ndefault_target: t\n", sandbox.url);
    std::fs::write(dir.path().join("capstan.yaml"), config).unwrap();
    for f in 0..FILES {
        let mut text = String::from("apps:\n");
        for a in 0..PER_FILE {
            let n = f * PER_FILE + a;
            let _ = write!(
                text,
                "  app{n:05}:\n    platform: python\n    teamOwner: bench\n    env:\n      SHARD: \"{f}\"\n"
            );
        }
        std::fs::write(dir.path().join(format!("apps-{f:03}.yaml")), text).unwrap();
    }
    noop_plans(dir.path(), "10,000 tsuru apps in 500 files");
}

fn main() {
    if wanted("apcera") {
        apcera_creates();
    }
    if wanted("marathon") {
        marathon();
    }
    if wanted("tsuru") {
        tsuru();
    }
}
