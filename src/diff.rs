//! Diff: desired state against live state → a [`ChangeSet`], one entry per resource.
//!
//! Both sides are first brought to the provider's comparable form, so a resource applied and
//! read back compares equal. References are checked here, when both what is declared and what
//! is live are known: a reference to nothing is an error at the place it is written. What is
//! live but no longer declared is deleted only when it is capstan's to delete: an attachment
//! (binding, membership) whose declaring parent is still declared, or a resource marked with
//! this owner when pruning. Everything else is left alone. Pruning is a set difference over what
//! capstan owns and declares: a resource whose deletion removes others with it (a Marathon
//! group) is deleted only when every one of those could be pruned itself, and one a person
//! marked to be kept never is.

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::model::{DesiredState, LiveState, ResourceId};
use crate::providers::Provider;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    /// Delete, then create: the platform cannot change this kind in place.
    Replace,
    Delete,
    NoOp,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Create => "will be created",
            Action::Update => "will be updated in place",
            Action::Replace => "must be replaced",
            Action::Delete => "will be deleted",
            Action::NoOp => "is up to date",
        }
    }
}

/// One field that differs. `path` is dotted (`resources.memory`, `ports[0].number`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ResourceChange {
    pub id: ResourceId,
    pub action: Action,
    /// Where the resource is declared (None for deletions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Location>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub changes: Vec<FieldChange>,
    /// Why, when the action is not evident from the fields (a replace forced by another).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChangeSet {
    /// Every declared resource and every resource to delete, in display order.
    pub changes: Vec<ResourceChange>,
    /// Resources marked with this owner that are no longer declared, kept because pruning is off.
    pub orphans: Vec<ResourceId>,
    /// Resources marked with this owner, no longer declared, that pruning leaves, and why.
    pub kept: Vec<Kept>,
}

/// A resource pruning leaves although it is capstan's and no longer declared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Kept {
    pub id: ResourceId,
    pub reason: String,
}

impl ChangeSet {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::NoOp)
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn get(&self, id: &ResourceId) -> Option<&ResourceChange> {
        self.changes.iter().find(|c| &c.id == id)
    }
}

/// Check that every reference points at something declared or live.
pub fn check_references(desired: &DesiredState, live: &LiveState) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for r in desired.resources.values() {
        for reference in &r.references {
            let t = &reference.target;
            if desired.resources.contains_key(t) || live.get(t).is_some() {
                continue;
            }
            if !live.observed_kinds.iter().any(|k| k == &t.kind) {
                continue; // not listed: unknown rather than missing
            }
            diags.push(Diagnostic::error_at(
                reference.at.clone(),
                format!("{} points at {t}, which is neither declared nor live: expected an existing {}", r.id, t.kind),
            ));
        }
    }
    diags.sort();
    diags
}

pub fn diff(provider: &dyn Provider, desired: &DesiredState, live: &LiveState, prune: bool) -> ChangeSet {
    let mut changes: BTreeMap<ResourceId, ResourceChange> = BTreeMap::new();
    let mut orphans = Vec::new();
    let mut kept = Vec::new();

    for d in desired.resources.values() {
        let info = provider.kind_info(&d.id.kind);
        if !info.managed {
            continue;
        }
        let l = live.get(&d.id);
        let (after, before) = provider.comparable(Some(d), l, live);
        let action = match (&before, &after) {
            (None, _) => Action::Create,
            (Some(b), Some(a)) if b == a => Action::NoOp,
            _ if info.updatable => Action::Update,
            _ => Action::Replace,
        };
        // An unchanged resource carries no copies of its values: at ten thousand resources
        // they would be most of the memory a plan takes.
        let (before, after, fields) = match action {
            Action::NoOp => (None, None, Vec::new()),
            _ => {
                let (before, after) = (before.map(Cow::into_owned), after.map(Cow::into_owned));
                let fields = field_changes(before.as_ref(), after.as_ref());
                (before, after, fields)
            }
        };
        changes.insert(
            d.id.clone(),
            ResourceChange {
                id: d.id.clone(),
                action,
                origin: Some(d.origin.clone()),
                before,
                after,
                changes: fields,
                reason: None,
            },
        );
    }

    let declared = |id: &ResourceId| desired.resources.contains_key(id);
    // What deleting `l` would remove with it that capstan may not: something declared, kept,
    // or not its own.
    fn blocked<'l>(
        l: &'l crate::model::LiveResource,
        desired: &DesiredState,
        live: &LiveState,
    ) -> Option<&'l ResourceId> {
        let may = |r: &ResourceId| live.get(r).is_some_and(|x| x.owned && x.keep.is_none());
        l.removes.iter().find(|r| desired.resources.contains_key(*r) || !may(r))
    }
    for l in live.resources.values() {
        if declared(&l.id) || !provider.kind_info(&l.id.kind).managed {
            continue;
        }
        let parent_declared = l.parent.as_ref().is_some_and(|p| desired.resources.contains_key(p));
        let holds_declared = l.removes.iter().any(declared);
        let reason = if parent_declared {
            Some(format!("no longer declared by {}", l.parent.as_ref().unwrap()))
        } else if l.owned
            && let Some(mark) = &l.keep
        {
            kept.push(Kept { id: l.id.clone(), reason: format!("marked to be kept ({mark})") });
            continue;
        } else if l.owned && prune && !holds_declared {
            match blocked(l, desired, live) {
                None if l.removes.is_empty() => Some("pruned: no longer declared".to_string()),
                None => Some(format!("pruned: no longer declared (with the {} resources under it)", l.removes.len())),
                Some(other) => {
                    let reason = format!("deleting it would also delete {other}, which is kept or not capstan's");
                    kept.push(Kept { id: l.id.clone(), reason });
                    continue;
                }
            }
        } else {
            // What holds declared resources (a group above them) is never an orphan.
            if l.owned && l.parent.is_none() && !holds_declared {
                orphans.push(l.id.clone());
            }
            continue;
        };
        let before = provider.comparable(None, Some(l), live).1.map(Cow::into_owned);
        let fields = field_changes(before.as_ref(), None);
        changes.insert(
            l.id.clone(),
            ResourceChange {
                id: l.id.clone(),
                action: Action::Delete,
                origin: None,
                before,
                after: None,
                changes: fields,
                reason,
            },
        );
    }

    // What another deletion removes with it needs no deletion of its own.
    let covered: HashSet<ResourceId> = changes
        .values()
        .filter(|c| c.action == Action::Delete)
        .filter_map(|c| live.get(&c.id))
        .flat_map(|l| l.removes.iter().cloned())
        .collect();
    changes.retain(|id, c| c.action != Action::Delete || !covered.contains(id));

    propagate_replacements(provider, desired, live, &mut changes);

    let order = |id: &ResourceId| provider.kinds().iter().position(|(k, _)| *k == id.kind).unwrap_or(usize::MAX);
    let mut list: Vec<ResourceChange> = changes.into_values().collect();
    list.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    kept.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    ChangeSet { changes: list, orphans, kept }
}

/// A resource that is deleted or replaced takes with it the live resources attached to it
/// (a binding to a replaced service): those that are still declared must be replaced too.
fn propagate_replacements(
    provider: &dyn Provider,
    desired: &DesiredState,
    live: &LiveState,
    changes: &mut BTreeMap<ResourceId, ResourceChange>,
) {
    let mut queue: Vec<ResourceId> = changes
        .values()
        .filter(|c| matches!(c.action, Action::Replace | Action::Delete))
        .map(|c| c.id.clone())
        .collect();
    let mut seen: HashSet<ResourceId> = queue.iter().cloned().collect();
    while let Some(gone) = queue.pop() {
        for l in live.resources.values().filter(|l| l.depends_on.contains(&gone)) {
            let Some(c) = changes.get_mut(&l.id) else {
                continue;
            };
            if !matches!(c.action, Action::NoOp | Action::Update) || provider.kind_info(&l.id.kind).updatable {
                continue;
            }
            c.action = Action::Replace;
            c.reason = Some(format!("{gone} is replaced or deleted"));
            if c.before.is_none() {
                let (after, before) = provider.comparable(desired.resources.get(&l.id), Some(l), live);
                (c.before, c.after) = (before.map(Cow::into_owned), after.map(Cow::into_owned));
            }
            if seen.insert(l.id.clone()) {
                queue.push(l.id.clone());
            }
        }
    }
}

/// What a change to the manifests does to the declared state alone: resources declared at
/// `head` and not at `base` are created, the reverse deleted, and those declared at both with a
/// different declaration updated (or replaced, for kinds the platform cannot change in place).
pub fn diff_declared(provider: &dyn Provider, base: &DesiredState, head: &DesiredState) -> ChangeSet {
    let mut changes = Vec::new();
    for h in head.resources.values() {
        if !provider.kind_info(&h.id.kind).managed {
            continue;
        }
        let b = base.resources.get(&h.id);
        let action = match b {
            None => Action::Create,
            Some(b) if b.spec == h.spec => Action::NoOp,
            Some(_) if provider.kind_info(&h.id.kind).updatable => Action::Update,
            Some(_) => Action::Replace,
        };
        let before = b.map(|b| b.spec.clone());
        let after = Some(h.spec.clone());
        let fields = if action == Action::NoOp { Vec::new() } else { field_changes(before.as_ref(), after.as_ref()) };
        changes.push(ResourceChange {
            id: h.id.clone(),
            action,
            origin: Some(h.origin.clone()),
            before: before.filter(|_| action != Action::NoOp),
            after: after.filter(|_| action != Action::NoOp),
            changes: fields,
            reason: None,
        });
    }
    for b in base.resources.values().filter(|b| !head.resources.contains_key(&b.id)) {
        if provider.kind_info(&b.id.kind).managed {
            changes.push(ResourceChange {
                id: b.id.clone(),
                action: Action::Delete,
                origin: Some(b.origin.clone()),
                before: Some(b.spec.clone()),
                after: None,
                changes: field_changes(Some(&b.spec), None),
                reason: Some("no longer declared".into()),
            });
        }
    }
    let order = |id: &ResourceId| provider.kinds().iter().position(|(k, _)| *k == id.kind).unwrap_or(usize::MAX);
    changes.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    ChangeSet { changes, ..ChangeSet::default() }
}

/// The leaves that differ between two values, with dotted paths.
pub fn field_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(String::new(), before, after, &mut out);
    out
}

fn walk(path: String, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))).collect();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(p, b.get(k), a.get(k), out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) if b.len() == a.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                walk(format!("{path}[{i}]"), Some(bv), Some(av), out);
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(FieldChange {
            path: if path.is_empty() { "(whole)".into() } else { path },
            before: b.cloned(),
            after: a.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_changes_name_the_leaves_that_differ() {
        let b = json!({"resources": {"memory": 1, "cpu": 0}, "ports": [{"number": 0}], "tags": {"a": "x"}});
        let a = json!({"resources": {"memory": 2, "cpu": 0}, "ports": [{"number": 80}], "tags": {"b": "y"}});
        let paths: Vec<String> = field_changes(Some(&b), Some(&a)).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, vec!["resources.memory", "ports[0].number", "tags.a", "tags.b"]);
    }

    #[test]
    fn equal_values_have_no_changes() {
        let v = json!({"a": [1, {"b": null}]});
        assert!(field_changes(Some(&v), Some(&v)).is_empty());
    }
}
