//! Marathon's published Python client (`marathon` on PyPI), unmodified, against the Marathon
//! sandbox: the flows in `tests/python/marathon_client_flows.py`, then what they left behind,
//! read back over HTTP.
//!
//! The client runs from a virtualenv under the target directory (`python-marathon/`), made
//! on first use with `python3 -m venv` and `pip install` (needs python3 and PyPI), or ahead of
//! time by `.ci/setup-python`, which makes the same one.

mod common;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The client version the flows were checked with; `.ci/setup-python` pins the same.
const REQUIREMENT: &str = "marathon==0.13.0";
const MARKER: &str = "capstan-requirement.txt";

fn target_dir() -> PathBuf {
    // `CARGO_TARGET_TMPDIR` is `<target>/tmp` for integration tests.
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("a target directory").to_path_buf()
}

fn ready(venv: &Path) -> bool {
    std::fs::read_to_string(venv.join(MARKER)).is_ok_and(|s| s.trim() == REQUIREMENT)
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot {what}: {e} (is python3 installed?)"));
    assert!(
        out.status.success(),
        "cannot {what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The venv's python, the venv made if need be. It is built beside its final place and
/// renamed into it, so a process racing this one either finds a complete venv or loses the
/// rename and uses the winner's.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = target_dir().join("python-marathon");
            if !ready(&venv) {
                let tmp = target_dir().join(format!("python-marathon.tmp-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&tmp);
                run(Command::new("python3").arg("-m").arg("venv").arg(&tmp), "create a virtualenv");
                run(
                    Command::new(tmp.join("bin/python")).args([
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "-q",
                        REQUIREMENT,
                    ]),
                    &format!("pip install {REQUIREMENT}"),
                );
                std::fs::write(tmp.join(MARKER), format!("{REQUIREMENT}\n")).unwrap();
                if venv.exists() && !ready(&venv) {
                    // Left by an older pin: out of the way.
                    let old = target_dir().join(format!("python-marathon.old-{}", std::process::id()));
                    if std::fs::rename(&venv, &old).is_ok() {
                        let _ = std::fs::remove_dir_all(&old);
                    }
                }
                if std::fs::rename(&tmp, &venv).is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                assert!(ready(&venv), "no usable virtualenv at {}", venv.display());
            }
            venv.join("bin/python")
        })
        .clone()
}

struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Run the venv's python with `args`, for at most `limit`.
fn run_python(args: &[&str], limit: Duration) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(python())
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start python");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let f = Finished {
        success: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    };
    assert!(status.is_some(), "python ran longer than {limit:?}\n{}\n{}", f.stdout, f.stderr);
    f
}

#[test]
fn marathon_python_runs_its_main_flows_unmodified() {
    let python = python();
    let sb = SandboxProc::start_platform("marathon", &[]);
    let script = repo_root().join("tests/python/marathon_client_flows.py");
    let out = run_python(&[script.to_str().unwrap(), &sb.url], Duration::from_secs(60));
    assert!(out.success, "{} failed\nstdout:\n{}\nstderr:\n{}", python.display(), out.stdout, out.stderr);
    assert!(out.stdout.contains("all marathon-python flows passed"), "{}", out.stdout);

    // What the flows left behind, read over HTTP.
    let apps = sb.get("/v2/apps")["apps"].as_array().unwrap().clone();
    let ids: Vec<&str> = apps.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["/capstan-py/multi/a", "/capstan-py/multi/b", "/capstan-py/web"]);
    let web = &sb.get("/v2/apps/capstan-py/web")["app"];
    assert_eq!(web["cmd"], "python3 -m http.server $PORT0 --v2");
    assert_eq!((web["instances"].clone(), web["tasksRunning"].clone()), (json!(2), json!(2)));
    assert_eq!((web["cpus"].clone(), web["mem"].clone()), (json!(0.1), json!(32.0)));
    assert_eq!(web["labels"], json!({"team": "py"}));
    assert_eq!(web["env"], json!({"MODE": "test"}));
    assert_eq!(web["healthChecks"][0]["path"], "/health");
    assert_eq!(web["constraints"], json!([["hostname", "UNIQUE"]]));
    let versions = sb.get("/v2/apps/capstan-py/web/versions")["versions"].as_array().unwrap().len();
    assert_eq!(versions, 7, "create, update, two scales, two rollbacks, a restart");
    assert_eq!(sb.get("/v2/apps/capstan-py/multi/b")["app"]["cmd"], "b");
    assert_eq!(sb.send("GET", "/v2/groups/capstan-py/shop", None).0, 404);
    assert_eq!(sb.get("/v2/deployments"), json!([]));
    assert_eq!(sb.get("/v2/eventSubscriptions"), json!({"callbackUrls": []}));

    // It was marathon-python talking: python-requests' spelling of booleans, the event stream.
    let log = sb.requests();
    let seen = |f: &dyn Fn(&Value) -> bool| log.iter().any(f);
    assert!(seen(&|r| r["query"].as_str().is_some_and(|q| q.contains("force=False"))), "force=False");
    assert!(seen(&|r| r["path"] == "/v2/events" && r["status"] == 200));
    assert!(seen(&|r| r["method"] == "PUT" && r["path"].as_str().is_some_and(|p| p.contains("/versions/"))));
    assert!(seen(&|r| r["method"] == "PUT" && r["path"] == "/v2/apps" && r["status"] == 200));
    assert!(seen(&|r| r["method"] == "POST" && r["path"] == "/v2/tasks/delete"));
}

#[test]
fn marathon_python_works_through_a_dcos_base_url() {
    let sb = SandboxProc::start_platform("marathon", &[]);
    let snippet = r#"
import collections, collections.abc, sys
for n in ("Iterable", "Mapping", "MutableMapping", "Sequence"):
    if not hasattr(collections, n):
        setattr(collections, n, getattr(collections.abc, n))
from marathon import MarathonClient
from marathon.models import MarathonApp
c = MarathonClient(sys.argv[1] + "/service/marathon/")
assert c.create_app("dcos-app", MarathonApp(cmd="sleep 1", instances=1)).id == "/dcos-app"
assert [a.id for a in c.list_apps()] == ["/dcos-app"]
assert c.get_app("dcos-app").tasks_running == 1
print("ok")
"#;
    let out = run_python(&["-c", snippet, &sb.url], Duration::from_secs(30));
    assert!(out.success && out.stdout.trim() == "ok", "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(sb.get("/v2/apps/dcos-app")["app"]["instances"], 1);
    assert!(sb.requests().iter().any(|r| r["path"] == "/service/marathon/v2/apps" && r["method"] == "POST"));
}
