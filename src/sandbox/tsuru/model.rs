//! The records the tsuru sandbox keeps below `Data`, shared by the handlers: an app, its units
//! and its environment variables (its own and those bound services injected).

use super::catalogue::Override;
use super::metadata::Metadata;
use super::rfc3339;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct App {
    pub name: String,
    pub platform: String,
    /// The platform's version (`3` of `python:3`); empty for the latest.
    pub platform_version: String,
    pub plan: String,
    pub plan_override: Override,
    pub pool: String,
    pub team_owner: String,
    pub teams: Vec<String>,
    pub owner: String,
    pub description: String,
    pub tags: Vec<String>,
    pub router: String,
    pub router_opts: BTreeMap<String, String>,
    pub metadata: Metadata,
    /// `None` until a cname is added (tsuru then answers `null`).
    pub cname: Option<Vec<String>>,
    /// Variables set through the env routes, by name.
    pub env: BTreeMap<String, EnvVar>,
    /// Variables bound services injected.
    pub service_envs: Vec<ServiceEnv>,
    pub units: Vec<Unit>,
}

impl App {
    pub fn address(&self) -> String {
        format!("{}.sandbox.test", self.name)
    }

    /// `python:3`, or `python` for the latest version.
    pub fn platform_shown(&self) -> String {
        if self.platform_version.is_empty() {
            self.platform.clone()
        } else {
            format!("{}:{}", self.platform, self.platform_version)
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Unit {
    pub id: String,
    pub process: String,
    pub ip: String,
    pub created_ms: u64,
    /// When it is started and ready (Unix ms).
    pub ready_ms: u64,
    pub stopped: bool,
}

impl Unit {
    pub fn new(app: &str, process: &str, now: u64, rollout: u64) -> Unit {
        let mut rng = rand::rng();
        let suffix: String =
            (0..5).map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)])).collect();
        Unit {
            id: format!("{app}-{process}-{:08x}-{suffix}", rng.random::<u32>()),
            process: process.to_string(),
            ip: format!("10.{}.{}.{}", rng.random_range(0..=255), rng.random_range(0..=255), rng.random_range(1..=254)),
            created_ms: now,
            ready_ms: now + rollout,
            stopped: false,
        }
    }

    /// `created`, `starting`, `started` or `stopped` (tsuru's unit statuses).
    pub fn status(&self, now: u64) -> &'static str {
        if self.stopped {
            "stopped"
        } else if now < self.ready_ms {
            "starting"
        } else {
            "started"
        }
    }

    /// As app reads show it (seed L590-603).
    pub fn to_json(&self, app: &App, now: u64) -> Value {
        json!({
            "id": self.id,
            "name": self.id,
            "appname": app.name,
            "processname": self.process,
            "type": app.platform,
            "ip": self.ip,
            "address": {"scheme": "http", "host": format!("{}:8888", self.ip)},
            "status": self.status(now),
            "ready": self.status(now) == "started",
            "restarts": 0,
            "routable": true,
            "version": 1,
            "createdAt": rfc3339(self.created_ms - self.created_ms % 1000),
        })
    }
}

/// What reads show instead of a private value (tsuru's `app.SuppressedEnv`).
pub const MASK: &str = "*** (private variable)";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub alias: String,
    pub public: bool,
    pub managed_by: String,
}

impl EnvVar {
    /// As reads show it: `public`, and a private value masked.
    pub fn to_json(&self) -> Value {
        let value = if self.public { self.value.as_str() } else { MASK };
        json!({"name": self.name, "value": value, "alias": self.alias, "public": self.public, "managedBy": self.managed_by})
    }
}

/// A variable a bound service instance injected.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServiceEnv {
    pub service: String,
    pub instance: String,
    pub var: EnvVar,
}
