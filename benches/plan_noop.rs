//! Benchmark (issue 3): render, observe and diff 10,000 jobs declared in 500 files against a
//! sandbox where they are already applied — a no-op plan. Reports wall time and peak RSS of the
//! whole `capstan plan` process, and capstan's own timing of each stage.
//!
//! Run: `cargo bench --bench plan_noop` (goal: under 0.5 s and 150 MB).

mod common;
use common::*;

const FILES: usize = 500;
const JOBS_PER_FILE: usize = 20;
const RUNS: usize = 7;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    write_apcera_jobs(dir.path(), &sandbox.url, FILES, JOBS_PER_FILE);

    let apply = measure(dir.path(), &["apply", ".", "--yes", "--parallelism", "64"], &[]);
    assert_eq!(
        apply.code,
        0,
        "apply failed:\n{}\n{}",
        apply.stdout.chars().rev().take(2000).collect::<String>(),
        apply.stderr
    );
    println!("initial apply of {} jobs: {:.1} s", FILES * JOBS_PER_FILE, apply.wall.as_secs_f64());

    let mut walls = Vec::new();
    let mut rss = Vec::new();
    let (mut render, mut observe, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let m = measure(dir.path(), &["plan", ".", "--detailed-exitcode"], &[("RUST_LOG", "capstan=info")]);
        assert_eq!(m.code, 0, "the plan must be empty:\n{}\n{}", m.stdout, m.stderr);
        walls.push(m.wall.as_secs_f64());
        rss.push(m.max_rss_kib as f64 / 1024.0);
        render.push(log_field(&m.stderr, "render_ms").unwrap_or(f64::NAN));
        observe.push(log_field(&m.stderr, "observe_ms").unwrap_or(f64::NAN));
        diff.push(log_field(&m.stderr, "diff_and_plan_ms").unwrap_or(f64::NAN));
    }
    println!("no-op plan of {} jobs in {FILES} files, {RUNS} runs (median):", FILES * JOBS_PER_FILE);
    println!(
        "  wall time (whole process)   {:7.1} ms   (min {:.1}, max {:.1})",
        median(walls.clone()) * 1e3,
        walls.iter().cloned().fold(f64::MAX, f64::min) * 1e3,
        walls.iter().cloned().fold(0.0, f64::max) * 1e3
    );
    println!("  peak RSS                    {:7.1} MiB", median(rss.clone()));
    row(
        "no-op plan, 10,000 Apcera jobs in 500 files: wall",
        &spread(&walls.iter().map(|w| w * 1e3).collect::<Vec<_>>(), "ms"),
    );
    row("no-op plan, 10,000 Apcera jobs in 500 files: peak RSS", &spread(&rss, "MiB"));
    println!("  render                      {:7.1} ms", median(render));
    println!("  observe (list calls)        {:7.1} ms", median(observe));
    println!("  diff + plan                 {:7.1} ms", median(diff));

    // A release that touches every job: 10,000 updates, reported as markdown for a PR comment.
    let config = std::fs::read_to_string(dir.path().join("capstan.yaml")).unwrap();
    std::fs::write(dir.path().join("capstan.yaml"), config.replace("RELEASE: \"42\"", "RELEASE: \"43\"")).unwrap();
    let mut walls = Vec::new();
    let mut size = 0;
    for _ in 0..3 {
        let m = measure(dir.path(), &["plan", ".", "--output", "markdown"], &[]);
        assert_eq!(m.code, 0, "{}", m.stderr);
        assert!(m.stdout.contains("Plan: 0 to create, 10000 to update"), "{}", &m.stdout[..m.stdout.len().min(500)]);
        walls.push(m.wall.as_secs_f64());
        size = m.stdout.len();
    }
    row("markdown report of 10,000 updates", &spread(&walls.iter().map(|w| w * 1e3).collect::<Vec<_>>(), "ms"));
    println!(
        "plan of 10,000 updates as a markdown report: {:.1} ms (median of 3), {} KiB",
        median(walls.clone()) * 1e3,
        size / 1024
    );
}
