//! The status page in a real browser: headless Chromium through ChromeDriver (Debian's
//! `chromium` and `chromium-driver`), on the page of a real daemon following a real repository
//! and applying to a real sandbox. Each state is saved as a screenshot under
//! `target/web-screenshots/`.

#[path = "common/browser.rs"]
mod browser;
mod common;

use browser::Browser;
use common::SandboxProc;
use common::git::{DaemonProc, Repo, config_for};
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "w3b-t0ken";

/// One browser at a time: the machine running the tests may have two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn job_yaml(name: &str, tag: &str) -> String {
    format!("jobs:\n  job::::{name}:\n    state: started\n    tags:\n      version: \"{tag}\"\n")
}

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
