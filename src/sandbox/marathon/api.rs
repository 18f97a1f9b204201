//! The emulated Marathon as the handlers reach it (`Api`): its data behind a lock that first
//! moves running deployments on, the task that moves them on when nobody asks, and what a
//! platform built on Marathon reads of it (`AppView`).

use super::deploy;
use super::ids::unix_ms;
use super::model::{Ctx, Data, Event, Group, service_ports};
use super::tree;
use crate::sandbox::{PlatformState, Shared};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

pub struct Marathon {
    data: Mutex<Data>,
    pub shared: Arc<Shared>,
    pub events: broadcast::Sender<Arc<Event>>,
    /// Woken when deployments change, so the background task re-plans its sleep.
    wake: Arc<Notify>,
}

pub type Api = Arc<Marathon>;

impl Marathon {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx { now: unix_ms(), rollout: self.shared.faults.lock().unwrap().rollout_ms, events: &self.events }
    }

    /// Lock the data, first moving running deployments on to where the clock says they are.
    /// Call `changed` after a mutation so the state file is rewritten.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        let mut data = self.data.lock().unwrap();
        data.grouped_steps = self.shared.faults.lock().unwrap().grouped_steps;
        if !data.deployments.is_empty() && deploy::advance(&mut data, &self.ctx()) {
            self.shared.changed();
        }
        data
    }

    pub fn changed(&self) {
        self.shared.changed();
        self.wake.notify_one();
    }
}

impl PlatformState for Marathon {
    fn snapshot(&self) -> anyhow::Result<Vec<u8>> {
        crate::sandbox::snapshot_of(&self.data)
    }
}

/// Load the state file (or start empty) and start the task that moves deployments on.
pub fn load(state_file: Option<&Path>, shared: Arc<Shared>) -> anyhow::Result<Api> {
    Ok(start(crate::sandbox::read_state(state_file)?, shared))
}

/// Serve `data` (as a state file held it), starting the task that moves deployments on: how a
/// platform that embeds Marathon (DC/OS) starts it from its own state file.
pub fn start(mut data: Data, shared: Arc<Shared>) -> Api {
    if !data.groups.contains_key("/") {
        let v = data.next_version(unix_ms());
        data.groups.insert("/".into(), Group { version: v, ..Default::default() });
        tree::record(&mut data, "/");
    }
    data.used_service_ports = data.apps.values().flat_map(|a| service_ports(&a.def)).collect();
    let (events, _) = broadcast::channel(4096);
    let api = Arc::new(Marathon { data: Mutex::new(data), shared, events, wake: Arc::new(Notify::new()) });
    tokio::spawn(background(Arc::downgrade(&api), api.wake.clone(), api.shared.clone()));
    api
}

/// An app as a platform built on Marathon sees it (DC/OS's admin router finds schedulers by
/// their labels).
#[derive(Clone, Debug)]
pub struct AppView {
    pub id: String,
    pub labels: Map<String, Value>,
    pub env: Map<String, Value>,
    /// When its configuration last changed (`versionInfo.lastConfigChangeAt`): a restart too.
    pub config_changed_at: String,
    /// A task launched at or after that change is running.
    pub running_current: bool,
    /// Any task of it is running.
    pub running_any: bool,
}

impl Marathon {
    /// The apps whose labels `wanted` accepts, in id order.
    pub fn apps_labelled(&self, wanted: impl Fn(&Map<String, Value>) -> bool) -> Vec<AppView> {
        let data = self.lock();
        let now = unix_ms();
        let empty = Map::new();
        let object = |def: &Map<String, Value>, key: &str| def.get(key).and_then(Value::as_object).cloned();
        data.apps
            .iter()
            .filter(|(_, app)| wanted(app.def.get("labels").and_then(Value::as_object).unwrap_or(&empty)))
            .map(|(id, app)| {
                let tasks = data.tasks.get(id).map(Vec::as_slice).unwrap_or_default();
                let running = || tasks.iter().filter(|t| t.running(now));
                AppView {
                    id: id.clone(),
                    labels: object(&app.def, "labels").unwrap_or_default(),
                    env: object(&app.def, "env").unwrap_or_default(),
                    config_changed_at: app.last_config_change_at.clone(),
                    running_current: running().any(|t| t.version >= app.last_config_change_at),
                    running_any: running().next().is_some(),
                }
            })
            .collect()
    }
}

/// Moves deployments on when nobody asks: sleeps until the step in progress is due, or until
/// something changes (a new deployment, new fault knobs). Ends with the sandbox.
async fn background(api: Weak<Marathon>, wake: Arc<Notify>, shared: Arc<Shared>) {
    loop {
        let wait = {
            let Some(api) = api.upgrade() else { return };
            let data = api.lock();
            let ctx = api.ctx();
            deploy::next_due(&data, ctx.rollout).map(|due| Duration::from_millis(due.saturating_sub(ctx.now)))
        };
        let wait = wait.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = shared.faults_changed.notified() => {}
        }
    }
}

/// The sandbox's `host:port`, which it reports as the leader.
pub fn host_port(api: &Marathon) -> String {
    api.shared.base_url.trim_start_matches("http://").trim_start_matches("https://").to_string()
}
