//! The status page in a real browser: headless Chromium through ChromeDriver (Debian's
//! `chromium` and `chromium-driver`), on the page of a real daemon following a real repository
//! and applying to a real sandbox. Each state is saved as a screenshot under
//! `target/web-screenshots/`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::git::{DaemonProc, Repo, config_for};
use common::{SandboxProc, job_yaml};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "w3b-t0ken";

/// One browser at a time: the machine running the tests may have two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn daemon(repo: &Repo, state: &std::path::Path, extra: &[&str]) -> DaemonProc {
    let mut args = vec!["--token-env", "CAPSTAN_TOKEN"];
    args.extend_from_slice(extra);
    DaemonProc::start(repo.path().to_str().unwrap(), state, &args, &[("CAPSTAN_TOKEN", TOKEN)])
}

/// Open the page and give it the token, as a person would.
fn open_with_token(b: &Browser, d: &DaemonProc) {
    b.open(&format!("{}/", d.url));
    b.type_into("#token", TOKEN);
    b.click("#token-save");
    b.wait_for("the page to read the daemon", WAIT, "return !document.getElementById('sync').disabled", json!([]));
}

/// The page's steps and their statuses, as it shows them (`[[name, status], ...]`).
const STEPS: &str = "return [...document.querySelectorAll('li[data-step]')].map(li => [li.querySelector('.step-name').textContent, li.dataset.status, li.querySelector('.step-status').textContent]);";

/// A script: whether the history shows `sha` with `status`.
fn history_is(sha: &str, status: &str) -> String {
    format!(
        "const r = document.querySelector('tr[data-sha=\"{sha}\"] .st'); return !!r && r.textContent === '{status}';"
    )
}

#[test]
fn a_commit_shows_up_live_and_its_step_reaches_complete_without_a_reload() {
    if browser::skipped() {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = daemon(&repo, state.path(), &[]);
    assert!(d.first_line.contains(&format!("status page: {}/", d.url)), "{}", d.first_line);
    let b = Browser::start(1200, 1000);
    open_with_token(&b, &d);
    b.wait_for("the first commit applied in the history", WAIT, &history_is(&first, "applied"), json!([]));
    // A mark that a reload would wipe.
    b.js("window.__capstanNoReload = 42; return null;", json!([]));
    b.screenshot("1-applied");

    repo.write("api.yaml", &job_yaml("api", "7"));
    let second = repo.commit("add the api job");
    b.wait_for(
        "the new plan's step to show COMPLETE",
        WAIT,
        "const p = document.querySelector('#plan-summary code'); const li = [...document.querySelectorAll('li[data-step]')].find(l => l.querySelector('.step-name').textContent.includes('api'));
         return !!p && p.title === arguments[0] && !!li && li.dataset.status === 'COMPLETE' && li.querySelector('.step-status').textContent.includes('COMPLETE');",
        json!([second]),
    );
    assert_eq!(b.js("return window.__capstanNoReload;", json!([])), json!(42), "the page was reloaded");
    let steps = b.js(STEPS, json!([]));
    assert!(steps.as_array().unwrap().iter().all(|s| s[1] == "COMPLETE" && s[2] == "COMPLETE"), "{steps}");
    b.wait_for("the second commit applied in the history", WAIT, &history_is(&second, "applied"), json!([]));
    let author = b.js(&format!("return document.querySelector('tr[data-sha=\"{second}\"]').textContent;"), json!([]));
    let row = author.as_str().unwrap();
    assert!(row.contains("capstan-test") && row.contains("add the api job"), "{row}");

    // The diff on demand: the CLI's lines for the new job.
    b.click("li[data-step] button[aria-controls]");
    b.wait_for("the diff", WAIT, "const p = document.querySelector('li[data-step] pre'); return !!p && !p.hidden && p.textContent.includes('+ ');", json!([]));
    let diff = b.js("return document.querySelector('li[data-step] pre').textContent;", json!([]));
    assert!(
        diff.as_str().unwrap().contains("job::/dev::api (create)") && diff.as_str().unwrap().contains("version: '7'")
            || diff.as_str().unwrap().contains("version: \"7\""),
        "{diff}"
    );
    b.screenshot("2-step-complete-with-diff");
    b.resize(390, 844);
    b.screenshot("3-phone");
}

#[test]
fn interrupt_on_the_page_stops_the_next_step_and_continue_finishes_the_plan() {
    if browser::skipped() {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // Each job takes 400 ms to have its instances running, one step at a time.
    let sb = SandboxProc::start(&["--rollout-ms", "400"]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    for i in 0..6 {
        repo.write(&format!("j{i}.yaml"), &job_yaml(&format!("job-{i}"), "1"));
    }
    let sha = repo.commit("six jobs");
    let state = tempfile::tempdir().unwrap();
    let d = daemon(&repo, state.path(), &["--parallelism", "1"]);
    let b = Browser::start(1200, 1400);
    open_with_token(&b, &d);
    b.wait_for(
        "a step to run on the page",
        WAIT,
        "return [...document.querySelectorAll('li[data-step]')].some(li => li.dataset.status === 'IN_PROGRESS');",
        json!([]),
    );
    b.click("#interrupt");
    // The daemon says the plan stopped (after the running step ended): from then on no step
    // starts, and the page shows the rest waiting.
    d.wait_for("the plan to be interrupted", WAIT, |d| d.get("/v1/status").1["paused_commit"] == json!(sha));
    b.wait_for(
        "the page to show the plan waiting",
        WAIT,
        "const s = [...document.querySelectorAll('li[data-step]')].map(li => li.dataset.status);
         return s.length === 6 && !s.includes('IN_PROGRESS') && s.includes('WAITING') && document.querySelector('#plan-summary .st').textContent === 'WAITING';",
        json!([]),
    );
    let shown = b.js(STEPS, json!([]));
    let complete = shown.as_array().unwrap().iter().filter(|s| s[1] == "COMPLETE").count();
    assert!(complete < 6, "the plan went on despite the interrupt: {shown}");
    // What the page shows is what the daemon says.
    let api: Vec<String> = d.step_statuses();
    let page: Vec<String> = shown.as_array().unwrap().iter().map(|s| s[1].as_str().unwrap().to_string()).collect();
    assert_eq!(page, api);
    assert!(d.status_of(&sha).as_deref() != Some("applied"));
    b.screenshot("4-interrupted");

    b.click("#continue");
    b.wait_for(
        "every step COMPLETE on the page",
        WAIT,
        "const s = [...document.querySelectorAll('li[data-step]')].map(li => li.dataset.status);
         return s.length === 6 && s.every(x => x === 'COMPLETE');",
        json!([]),
    );
    b.wait_for("the commit applied in the history", WAIT, &history_is(&sha, "applied"), json!([]));
    assert_eq!(sb.jobs().iter().filter(|j| j["fqn"].as_str().unwrap().starts_with("job::/dev::job-")).count(), 6);
    b.screenshot("5-continued");
}

#[test]
fn rollback_from_the_history_applies_the_older_commit() {
    if browser::skipped() {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    let first = repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = daemon(&repo, state.path(), &[]);
    let b = Browser::start(1200, 1000);
    open_with_token(&b, &d);
    b.wait_for("v1 applied", WAIT, &history_is(&first, "applied"), json!([]));
    repo.write("web.yaml", &job_yaml("web", "2"));
    let second = repo.commit("web v2");
    b.wait_for("v2 applied", WAIT, &history_is(&second, "applied"), json!([]));
    let version = |sb: &SandboxProc| sb.job("job::/dev::web").map(|j| j["tags"]["version"].clone());
    assert_eq!(version(&sb), Some(json!("2")));

    b.click(&format!("button.rollback[data-sha=\"{first}\"]"));
    b.accept_alert();
    d.wait_for("the rollback to apply v1", WAIT, |d| {
        let st = d.get("/v1/status").1;
        st["pinned"] == json!(first) && st["live"]["sha"] == json!(first) && st["live"]["converged"] == json!(true)
    });
    assert_eq!(version(&sb), Some(json!("1")), "the older commit's configuration is live again");
    b.wait_for(
        "the page to show v1 live",
        WAIT,
        "const c = document.querySelector('#target-rows code'); return !!c && c.title === arguments[0];",
        json!([first]),
    );
    let result = b.js("return document.getElementById('action-result').textContent;", json!([]));
    assert!(result.as_str().unwrap().starts_with("202: rolling back to"), "{result}");
    b.screenshot("6-rolled-back");
}

#[test]
fn without_a_token_the_page_is_read_only_and_says_so() {
    if browser::skipped() {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let sb = SandboxProc::start(&[]);
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("web.yaml", &job_yaml("web", "1"));
    repo.commit("web v1");
    let state = tempfile::tempdir().unwrap();
    let d = daemon(&repo, state.path(), &[]);
    let b = Browser::start(1200, 900);
    b.open(&format!("{}/", d.url));
    let disabled =
        "const bs = [...document.querySelectorAll('button.act')]; return bs.length >= 3 && bs.every(b => b.disabled);";
    b.wait_for(
        "the page to say it is read-only",
        WAIT,
        "return document.getElementById('mode').textContent.startsWith('Read-only: no token');",
        json!([]),
    );
    assert_eq!(b.js(disabled, json!([])), json!(true), "buttons are disabled without a token");
    b.screenshot("7-no-token");

    // A wrong token is no better, and the page says why.
    b.type_into("#token", "not-the-token");
    b.click("#token-save");
    b.wait_for(
        "the page to say the token was refused",
        WAIT,
        "return document.getElementById('mode').textContent.includes('refused this token');",
        json!([]),
    );
    assert_eq!(b.js(disabled, json!([])), json!(true));
    // The token is kept for the tab only: in sessionStorage, never in localStorage.
    let stored = b.js("return [sessionStorage.getItem('capstan-token'), localStorage.length];", json!([]));
    assert_eq!(stored, json!(["not-the-token", 0]));
    b.screenshot("8-wrong-token");
}

#[test]
fn a_step_that_follows_a_services_plan_shows_its_sub_steps_live() {
    if browser::skipped() {
        return;
    }
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // A DC/OS data service of three nodes, each node's step taking 800 ms.
    let sb = SandboxProc::start_platform("dcos", &["--step-ms", "800"]);
    let repo = Repo::new();
    repo.write(
        "capstan.yaml",
        &format!("owner: data\ntargets:\n  c:\n    platform: dcos\n    url: {}\ndefault_target: c\n", sb.url),
    );
    repo.write("web.json", &json!({"id": "/web", "cmd": "./web", "instances": 1}).to_string());
    let first = repo.commit("a plain app");
    let state = tempfile::tempdir().unwrap();
    let d = daemon(&repo, state.path(), &[]);
    let b = Browser::start(1200, 1400);
    open_with_token(&b, &d);
    b.wait_for("the first commit applied", WAIT, &history_is(&first, "applied"), json!([]));
    // With the page open, a commit adds the service.
    let service = common::repo_root().join("examples/manifests/dcos/cassandra.json");
    repo.write("cassandra.json", &std::fs::read_to_string(service).unwrap());
    let sha = repo.commit("a three-node data service");
    const SUBSTEPS: &str = "return [...document.querySelectorAll('ol.substeps li[data-substep]')].map(li => [li.dataset.substep, li.dataset.status]);";
    // Part way: the page shows the service's nodes under the step, some done and some not.
    b.wait_for(
        "the service's steps part way on the page",
        WAIT,
        "const s = [...document.querySelectorAll('ol.substeps li[data-substep]')].map(li => li.dataset.status);
         return s.length === 3 && s.includes('COMPLETE') && s.some(x => x !== 'COMPLETE');",
        json!([]),
    );
    b.screenshot("6-substeps-running");
    b.wait_for("the commit applied in the history", WAIT, &history_is(&sha, "applied"), json!([]));
    b.wait_for(
        "every sub-step COMPLETE on the page",
        WAIT,
        "const s = [...document.querySelectorAll('ol.substeps li[data-substep]')].map(li => li.dataset.status);
         return s.length === 3 && s.every(x => x === 'COMPLETE');",
        json!([]),
    );
    let shown = b.js(SUBSTEPS, json!([]));
    assert_eq!(
        shown,
        json!([
            ["node / node-0:[server]", "COMPLETE"],
            ["node / node-1:[server]", "COMPLETE"],
            ["node / node-2:[server]", "COMPLETE"]
        ])
    );
    b.screenshot("7-substeps-complete");
}
