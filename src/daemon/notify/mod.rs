//! Notifications: what the daemon does, told where teams already look. capstan.yaml's
//! `notifications:` lists receivers, each with the events it wants (`on:`) and one form: a
//! generic JSON webhook (optionally HMAC-signed), a Slack-compatible incoming webhook, or a
//! commit status on GitHub, GitLab or Gitea. The receivers as declared are plain data of
//! `config::notifications`; here each is set up (`Notifier::new`) and sent to.
//!
//! Delivery is in the background: each receiver has a bounded queue and a task that sends, and
//! on failure tries again with doubling delays, then gives up. Nothing here waits on a
//! reconcile or makes one fail; a full queue drops the newest notification (counted). A
//! receiver whose last notification was given up on shows as failing in `/v1/status` and
//! `/metrics`. Payloads are made from the daemon's events, whose texts are already redacted;
//! tokens and signing keys come from the environment and go only into headers.

mod gitea;
mod github;
mod gitlab;
mod slack;
mod webhook;

use super::events::{Envelope, Event};
use crate::config::notifications::Receiver;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// The events a receiver can ask for.
pub const EVENTS: &[&str] = &["applying", "applied", "failed", "invalid", "refused", "drift", "interrupted"];

/// One thing to tell: what happened to which commit.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// One of [`EVENTS`].
    pub event: &'static str,
    pub sha: String,
    /// The commit status it amounts to: `pending`, `success` or `failure` (none for drift).
    pub state: Option<&'static str>,
    /// One line for people.
    pub summary: String,
    /// The errors, each with its file:line:column where it has one (already redacted).
    pub errors: Vec<String>,
    /// When, RFC 3339.
    pub time: String,
}

/// An HTTP request a form makes of a notification.
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Turns notifications into requests; one per form.
trait Form: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The request for `n`, or none when this form has nothing to say about it (a commit
    /// status for drift). `page` is the status page's URL.
    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>>;
}

/// How one receiver is doing, for `/v1/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    pub name: String,
    pub kind: &'static str,
    pub delivered: u64,
    pub given_up: u64,
    pub dropped: u64,
    /// Whether the last notification was given up on.
    pub failing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The receivers, their queues and their health.
pub struct Notifier {
    receivers: Vec<Arc<Slot>>,
    page: OnceLock<String>,
    /// Step failures by commit, for the failed notification that follows them.
    step_errors: Mutex<HashMap<String, Vec<String>>>,
}

struct Slot {
    filter: Vec<String>,
    retries: u32,
    form: Box<dyn Form>,
    health: Mutex<Health>,
    queue: mpsc::Sender<Notification>,
    rx: Mutex<Option<mpsc::Receiver<Notification>>>,
    counter: Family<Vec<(String, String)>, Counter>,
    failing: Family<Vec<(String, String)>, Gauge>,
}

/// Notifications waiting per receiver; more are dropped (and counted).
const QUEUE: usize = 256;
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);

impl Notifier {
    /// Receivers as configured; `counter` and `failing` are the metrics families they report
    /// to. A receiver whose form cannot be set up (a missing environment variable) is an error.
    pub fn new(
        receivers: &[Receiver],
        counter: Family<Vec<(String, String)>, Counter>,
        failing: Family<Vec<(String, String)>, Gauge>,
    ) -> anyhow::Result<Notifier> {
        let mut slots = Vec::new();
        for (i, r) in receivers.iter().enumerate() {
            let form: Box<dyn Form> = match (&r.webhook, &r.slack, &r.github, &r.gitlab, &r.gitea) {
                (Some(w), None, None, None, None) => Box::new(w.setup()?),
                (None, Some(s), None, None, None) => Box::new(s.setup()?),
                (None, None, Some(g), None, None) => Box::new(g.setup()?),
                (None, None, None, Some(g), None) => Box::new(g.setup()?),
                (None, None, None, None, Some(g)) => Box::new(g.setup()?),
                _ => anyhow::bail!(
                    "notification receiver {} has no form or more than one: expected exactly one of webhook, slack, github, gitlab, gitea",
                    i + 1
                ),
            };
            if let Some(bad) = r.on.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                anyhow::bail!("notification receiver {}: unknown event {bad:?}: expected one of {EVENTS:?}", i + 1);
            }
            let name = r.name.clone().unwrap_or_else(|| format!("{}-{}", form.kind(), i + 1));
            let (queue, rx) = mpsc::channel(QUEUE);
            let health = Health { name, kind: form.kind(), ..Health::default() };
            failing.get_or_create(&labels(&health.name)).set(0);
            slots.push(Arc::new(Slot {
                filter: r.on.clone(),
                retries: r.retries.unwrap_or(4).min(20),
                form,
                health: Mutex::new(health),
                queue,
                rx: Mutex::new(Some(rx)),
                counter: counter.clone(),
                failing: failing.clone(),
            }));
        }
        Ok(Notifier { receivers: slots, page: OnceLock::new(), step_errors: Mutex::new(HashMap::new()) })
    }

    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    pub fn health(&self) -> Vec<Health> {
        self.receivers.iter().map(|s| s.health.lock().unwrap().clone()).collect()
    }

    /// Start delivering: the events of `rx` become notifications, each receiver's sent by its
    /// own task. `page` is the status page's URL, for links.
    pub fn start(self: &Arc<Self>, mut rx: broadcast::Receiver<Envelope>, page: String) {
        let _ = self.page.set(page);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("capstan/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        for slot in &self.receivers {
            let Some(queue) = slot.rx.lock().unwrap().take() else { continue };
            tokio::spawn(deliver(slot.clone(), queue, client.clone(), self.page.get().cloned().unwrap_or_default()));
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => me.publish(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!("notifications missed {n} events"),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Queue the notification an event amounts to for every receiver that wants it; never
    /// waits.
    fn publish(&self, e: &Envelope) {
        let Some(n) = self.notification(e) else { return };
        for slot in &self.receivers {
            if !slot.filter.is_empty() && !slot.filter.iter().any(|f| f == n.event) {
                continue;
            }
            if slot.queue.try_send(n.clone()).is_err() {
                let name = {
                    let mut h = slot.health.lock().unwrap();
                    h.dropped += 1;
                    h.name.clone()
                };
                slot.counter.get_or_create(&result_labels(&name, "dropped")).inc();
                tracing::warn!("notification receiver {name}: queue full, a notification dropped");
            }
        }
    }

    fn notification(&self, e: &Envelope) -> Option<Notification> {
        let short = |s: &str| s.chars().take(10).collect::<String>();
        let (event, sha, state, summary, errors) = match &e.event {
            Event::StepFailed { sha, name, message, .. } => {
                let mut m = self.step_errors.lock().unwrap();
                // At most a few thousand commits' worth, however long the daemon runs.
                if m.len() > 1000 {
                    m.clear();
                }
                m.entry(sha.clone()).or_default().push(format!("{name}: {message}"));
                return None;
            }
            Event::PlanStarted { sha, summary, .. } => {
                self.step_errors.lock().unwrap().remove(sha);
                ("applying", sha, Some("pending"), format!("applying {}: {summary}", short(sha)), Vec::new())
            }
            Event::Converged { sha } => {
                ("applied", sha, Some("success"), format!("applied {}", short(sha)), Vec::new())
            }
            Event::ApplyFailed { sha, failed, message, .. } => {
                let mut errors = self.step_errors.lock().unwrap().remove(sha).unwrap_or_default();
                errors.extend(message.as_ref().map(ToString::to_string));
                let what = format!("applying {} failed: {failed} step(s) failed", short(sha));
                ("failed", sha, Some("failure"), what, errors)
            }
            Event::RenderFailed { sha, errors } => {
                let errors: Vec<String> = errors.iter().map(error_text).collect();
                let what = format!("{} is invalid: nothing from it was applied", short(sha));
                ("invalid", sha, Some("failure"), what, errors)
            }
            Event::PlanRefused { sha, message, .. } => {
                let what = format!("{} refused: nothing from it was applied", short(sha));
                ("refused", sha, Some("failure"), what, vec![message.to_string()])
            }
            Event::DriftFound { sha, resources, repairing } => {
                let what = format!(
                    "{} resource(s) drifted from {}{}",
                    resources.len(),
                    short(sha),
                    if *repairing { ": repairing" } else { "" }
                );
                ("drift", sha, None, what, resources.clone())
            }
            Event::PlanInterrupted { sha } => {
                ("interrupted", sha, None, format!("the plan of {} was interrupted", short(sha)), Vec::new())
            }
            _ => return None,
        };
        Some(Notification { event, sha: sha.clone(), state, summary, errors, time: e.time.clone() })
    }
}

fn labels(name: &str) -> Vec<(String, String)> {
    vec![("receiver".to_string(), name.to_string())]
}

fn result_labels(name: &str, result: &str) -> Vec<(String, String)> {
    vec![("receiver".to_string(), name.to_string()), ("result".to_string(), result.to_string())]
}

/// An error of a commit as one line: a diagnostic's own text (`file:line:column: ...`).
fn error_text(e: &Value) -> String {
    if let Some(t) = e["text"].as_str() {
        return t.to_string();
    }
    match (e["step"].as_str(), e["message"].as_str()) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => e.to_string(),
    }
}

/// One receiver's task: send each notification in turn, retrying with doubling delays.
async fn deliver(slot: Arc<Slot>, mut queue: mpsc::Receiver<Notification>, client: reqwest::Client, page: String) {
    while let Some(n) = queue.recv().await {
        let out = match slot.form.request(&n, &page) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => {
                given_up(&slot, format!("{e:#}"));
                continue;
            }
        };
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let mut req = client.post(&out.url).body(out.body.clone());
            for (k, v) in &out.headers {
                req = req.header(k, v);
            }
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("{} answered {}", host(&out.url), r.status())),
                Err(e) => Some(format!("cannot reach {}: {}", host(&out.url), e.without_url())),
            };
            match why {
                None => {
                    let name = {
                        let mut h = slot.health.lock().unwrap();
                        h.delivered += 1;
                        h.failing = false;
                        h.name.clone()
                    };
                    slot.counter.get_or_create(&result_labels(&name, "delivered")).inc();
                    slot.failing.get_or_create(&labels(&name)).set(0);
                    break;
                }
                Some(why) if attempt >= slot.retries => {
                    given_up(&slot, why);
                    break;
                }
                Some(why) => {
                    attempt += 1;
                    let name = slot.health.lock().unwrap().name.clone();
                    tracing::debug!("notification receiver {name}: {why}; trying again in {delay:?}");
                    slot.counter.get_or_create(&result_labels(&name, "retried")).inc();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
            }
        }
    }
}

fn given_up(slot: &Slot, why: String) {
    let name = {
        let mut h = slot.health.lock().unwrap();
        h.given_up += 1;
        h.failing = true;
        h.last_error = Some(why.clone());
        h.name.clone()
    };
    tracing::warn!("notification receiver {name}: given up: {why}");
    slot.counter.get_or_create(&result_labels(&name, "given_up")).inc();
    slot.failing.get_or_create(&labels(&name)).set(1);
}

/// Where a request went, without its path (a Slack webhook's path is its secret).
fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| format!("{}://{h}{}", u.scheme(), u.port().map(|p| format!(":{p}")).unwrap_or_default()))
        })
        .unwrap_or_else(|| "the receiver".into())
}

/// The value of the environment variable `name`, which must be set.
fn env(name: &str, what: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => anyhow::bail!("{what}: the environment variable {name} is not set"),
    }
}

/// The JSON body every form but Slack starts from.
fn payload(n: &Notification, page: &str) -> Value {
    json!({
        "event": n.event,
        "sha": n.sha,
        "state": n.state,
        "summary": n.summary,
        "errors": n.errors,
        "time": n.time,
        "page": page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(event: Event) -> Envelope {
        Envelope { id: 1, unit: None, origin: None, time: "2026-12-05T13:30:00Z".into(), event }
    }

    #[test]
    fn step_failures_go_with_the_failed_notification_that_follows_them() {
        let n = Notifier::new(&[], Family::default(), Family::default()).unwrap();
        let sha = "a".repeat(40);
        assert!(
            n.notification(&env(Event::StepFailed {
                sha: sha.clone(),
                step: "1".into(),
                name: "create job web".into(),
                message: crate::redact::Redactor::default().redact("500")
            }))
            .is_none()
        );
        let f = n
            .notification(&env(Event::ApplyFailed { sha: sha.clone(), failed: 1, not_started: 0, message: None }))
            .unwrap();
        assert_eq!((f.event, f.state), ("failed", Some("failure")));
        assert_eq!(f.errors, ["create job web: 500"]);
        let i = n
            .notification(&env(Event::RenderFailed {
                sha,
                errors: vec![json!({ "message": "bad", "text": "web.yaml:3:5: error: bad" })],
            }))
            .unwrap();
        assert_eq!((i.event, i.errors), ("invalid", vec!["web.yaml:3:5: error: bad".to_string()]));
    }

    #[test]
    fn a_receiver_needs_exactly_one_form_and_known_events() {
        let none = Receiver::default();
        assert!(Notifier::new(&[none], Family::default(), Family::default()).is_err());
        let bad = Receiver {
            on: vec!["exploded".into()],
            webhook: Some(crate::config::notifications::Webhook {
                url: Some("http://127.0.0.1:1/".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = Notifier::new(&[bad], Family::default(), Family::default()).err().unwrap().to_string();
        assert!(e.contains("unknown event \"exploded\""), "{e}");
    }

    #[test]
    fn a_url_is_named_without_its_path() {
        assert_eq!(host("https://hooks.slack.com/services/T0/B0/SECRET"), "https://hooks.slack.com");
        assert_eq!(host("http://127.0.0.1:8080/x"), "http://127.0.0.1:8080");
    }
}
