//! Marathon's own preview of a plan: `PUT /v2/groups/{root}?dryRun=true` (seed 004 L1001-1080)
//! with the tree as it will be once the plan is applied, and a comparison of Marathon's steps
//! with capstan's changes.
//!
//! The tree sent is the subtree under the deepest group holding every change, read again just
//! before, with every app and group capstan leaves alone exactly as read (less what Marathon
//! fills in), so Marathon plans no action for them; the apps capstan changes as its update will
//! leave them (the app as read with the declared fields in place), and what capstan deletes
//! left out. Marathon names an app absolutely, or relative to the group sent (the seed's
//! `"app": "app1"`, L1053, even by its name alone): a name is resolved against that group and
//! matched by full path; a bare name several apps sent share is compared by how many apps of
//! that name each side acts on.

use super::client::Client;
use super::kind::Kind;
use super::{Marathon, app, path};
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
    let request = format!("PUT /v2/groups{}?dryRun=true", if root == "/" { "" } else { root.as_str() });
    let failed = |e: String| PlatformPreview { request: request.clone(), error: Some(e), ..PlatformPreview::default() };
    let read = match client.group(&root).await {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    let body = target_tree(provider, &root, read.as_ref(), changes, desired, live);
    let answer = match client.dry_run(&root, &body).await {
        Ok(a) => a,
        Err(e) => return failed(e.to_string()),
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
                    Some(PreviewAction { action: action.to_string(), resource: ResourceId::new(Kind::App.name(), id) })
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

/// The subtree under `root` as it will be once the changes are applied, as a group body: `read`
/// (the subtree as Marathon answered it) with capstan's changes made to it.
fn target_tree(
    provider: &Marathon,
    root: &str,
    read: Option<&Value>,
    changes: &ChangeSet,
    desired: &DesiredState,
    live: &LiveState,
) -> Value {
    let mut read_apps: BTreeMap<String, &Value> = BTreeMap::new();
    let mut groups: BTreeMap<String, Value> = BTreeMap::new();
    let mut stack: Vec<&Value> = read.into_iter().collect();
    while let Some(g) = stack.pop() {
        if let Some(id) = g.get("id").and_then(Value::as_str) {
            let deps = g.get("dependencies").cloned().unwrap_or(json!([]));
            groups.insert(id.to_string(), json!({ "dependencies": deps }));
        }
        for a in g.get("apps").and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = a.get("id").and_then(Value::as_str) {
                read_apps.insert(id.to_string(), a);
            }
        }
        stack.extend(g.get("groups").and_then(Value::as_array).into_iter().flatten());
    }
    // What capstan deletes, and what deleting it removes with it, is left out.
    let mut gone: HashSet<&str> = HashSet::new();
    for c in changes.changes.iter().filter(|c| c.action == Action::Delete) {
        gone.insert(&c.id.name);
        gone.extend(live.get(&c.id).into_iter().flat_map(|l| &l.removes).map(|r| r.name.as_str()));
    }
    groups.retain(|id, _| !gone.contains(id.as_str()));
    let mut apps: BTreeMap<String, Value> = read_apps
        .iter()
        .filter(|(id, _)| !gone.contains(id.as_str()))
        .map(|(id, a)| (id.clone(), app::as_read(a)))
        .collect();
    for c in changes.changes.iter().filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Replace)) {
        let (Some(d), id) = (desired.resources.get(&c.id), &c.id.name) else { continue };
        if c.id.kind == Kind::App.name() {
            let live_spec = live.get(&c.id).map(|l| &l.spec).filter(|_| c.action != Action::Replace);
            let body = app::write_body(provider, &d.spec, live_spec);
            let before = read_apps.get(id).copied().filter(|_| c.action != Action::Replace);
            apps.insert(id.clone(), app::updated(before, &body));
        } else if c.id.kind == Kind::Group.name() {
            let deps = d.spec.get("dependencies").cloned().unwrap_or(json!([]));
            groups.insert(id.clone(), json!({ "dependencies": deps }));
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

/// The absolute id of an app a dry run names: absolutely, relative to the group sent, or by a
/// name only one app sent ends with. A name several apps sent end with stays as Marathon wrote
/// it (relative: `compare` counts it by name).
fn name_app(name: &str, root: &str, sent: &[String]) -> String {
    if name.starts_with('/') {
        return name.to_string();
    }
    if let Ok(abs) = path::resolve(root, name)
        && sent.binary_search(&abs).is_ok()
    {
        return abs;
    }
    let suffix = format!("/{name}");
    let mut fits = sent.iter().filter(|a| a.ends_with(&suffix));
    match (fits.next(), fits.next()) {
        (Some(one), None) => one.clone(),
        (Some(_), Some(_)) => name.to_string(),
        (None, _) => path::resolve(root, name).unwrap_or_else(|_| name.to_string()),
    }
}

/// Where Marathon's steps and capstan's changes say different things: an app one changes and
/// the other leaves alone, a create Marathon does not start, a delete it does not stop, and an
/// app Marathon deploys before one it must wait for. Apps Marathon names only by a name several
/// share are compared by how many apps of that name each side starts, stops and changes.
fn compare(steps: &[Vec<PreviewAction>], changes: &ChangeSet, desired: &DesiredState) -> Vec<String> {
    let mut actions: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut first_step: HashMap<&str, usize> = HashMap::new();
    // By shared name: (starts, stops, other actions) of Marathon's, and of capstan's.
    let mut shared: BTreeMap<&str, ([usize; 3], [usize; 3])> = BTreeMap::new();
    let slot = |action: &str| match action {
        "StartApplication" => 0,
        "StopApplication" => 1,
        _ => 2,
    };
    for (i, step) in steps.iter().enumerate() {
        for a in step {
            let name = a.resource.name.as_str();
            if !name.starts_with('/') {
                // A start is followed by a scale: counted once, as a start.
                if a.action != "ScaleApplication" || !step_has_start(steps, name) {
                    shared.entry(name).or_default().0[slot(&a.action)] += 1;
                }
                continue;
            }
            actions.entry(name).or_default().insert(a.action.as_str());
            if a.action != "StopApplication" && a.action != "KillAllOldTasksOf" {
                first_step.entry(name).or_insert(i);
            }
        }
    }
    let mut out = Vec::new();
    let mut capstan_changes: HashSet<&str> = HashSet::new();
    for c in changes.changes.iter().filter(|c| c.id.kind == Kind::App.name() && c.action != Action::NoOp) {
        let id = c.id.name.as_str();
        capstan_changes.insert(id);
        let name = id.rsplit('/').next().unwrap_or(id);
        if !actions.contains_key(id)
            && let Some((_, ours)) = shared.get_mut(name)
        {
            ours[match c.action {
                Action::Create => 0,
                Action::Delete => 1,
                _ => 2,
            }] += 1;
            continue;
        }
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
    for (name, (theirs, ours)) in &shared {
        if theirs != ours {
            out.push(format!(
                "apps named {name} (Marathon's dry run names them only so): Marathon would start {}, stop {} and change {} of them; capstan creates {}, deletes {} and updates {}",
                theirs[0], theirs[1], theirs[2], ours[0], ours[1], ours[2]
            ));
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
        seen.into_iter().filter(|r| r.kind == Kind::App.name()).map(|r| r.name).collect()
    };
    for (id, &step) in &first_step {
        let rid = ResourceId::new(Kind::App.name(), *id);
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

/// Whether Marathon starts an app of this (shared) name anywhere in its plan.
fn step_has_start(steps: &[Vec<PreviewAction>], name: &str) -> bool {
    steps.iter().flatten().any(|a| a.action == "StartApplication" && a.resource.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::ResourceChange;

    #[test]
    fn the_root_is_the_deepest_group_holding_every_change() {
        assert_eq!(common_group(["/p/a/x", "/p/b/y"].into_iter()), "/p");
        assert_eq!(common_group(["/p/a/x"].into_iter()), "/p/a");
        assert_eq!(common_group(["/x", "/p/y"].into_iter()), "/");
    }

    #[test]
    fn names_are_resolved_against_the_group_and_matched_by_full_path() {
        let sent = vec![
            "/product/service/us-east/app1".to_string(),
            "/product/x".to_string(),
            "/product/y/a0".to_string(),
            "/product/z/a0".to_string(),
        ];
        assert_eq!(name_app("app1", "/product", &sent), "/product/service/us-east/app1");
        assert_eq!(name_app("x", "/product", &sent), "/product/x");
        assert_eq!(name_app("y/a0", "/product", &sent), "/product/y/a0", "relative to the group sent");
        assert_eq!(name_app("/abs", "/product", &sent), "/abs");
        assert_eq!(name_app("a0", "/product", &sent), "a0", "shared by two apps: left as a name");
    }

    #[test]
    fn apps_named_only_by_a_shared_name_are_compared_by_count() {
        let create = |id: &str| ResourceChange {
            id: ResourceId::new(Kind::App.name(), id),
            action: Action::Create,
            origin: None,
            before: None,
            after: None,
            changes: Vec::new(),
            reason: None,
        };
        let ids = ["/b/g00/a0", "/b/g01/a0", "/b/g00/a1", "/b/g01/a1"];
        let changes = ChangeSet { changes: ids.iter().map(|i| create(i)).collect(), ..ChangeSet::default() };
        let act = |action: &str, name: &str| PreviewAction {
            action: action.into(),
            resource: ResourceId::new(Kind::App.name(), name),
        };
        let sent: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let mut sorted = sent.clone();
        sorted.sort();
        let name = |n: &str| name_app(n, "/b", &sorted);
        let steps = vec![
            vec![
                act("StartApplication", &name("a0")),
                act("StartApplication", &name("a0")),
                act("StartApplication", &name("a1")),
            ],
            vec![act("ScaleApplication", &name("a0")), act("ScaleApplication", &name("a0"))],
            vec![act("ScaleApplication", &name("a1"))],
        ];
        let found = compare(&steps, &changes, &DesiredState::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("apps named a1") && found[0].contains("start 1"), "{found:?}");
        let mut agreeing = steps.clone();
        agreeing[0].push(act("StartApplication", &name("a1")));
        assert_eq!(compare(&agreeing, &changes, &DesiredState::default()), Vec::<String>::new());
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
