//! What the daemon tells the world as it works: an ordered stream of events, served as
//! server-sent events on `GET /v1/events` (the way Marathon serves `/v2/events`). Each event has
//! an increasing id; a client that reconnects with `Last-Event-ID` gets what it missed from a
//! bounded history.
//!
//! With a PostgreSQL store every event of a unit also goes to the other daemons' streams: the
//! bus hands it, serialized, to the relay (`relay.rs`: NOTIFY on a connection of its own), and
//! the relay hands back the events of the other daemons (`EventBus::relayed`), which get ids of
//! this daemon's stream and keep their unit, time and `origin`.

use crate::redact::Redacted;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// What happened. `commit_seen` lists the commits it `superseded` (those that arrived while the
/// daemon was busy, never to be applied on their own); `plan_refused` is a plan not applied for
/// its `reason` (`mass_delete`); `target_locked` says another process (a `capstan apply`) holds
/// the target's lock, so the daemon waits and tries again.
/// Deserialized only when relayed from another daemon (its redacted texts read back as such,
/// `redact::relayed`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// `deferred`: seen while a plan is interrupted; planned on `continue`.
    CommitSeen {
        sha: String,
        superseded: Vec<String>,
        deferred: bool,
    },
    RenderFailed {
        sha: String,
        errors: Vec<serde_json::Value>,
    },
    PlanStarted {
        sha: String,
        reason: String,
        steps: usize,
        summary: String,
    },
    StepStarted {
        sha: String,
        step: String,
        name: String,
    },
    StepFinished {
        sha: String,
        step: String,
        name: String,
        duration_ms: u64,
    },
    /// A running step's sub-steps (the platform's own plan it follows) changed.
    StepProgress {
        sha: String,
        step: String,
        name: String,
        substeps: Vec<crate::model::SubStep>,
    },
    StepFailed {
        sha: String,
        step: String,
        name: String,
        #[serde(deserialize_with = "crate::redact::relayed")]
        message: Redacted,
    },
    PlanInterrupted {
        sha: String,
    },
    PlanContinued {
        sha: String,
    },
    /// On `continue`, the interrupted plan (of `from`) was replaced by a new one for `sha`.
    PlanReplanned {
        sha: String,
        from: String,
        steps: usize,
    },
    DriftFound {
        sha: String,
        resources: Vec<String>,
        repairing: bool,
    },
    Converged {
        sha: String,
    },
    /// `message` says why when no step failed: the platform read back after every step reported
    /// success did not match (see `engine::verify`).
    ApplyFailed {
        sha: String,
        failed: usize,
        not_started: usize,
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::redact::relayed_opt")]
        message: Option<Redacted>,
    },
    ObserveFailed {
        sha: String,
        #[serde(deserialize_with = "crate::redact::relayed")]
        message: Redacted,
    },
    PlanRefused {
        sha: String,
        reason: String,
        deletes: usize,
        #[serde(deserialize_with = "crate::redact::relayed")]
        message: Redacted,
    },
    TargetLocked {
        sha: String,
        message: String,
    },
    FetchFailed {
        message: String,
    },
    /// This daemon took the unit's lease (with PostgreSQL): it reconciles the unit from now on.
    /// The unit is the envelope's, as for every event of a unit.
    LeaseTaken {
        daemon: String,
        generation: i64,
    },
    /// This daemon lost the unit's lease while applying `sha`: nothing further was sent; the
    /// daemon holding it now carries on from live state.
    LeaseLost {
        sha: String,
        message: String,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::CommitSeen { .. } => "commit_seen",
            Event::RenderFailed { .. } => "render_failed",
            Event::PlanStarted { .. } => "plan_started",
            Event::StepStarted { .. } => "step_started",
            Event::StepFinished { .. } => "step_finished",
            Event::StepProgress { .. } => "step_progress",
            Event::StepFailed { .. } => "step_failed",
            Event::PlanInterrupted { .. } => "plan_interrupted",
            Event::PlanContinued { .. } => "plan_continued",
            Event::PlanReplanned { .. } => "plan_replanned",
            Event::DriftFound { .. } => "drift_found",
            Event::Converged { .. } => "converged",
            Event::ApplyFailed { .. } => "apply_failed",
            Event::ObserveFailed { .. } => "observe_failed",
            Event::PlanRefused { .. } => "plan_refused",
            Event::TargetLocked { .. } => "target_locked",
            Event::FetchFailed { .. } => "fetch_failed",
            Event::LeaseTaken { .. } => "lease_taken",
            Event::LeaseLost { .. } => "lease_lost",
        }
    }
}

/// One published event with its place in the stream.
#[derive(Clone, Debug, Serialize)]
pub struct Envelope {
    pub id: u64,
    /// The unit it happened to (a directory of the repository; `.` for its root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// With a shared store: the daemon whose event it is (its id in `/v1/status`), this one's
    /// or another's whose event was relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(flatten)]
    pub event: Event,
}

/// An event of another daemon as the relay hands it over: its envelope less its id there.
#[derive(Deserialize)]
struct Relayed {
    unit: String,
    origin: String,
    time: String,
    #[serde(flatten)]
    event: Event,
}

/// Where this daemon's events of units go to reach the other daemons (`relay.rs`).
struct Outbox {
    origin: String,
    tx: tokio::sync::mpsc::Sender<String>,
}

const HISTORY: usize = 10_000;

pub struct EventBus {
    tx: broadcast::Sender<Envelope>,
    history: Mutex<VecDeque<Envelope>>,
    next_id: AtomicU64,
    /// Set with a shared store: the relay's queue.
    outbox: std::sync::OnceLock<Outbox>,
    /// Events the relay's queue had no room for.
    dropped: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(4096).0,
            history: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            outbox: std::sync::OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl EventBus {
    pub fn publish(&self, event: Event) {
        self.publish_in(None, event);
    }

    /// Publish an event of the unit `unit`; returns it as sent. With a shared store, an event
    /// of a unit is queued for the other daemons too (never waiting: an event the queue has no
    /// room for is dropped and counted).
    pub fn publish_in(&self, unit: Option<&str>, event: Event) -> Envelope {
        let time =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let origin = self.outbox.get().map(|o| o.origin.clone());
        self.append(unit.map(str::to_string), origin, time, event, unit.is_some())
    }

    /// Queues `env` for the other daemons (under the history lock, so they get this daemon's
    /// events in the order of its ids).
    fn relay(&self, env: &Envelope) {
        let Some(outbox) = self.outbox.get() else { return };
        let sent = serde_json::to_string(env).map_err(|e| e.to_string()).and_then(|text| {
            outbox.tx.try_send(text).map_err(|e| match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => "the relay's queue is full".to_string(),
                tokio::sync::mpsc::error::TrySendError::Closed(_) => "the relay has stopped".to_string(),
            })
        });
        if let Err(why) = sent {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                event = env.event.name(),
                dropped = n,
                "an event was not relayed to the other daemons: {why}"
            );
        }
    }

    /// Sends this daemon's events of units to the other daemons through `tx` from now on,
    /// marked with `origin` (this daemon's id).
    pub fn relay_to(&self, origin: String, tx: tokio::sync::mpsc::Sender<String>) {
        let _ = self.outbox.set(Outbox { origin, tx });
    }

    /// Publish an event another daemon relayed (`text`, its envelope as it published it):
    /// to this daemon's subscribers only, with an id of this stream. `Ok(false)` for an event
    /// of this daemon's own (it is in the stream already).
    pub fn relayed(&self, text: &str) -> Result<bool, serde_json::Error> {
        let r: Relayed = serde_json::from_str(text)?;
        if self.outbox.get().is_some_and(|o| o.origin == r.origin) {
            return Ok(false);
        }
        self.append(Some(r.unit), Some(r.origin), r.time, r.event, false);
        Ok(true)
    }

    fn append(
        &self,
        unit: Option<String>,
        origin: Option<String>,
        time: String,
        event: Event,
        relay: bool,
    ) -> Envelope {
        // The history lock orders ids and sends, so every subscriber sees ids in order.
        let mut history = self.history.lock().unwrap();
        let env = Envelope { id: self.next_id.fetch_add(1, Ordering::SeqCst), unit, origin, time, event };
        tracing::info!(
            event = env.event.name(),
            id = env.id,
            "{}",
            serde_json::to_string(&env.event).unwrap_or_default()
        );
        history.push_back(env.clone());
        if history.len() > HISTORY {
            history.pop_front();
        }
        let _ = self.tx.send(env.clone());
        if relay {
            self.relay(&env);
        }
        env
    }

    /// Events after `after` still in the history, and a receiver for the ones to come, taken
    /// together so that nothing falls between them.
    pub fn subscribe(&self, after: Option<u64>) -> (Vec<Envelope>, broadcast::Receiver<Envelope>) {
        let history = self.history.lock().unwrap();
        let rx = self.tx.subscribe();
        let missed = match after {
            Some(id) => history.iter().filter(|e| e.id > id).cloned().collect(),
            None => Vec::new(),
        };
        (missed, rx)
    }

    pub fn recent(&self) -> Vec<Envelope> {
        self.history.lock().unwrap().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A lease event names its unit once, in the envelope (a second `unit` key in the same JSON
    /// object is one a client may read either of).
    #[test]
    fn a_lease_event_names_its_unit_once() {
        let bus = EventBus::default();
        for event in [
            Event::LeaseTaken { daemon: "d".into(), generation: 2 },
            Event::LeaseLost { sha: "abc".into(), message: "m".into() },
        ] {
            let text = serde_json::to_string(&bus.publish_in(Some("clusters/eu"), event)).unwrap();
            assert_eq!(text.matches("\"unit\"").count(), 1, "{text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["unit"], "clusters/eu", "{text}");
        }
    }

    /// What one daemon queues for the relay is what another publishes, with an id of its own
    /// stream and the same unit, time, origin and fields (a redacted message read back as
    /// such); the daemon that sent it drops it when the relay hands it back.
    #[test]
    fn a_relayed_event_reaches_another_bus_once_with_its_own_id() {
        let (a, b) = (EventBus::default(), EventBus::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        a.relay_to("daemon-a".into(), tx);
        let (tx_b, _rx_b) = tokio::sync::mpsc::channel(8);
        b.relay_to("daemon-b".into(), tx_b);
        b.publish(Event::FetchFailed { message: "b's own, not of a unit".into() });
        let message = crate::redact::Redactor::default().redact("step failed: (sensitive)");
        let sent = a.publish_in(
            Some("clusters/eu"),
            Event::StepFailed { sha: "abc".into(), step: "s1".into(), name: "create job".into(), message },
        );
        a.publish(Event::FetchFailed { message: "not of a unit: not relayed".into() });
        let text = rx.try_recv().expect("queued for the relay");
        assert!(rx.try_recv().is_err(), "only events of units are relayed");
        assert!(b.relayed(&text).unwrap());
        assert!(!a.relayed(&text).unwrap(), "its own event, already in its stream");
        let got = b.recent().pop().unwrap();
        assert_eq!(got.id, 2, "an id of b's stream");
        let (mut want, mut have) = (serde_json::to_value(&sent).unwrap(), serde_json::to_value(&got).unwrap());
        assert_eq!(want["origin"], "daemon-a");
        want["id"] = Value::Null;
        have["id"] = Value::Null;
        assert_eq!(have, want);
        assert!(b.relayed("{\"unit\": \"u\", \"type\": \"nonsense\"}").is_err());
    }
}
