//! Trying to break the first law with units (issue 19's review): capstan never deletes or
//! changes what is declared, and never loses what it applied; units never prune each other's
//! resources; changes never go to a target the commit does not name. Real daemons and the real
//! CLI, real git repositories, Apcera sandboxes over HTTP on 127.0.0.1, a real PostgreSQL
//! (`tests/common/pg.rs`) where daemons share a store.

mod common;
use common::git::*;
use common::pg::*;
use common::units::*;
use common::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// `/v1/units`' line for `unit`.
fn listed(d: &DaemonProc, unit: &str) -> Value {
    let (_, list) = d.get("/v1/units");
    list.as_array().unwrap().iter().find(|u| u["name"] == unit).cloned().unwrap_or(Value::Null)
}

fn not_started(d: &DaemonProc, unit: &str) -> bool {
    listed(d, unit)["phase"] == "not_started"
}

/// The sandbox's URL spelled with the name `localhost` instead of its address.
fn by_name(sb: &SandboxProc) -> String {
    sb.url.replace("127.0.0.1", "localhost")
}

/// `config_for` with `url` as the target and `owner` as the owner, pruning.
fn config_at(sb: &SandboxProc, url: &str, owner: &str) -> String {
    config_for(sb, "prune: true\n").replace(&sb.url, url).replace("owner: daemon-test", &format!("owner: {owner}"))
}

fn deletes(sb: &SandboxProc) -> Vec<Value> {
    sb.mutating_requests().into_iter().filter(|r| r["method"] == "DELETE").collect()
}

/// `http://127.0.0.1:P` and `http://localhost:P/` are one server: two units naming it so with
/// one owner would each prune what the other declares: neither is reconciled, and a third unit
/// elsewhere goes on.
#[test]
fn one_target_spelled_two_ways_with_one_owner_is_refused_by_the_daemon() {
    let sb = SandboxProc::start(&[]);
    let other = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_at(&sb, &sb.url, "team"));
    repo.write("clusters/a/a.yaml", &job_yaml("a", "1"));
    repo.write("clusters/b/capstan.yaml", &config_at(&sb, &format!("{}/", by_name(&sb)), "team"));
    repo.write("clusters/b/b.yaml", &job_yaml("b", "1"));
    repo.write("clusters/c/capstan.yaml", &config_at(&other, &other.url, "team"));
    repo.write("clusters/c/c.yaml", &job_yaml("c", "1"));
    let first = repo.commit("a and b name one server two ways");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    d.wait_for("unit c to apply", WAIT, |d| unit_status(d, "clusters/c", &first).as_deref() == Some("applied"));
    for u in ["clusters/a", "clusters/b"] {
        let line = listed(&d, u);
        assert_eq!(line["phase"], "not_started", "{u}: {line}");
        let why = line["error"].as_str().unwrap_or_default();
        assert!(why.contains("units clusters/a and clusters/b both apply to") && why.contains("team"), "{line}");
    }
    assert!(sb.mutating_requests().is_empty(), "{:?}", sb.mutating_requests());
    assert!(other.job("job::/dev::c").is_some());
}

/// The same on the command line: `capstan apply 'clusters/*'` refuses two units naming one
/// server two ways with one owner before changing anything.
#[test]
fn apply_refuses_one_target_spelled_two_ways_with_one_owner() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("clusters/a/capstan.yaml", &config_at(&sb, &sb.url, "team"));
    w.write("clusters/a/a.yaml", &job_yaml("a", "1"));
    w.write("clusters/b/capstan.yaml", &config_at(&sb, &format!("{}/", by_name(&sb)), "team"));
    w.write("clusters/b/b.yaml", &job_yaml("b", "1"));
    let run = w.capstan(&["apply", "clusters/*", "--yes"]);
    run.code(1);
    assert!(run.stderr.contains("units clusters/a and clusters/b both apply to"), "{}", run.stderr);
    assert!(sb.mutating_requests().is_empty(), "{:?}", sb.mutating_requests());
}

/// A commit adds unit a on the target and owner that running unit b has. Which units are
/// reconciled must depend on the commit alone: a daemon started before the commit (b running)
/// and one started after it (a found first) would otherwise each keep a different one, and
/// each prune what the other declares. Both are refused on both daemons, and nothing of b's is
/// deleted.
#[test]
fn a_unit_added_on_a_running_units_target_and_owner_stops_both_on_every_daemon_and_deletes_nothing() {
    let store = fresh_database();
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("clusters/b/capstan.yaml", &config_at(&sb, &sb.url, "team"));
    repo.write("clusters/b/b.yaml", &job_yaml("b", "1"));
    let first = repo.commit("unit b");
    let (s1, l1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = ["--path", "clusters/*", "--store", store.as_str(), "--lease-ttl", "3s"];
    let xdg1 = l1.path().to_str().unwrap().to_string();
    let d1 = DaemonProc::start(repo.path().to_str().unwrap(), s1.path(), &args, &[("XDG_RUNTIME_DIR", &xdg1)]);
    d1.wait_for("unit b to apply", WAIT, |d| unit_status(d, "clusters/b", &first).as_deref() == Some("applied"));
    assert!(sb.job("job::/dev::b").is_some());

    repo.write("clusters/a/capstan.yaml", &config_at(&sb, &sb.url, "team"));
    repo.write("clusters/a/a.yaml", &job_yaml("a", "1"));
    repo.commit("unit a, on b's target with b's owner");
    // Another machine's daemon, started at the new commit.
    let (s2, l2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let xdg2 = l2.path().to_str().unwrap().to_string();
    let d2 = DaemonProc::start(repo.path().to_str().unwrap(), s2.path(), &args, &[("XDG_RUNTIME_DIR", &xdg2)]);
    for d in [&d1, &d2] {
        d.wait_for("both units to be refused", Duration::from_secs(30), |d| {
            not_started(d, "clusters/a") && not_started(d, "clusters/b")
        });
        let why = listed(d, "clusters/b")["error"].as_str().unwrap_or_default().to_string();
        assert!(why.contains("units clusters/a and clusters/b both apply to"), "{why}");
    }
    // Three lease periods: time for any daemon to take a unit and apply it.
    std::thread::sleep(Duration::from_secs(9));
    assert!(deletes(&sb).is_empty(), "a unit pruned what another declares: {:?}", deletes(&sb));
    assert!(sb.job("job::/dev::b").is_some(), "b's job is kept");
    assert!(sb.job("job::/dev::a").is_none(), "a refused unit applied nothing");
}

/// A fleet's unit whose capstan.yaml names another target at a new commit applies that commit
/// there; the old target, which the commit no longer names, is left as it was.
#[test]
fn a_unit_whose_capstan_yaml_moves_to_another_target_is_applied_there_and_not_to_the_old_one() {
    let (old, new) = (SandboxProc::start(&[]), SandboxProc::start(&[]));
    let repo = Repo::new();
    repo.write("clusters/a/capstan.yaml", &config_at(&old, &old.url, "team"));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("a on the old target");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*"], &[]);
    d.wait_for("unit a to apply", WAIT, |d| unit_status(d, "clusters/a", &first).as_deref() == Some("applied"));
    old.clear_requests();

    repo.write("clusters/a/capstan.yaml", &config_at(&new, &new.url, "team"));
    repo.write("clusters/a/web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("a moves to the new target, web v2");
    d.wait_for("unit a to apply the second commit", WAIT, |d| {
        unit_status(d, "clusters/a", &second).as_deref() == Some("applied")
    });
    assert_eq!(
        new.job("job::/dev::web").map(|j| j["tags"]["version"].clone()),
        Some("2".into()),
        "applied where named"
    );
    assert!(old.mutating_requests().is_empty(), "the old target was changed: {:?}", old.mutating_requests());
    assert_eq!(old.job("job::/dev::web").unwrap()["tags"]["version"], "1");
    assert!(listed(&d, "clusters/a")["target"].as_str().unwrap().contains(&new.url), "{}", listed(&d, "clusters/a"));
}

/// A daemon of one `--path` whose capstan.yaml names another target at a new commit applies
/// nothing (the commit is invalid, saying why and what to do) until restarted, then applies it
/// to the new target; the old one is never changed.
#[test]
fn a_single_daemon_whose_capstan_yaml_moves_applies_nothing_until_restarted() {
    let (old, new) = (SandboxProc::start(&[]), SandboxProc::start(&[]));
    let repo = Repo::new();
    repo.write("deploy/capstan.yaml", &config_at(&old, &old.url, "team"));
    repo.write("deploy/web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("on the old target");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "deploy"], &[]);
    d.wait_for("the first commit to apply", WAIT, |d| d.status_of(&first).as_deref() == Some("applied"));
    old.clear_requests();

    repo.write("deploy/capstan.yaml", &config_at(&new, &new.url, "team"));
    repo.write("deploy/web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("to the new target, web v2");
    d.wait_for("the second commit to be judged", WAIT, |d| {
        matches!(d.status_of(&second).as_deref(), Some("applied" | "invalid" | "failed"))
    });
    assert_eq!(d.status_of(&second).as_deref(), Some("invalid"));
    let errors = d.configuration(&second).unwrap()["errors"].to_string();
    assert!(errors.contains("was started for") && errors.contains("restart the daemon"), "{errors}");
    assert!(old.mutating_requests().is_empty(), "the old target was changed: {:?}", old.mutating_requests());
    assert!(new.job("job::/dev::web").is_none());
    drop(d);

    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "deploy"], &[]);
    d.wait_for("the second commit to apply after a restart", WAIT, |d| {
        d.status_of(&second).as_deref() == Some("applied")
    });
    assert_eq!(new.job("job::/dev::web").unwrap()["tags"]["version"], "2");
    assert!(old.mutating_requests().is_empty(), "{:?}", old.mutating_requests());
}

/// Who sent a request: the pid in capstan's `User-Agent`.
fn sender(r: &Value) -> Option<u32> {
    let ua = r["user_agent"].as_str()?;
    ua.split("(pid ").nth(1)?.strip_suffix(')')?.parse().ok()
}

/// A daemon of a shared store with its own state and lock directories (another machine's).
fn member(repo: &Repo, store: &str, extra: &[&str]) -> (DaemonProc, tempfile::TempDir, tempfile::TempDir) {
    let (state, locks) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let xdg = locks.path().to_str().unwrap().to_string();
    let mut args = vec!["--store", store, "--lease-ttl", "3s", "--parallelism", "1"];
    args.extend_from_slice(extra);
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &args, &[("XDG_RUNTIME_DIR", &xdg)]);
    (d, state, locks)
}

/// A person interrupts the holder's plan; the holder then stops (a rolling restart gives its
/// leases up). The daemon that takes the unit over keeps to the interrupt — it sends nothing
/// until continue — rather than applying the rest of the plan on its own.
#[test]
fn an_interrupt_holds_across_a_takeover_until_continue() {
    let store = fresh_database();
    // Each job takes 400 ms to have its instances running, one step at a time.
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..6 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("six jobs");
    let (d1, _s1, _l1) = member(&repo, &store, &[]);
    d1.wait_for("a step to run", WAIT, |d| d.step_statuses().iter().any(|s| s == "IN_PROGRESS"));
    // The second daemon stands by, started before the interrupt.
    let (d2, _s2, _l2) = member(&repo, &store, &[]);
    let d2_pid = d2.pid();
    d2.wait_for("the second daemon to stand by", WAIT, |d| d.get("/v1/status").1["ready"] == true);
    let (code, _) = d1.post("/v1/plans/deploy/interrupt", None, None);
    assert_eq!(code, 200);
    d1.wait_for("the running step to finish", WAIT, |d| !d.step_statuses().iter().any(|s| s == "IN_PROGRESS"));
    let done = d1.step_statuses().iter().filter(|s| *s == "COMPLETE").count();
    assert!(done < 6, "the plan went on despite the interrupt");
    d1.stop(); // a clean stop gives the lease up
    d2.wait_for("the second daemon to take the unit over", WAIT, |d| {
        d.get("/v1/status").1["leases"][0]["this_daemon"] == true
    });
    d2.wait_for("the second daemon to look at the unit", WAIT, |d| d.get("/v1/status").1["phase"] != "starting");
    // Two lease periods: time for it to plan and apply, were it to ignore the interrupt.
    std::thread::sleep(Duration::from_secs(6));
    let sent: Vec<Value> = sb.mutating_requests().into_iter().filter(|r| sender(r) == Some(d2_pid)).collect();
    assert!(sent.is_empty(), "the daemon that took the unit over ignored the interrupt: {sent:?}");
    let (_, st) = d2.get("/v1/status");
    assert_eq!(st["interrupted"], true, "{st}");

    let (code, _) = d2.post("/v1/plans/deploy/continue", None, None);
    assert_eq!(code, 200);
    d2.wait_for("the plan to complete", WAIT, |d| d.status_of(&sha).as_deref() == Some("applied"));
    for i in 0..6 {
        assert!(sb.job(&format!("job::/dev::job-{i}")).is_some(), "job-{i}");
    }
}

/// A TCP proxy on 127.0.0.1 in front of the test's PostgreSQL server that the test can cut
/// (every connection closed, new ones closed at once: the store is unreachable) and restore.
/// Its accept loop ends when it is dropped.
struct Proxy {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn to(upstream: String) -> Proxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy { port, up: Default::default(), open: Default::default(), stop: Default::default() };
        proxy.up.store(true, SeqCst);
        let (up, open, stop) = (proxy.up.clone(), proxy.open.clone(), proxy.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                if !up.load(SeqCst) {
                    continue; // dropped: closed at once
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                let mut held = open.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
    }
}

/// The store becomes unreachable in the middle of an apply: the daemon fails closed — within a
/// lease it sends nothing more (it can no longer prove it holds the unit) — and once the store
/// is back it takes the unit again and converges, every change sent once.
#[test]
fn an_unreachable_store_mid_apply_stops_the_daemon_within_a_lease_and_it_resumes_without_duplicates() {
    let url = fresh_database();
    let (head, rest) = url.rsplit_once('@').unwrap();
    let (upstream, db) = rest.split_once('/').unwrap();
    let proxy = Proxy::to(upstream.to_string());
    let proxied = format!("{head}@127.0.0.1:{}/{db}", proxy.port);
    // Each job takes 1.5 s to have its instances running, one step at a time.
    let sb = SandboxProc::start(&["--rollout-ms", "1500"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..8 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("eight jobs");
    let (d, _s, _l) = member(&repo, &proxied, &[]);
    d.wait_for("two steps to complete", WAIT, |d| d.step_statuses().iter().filter(|s| *s == "COMPLETE").count() >= 2);

    proxy.cut();
    let (cut, at_cut) = (std::time::Instant::now(), sb.mutating_count());
    // The lease (3 s) cannot be renewed: past it, nothing more may be sent.
    std::thread::sleep(Duration::from_secs(4));
    let after_lease = sb.mutating_count();
    eprintln!("changes sent after the store was cut: {} (within {:?})", after_lease - at_cut, cut.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sb.mutating_count(), after_lease, "changes were sent with the store unreachable past the lease");
    assert!(sb.jobs().len() < 8, "the apply went on to the end without its store");

    proxy.restore();
    let restored = std::time::Instant::now();
    d.wait_for("the commit to be applied once the store is back", WAIT, |d| {
        d.status_of(&sha).as_deref() == Some("applied")
    });
    eprintln!("store back → commit applied in {:?}", restored.elapsed());
    for i in 0..8 {
        assert!(sb.job(&format!("job::/dev::job-{i}")).is_some(), "job-{i}");
    }
    let mut seen = std::collections::BTreeMap::new();
    for r in sb.mutating_requests() {
        let named = r["body"]["fqn"].as_str().or(r["body"]["name"].as_str()).unwrap_or_default();
        *seen.entry(format!("{} {} {named}", r["method"], r["path"])).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "changes sent more than once: {twice:?}");
}

/// A unit whose name (the directories it is in, joined) is longer than a file name may be is
/// reconciled like any other: its state directory's name is cut and hashed, not refused by the
/// file system.
#[test]
fn a_unit_with_a_very_long_name_is_reconciled() {
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    let unit = format!("clusters/{}/{}", "a".repeat(130), "b".repeat(130));
    repo.write(&format!("{unit}/capstan.yaml"), &config_for(&sb, ""));
    repo.write(&format!("{unit}/web.yaml"), &job_yaml("web", "1"));
    let sha = repo.commit("a unit with a long name");
    let state = tempfile::tempdir().unwrap();
    let d = DaemonProc::start(repo.path().to_str().unwrap(), state.path(), &["--path", "clusters/*/*"], &[]);
    d.wait_for("the unit to start or be refused", WAIT, |d| listed(d, &unit).is_object());
    assert_ne!(listed(&d, &unit)["phase"], "not_started", "{}", listed(&d, &unit));
    d.wait_for("the unit to apply", WAIT, |d| unit_status(d, &unit, &sha).as_deref() == Some("applied"));
    assert!(sb.job("job::/dev::web").is_some());
}
