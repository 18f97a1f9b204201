//! The daemon keeping its history in a real PostgreSQL server (`--store postgres://…`): the
//! server `.ci/postgres` starts (its URL in `CAPSTAN_TEST_POSTGRES_URL`, or one this binary
//! starts itself with the same script — these tests never skip). Each test has a database of
//! its own, so they run in parallel.

mod common;
use common::git::*;
use common::pg::*;
use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn password() -> String {
    let url = server_url();
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let userinfo = authority.rsplit_once('@').expect("the URL has credentials").0;
    let password = userinfo.split_once(':').expect("the URL has a password").1;
    assert!(password.len() >= 8, "a password worth looking for");
    password.to_string()
}

fn applied(d: &DaemonProc, sha: &str) -> bool {
    d.status_of(sha).as_deref() == Some("applied")
}

/// What a daemon answers for its commits and its history.
fn answers(d: &DaemonProc) -> (Value, Value) {
    let (code, configurations) = d.get("/v1/configurations?all=true");
    assert_eq!(code, 200, "{configurations}");
    let (code, history) = d.get("/v1/history");
    assert_eq!(code, 200, "{history}");
    (configurations, history)
}

#[test]
fn a_daemon_on_postgres_applies_commits_and_restarted_loses_no_history_and_a_second_answers_the_same() {
    let store = fresh_database();
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let path = repo.path().to_str().unwrap().to_string();
    let d = DaemonProc::start(&path, state.path(), &["--store", &store], &[]);
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the second commit to apply", WAIT, |d| applied(d, &second));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    let (before, history_before) = answers(&d);
    assert_eq!(d.stop(), 0);

    // The history is in the store, not the state directory: a daemon on a new, empty state
    // directory finds all of it, and sends nothing for a commit already applied.
    let mutations = sb.mutating_count();
    let fresh_state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(&path, fresh_state.path(), &["--store", &store], &[]);
    d.wait_for("the daemon to settle on the applied commit", WAIT, |d| {
        d.get("/v1/status").1["phase"].as_str().is_some_and(|p| p == "idle")
    });
    let (after, history_after) = answers(&d);
    assert_eq!(after, before, "every commit as it was before the restart");
    let old: Vec<&Value> = history_before.as_array().unwrap().iter().collect();
    let new: Vec<&Value> = history_after.as_array().unwrap().iter().collect();
    assert!(new.len() >= old.len(), "no entry lost: {} before, {} after", old.len(), new.len());
    assert_eq!(new[new.len() - old.len()..], old[..], "the entries before the restart, unchanged");
    assert_eq!(sb.mutating_count(), mutations, "nothing sent again for an applied commit");

    // A second daemon (another state directory, same repository and store) answers exactly as
    // the first: read both until two reads of the first agree around one of the second.
    let other_state = tempfile::tempdir().unwrap();
    let e = DaemonProc::start(&path, other_state.path(), &["--store", &store], &[]);
    e.wait_for("the second daemon to settle", WAIT, |e| {
        e.get("/v1/status").1["phase"].as_str().is_some_and(|p| p == "idle")
    });
    let mut same = false;
    for _ in 0..50 {
        let a = answers(&d);
        let b = answers(&e);
        if a == answers(&d) {
            assert_eq!(b, a, "the second daemon answers /v1/configurations and /v1/history as the first");
            same = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(same, "the first daemon's answers settled");
    assert_eq!(e.get(&format!("/v1/configurations/{first}")).1, d.get(&format!("/v1/configurations/{first}")).1);
}

/// Runs `capstan daemon` expecting it to fail at start; its exit code and stderr.
fn daemon_failing(repo: &str, state: &std::path::Path, store: &str) -> (i32, String) {
    let mut child = Command::new(capstan_bin())
        .args(["daemon", "--repo", repo, "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state)
        .args(["--store", store])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the daemon did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_store_with_a_newer_schema_is_refused_and_left_as_it_is() {
    let store = fresh_database();
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let path = repo.path().to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(&path, state.path(), &["--store", &store], &[]);
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    assert_eq!(d.stop(), 0);

    let mut client = postgres::Client::connect(&store, postgres::NoTls).unwrap();
    let version: i64 = client.query_one("SELECT MAX(version) FROM capstan_schema", &[]).unwrap().get(0);
    assert!(version >= 1, "the daemon migrated the store on start");
    client.execute("INSERT INTO capstan_schema (version, applied_at) VALUES (999, 0)", &[]).unwrap();
    let entries: i64 = client.query_one("SELECT COUNT(*) FROM history", &[]).unwrap().get(0);

    let mutations = sb.mutating_count();
    let (code, text) = daemon_failing(&path, state.path(), &store);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("schema version 999"), "the error names the store's version: {text}");
    assert!(text.contains(&format!("newer than this capstan knows ({version})")), "and the binary's: {text}");
    assert!(!text.contains(&password()), "the password is not shown: {text}");
    let after: i64 = client.query_one("SELECT COUNT(*) FROM history", &[]).unwrap().get(0);
    assert_eq!(after, entries, "nothing written to a store of a newer schema");
    assert_eq!(sb.mutating_count(), mutations, "nothing applied");
}

#[test]
fn the_store_urls_password_is_shown_nowhere() {
    let store = fresh_database();
    let secret = password();
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let path = repo.path().to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("daemon.log");
    // Given in the environment this time (CAPSTAN_STORE), with debug logs on.
    let d = DaemonProc::start_logged(
        &path,
        &state.path().join("state"),
        &[],
        &[("CAPSTAN_STORE", &store), ("RUST_LOG", "capstan=debug")],
        &log,
    );
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    let mut seen = d.first_line.clone();
    for p in ["/v1/status", "/v1/configurations?all=true", "/v1/history", "/metrics", "/"] {
        seen.push_str(&d.text(p));
    }
    seen.push_str(&d.text(&format!("/v1/configurations/{first}")));
    assert_eq!(d.stop(), 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("PostgreSQL"), "the log says where the history is kept: {logged}");
    seen.push_str(&logged);

    // The help shows no value of CAPSTAN_STORE; a store that refuses the connection, nor the
    // error that says so.
    let help = Command::new(capstan_bin()).args(["daemon", "--help"]).env("CAPSTAN_STORE", &store).output().unwrap();
    seen.push_str(&String::from_utf8_lossy(&help.stdout));
    let wrong = store.replacen(&secret, "not-the-password-0123", 1);
    let (code, text) = daemon_failing(&path, &state.path().join("other"), &wrong);
    assert_ne!(code, 0, "a wrong password is an error: {text}");
    assert!(!text.contains("not-the-password-0123"), "the wrong password is not shown: {text}");
    seen.push_str(&text);
    // No TLS yet: a URL that requires it is refused, never quietly sent in the clear.
    let (code, text) = daemon_failing(&path, &state.path().join("other"), &format!("{store}?sslmode=require"));
    assert_ne!(code, 0, "sslmode=require is refused: {text}");
    assert!(text.contains("TLS"), "{text}");
    seen.push_str(&text);
    let (code, text) = daemon_failing(&path, &state.path().join("other"), &format!("mysql://u:{secret}@127.0.0.1/x"));
    assert_ne!(code, 0, "an unknown engine is an error: {text}");
    assert!(text.contains("--store"), "{text}");
    seen.push_str(&text);

    assert!(!seen.contains(&secret), "the store's password appears in the daemon's output or answers");
}

#[test]
fn a_lost_connection_to_the_store_is_made_again_and_no_history_is_lost() {
    let store = fresh_database();
    let name = store.rsplit_once('/').unwrap().1.to_string();
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let path = repo.path().to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(&path, state.path(), &["--store", &store], &[]);
    d.wait_for("the first commit to apply", WAIT, |d| applied(d, &first));
    let entries = d.get("/v1/history").1.as_array().unwrap().len();

    // The server ends the daemon's session (as a restart or failover of the server would).
    let mut admin = postgres::Client::connect(server_url(), postgres::NoTls).unwrap();
    let ended: i64 = admin
        .query_one(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1) t",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert!(ended >= 1, "the daemon's session was ended");

    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    d.wait_for("the next commit to apply and be recorded", WAIT, |d| applied(d, &second));
    assert_eq!(sb.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    let history = d.get("/v1/history").1;
    let outcomes: Vec<(&str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["sha"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert!(outcomes.len() > entries, "entries after the lost connection are recorded: {outcomes:?}");
    for outcome in ["seen", "applying", "applied"] {
        assert_eq!(
            outcomes.iter().filter(|(s, o)| *s == second && *o == outcome).count(),
            1,
            "the second commit's {outcome} recorded exactly once: {outcomes:?}"
        );
    }
}
