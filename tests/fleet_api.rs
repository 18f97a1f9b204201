//! Any daemon of a fleet answers for every unit (issue 19, item 4): several real daemons as
//! processes on one real PostgreSQL (`tests/common/pg.rs`: never skipped), a real git
//! repository of several units, each with its own Apcera sandbox over HTTP. Events of the
//! daemon holding a unit reach the subscribers of every daemon (LISTEN/NOTIFY); every read of
//! the API is the same from each daemon, before and after all of them restart; a change asked
//! of a daemon that does not hold the unit is refused with 409 naming the holder.

mod common;
use common::git::*;
use common::pg::*;
use common::units::*;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);
const JOBS: usize = 2;

/// One scenario at a time: each runs three daemons and a sandbox per unit.
static SERIAL: Mutex<()> = Mutex::new(());

/// The fields of an answer that are the answering daemon's own, not the unit's: its id, whether
/// it is the holder, and what its own reconcile loop last did (`standby` on a daemon without
/// the lease) and when.
const PER_DAEMON: &[&str] = &["daemon_id", "this_daemon", "last_result", "last_reconcile"];

fn jobs_yaml(tag: &str) -> String {
    let mut s = String::from("jobs:\n");
    for i in 0..JOBS {
        s.push_str(&format!("  job::::app{i}:\n    state: started\n    tags:\n      version: \"{tag}\"\n"));
    }
    s
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One daemon of the fleet, with its own state and lock directories (as on its own machine).
struct Member {
    d: DaemonProc,
    _state: tempfile::TempDir,
    _locks: tempfile::TempDir,
}

impl Member {
    fn start(repo: &str, store: &str) -> Member {
        let state = tempfile::tempdir().unwrap();
        let locks = tempfile::tempdir().unwrap();
        let xdg = locks.path().to_str().unwrap().to_string();
        // No resync during the test: what a daemon shows changes only by what the test does.
        let args = ["--store", store, "--path", "clusters/*", "--resync", "1h"];
        let d = DaemonProc::start(repo, state.path(), &args, &[("XDG_RUNTIME_DIR", xdg.as_str())]);
        Member { d, _state: state, _locks: locks }
    }

    fn id(&self) -> String {
        self.d.get("/v1/status").1["daemon_id"].as_str().unwrap().to_string()
    }

    /// The units this daemon says it holds.
    fn held(&self) -> Vec<String> {
        let (_, st) = self.d.get("/v1/status");
        let leases = st["leases"].as_array().cloned().unwrap_or_default();
        leases.iter().filter(|l| l["this_daemon"] == true).map(|l| l["unit"].as_str().unwrap().to_string()).collect()
    }
}

struct Scene {
    sandboxes: Vec<SandboxProc>,
    units: Vec<String>,
    repo: Repo,
    path: String,
    store: String,
    first: String,
}

fn scene(units: usize) -> Scene {
    let sandboxes: Vec<SandboxProc> = (0..units).map(|_| SandboxProc::start(&[])).collect();
    let units: Vec<String> = (0..units).map(|i| format!("clusters/c{i}")).collect();
    let repo = Repo::new();
    for (u, sb) in units.iter().zip(&sandboxes) {
        repo.write(&format!("{u}/capstan.yaml"), &config_for(sb, ""));
        repo.write(&format!("{u}/web.yaml"), &jobs_yaml("1"));
    }
    let first = repo.commit("v1");
    let path = repo.path().to_str().unwrap().to_string();
    Scene { sandboxes, units, repo, path, store: fresh_database(), first }
}

impl Scene {
    fn commit(&self, tag: &str) -> String {
        for u in &self.units {
            self.repo.write(&format!("{u}/web.yaml"), &jobs_yaml(tag));
        }
        self.repo.commit(tag)
    }

    fn applied(&self, fleet: &[&Member], sha: &str) -> bool {
        self.units.iter().all(|u| {
            fleet.iter().any(|m| {
                let (code, v) = m.d.get(&format!("/v1/units/{}/configurations/{sha}", enc(u)));
                code == 200 && v["status"] == "applied"
            })
        })
    }

    /// Waits until `sha` is applied to every unit and the units are spread: each held by one
    /// daemon, none holding more than its fair share. Returns who holds what.
    fn settle(&self, fleet: &[&Member], sha: &str) -> Vec<Vec<String>> {
        wait("every unit to apply the commit", WAIT, || self.applied(fleet, sha));
        let share = self.units.len().div_ceil(fleet.len());
        let mut spread = Vec::new();
        wait("the units to spread across the daemons", WAIT, || {
            spread = fleet.iter().map(|m| m.held()).collect::<Vec<_>>();
            spread.iter().all(|h| h.len() <= share) && spread.iter().map(Vec::len).sum::<usize>() == self.units.len()
        });
        spread
    }
}

/// A daemon's event stream from the moment it is opened, read in the background.
struct Stream {
    rx: std::sync::mpsc::Receiver<Value>,
}

impl Stream {
    fn open(d: &DaemonProc) -> Stream {
        let url = format!("{}/v1/events", d.url);
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(None).build().unwrap();
            let Ok(resp) = client.get(url).send() else { return };
            let _ = ready_tx.send(());
            for line in BufReader::new(resp).lines() {
                let Ok(line) = line else { return };
                if let Some(data) = line.strip_prefix("data:")
                    && tx.send(serde_json::from_str::<Value>(data.trim()).unwrap()).is_err()
                {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the event stream opens");
        Stream { rx }
    }

    /// Events until every unit of `units` has converged to `sha`, then whatever else comes
    /// within a second (an event delivered twice would come then).
    fn until_converged(&self, units: &[String], sha: &str) -> Vec<Value> {
        let mut seen: Vec<Value> = Vec::new();
        let deadline = Instant::now() + WAIT;
        let done = |seen: &[Value]| {
            units.iter().all(|u| seen.iter().any(|e| e["unit"] == *u && e["sha"] == sha && e["type"] == "converged"))
        };
        while !done(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) => seen.push(e),
                Err(_) => panic!("not every unit converged to {sha} in the stream: {seen:#?}"),
            }
        }
        while let Ok(e) = self.rx.recv_timeout(Duration::from_secs(1)) {
            seen.push(e);
        }
        seen
    }
}

/// Three daemons, four units: a subscriber of each daemon sees the events of every unit's
/// reconcile of a new commit — the three quarters applied by other daemons too — in the order
/// the holder published them, each once, with the unit and the holder (`origin`) in each.
#[test]
fn events_of_a_unit_reach_the_subscribers_of_every_daemon_in_order_once_each() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = scene(4);
    let fleet_owned =
        [Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store)];
    let fleet: Vec<&Member> = fleet_owned.iter().collect();
    let spread = s.settle(&fleet, &s.first);
    let ids: Vec<String> = fleet.iter().map(|m| m.id()).collect();
    let holder_of: BTreeMap<&str, &str> =
        spread.iter().zip(&ids).flat_map(|(held, id)| held.iter().map(move |u| (u.as_str(), id.as_str()))).collect();

    let streams: Vec<Stream> = fleet.iter().map(|m| Stream::open(&m.d)).collect();
    let second = s.commit("2");
    let seen: Vec<Vec<Value>> = streams.iter().map(|st| st.until_converged(&s.units, &second)).collect();

    for u in &s.units {
        let holder = holder_of[u.as_str()];
        let of_unit = |events: &[Value]| -> Vec<Value> {
            events
                .iter()
                .filter(|e| e["unit"] == *u && e["sha"] == second)
                .map(|e| {
                    let mut e = e.clone();
                    e.as_object_mut().unwrap().remove("id");
                    e
                })
                .collect()
        };
        let by_holder = of_unit(&seen[ids.iter().position(|i| i == holder).unwrap()]);
        let types: Vec<&str> = by_holder.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types.first(), Some(&"commit_seen"), "{u}: {types:?}");
        assert_eq!(types.last(), Some(&"converged"), "{u}: {types:?}");
        assert_eq!(types.iter().filter(|t| **t == "step_finished").count(), JOBS, "{u}: {types:?}");
        assert!(by_holder.iter().all(|e| e["origin"] == holder), "{u}: every event names its holder: {by_holder:#?}");
        for (m, events) in seen.iter().enumerate() {
            assert_eq!(
                of_unit(events),
                by_holder,
                "{u}: daemon {} (holder {holder}) saw the holder's events, in order, once each",
                ids[m]
            );
        }
    }
    // Each stream's own ids still go up one by one, relayed events and its own alike.
    for events in &seen {
        let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    }
}

/// Removes the answering daemon's own fields (`PER_DAEMON`) from an answer, at any depth.
fn unit_fields(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for f in PER_DAEMON {
                map.remove(*f);
            }
            map.values_mut().for_each(unit_fields);
        }
        Value::Array(list) => list.iter_mut().for_each(unit_fields),
        _ => {}
    }
}

/// Every read endpoint's answer (status code and body, less `PER_DAEMON`) from one daemon.
fn answers(m: &Member, units: &[String], shas: &[&str]) -> BTreeMap<String, (u16, Value)> {
    let mut paths = vec!["/v1/units".to_string(), "/v1/status".to_string()];
    for u in units {
        let base = format!("/v1/units/{}", enc(u));
        for p in ["", "/status", "/plans", "/plans/deploy", "/configurations", "/configurations?all=true"] {
            paths.push(format!("{base}{p}"));
        }
        for p in ["/configurations/target", "/history"] {
            paths.push(format!("{base}{p}"));
        }
        for sha in shas {
            paths.push(format!("{base}/configurations/{sha}"));
            paths.push(format!("{base}/configurations/{sha}/plan"));
            paths.push(format!("{base}/history?sha={sha}"));
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let (code, mut v) = m.d.get(&p);
            unit_fields(&mut v);
            (p, (code, v))
        })
        .collect()
}

/// Waits until every daemon gives the same answers (a holder keeps what it shows in the store
/// as it goes idle), and returns them; on timeout, fails with the first answer that differs.
fn same_answers(fleet: &[&Member], units: &[String], shas: &[&str]) -> BTreeMap<String, (u16, Value)> {
    let start = Instant::now();
    loop {
        let all: Vec<BTreeMap<String, (u16, Value)>> = fleet.iter().map(|m| answers(m, units, shas)).collect();
        if all.iter().all(|a| *a == all[0]) {
            return all.into_iter().next().unwrap();
        }
        if start.elapsed() > Duration::from_secs(30) {
            for (path, first) in &all[0] {
                for (m, other) in all.iter().enumerate().skip(1) {
                    assert_eq!(&other[path], first, "GET {path}: daemon {m} answers otherwise than daemon 0");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three daemons, four units, two commits: every read of the API — the fleet's units and
/// status, each unit's summary, status, plan, configurations, target, history — is the same
/// from each daemon (but for `PER_DAEMON`); and after all three are stopped and three others
/// started on the same store, no entry of any unit's history is lost and the answers are again
/// the same from each.
#[test]
fn every_daemon_answers_the_same_for_every_unit_and_a_restart_of_all_loses_no_history() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = scene(4);
    let fleet_owned =
        [Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store)];
    let fleet: Vec<&Member> = fleet_owned.iter().collect();
    s.settle(&fleet, &s.first);
    let second = s.commit("2");
    s.settle(&fleet, &second);
    let shas = [s.first.as_str(), second.as_str()];
    let before = same_answers(&fleet, &s.units, &shas);
    // A daemon's connections to the store: its units' shared pool (`--store-connections`,
    // default 4, each made when first needed), the lease keeper's (with the shared journal's)
    // and the event relay's.
    let mut db = postgres::Client::connect(&s.store, postgres::NoTls).unwrap();
    let open: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    let (least, most) = (fleet.len() * 3, fleet.len() * (4 + 2));
    assert!((least..=most).contains(&(open as usize)), "{open} connections to the store, not in {least}..={most}");
    drop(db);
    for u in &s.units {
        let (code, plan) = &before[&format!("/v1/units/{}/plans/deploy", enc(u))];
        assert_eq!((*code, &plan["commit"]), (200, &Value::from(second.clone())), "{u}: {plan}");
        let (_, st) = &before[&format!("/v1/units/{}/status", enc(u))];
        assert_eq!(st["last_applied"], second, "{u}: {st}");
        assert_eq!(st["target"], second, "{u}: {st}");
        assert_eq!(st["live"]["converged"], true, "{u}: {st}");
    }

    // Stop every daemon; three others on the same store.
    drop(fleet);
    for m in fleet_owned {
        assert_eq!(m.d.stop(), 0);
    }
    let mutated: Vec<u64> = s.sandboxes.iter().map(SandboxProc::mutating_count).collect();
    let fresh = [Member::start(&s.path, &s.store), Member::start(&s.path, &s.store), Member::start(&s.path, &s.store)];
    let fleet: Vec<&Member> = fresh.iter().collect();
    s.settle(&fleet, &second);
    let after = same_answers(&fleet, &s.units, &shas);
    for u in &s.units {
        let path = format!("/v1/units/{}/history", enc(u));
        let (old, new) = (before[&path].1.as_array().unwrap(), after[&path].1.as_array().unwrap());
        assert!(old.len() >= 4, "{u}: the history of two commits: {old:?}");
        assert!(new.len() >= old.len(), "{u}: no entry lost: {} before, {} after", old.len(), new.len());
        assert_eq!(new[new.len() - old.len()..], old[..], "{u}: the entries before the restart, unchanged");
        let plan = format!("/v1/units/{}/plans/deploy", enc(u));
        assert_eq!(after[&plan], before[&plan], "{u}: the plan shown is the one last run, from the store");
    }
    let now: Vec<u64> = s.sandboxes.iter().map(SandboxProc::mutating_count).collect();
    assert_eq!(now, mutated, "nothing sent again after the restart");
}

/// A request's body and headers, if any (`DaemonProc::post`).
type Body<'a> = Option<(&'a str, &'a [(&'a str, &'a str)])>;

/// Two daemons, two units, one each: an interrupt, continue, rollback or sync of a unit sent to
/// the daemon that does not hold it is refused at once with 409, naming the holder and its URL,
/// and nothing of it is recorded or done; the holder acts on the same requests, and what it
/// did shows from the other daemon too.
#[test]
fn a_change_asked_of_a_daemon_without_the_unit_is_refused_naming_the_holder() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = scene(2);
    let fleet_owned = [Member::start(&s.path, &s.store), Member::start(&s.path, &s.store)];
    let fleet: Vec<&Member> = fleet_owned.iter().collect();
    let spread = s.settle(&fleet, &s.first);
    let (holder, other) = if spread[0].is_empty() { (fleet[1], fleet[0]) } else { (fleet[0], fleet[1]) };
    let unit = holder.held()[0].clone();
    let base = format!("/v1/units/{}", enc(&unit));
    let json = [("content-type", "application/json")];
    let rollback = format!("{{\"to\": \"{}\"}}", s.first);
    let asks: [(String, Body); 4] = [
        (format!("{base}/plans/deploy/interrupt"), None),
        (format!("{base}/plans/deploy/continue"), None),
        (format!("{base}/rollback"), Some((rollback.as_str(), &json[..]))),
        (format!("{base}/sync"), None),
    ];
    let history = other.d.get(&format!("{base}/history")).1;
    for (path, body) in &asks {
        let asked = Instant::now();
        let (code, v) = other.d.post(path, None, *body);
        assert_eq!(code, 409, "POST {path} to the daemon without the unit: {v}");
        assert!(asked.elapsed() < Duration::from_secs(5), "answered at once");
        assert_eq!(v["holder"], holder.id(), "{v}");
        assert_eq!(v["holder_url"], holder.d.url, "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains(&unit) && message.contains(&holder.id()) && message.contains(&holder.d.url),
            "{message}"
        );
    }
    let (_, st) = holder.d.get(&format!("{base}/status"));
    assert_eq!(
        (st["interrupted"].clone(), st["pinned"].clone()),
        (Value::Bool(false), Value::Null),
        "nothing recorded: {st}"
    );
    assert_eq!(other.d.get(&format!("{base}/history")).1, history, "nothing happened to the unit");

    // The holder acts on them; the other daemon shows what it did.
    let (code, v) = holder.d.post(&asks[0].0, None, None);
    assert_eq!(code, 200, "{v}");
    wait("the other daemon to show the unit interrupted", WAIT, || {
        other.d.get(&format!("{base}/status")).1["interrupted"] == true
    });
    let (code, v) = holder.d.post(&asks[1].0, None, None);
    assert_eq!(code, 200, "{v}");
    wait("the other daemon to show the unit going on", WAIT, || {
        other.d.get(&format!("{base}/status")).1["interrupted"] == false
    });
}
