//! What the daemon tells the world as it works: an ordered stream of events, served as
//! server-sent events on `GET /v1/events` (the way Marathon serves `/v2/events`). Each event has
//! an increasing id; a client that reconnects with `Last-Event-ID` gets what it missed from a
//! bounded history.

use crate::redact::Redacted;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// What happened. `commit_seen` lists the commits it `superseded` (those that arrived while the
/// daemon was busy, never to be applied on their own); `plan_refused` is a plan not applied for
/// its `reason` (`mass_delete`); `target_locked` says another process (a `capstan apply`) holds
/// the target's lock, so the daemon waits and tries again.
#[derive(Clone, Debug, Serialize)]
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
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<Redacted>,
    },
    ObserveFailed {
        sha: String,
        message: Redacted,
    },
    PlanRefused {
        sha: String,
        reason: String,
        deletes: usize,
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
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(flatten)]
    pub event: Event,
}

const HISTORY: usize = 10_000;

pub struct EventBus {
    tx: broadcast::Sender<Envelope>,
    history: Mutex<VecDeque<Envelope>>,
    next_id: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { tx: broadcast::channel(4096).0, history: Mutex::new(VecDeque::new()), next_id: AtomicU64::new(1) }
    }
}

impl EventBus {
    pub fn publish(&self, event: Event) {
        self.publish_in(None, event);
    }

    /// Publish an event of the unit `unit`; returns it as sent.
    pub fn publish_in(&self, unit: Option<&str>, event: Event) -> Envelope {
        let time =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        // The history lock orders ids and sends, so every subscriber sees ids in order.
        let mut history = self.history.lock().unwrap();
        let env =
            Envelope { id: self.next_id.fetch_add(1, Ordering::SeqCst), unit: unit.map(str::to_string), time, event };
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
}
