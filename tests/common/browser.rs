//! A headless Chromium driven through ChromeDriver, spoken to in the W3C WebDriver JSON wire
//! protocol with the blocking HTTP client the harness already uses: a dozen commands, so no
//! WebDriver crate (and its async stack) is needed.
//!
//! `CHROMEDRIVER` and `CHROMIUM` name the binaries (default: `chromedriver` on the PATH and
//! `/usr/bin/chromium`). A missing one fails the test; only `CAPSTAN_SKIP_BROWSER=1` skips.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser tests are to be skipped: only when asked to, never because a browser
/// is missing.
pub fn skipped() -> bool {
    if std::env::var("CAPSTAN_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("CAPSTAN_SKIP_BROWSER=1: browser test skipped");
        return true;
    }
    false
}

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Browser {
    /// Start ChromeDriver on a free loopback port, and a headless Chromium session of it.
    pub fn start(width: u32, height: u32) -> Browser {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let mut driver = Command::new(&bin)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin}: {e}. The browser tests need Chromium and ChromeDriver \
                     (apt-get install -y chromium chromium-driver; .ci/run installs them), or CAPSTAN_SKIP_BROWSER=1"
                )
            });
        let mut out = BufReader::new(driver.stdout.take().unwrap());
        let mut port = None;
        for _ in 0..20 {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                port = rest.trim().trim_end_matches('.').parse::<u16>().ok();
                break;
            }
        }
        let port = port.unwrap_or_else(|| panic!("{bin} did not say which port it listens on"));
        // Keep reading its output, so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "no Chromium at {chromium}: apt-get install -y chromium, or set CHROMIUM"
        );
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")],
            },
        }}});
        let r: Value =
            http.post(format!("http://127.0.0.1:{port}/session")).json(&caps).send().unwrap().json().unwrap();
        let id =
            r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("ChromeDriver made no session: {r}")).to_string();
        Browser { driver, base: format!("http://127.0.0.1:{port}/session/{id}"), http }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r: Value = req.send().unwrap().json().unwrap();
        if let Some(err) = r["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {err}: {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": script, "args": args }))
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({ "using": "css selector", "value": css }));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/value"), json!({ "text": text }));
    }

    pub fn accept_alert(&self) {
        self.cmd("POST", "/alert/accept", json!({}));
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", json!({ "width": width, "height": height }));
    }

    /// Save a PNG of the page under `target/web-screenshots/<name>.png`.
    pub fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let v = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Wait until `script` returns true in the page; panics with `what` (and the last value)
    /// after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Value) {
        let start = Instant::now();
        loop {
            let v = self.js(script, args.clone());
            if v == Value::Bool(true) {
                return;
            }
            if start.elapsed() > timeout {
                self.screenshot(&format!("timeout-{}", what.replace(|c: char| !c.is_alphanumeric(), "-")));
                panic!("timed out after {timeout:?} waiting for {what} (last: {v})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
