//! Tasks: launched by deployment steps (staged until their step is done, then running) and
//! killed, each change told on the event bus.

use super::ids::new_uuid;
use super::model::{Ctx, Data, HOST, Task, emit, safe_id, service_ports};
use serde_json::{Map, json};

/// Launch `n` tasks of `app` at its current version.
pub fn launch(data: &mut Data, app: &str, n: usize, launched_by: Option<&str>, at: u64, running_at: Option<u64>) {
    let Some(a) = data.apps.get(app) else { return };
    let version = a.version.clone();
    let service_ports = service_ports(&a.def);
    let mut new = Vec::with_capacity(n);
    for _ in 0..n {
        let host_ports = service_ports
            .iter()
            .map(|_| {
                if !(31000..33000).contains(&data.next_host_port) {
                    data.next_host_port = 31000;
                }
                let p = data.next_host_port;
                data.next_host_port += 1;
                p
            })
            .collect();
        new.push(Task {
            id: format!("{}.{}", safe_id(app), new_uuid()),
            app: app.to_string(),
            version: version.clone(),
            host_ports,
            service_ports: service_ports.clone(),
            staged_at: at,
            running_at,
            launched_by: launched_by.map(str::to_string),
        });
    }
    data.tasks.entry(app.to_string()).or_default().extend(new);
}

/// Kill the tasks of `app` that `which` picks; answers them.
pub fn kill_where(data: &mut Data, ctx: &Ctx, app: &str, which: impl Fn(&Task) -> bool, at: u64) -> Vec<Task> {
    let Some(list) = data.tasks.get_mut(app) else { return Vec::new() };
    let (killed, kept): (Vec<Task>, Vec<Task>) = std::mem::take(list).into_iter().partition(|t| which(t));
    *list = kept;
    if list.is_empty() {
        data.tasks.remove(app);
    }
    for t in &killed {
        status_event(ctx, t, "TASK_KILLED", at);
    }
    killed
}

/// Scale down: the youngest go first (staged before running).
pub fn kill_youngest(data: &mut Data, ctx: &Ctx, app: &str, n: usize, at: u64) {
    let Some(list) = data.tasks.get(app) else { return };
    let mut order: Vec<&Task> = list.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse((t.running_at.is_none(), t.staged_at)));
    let doomed: Vec<String> = order.into_iter().take(n).map(|t| t.id.clone()).collect();
    kill_where(data, ctx, app, |t| doomed.contains(&t.id), at);
}

pub fn status_event(ctx: &Ctx, t: &Task, status: &str, at: u64) {
    emit(ctx, at, "status_update_event", || {
        let mut m = Map::new();
        m.insert("slaveId".into(), json!("capstan-sandbox-agent"));
        m.insert("taskId".into(), json!(t.id));
        m.insert("taskStatus".into(), json!(status));
        m.insert("message".into(), json!(""));
        m.insert("appId".into(), json!(t.app));
        m.insert("host".into(), json!(HOST));
        m.insert("ipAddresses".into(), json!([{"ipAddress": HOST, "protocol": "IPv4"}]));
        m.insert("ports".into(), json!(t.host_ports));
        m.insert("version".into(), json!(t.version));
        m
    });
}
