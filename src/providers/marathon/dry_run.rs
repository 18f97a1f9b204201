//! Marathon's own preview of a plan: `PUT /v2/groups/{root}?dryRun=true` (seed 004 L1001-1080)
//! with the tree as it will be once the plan is applied, and a comparison of Marathon's steps
//! with capstan's changes.
//!
//! The tree sent is the live subtree under the deepest group holding every change, with the
//! declared apps and groups in place of their live versions and the apps capstan deletes left
//! out; everything else is sent as it is, so Marathon plans no action for what capstan leaves
//! alone. Marathon names an app relative to its group in a dry run (`"app": "app1"`, L1053),
//! so a relative name is matched against the apps of the tree sent.

use super::client::Client;
use super::{Marathon, OWNER_LABEL, app, group, path};
use crate::diff::{Action, ChangeSet};
use crate::model::{DesiredState, LiveState, ResourceId};
use crate::providers::{PlatformPreview, PreviewAction};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub async fn preview(
    provider: &Marathon,
    client: &Client,
    changes: &ChangeSet,
    desired: &DesiredState,
    live: &LiveState,
) -> PlatformPreview {
    let changed: Vec<&ResourceId> =
        changes.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| &c.id).collect();
    let root = common_group(changed.iter().map(|id| id.name.as_str()));
    let body = target_tree(provider, &root, changes, desired, live);
    let request = format!("PUT /v2/groups{}?dryRun=true", if root == "/" { "" } else { root.as_str() });
    let answer = match client.dry_run(&root, &body).await {
        Ok(a) => a,
        Err(e) => return PlatformPreview { request, error: Some(e.to_string()), ..PlatformPreview::default() },
    };
    let apps_sent = apps_in(&body);
    let steps: Vec<Vec<PreviewAction>> = answer
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|step| {
            step.get("actions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    let action = a.get("type").or_else(|| a.get("action")).and_then(Value::as_str)?;
                    let name = a.get("app").and_then(Value::as_str)?;
                    let id = name_app(name, &root, &apps_sent);
                    Some(PreviewAction { action: action.to_string(), resource: ResourceId::new(app::KIND, id) })
                })
                .collect()
        })
        .collect();
    let disagreements = compare(&steps, changes, desired);
    PlatformPreview { request, steps, disagreements, error: None }
}

/// The deepest group holding every one of these ids.
fn common_group<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for id in ids {
        let segs: Vec<&str> = path::parent(id).split('/').filter(|s| !s.is_empty()).collect();
        common = Some(match common {
            None => segs,
            Some(c) => c.iter().zip(&segs).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    format!("/{}", common.unwrap_or_default().join("/"))
}

/// The subtree under `root` as it will be once the changes are applied, as a group body.
fn target_tree(
    provider: &Marathon,
    root: &str,
    changes: &ChangeSet,
    desired: &DesiredState,
    live: &LiveState,
) -> Value {
    let deleted: HashSet<&ResourceId> =
        changes.changes.iter().filter(|c| c.action == Action::Delete).map(|c| &c.id).collect();
    let mut apps: BTreeMap<String, Value> = BTreeMap::new();
    let mut groups: BTreeMap<String, Value> = BTreeMap::new();
    for l in live.resources.values().filter(|l| path::within(&l.id.name, root) && !deleted.contains(&l.id)) {
        let mut spec = l.spec.clone();
        if l.id.kind == app::KIND {
            // Sent back exactly as read (with its owner's mark), so Marathon sees no change.
            if l.owned
                && let Some(labels) = spec.get_mut("labels").and_then(Value::as_object_mut)
            {
                labels.insert(OWNER_LABEL.into(), json!(provider.owner));
            }
            apps.insert(l.id.name.clone(), spec);
        } else {
            groups.insert(l.id.name.clone(), spec);
        }
    }
    for d in desired.resources.values().filter(|d| path::within(&d.id.name, root)) {
        if d.id.kind == app::KIND {
            let spec = match live.get(&d.id) {
                Some(l) => app::comparable(&d.spec, &l.spec).0,
                None => d.spec.clone(),
            };
            apps.insert(d.id.name.clone(), app::body(provider, &spec));
        } else if d.id.kind == group::KIND {
            groups.insert(d.id.name.clone(), d.spec.clone());
        }
    }
    build_group(root, &apps, &groups)
}

fn build_group(id: &str, apps: &BTreeMap<String, Value>, groups: &BTreeMap<String, Value>) -> Value {
    let mut g = Map::new();
    g.insert("id".into(), json!(id));
    let own_apps = apps.iter().filter(|(k, _)| path::parent(k) == id && k.as_str() != id).map(|(_, v)| v.clone());
    // Subgroups, those only implied by the ids below them included.
    let mut sub: BTreeSet<String> = BTreeSet::new();
    for k in apps.keys().chain(groups.keys()) {
        if k == id || !path::within(k, id) {
            continue;
        }
        let mut child = k.as_str();
        while path::parent(child) != id {
            child = path::parent(child);
        }
        if child != k || groups.contains_key(k) {
            sub.insert(child.to_string());
        }
    }
    let deps = groups.get(id).and_then(|g| g.get("dependencies")).cloned().unwrap_or(json!([]));
    g.insert("dependencies".into(), deps);
    g.insert("apps".into(), Value::Array(own_apps.collect()));
    g.insert("groups".into(), Value::Array(sub.iter().map(|s| build_group(s, apps, groups)).collect()));
    Value::Object(g)
}

fn apps_in(group: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![group];
    while let Some(g) = stack.pop() {
        for a in g.get("apps").and_then(Value::as_array).into_iter().flatten() {
            out.extend(a.get("id").and_then(Value::as_str).map(str::to_string));
        }
        stack.extend(g.get("groups").and_then(Value::as_array).into_iter().flatten());
    }
    out.sort();
    out
}

/// The absolute id of an app a dry run names, absolutely or by its name in its group.
fn name_app(name: &str, root: &str, sent: &[String]) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    if let Ok(abs) = path::resolve(root, name)
        && sent.contains(&abs)
    {
        return abs;
    }
    sent.iter()
        .find(|a| a.ends_with(&format!("/{name}")))
        .cloned()
        .unwrap_or_else(|| path::resolve(root, name).unwrap_or_else(|_| name.to_string()))
}

/// Where Marathon's steps and capstan's changes say different things: an app one changes and
/// the other leaves alone, a create Marathon does not start, a delete it does not stop, and an
/// app Marathon deploys before one it must wait for.
fn compare(steps: &[Vec<PreviewAction>], changes: &ChangeSet, desired: &DesiredState) -> Vec<String> {
    let mut actions: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut first_step: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for a in step {
            actions.entry(a.resource.name.as_str()).or_default().insert(a.action.as_str());
            if a.action != "StopApplication" && a.action != "KillAllOldTasksOf" {
                first_step.entry(a.resource.name.as_str()).or_insert(i);
            }
        }
    }
    let mut out = Vec::new();
    let mut capstan_changes: HashSet<&str> = HashSet::new();
    for c in changes.changes.iter().filter(|c| c.id.kind == app::KIND && c.action != Action::NoOp) {
        let id = c.id.name.as_str();
        capstan_changes.insert(id);
        let has = |a: &str| actions.get(id).is_some_and(|s| s.contains(a));
        let what = match c.action {
            Action::Create if !has("StartApplication") => Some("capstan creates it; Marathon would not start it"),
            Action::Delete if !has("StopApplication") => Some("capstan deletes it; Marathon would not stop it"),
            Action::Update | Action::Replace if !actions.contains_key(id) => {
                Some("capstan updates it; Marathon sees no change to it")
            }
            _ => None,
        };
        if let Some(w) = what {
            out.push(format!("{id}: {w}"));
        }
    }
    for (id, acts) in &actions {
        if !capstan_changes.contains(id) {
            let acts: Vec<&str> = acts.iter().copied().collect();
            out.push(format!("{id}: Marathon would {}; capstan's plan leaves it alone", acts.join(" and ")));
        }
    }
    // Order: an app must not be deployed before an app it waits for.
    let waits_for = |from: &ResourceId| -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut stack = vec![from.clone()];
        while let Some(id) = stack.pop() {
            if let Some(d) = desired.resources.get(&id) {
                for r in &d.references {
                    if seen.insert(r.target.clone()) {
                        stack.push(r.target.clone());
                    }
                }
            }
        }
        seen.into_iter().filter(|r| r.kind == app::KIND).map(|r| r.name).collect()
    };
    for (id, &step) in &first_step {
        let rid = ResourceId::new(app::KIND, *id);
        for before in waits_for(&rid) {
            if let Some(&other) = first_step.get(before.as_str())
                && other > step
            {
                out.push(format!(
                    "{id}: Marathon deploys it in step {} but it depends on {before}, which Marathon deploys in step {}",
                    step + 1,
                    other + 1
                ));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_deepest_group_holding_every_change() {
        assert_eq!(common_group(["/p/a/x", "/p/b/y"].into_iter()), "/p");
        assert_eq!(common_group(["/p/a/x"].into_iter()), "/p/a");
        assert_eq!(common_group(["/x", "/p/y"].into_iter()), "/");
    }

    #[test]
    fn relative_names_find_the_app_in_the_tree_sent() {
        let sent = vec!["/product/service/us-east/app1".to_string(), "/product/x".to_string()];
        assert_eq!(name_app("app1", "/product", &sent), "/product/service/us-east/app1");
        assert_eq!(name_app("x", "/product", &sent), "/product/x");
        assert_eq!(name_app("/abs", "/product", &sent), "/abs");
    }

    #[test]
    fn implied_groups_are_part_of_the_tree() {
        let mut apps = BTreeMap::new();
        apps.insert("/p/a/b/x".to_string(), json!({"id": "/p/a/b/x"}));
        let tree = build_group("/p", &apps, &BTreeMap::new());
        assert_eq!(tree["groups"][0]["id"], "/p/a");
        assert_eq!(tree["groups"][0]["groups"][0]["id"], "/p/a/b");
        assert_eq!(tree["groups"][0]["groups"][0]["apps"][0]["id"], "/p/a/b/x");
    }
}
