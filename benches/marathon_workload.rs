//! Benchmark (issue 11): the workload Marathon's own deployers are measured on — 200 apps in
//! 20 groups `/bench/gNN`, every app of gNN declaring `"dependencies": ["../gNN-1"]` — in both
//! forms (200 app files; 20 group files `{"id": "/bench/gNN", "apps": [...]}`), with capstan's
//! default settings, on a sandbox whose task launches take 100 ms. For each form: the deploy's
//! time against the bound the chain sets (20 levels × one rollout), that `apply --prune` then
//! deletes nothing, and the requests of a no-op plan and of a one-app change. Run on the
//! sandbox as the seed shows Marathon (one app per deployment step), and with
//! `--grouped-steps` (Marathon 1.x: a deployment's independent apps in one step).
//!
//! Run: `cargo bench --bench marathon_workload`.

mod common;
use common::*;
use serde_json::{Value, json};

const GROUPS: usize = 20;
const APPS: usize = 10;
const ROLLOUT_MS: u64 = 100;

fn app(g: usize, a: usize) -> Value {
    let mut app =
        json!({"id": format!("a{a}"), "cmd": "./serve --port $PORT0", "instances": 1, "cpus": 0.1, "mem": 32});
    if g > 0 {
        app["dependencies"] = json!([format!("../g{:02}", g - 1)]);
    }
    app
}

fn write(dir: &std::path::Path, url: &str, group_files: bool) {
    let config = format!("owner: bench\ntargets:\n  m:\n    platform: marathon\n    url: {url}\ndefault_target: m\n");
    std::fs::write(dir.join("capstan.yaml"), config).unwrap();
    for g in 0..GROUPS {
        if group_files {
            let doc =
                json!({"id": format!("/bench/g{g:02}"), "apps": (0..APPS).map(|a| app(g, a)).collect::<Vec<_>>()});
            std::fs::write(dir.join(format!("g{g:02}.json")), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        } else {
            std::fs::create_dir_all(dir.join(format!("g{g:02}"))).unwrap();
            for a in 0..APPS {
                let mut one = app(g, a);
                one["id"] = json!(format!("/bench/g{g:02}/a{a}"));
                let file = dir.join(format!("g{g:02}/a{a}.json"));
                std::fs::write(file, serde_json::to_string_pretty(&one).unwrap()).unwrap();
            }
        }
    }
}

fn run(group_files: bool, grouped_steps: bool) {
    let mut args = vec!["--platform", "marathon", "--rollout-ms", "100"];
    if grouped_steps {
        args.push("--grouped-steps");
    }
    let sandbox = Sandbox::start(&args);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &sandbox.url, group_files);
    let env = [("RUST_LOG", "capstan=info")];
    let bound_ms = (GROUPS as u64 * ROLLOUT_MS) as f64;
    println!(
        "{} form, sandbox {}:",
        if group_files { "group" } else { "apps" },
        if grouped_steps { "--grouped-steps (Marathon 1.x)" } else { "as the seed (one app per step)" }
    );

    clear(&sandbox.url);
    let m = measure(dir.path(), &["apply", ".", "--yes"], &env);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout.chars().rev().take(3000).collect::<String>(), m.stderr);
    let reqs = requests(&sandbox.url);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    let phases = log_field(&m.stderr, "phases").unwrap_or(f64::NAN);
    println!(
        "  deploy       {:7.1} ms process, {apply_ms:7.1} ms applying = {:.2}x the bound ({GROUPS} levels x {ROLLOUT_MS} ms = {bound_ms:.0} ms; {phases} phases), {} requests: {}",
        m.wall.as_secs_f64() * 1e3,
        apply_ms / bound_ms,
        reqs.len(),
        tally(&reqs)
    );

    clear(&sandbox.url);
    let m = measure(dir.path(), &["apply", ".", "--yes", "--prune"], &env);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout, m.stderr);
    let reqs = requests(&sandbox.url);
    assert!(reqs.iter().all(|r| r["method"] != "DELETE"), "apply --prune deleted: {}", tally(&reqs));
    let apps = reqwest::blocking::get(format!("{}/v2/apps", sandbox.url)).unwrap().json::<Value>().unwrap();
    assert_eq!(apps["apps"].as_array().unwrap().len(), GROUPS * APPS);
    println!(
        "  apply --prune {:6.1} ms process, nothing deleted, {} requests: {}",
        m.wall.as_secs_f64() * 1e3,
        reqs.len(),
        tally(&reqs)
    );

    clear(&sandbox.url);
    let m = measure(dir.path(), &["plan", ".", "--detailed-exitcode"], &env);
    assert_eq!(m.code, 0, "the plan after apply is empty:\n{}\n{}", m.stdout, m.stderr);
    let reqs = requests(&sandbox.url);
    println!("  no-op plan   {:7.1} ms process, {} requests: {}", m.wall.as_secs_f64() * 1e3, reqs.len(), tally(&reqs));

    let file = if group_files { dir.path().join("g10.json") } else { dir.path().join("g10/a3.json") };
    let text = std::fs::read_to_string(&file).unwrap().replacen("\"instances\": 1", "\"instances\": 2", 1);
    std::fs::write(&file, text).unwrap();
    clear(&sandbox.url);
    let m = measure(dir.path(), &["apply", ".", "--yes"], &env);
    assert_eq!(m.code, 0, "{}\n{}", m.stdout, m.stderr);
    let reqs = requests(&sandbox.url);
    let apply_ms = log_field(&m.stderr, "apply_ms").unwrap_or(f64::NAN);
    println!(
        "  one-app change {:5.1} ms process, {apply_ms:6.1} ms applying (bound {ROLLOUT_MS} ms), {} requests: {}",
        m.wall.as_secs_f64() * 1e3,
        reqs.len(),
        tally(&reqs)
    );
}

fn main() {
    println!(
        "{} apps in {GROUPS} groups, each app depending on the group before, {ROLLOUT_MS} ms rollout, default settings",
        GROUPS * APPS
    );
    for grouped_steps in [false, true] {
        for group_files in [false, true] {
            run(group_files, grouped_steps);
        }
    }
}
