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

/// A manifest directory declaring one job (`job::/a::j0`), applied to `sb`.
fn one_job_for(sb: &SandboxProc) -> Workdir {
    let w = Workdir::new();
    w.target(&sb.url);
    w.write("a.yaml", &jobs("a", 1));
    w
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
    let w = one_job_for(&sb);
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
    let w = one_job_for(&sb);
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
    let w = one_job_for(&sb);
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
    let pem = std::fs::read_to_string(repo_root().join("tests/fixtures/tls/ca.pem")).unwrap();
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

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[test]
fn credentials_in_a_repository_url_are_used_and_never_shown_or_stored() {
    const SECRET: &str = "s3cr3t-pw";
    let sb = SandboxProc::start(&[]);
    let root = tempfile::tempdir().unwrap();
    git(root.path(), &["init", "-q", "--bare", "-b", "main", "shop.git"]);
    // Over HTTPS: git sends no credentials in clear text.
    let server = GitHttp::serve_tls(root.path(), Some(("bot", SECRET)));
    let ca = repo_root().join("tests/fixtures/tls/ca.pem");
    let ca = ca.to_str().unwrap();
    let repo = Repo::new();
    git(repo.path(), &["remote", "add", "origin", root.path().join("shop.git").to_str().unwrap()]);
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("a.yaml", &jobs("a", 1));
    let sha = repo.commit("a");
    repo.push("origin");
    let plain = format!("{}/shop.git", server.url);
    let with_secret = plain.replacen("https://", &format!("https://bot:{SECRET}@"), 1);
    let cwd = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let render = |url: &str, state: &Path, env: &[(&str, Option<&str>)]| {
        let args = ["render", "--repo", url, "--state-dir", state.to_str().unwrap()];
        let mut env = env.to_vec();
        env.extend([("SSL_CERT_FILE", Some(ca)), ("GIT_TERMINAL_PROMPT", Some("0"))]);
        run_with_env(cwd.path(), &args, &env)
    };

    // A failure names the repository without its credentials.
    let out = render(&with_secret.replace("shop.git", "missing.git"), state.path(), &[]);
    out.code(1);
    assert!(!out.stderr.contains(SECRET) && !out.stdout.contains(SECRET), "{}", out.stderr);
    assert!(out.stderr.contains(&plain.replace("shop.git", "missing.git")), "{}", out.stderr);

    // They are used, and neither printed nor kept in the fetched repository.
    let out = render(&with_secret, state.path(), &[]);
    out.ok();
    assert!(out.stderr.contains(&format!("Using commit {sha} of {plain}.")), "{}", out.stderr);
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
    assert_eq!(files_containing(state.path(), SECRET), Vec::<String>::new());

    // Without them in the URL: from the environment, or a git credential helper; else refused.
    let fresh = || tempfile::tempdir().unwrap();
    render(&plain, fresh().path(), &[("CAPSTAN_GIT_USERNAME", Some("bot")), ("CAPSTAN_GIT_PASSWORD", Some(SECRET))])
        .ok();
    let helper = format!("!f() {{ echo username=bot; echo password={SECRET}; }}; f");
    let helper_env = [
        ("GIT_CONFIG_COUNT", Some("1")),
        ("GIT_CONFIG_KEY_0", Some("credential.helper")),
        ("GIT_CONFIG_VALUE_0", Some(&*helper)),
    ];
    render(&plain, fresh().path(), &helper_env).ok();
    let out = render(&plain, fresh().path(), &[("CAPSTAN_GIT_PASSWORD", Some("wrong"))]);
    out.code(1);
    assert!(out.stderr.contains(&plain) && !out.stderr.contains("wrong"), "{}", out.stderr);

    // The daemon: its first line, its status, its history and its log show the URL without them.
    let log = state.path().join("daemon.log");
    let env = [("SSL_CERT_FILE", ca)];
    let d = DaemonProc::start_logged(&with_secret, &state.path().join("d"), &["--interval", "1h"], &env, &log);
    d.wait_for("the commit to apply", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    assert!(d.first_line.contains(&plain) && !d.first_line.contains(SECRET), "{}", d.first_line);
    let (_, status) = d.get("/v1/status");
    assert_eq!(status["repository"]["location"], plain.as_str());
    assert!(!d.text("/v1/configurations?all=true").contains(SECRET));
    d.stop();
    assert_eq!(files_containing(state.path(), SECRET), Vec::<String>::new(), "logs, history and caches");
}

#[test]
fn with_a_token_and_no_webhook_secret_a_webhook_needs_the_token() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("a.yaml", &jobs("a", 1));
    let sha = repo.commit("a");
    let state = tempfile::tempdir().unwrap();
    let extra = ["--token-env", "CAPSTAN_TOKEN", "--interval", "1h", "--resync", "1h"];
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &extra, &[("CAPSTAN_TOKEN", "t0k3n")]);
    d.wait_for("the commit", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    // A reconcile is counted after it has recorded its commit's status: wait for the count too.
    d.wait_for("the first reconcile to be counted", WAIT, |d| d.reconciles() >= 1);
    let before = d.reconciles();
    let push = r#"{"ref": "refs/heads/main"}"#;
    for _ in 0..20 {
        assert_eq!(d.post("/v1/webhook", None, Some((push, &[]))).0, 401, "an unauthenticated webhook");
        assert_eq!(d.post("/v1/webhook", Some("Bearer wrong"), Some((push, &[]))).0, 401);
    }
    assert_eq!(d.post("/v1/webhook", Some("Bearer t0k3n"), Some((push, &[]))).0, 202);
    d.wait_for("the one authenticated webhook's reconcile", WAIT, |d| d.reconciles() > before);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.reconciles(), before + 1, "only the authenticated webhook reconciled");
}

#[test]
fn metrics_can_be_made_to_need_the_token_too() {
    let repo = Repo::new();
    repo.write("a.yaml", &jobs("a", 1));
    repo.commit("a");
    let state = tempfile::tempdir().unwrap();
    let extra = ["--token-env", "T", "--metrics-need-token"];
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &extra, &[("T", "t0k3n")]);
    let bare = reqwest::blocking::Client::new();
    assert_eq!(bare.get(format!("{}/metrics", d.url)).send().unwrap().status().as_u16(), 401);
    assert_eq!(bare.get(format!("{}/health/live", d.url)).send().unwrap().status().as_u16(), 200);
    assert!(d.text("/metrics").ends_with("# EOF\n"));
}

#[test]
fn listening_beyond_loopback_needs_a_token_or_an_explicit_flag_and_an_empty_token_is_refused() {
    let repo = Repo::new();
    repo.write("a.yaml", &jobs("a", 1));
    repo.commit("a");
    let state = tempfile::tempdir().unwrap();
    let daemon = |repo_arg: &str, extra: &[&str], env: &[(&str, Option<&str>)]| {
        let mut args = vec!["daemon", "--repo", repo_arg, "--state-dir", state.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        run_with_env(repo.path(), &args, env)
    };
    // Addresses this machine does not have (documentation ranges): had the check let them
    // through, binding would fail, so the test never listens beyond loopback nor hangs.
    for listen in ["192.0.2.1:0", "[2001:db8::1]:0"] {
        let out = daemon(".", &["--listen", listen], &[]);
        out.code(1);
        assert!(out.stderr.contains(&format!("refusing to listen on {listen} with no token")), "{}", out.stderr);
        assert!(out.stderr.contains("--insecure-listen"), "{}", out.stderr);
    }
    // Past that check (a repository that is not there stops it before it listens).
    let out = daemon("/nonexistent/repo", &["--listen", "192.0.2.1:0", "--insecure-listen"], &[]);
    out.code(1);
    assert!(!out.stderr.contains("refusing to listen"), "{}", out.stderr);
    let out = daemon(".", &["--token-env", "T"], &[("T", Some(" "))]);
    out.code(1);
    assert!(out.stderr.contains("the API token is read from $T, which is empty"), "{}", out.stderr);
}

/// Raise this process's soft limit on open files to its hard limit; returns the limit now.
fn raise_own_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

#[test]
fn under_thousands_of_half_sent_requests_the_daemon_stays_live_and_applies_a_commit_made_meanwhile() {
    use std::io::Write;
    const ATTACK: usize = 3000;
    let own = raise_own_fd_limit();
    assert!(own > ATTACK as u64 + 500, "this test holds {ATTACK} connections open; its limit is {own} files");
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("a.yaml", &jobs("a", 1));
    let first = repo.commit("one job");
    let state = tempfile::tempdir().unwrap();
    // The daemon may have 1024 files open (256 until it raises its soft limit to the hard one):
    // far fewer than the connections coming.
    let d = DaemonProc::start_with_fd_limit(repo.path().to_str().unwrap(), state.path(), &[], 256, 1024);
    d.wait_for("the first commit", WAIT, |d| d.status_of(&first).as_deref() == Some("applied"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let open_files: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().skip(3).take(2).collect();
    assert_eq!(open_files, ["1024", "1024"], "the soft limit raised to the hard one");

    // Thousands of connections, each sending half a request's head and then nothing.
    let addr: std::net::SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();
    let mut held = Vec::new();
    for i in 0..ATTACK {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: capstan\r\n");
                held.push(s);
            }
            // The daemon no longer accepts: the attack has done what it can.
            Err(e) => {
                eprintln!("connection {i}: {e}");
                break;
            }
        }
    }
    eprintln!("{} half-sent requests held open", held.len());

    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let live = || {
        let r = client.get(format!("{}/health/live", d.url)).send().expect("/health/live answers during the attack");
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(live(), (200, "ok\n".to_string()));
    repo.write("a.yaml", &jobs("a", 2));
    let second = repo.commit("two jobs, during the attack");
    d.wait_for("the commit made during the attack", WAIT, |d| d.status_of(&second).as_deref() == Some("applied"));
    assert!(sb.job("job::/a::j1").is_some());
    assert_eq!(live(), (200, "ok\n".to_string()));
    drop(held);
    assert_eq!(d.stop(), 0, "and it stops cleanly");
}

#[test]
fn the_sandbox_writes_its_state_through_no_symlink_left_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sandbox.json");
    let victim = dir.path().join("precious.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("sandbox.tmp")).unwrap();
    let sb = SandboxProc::start(&["--state", state.to_str().unwrap()]);
    let w = one_job_for(&sb);
    w.capstan(&["apply", ".", "--yes"]).ok();
    sb.stop();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    assert!(std::fs::read_to_string(&state).unwrap().contains("job::/a::j0"), "the state is written all the same");
}
