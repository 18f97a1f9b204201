//! What capstan exposes and what it touches besides the platform: target locks (one per server
//! however its URL is spelt, kept where no one else can plant a file), the files it keeps and
//! reads next to the manifests (the journal, a CA certificate), credentials in repository URLs,
//! and the daemon's API under clients that are not what they should be.

mod common;
use common::git::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn jobs(prefix: &str, n: usize) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..n {
        s.push_str(&format!("  job::/{prefix}::j{i}:\n    state: started\n"));
    }
    s
}

/// A `capstan apply --yes` in `dir`, running in the background.
fn spawn_apply(dir: &Path, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(capstan_bin())
        .args(["apply", ".", "--yes", "--parallelism", "1"])
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_a_change(sb: &SandboxProc) {
    let start = Instant::now();
    while sb.mutating_count() == 0 {
        assert!(start.elapsed() < WAIT, "the first apply never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn two_spellings_of_one_server_share_its_lock_even_from_two_directories() {
    let sb = SandboxProc::start(&["--rollout-ms", "300"]);
    let port = sb.url.rsplit(':').next().unwrap().to_string();
    let by_name = Workdir::new();
    by_name.target(&format!("http://LocalHost:{port}/"));
    by_name.write("a.yaml", &jobs("a", 4));
    let by_address = Workdir::new();
    by_address.target(&format!("http://127.0.0.1:{port}"));
    by_address.write("b.yaml", &jobs("b", 1));

    sb.clear_requests();
    let mut first = spawn_apply(by_name.path(), &[]);
    wait_for_a_change(&sb);
    let second = by_address.capstan(&["apply", ".", "--yes"]);
    second.code(1);
    assert!(
        second.stderr.contains(&format!("another apply to http://127.0.0.1:{port} is running")),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "the holder is named: {}", second.stderr);
    assert!(sb.job("job::/b::j0").is_none(), "nothing of the second apply was sent");
    assert!(first.wait().unwrap().success());
    by_address.capstan(&["apply", ".", "--yes"]).ok();
}

fn uid() -> u32 {
    unsafe { libc::getuid() }
}

/// capstan with its temporary directory (and so its locks) under `tmp`.
fn with_tmp(w: &Workdir, tmp: &Path, args: &[&str]) -> Run {
    run_with_env(w.path(), args, &[("TMPDIR", tmp.to_str()), ("XDG_RUNTIME_DIR", None)])
}

#[test]
fn a_symlink_planted_where_a_lock_lives_is_refused_and_what_it_points_to_is_left_whole() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("a.yaml", &jobs("a", 1));
    let tmp = tempfile::tempdir().unwrap();
    with_tmp(&w, tmp.path(), &["apply", ".", "--yes"]).ok();
    let locks = tmp.path().join(format!("capstan-{}/locks", uid()));
    let files: Vec<_> = std::fs::read_dir(&locks).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty(), "the apply made its lock files in {}", locks.display());

    // Each lock file replaced by a symlink to something precious.
    let victim = tmp.path().join("precious.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    for f in &files {
        std::fs::remove_file(f).unwrap();
        std::os::unix::fs::symlink(&victim, f).unwrap();
    }
    w.write("a.yaml", &jobs("a", 2));
    let out = with_tmp(&w, tmp.path(), &["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n", "the file a planted lock pointed to");
    assert!(sb.job("job::/a::j1").is_none(), "nothing is applied without the lock");
}

#[test]
fn a_lock_directory_others_can_write_in_or_that_is_a_symlink_is_refused() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("a.yaml", &jobs("a", 1));
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join(format!("capstan-{}", uid()));
    std::fs::create_dir(&base).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = with_tmp(&w, tmp.path(), &["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains(&format!("refusing to keep locks in {}", base.display())), "{}", out.stderr);
    assert!(out.stderr.contains("others can write in it"), "{}", out.stderr);

    std::fs::remove_dir(&base).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &base).unwrap();
    let out = with_tmp(&w, tmp.path(), &["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("it is a symbolic link"), "{}", out.stderr);
    assert!(sb.job("job::/a::j0").is_none());

    // $XDG_RUNTIME_DIR, when set, is where they live: made private.
    let runtime = tempfile::tempdir().unwrap();
    run_with_env(w.path(), &["apply", ".", "--yes"], &[("XDG_RUNTIME_DIR", runtime.path().to_str())]).ok();
    let dir = runtime.path().join("capstan/locks");
    assert!(std::fs::read_dir(&dir).unwrap().count() > 0);
    for d in [runtime.path().join("capstan"), dir] {
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
    }
}

#[test]
fn a_damaged_journal_is_named_with_what_to_do_and_the_state_directory_is_git_ignored() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("a.yaml", &jobs("a", 1));
    w.capstan(&["apply", ".", "--yes"]).ok();
    assert_eq!(w.read(".capstan/.gitignore"), "*\n", "the journal's directory is never committed");

    w.write(".capstan/journal.db", &"not a database\n".repeat(300));
    let _ = std::fs::remove_file(w.path().join(".capstan/journal.db-wal"));
    let _ = std::fs::remove_file(w.path().join(".capstan/journal.db-shm"));
    w.write("a.yaml", &jobs("a", 2));
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains(".capstan/journal.db is damaged or not a database"), "{}", out.stderr);
    assert!(out.stderr.contains("move it aside"), "{}", out.stderr);
    assert!(out.stderr.contains("safe to delete when no apply runs"), "{}", out.stderr);
    assert!(sb.job("job::/a::j1").is_none());
}

#[test]
fn a_damaged_daemon_history_is_named_with_what_to_do() {
    let repo = Repo::new();
    repo.write("a.yaml", &jobs("a", 1));
    repo.commit("a");
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("capstan.db"), "not a database\n".repeat(300)).unwrap();
    let out = run_in(
        repo.path(),
        &["daemon", "--repo", ".", "--listen", "127.0.0.1:0", "--state-dir", state.path().to_str().unwrap()],
    );
    out.code(1);
    let db = state.path().join("capstan.db");
    assert!(out.stderr.contains(&format!("{} is damaged or not a database", db.display())), "{}", out.stderr);
    assert!(out.stderr.contains("move it aside"), "{}", out.stderr);
}

fn target_with_ca(w: &Workdir, url: &str, ca: &str) {
    w.write(
        "capstan.yaml",
        &format!("targets:\n  sb:\n    platform: apcera\n    url: {url}\n    ca_cert: {ca}\ndefault_target: sb\n"),
    );
}

#[test]
fn a_ca_cert_that_is_no_certificate_is_an_error_naming_it_before_any_request() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    target_with_ca(&w, &sb.url, "certs/ca.pem");
    w.write("certs/ca.pem", "this is not a certificate\n");
    w.write("a.yaml", &jobs("a", 1));
    sb.clear_requests();
    let out = w.capstan(&["apply", ".", "--yes"]);
    out.code(1);
    assert!(out.stderr.contains("ca_cert certs/ca.pem is not a PEM certificate"), "{}", out.stderr);
    // A PEM block whose content is no certificate.
    w.write("certs/ca.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    assert!(out.stderr.contains("ca_cert certs/ca.pem is not a PEM certificate"), "{}", out.stderr);
    assert!(sb.requests().is_empty(), "no request before the certificate is known good: {:?}", sb.requests());
}

#[test]
fn a_relative_ca_cert_is_found_next_to_capstan_yaml_wherever_capstan_runs() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    target_with_ca(&w, &sb.url, "certs/ca.pem");
    let pem = std::fs::read_to_string(repo_root().join("tests/fixtures/ca.pem")).unwrap();
    w.write("certs/ca.pem", &pem);
    w.write("a.yaml", &jobs("a", 1));
    // From another directory, naming the manifest directory.
    let elsewhere = tempfile::tempdir().unwrap();
    run_in(elsewhere.path(), &["apply", w.path().to_str().unwrap(), "--yes"]).ok();
    assert!(sb.job("job::/a::j0").is_some());

    // From git, the certificate is the one in the same commit.
    let repo = Repo::new();
    repo.write("deploy/capstan.yaml", &w.read("capstan.yaml"));
    repo.write("deploy/certs/ca.pem", &pem);
    repo.write("deploy/a.yaml", &jobs("a", 2));
    repo.commit("with a CA");
    let repo_arg = repo.path().to_str().unwrap();
    run_in(elsewhere.path(), &["apply", "--repo", repo_arg, "--path", "deploy", "--yes"]).ok();
    assert!(sb.job("job::/a::j1").is_some());
    repo.write("deploy/certs/ca.pem", "garbage\n");
    repo.commit("a broken CA");
    let out = run_in(elsewhere.path(), &["plan", "--repo", repo_arg, "--path", "deploy"]);
    out.code(1);
    assert!(out.stderr.contains("ca_cert deploy/certs/ca.pem is not a PEM certificate"), "{}", out.stderr);
}
