//! Diff: desired state against live state → a [`ChangeSet`], one entry per resource.
//!
//! Both sides are first brought to the provider's comparable form, so a resource applied and
//! read back compares equal. References are checked here, when both what is declared and what
//! is live are known: a reference to nothing is an error at the place it is written. What is
//! live but no longer declared is deleted only when it is capstan's to delete: an attachment
//! (binding, membership) whose declaring parent is still declared, or a resource marked with
//! this owner when pruning. Everything else is left alone. A declared resource that carries
//! another owner's mark is a takeover: its change shows the mark changing hands, and the plan
//! is refused unless that was asked for ([`check_owners`]). A declaration that points at what
//! the plan deletes is refused too ([`check_deletions`]).
//! Pruning is a set difference over what capstan owns and declares: a resource whose deletion
//! removes others with it (a Marathon group) is deleted only when every one of those could be
//! pruned itself, and one a person marked to be kept never is.

use crate::base::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, ResourceId};
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

/// What diff needs of a platform: its kinds, its owner mark, and both sides of a resource in
/// the form they are compared in. The platform's folder under `src/providers/` implements it.
pub trait Compare: Send + Sync {
    /// The owner whose mark this provider writes and recognises (capstan.yaml's `owner`).
    fn owner(&self) -> &str;

    /// The kinds this platform knows, in the order they are shown.
    fn kinds(&self) -> &'static [(&'static str, KindInfo)];

    fn kind_info(&self, kind: &str) -> KindInfo {
        self.kinds()
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .unwrap_or(KindInfo { managed: false, updatable: false })
    }

    /// Whether a reference to `target` names the live resource `id`: the same identity, unless
    /// the platform writes references before their kind is known (Marathon: a dependency
    /// declared nowhere names an app or a group by its path). A plan that deletes what a
    /// declaration names is refused.
    fn names(&self, target: &ResourceId, id: &ResourceId) -> bool {
        target == id
    }

    /// The two sides of a resource in the form they are compared and shown in: the provider may
    /// project live state onto what the declaration manages, and resolve names through other
    /// live resources (a package FQN to its uuid).
    fn comparable<'a>(
        &self,
        desired: Option<&'a DesiredResource>,
        live: Option<&'a LiveResource>,
        live_state: &LiveState,
    ) -> (Option<Cow<'a, Value>>, Option<Cow<'a, Value>>) {
        let _ = live_state;
        (desired.map(|d| Cow::Borrowed(&d.spec)), live.map(|l| Cow::Borrowed(&l.spec)))
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

/// The path under which a change of owner shows among a change's fields.
pub const OWNER_FIELD: &str = "capstan-owner";

/// Check that no declaration points at something this plan deletes (a job it prunes that a
/// network still lists, a service a binding names, a Marathon app another depends on), directly
/// or along with another deletion (an app under a group the plan deletes): applying it would
/// delete what is still needed, then fail or leave the declaration unmet.
pub fn check_deletions(
    provider: &dyn Compare,
    desired: &DesiredState,
    live: &LiveState,
    changes: &ChangeSet,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    // Everything gone once the plan has run: (what goes, the deletion that takes it, why).
    let mut gone: Vec<(&ResourceId, &ResourceChange, &str)> = Vec::new();
    for c in changes.changes.iter().filter(|c| c.action == Action::Delete) {
        let why = c.reason.as_deref().unwrap_or("deleted");
        gone.push((&c.id, c, why));
        for removed in live.get(&c.id).into_iter().flat_map(|l| &l.removes) {
            gone.push((removed, c, why));
        }
    }
    if gone.is_empty() {
        return diags;
    }
    for r in desired.resources.values() {
        for reference in &r.references {
            let Some((id, by, why)) = gone.iter().find(|(id, _, _)| provider.names(&reference.target, id)) else {
                continue;
            };
            let what = if *id == &by.id {
                format!("{id}, which this plan deletes ({why})")
            } else {
                format!("{id}, which this plan deletes with {} ({why})", by.id)
            };
            diags.push(Diagnostic::error_at(
                reference.at.clone(),
                format!("{} points at {what}: expected it declared, or no reference to it", r.id),
            ));
        }
    }
    diags.sort();
    diags
}

/// Check that what a plan creates can exist: a live resource that excludes it (the job is on
/// another network; the job has another binding or link of that name) must be one the plan
/// deletes, or the create can only fail. A live one that is not capstan's to delete (a network
/// declared elsewhere) makes it an error at the declaration, before any request.
pub fn check_exclusive(desired: &DesiredState, live: &LiveState, changes: &ChangeSet) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let creates: Vec<&ResourceId> = changes
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Replace))
        .map(|c| &c.id)
        .collect();
    if creates.is_empty() {
        return diags;
    }
    let deleted =
        |id: &ResourceId| changes.get(id).is_some_and(|c| matches!(c.action, Action::Delete | Action::Replace));
    let mut held: std::collections::HashMap<&str, Vec<&ResourceId>> = std::collections::HashMap::new();
    for l in live.resources.values() {
        if let Some(key) = l.exclusive.as_deref()
            && !deleted(&l.id)
        {
            held.entry(key).or_default().push(&l.id);
        }
    }
    for id in creates {
        let Some(d) = desired.resources.get(id) else { continue };
        let Some(key) = d.exclusive.as_deref() else { continue };
        if let Some(other) = held.get(key).and_then(|ids| ids.iter().find(|o| **o != id)) {
            diags.push(Diagnostic::error_at(
                d.origin.clone(),
                format!(
                    "{id} cannot be created while {other} exists (both take {key}), which is not this plan's to remove: expected it removed first"
                ),
            ));
        }
    }
    diags.sort();
    diags
}

/// Check that no declaration takes over a resource another owner marks: that needs
/// `--take-ownership`.
pub fn check_owners(provider: &dyn Compare, desired: &DesiredState, live: &LiveState) -> Diagnostics {
    check_owners_within(provider, desired, live, &|_| true)
}

/// [`check_owners`] of the declarations whose live state is known (`covers`).
pub fn check_owners_within(
    provider: &dyn Compare,
    desired: &DesiredState,
    live: &LiveState,
    covers: &dyn Fn(&ResourceId) -> bool,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for d in desired.resources.values().filter(|d| covers(&d.id)) {
        if let Some(other) = live.get(&d.id).and_then(|l| taken_from(provider, l)) {
            diags.push(Diagnostic::error_at(
                d.origin.clone(),
                format!(
                    "{} is marked as owner {other:?}'s ({OWNER_FIELD}), and this configuration's owner is {:?}: expected a resource of this owner or an unmarked one; pass --take-ownership to take it over",
                    d.id,
                    provider.owner()
                ),
            ));
        }
    }
    diags.sort();
    diags
}

/// The other owner a live resource is marked for, if it is not this one's.
fn taken_from<'a>(provider: &dyn Compare, l: &'a LiveResource) -> Option<&'a str> {
    l.owner.as_deref().filter(|o| *o != provider.owner())
}

/// Check that every reference points at something declared or live.
pub fn check_references(desired: &DesiredState, live: &LiveState) -> Diagnostics {
    check_references_within(desired, live, &|_| true)
}

/// [`check_references`] of the declarations whose live state is known (`covers`); a reference
/// to a resource whose live state is not known is not checked (unknown rather than missing).
pub fn check_references_within(
    desired: &DesiredState,
    live: &LiveState,
    covers: &dyn Fn(&ResourceId) -> bool,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for r in desired.resources.values().filter(|r| covers(&r.id)) {
        for reference in &r.references {
            let t = &reference.target;
            if desired.resources.contains_key(t) || live.get(t).is_some() {
                continue;
            }
            if !live.observed_kinds.iter().any(|k| k == &t.kind) || !covers(t) {
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

pub fn diff(provider: &dyn Compare, desired: &DesiredState, live: &LiveState, prune: bool) -> ChangeSet {
    diff_within(provider, desired, live, prune, &|_| true)
}

/// [`diff`] of the resources whose live state is known (`covers`, and every live one given):
/// one entry per covered declaration and per covered deletion, each exactly what [`diff`]
/// makes of it. Whether something is declared is asked of the whole desired state.
pub fn diff_within(
    provider: &dyn Compare,
    desired: &DesiredState,
    live: &LiveState,
    prune: bool,
    covers: &dyn Fn(&ResourceId) -> bool,
) -> ChangeSet {
    let mut changes: BTreeMap<ResourceId, ResourceChange> = BTreeMap::new();
    let mut orphans = Vec::new();
    let mut kept = Vec::new();

    for d in desired.resources.values().filter(|d| covers(&d.id)) {
        let info = provider.kind_info(&d.id.kind);
        if !info.managed {
            continue;
        }
        let l = live.get(&d.id);
        let (after, before) = provider.comparable(Some(d), l, live);
        // Another owner's mark is rewritten by the change: in place where the platform can,
        // else by replacing the resource.
        let taken = l.and_then(|l| taken_from(provider, l));
        let action = match (&before, &after) {
            (None, _) => Action::Create,
            (Some(b), Some(a)) if b == a && taken.is_none() => Action::NoOp,
            _ if info.updatable => Action::Update,
            _ => Action::Replace,
        };
        // An unchanged resource carries no copies of its values: at ten thousand resources
        // they would be most of the memory a plan takes.
        let (before, after, mut fields) = match action {
            Action::NoOp => (None, None, Vec::new()),
            _ => {
                let (before, after) = (before.map(Cow::into_owned), after.map(Cow::into_owned));
                let fields = field_changes(before.as_ref(), after.as_ref());
                (before, after, fields)
            }
        };
        let reason = taken.map(|other| {
            fields.push(FieldChange {
                path: OWNER_FIELD.into(),
                before: Some(Value::String(other.to_string())),
                after: Some(Value::String(provider.owner().to_string())),
            });
            format!("taken over from owner {other:?}")
        });
        changes.insert(
            d.id.clone(),
            ResourceChange {
                id: d.id.clone(),
                action,
                origin: Some(d.origin.clone()),
                before,
                after,
                changes: fields,
                reason,
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
    for l in live.resources.values().filter(|l| covers(&l.id)) {
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
                None => Some(match l.removes.len() {
                    1 => "pruned: no longer declared, with the 1 resource under it".to_string(),
                    n => format!("pruned: no longer declared, with the {n} resources under it"),
                }),
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
    provider: &dyn Compare,
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
pub fn diff_declared(provider: &dyn Compare, base: &DesiredState, head: &DesiredState) -> ChangeSet {
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
