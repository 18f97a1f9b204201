//! The group tree: groups made on demand for the apps and groups below them, removed with
//! their subgroups, and their versions recorded for rollback.

use super::model::{Data, Group, GroupRecord, HISTORY};
use super::ids::parent;

/// Create `gid` and whatever groups above it are missing.
pub fn ensure(data: &mut Data, gid: &str, version: &str) {
    if data.groups.contains_key(gid) {
        return;
    }
    if gid != "/" {
        let p = parent(gid).to_string();
        ensure(data, &p, version);
        if let Some(g) = data.groups.get_mut(&p) {
            g.groups.insert(gid.to_string());
        }
    }
    data.groups.insert(gid.to_string(), Group { version: version.to_string(), ..Default::default() });
}

/// Remove a group and the groups below it (their apps are removed by the caller); the root
/// only loses its children.
pub fn remove(data: &mut Data, gid: &str) {
    let Some(g) = data.groups.get(gid) else { return };
    let children: Vec<String> = g.groups.iter().cloned().collect();
    for c in children {
        remove(data, &c);
    }
    if gid == "/" {
        if let Some(root) = data.groups.get_mut("/") {
            root.groups.clear();
            root.apps.clear();
        }
        return;
    }
    data.groups.remove(gid);
    if let Some(p) = data.groups.get_mut(parent(gid)) {
        p.groups.remove(gid);
    }
}

/// Remember the group as it is now, under its version.
pub fn record(data: &mut Data, gid: &str) {
    let Some(g) = data.groups.get(gid) else { return };
    let rec = GroupRecord {
        version: g.version.clone(),
        dependencies: g.dependencies.clone(),
        apps: g.apps.iter().filter_map(|a| data.apps.get(a).map(|x| (a.clone(), x.version.clone()))).collect(),
        groups: g.groups.iter().filter_map(|c| data.groups.get(c).map(|x| (c.clone(), x.version.clone()))).collect(),
    };
    let h = data.group_history.entry(gid.to_string()).or_default();
    if h.last().is_some_and(|r| r.version == rec.version) {
        h.pop();
    }
    h.push(rec);
    if h.len() > HISTORY {
        let extra = h.len() - HISTORY;
        h.drain(..extra);
    }
}
