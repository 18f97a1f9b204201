//! Performance work must not change a plan (issue 18): the `plan -o json` of every example and
//! of a 10,000-job workload is byte for byte what the code before that work produced.
//!
//! The examples' plans are kept whole in `tests/golden/identity/`. The 10,000-job plan is about
//! 30 MB, so it is kept as its SHA-256 and length (`tests/golden/identity/ten-thousand.sha256`):
//! equal digests of the exact bytes stand for equal bytes. When they differ, the plan made is
//! left under `target/tmp/` to compare with one made by the older binary
//! (`CAPSTAN_TEST_BIN=<old capstan> UPDATE_GOLDEN=1` writes the references from that binary).

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

fn reference(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/golden/identity").join(name)
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

#[test]
fn the_examples_plan_byte_for_byte_as_before() {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("examples/manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        // A fresh copy: the embedded sandbox starts empty, so the plan creates everything.
        let w = Workdir::from_example(&format!("examples/manifests/{name}"));
        let plan = w.capstan(&["plan", ".", "-o", "json"]);
        plan.ok();
        let path = reference(&format!("{name}.json"));
        if update() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &plan.stdout).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no reference {}", path.display()));
        assert!(
            plan.stdout == expected,
            "the plan of examples/manifests/{name} changed:\n{}",
            first_difference(&expected, &plan.stdout)
        );
    }
}

fn first_difference(expected: &str, actual: &str) -> String {
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(expected.lines().count().min(actual.lines().count()));
    format!(
        "first difference at line {}:\n  expected: {:?}\n  actual:   {:?}",
        line + 1,
        expected.lines().nth(line),
        actual.lines().nth(line)
    )
}

/// Job `n` of file `f`, as the benchmarks declare it; `instances` and `flag` vary it.
fn job(text: &mut String, n: usize, f: usize, instances: u32, flag: &str) {
    let _ = write!(
        text,
        "  job::::svc-{n:05}:\n    state: started\n    num_instances: {instances}\n    packages:\n      - fqn: package::/apcera/pkg/os::ubuntu-14.04-apc3\n    processes:\n      app:\n        start_command: ./run --id {n}{flag}\n        environment:\n          SHARD: \"{f}\"\n    ports:\n      - number: 8080\n        routes:\n          - type: http\n            endpoint: svc-{n:05}.example.com\n    resources:\n      memory: 268435456\n    tags:\n      release: ${{RELEASE}}\n      team: t{}\n",
        f % 7
    );
}

fn write_files(w: &Workdir, files: std::ops::Range<usize>, changed: bool) {
    for f in files {
        let mut text = String::from("jobs:\n");
        for j in 0..20 {
            let n = f * 20 + j;
            // Once changed: files 0-9 scale up, files 10-19 change their command.
            let instances = if changed && f < 10 { 2 } else { 1 };
            let flag = if changed && (10..20).contains(&f) { " --verbose" } else { "" };
            job(&mut text, n, f, instances, flag);
        }
        w.write(&format!("svc-{f:03}.yaml"), &text);
    }
}

/// 10,000 jobs in 500 files against a platform holding 1,000 of them and 5 retired ones: a plan
/// of creates, updates, deletes and unchanged jobs, so rendering, observing and diffing all
/// reach the plan.
#[test]
fn a_ten_thousand_job_plan_is_byte_for_byte_as_before() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: bench\ndefault_namespace: /bench\nvariables:\n  RELEASE: \"42\"\n");
    w.target(&sb.url);
    write_files(&w, 0..50, false);
    let mut retired = String::from("jobs:\n");
    (0..5).for_each(|i| job(&mut retired, 90_000 + i, 0, 1, ""));
    w.write("retired.yaml", &retired);
    w.capstan(&["apply", ".", "--yes", "--parallelism", "16"]).ok();

    w.remove("retired.yaml");
    write_files(&w, 0..50, true);
    write_files(&w, 50..500, false);
    let plan = w.capstan(&["plan", ".", "--prune", "-o", "json"]);
    plan.ok();
    let summary = &plan.json()["summary"];
    assert_eq!(
        (summary["create"].as_u64(), summary["update"].as_u64(), summary["delete"].as_u64()),
        (Some(9000), Some(400), Some(5)),
        "{summary}"
    );
    let digest = format!("{}  {}\n", hex::encode(Sha256::digest(plan.stdout.as_bytes())), plan.stdout.len());
    let path = reference("ten-thousand.sha256");
    if update() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &digest).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no reference {}", path.display()));
    if digest != expected {
        let kept = repo_root().join("target/tmp/ten-thousand-plan.json");
        std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
        std::fs::write(&kept, &plan.stdout).unwrap();
        panic!(
            "the 10,000-job plan changed: SHA-256 and length {} (expected {}); it is in {}",
            digest.trim(),
            expected.trim(),
            kept.display()
        );
    }
}
