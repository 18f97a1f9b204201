//! Plan: a change set → steps in a dependency graph, grouped into phases.
//!
//! Edges come from the data, never from kind names: a resource is created or updated after
//! what it references (a binding after its job and service), also through references that do
//! not change themselves (A → B unchanged → C orders C before A), deleted before what it depends on
//! (the binding before the service), a replace deletes before it creates, and a create waits
//! for the deletion of a live resource it cannot coexist with (a job's old network membership).
//! Phases are the graph's levels (a step's phase is one more than its latest dependency's), in
//! the plan → phases → steps shape of the DC/OS SDK plan API (seed 000). Applying does not wait
//! for a whole phase: a step starts as soon as its own dependencies are done.
//!
//! Nothing in a plan depends on the time or the run: the same change set gives the same plan,
//! byte for byte, wherever it is made.

use crate::base::diagnostic::{Diagnostic, Location};
use crate::diff::{Action, ChangeSet};
use crate::model::Verb;
use crate::model::{DesiredState, LiveState, ResourceId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub id: String,
    pub name: String,
    pub verb: Verb,
    pub resource: ResourceId,
    /// Indices of the steps this one waits for.
    #[serde(skip)]
    pub deps: Vec<usize>,
    #[serde(skip)]
    pub phase: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub id: String,
    pub name: String,
    /// Indices into [`Plan::steps`].
    #[serde(skip)]
    pub steps: Vec<usize>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub phases: Vec<Phase>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Steps that wait for step `i`.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for &d in &s.deps {
                out[d].push(i);
            }
        }
        out
    }
}

fn stable_id(text: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
    let b = h.to_be_bytes();
    // Shaped like a UUID, as the ids of seed 000's plans are.
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

pub fn build(changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Result<Plan, Diagnostic> {
    let mut steps: Vec<Step> = Vec::new();
    // (resource, verb) → step index
    let mut index: HashMap<(ResourceId, Verb), usize> = HashMap::new();
    let mut add = |id: &ResourceId, verb: Verb, steps: &mut Vec<Step>| {
        let verb_name = match verb {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        };
        let name = format!("{verb_name} {id}");
        index.insert((id.clone(), verb), steps.len());
        steps.push(Step { id: stable_id(&name), name, verb, resource: id.clone(), deps: Vec::new(), phase: 0 });
    };
    for c in &changes.changes {
        match c.action {
            Action::Create => add(&c.id, Verb::Create, &mut steps),
            Action::Update => add(&c.id, Verb::Update, &mut steps),
            Action::Delete => add(&c.id, Verb::Delete, &mut steps),
            Action::Replace => {
                add(&c.id, Verb::Delete, &mut steps);
                add(&c.id, Verb::Create, &mut steps);
            }
            Action::NoOp => {}
        }
    }
    let find = |id: &ResourceId, verb: Verb| index.get(&(id.clone(), verb)).copied();
    let mut edges: Vec<(usize, usize)> = Vec::new(); // (before, after)
    // Orders found only through live state (an Apcera package's staging pipeline; an update
    // before the delete of what it named): capstan infers them, no one wrote them, so one that
    // would close a cycle is left out rather than failing a valid declaration.
    let mut inferred: Vec<(usize, usize)> = Vec::new();
    let exclusive_deletes: HashMap<&str, Vec<usize>> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.verb == Verb::Delete)
        .filter_map(|(i, s)| live.get(&s.resource).and_then(|l| l.exclusive.as_deref()).map(|k| (k, i)))
        .fold(HashMap::new(), |mut m, (k, i)| {
            m.entry(k).or_insert_with(Vec::new).push(i);
            m
        });
    for (i, s) in steps.iter().enumerate() {
        match s.verb {
            Verb::Create | Verb::Update => {
                let d = &desired.resources[&s.resource];
                // An order holds through what does not change: when a referenced resource has
                // no step, this step waits for the steps of what that one references (declared),
                // or of what it depends on (live only: an Apcera package its staging pipeline).
                // (target, reached through a live, undeclared resource)
                let mut stack: Vec<(&ResourceId, bool)> = d.references.iter().map(|r| (&r.target, false)).collect();
                let mut seen: HashSet<(&ResourceId, bool)> = HashSet::new();
                while let Some((target, through_live)) = stack.pop() {
                    if !seen.insert((target, through_live)) {
                        continue;
                    }
                    let mut has_step = false;
                    for v in [Verb::Create, Verb::Update] {
                        if let Some(j) = find(target, v) {
                            if through_live { &mut inferred } else { &mut edges }.push((j, i));
                            has_step = true;
                        }
                    }
                    if has_step {
                        continue;
                    }
                    if let Some(unchanged) = desired.resources.get(target) {
                        stack.extend(unchanged.references.iter().map(|r| (&r.target, through_live)));
                    } else if let Some(live_only) = live.get(target) {
                        stack.extend(live_only.depends_on.iter().map(|t| (t, true)));
                    }
                }
                // An update that stops naming what the plan deletes goes first, so nothing
                // ever names what is gone (a pipeline dropping a pruned stager job).
                if s.verb == Verb::Update
                    && let Some(l) = live.get(&s.resource)
                {
                    inferred.extend(l.depends_on.iter().filter_map(|dep| find(dep, Verb::Delete)).map(|j| (i, j)));
                }
                if s.verb == Verb::Create {
                    if let Some(j) = find(&s.resource, Verb::Delete) {
                        edges.push((j, i));
                    }
                    if let Some(key) = d.exclusive.as_deref() {
                        for &j in exclusive_deletes.get(key).into_iter().flatten() {
                            edges.push((j, i));
                        }
                    }
                }
            }
            Verb::Delete => {
                if let Some(l) = live.get(&s.resource) {
                    for dep in &l.depends_on {
                        if let Some(j) = find(dep, Verb::Delete) {
                            edges.push((i, j));
                        }
                    }
                }
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    inferred.sort_unstable();
    inferred.dedup();
    inferred.retain(|e| e.0 != e.1 && edges.binary_search(e).is_err());
    for &(before, after) in &edges {
        if before != after {
            steps[after].deps.push(before);
        }
    }
    // The declared orders alone must hold; a cycle among them is the declarations' own.
    let mut levels = levels_of(&steps).map_err(|cycle| cycle_error(&cycle, &steps, desired))?;
    if !inferred.is_empty() {
        let declared: Vec<Vec<usize>> = steps.iter().map(|s| s.deps.clone()).collect();
        for &(before, after) in &inferred {
            steps[after].deps.push(before);
        }
        if levels_of(&steps).is_err() {
            // Added one by one, each only where `before` does not already wait for `after`.
            for (s, deps) in steps.iter_mut().zip(declared) {
                s.deps = deps;
            }
            for &(before, after) in &inferred {
                if !waits_for(&steps, before, after) {
                    steps[after].deps.push(before);
                }
            }
        }
        for s in &mut steps {
            s.deps.sort_unstable();
        }
        levels = levels_of(&steps).map_err(|cycle| cycle_error(&cycle, &steps, desired))?;
    }
    for (s, l) in steps.iter_mut().zip(&levels) {
        s.phase = *l;
    }
    let mut by_level: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, l) in levels.iter().enumerate() {
        by_level.entry(*l).or_default().push(i);
    }
    let phases = by_level
        .into_values()
        .enumerate()
        .map(|(n, members)| {
            let name = format!("phase-{}: {}", n + 1, summarize(&steps, &members));
            let id = stable_id(&members.iter().map(|&i| steps[i].id.as_str()).collect::<Vec<_>>().join(","));
            Phase { id, name, steps: members }
        })
        .collect();
    Ok(Plan { steps, phases })
}

/// Whether step `from` waits for step `to`, directly or through others.
fn waits_for(steps: &[Step], from: usize, to: usize) -> bool {
    let mut stack = vec![from];
    let mut seen = vec![false; steps.len()];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(steps[i].deps.iter().copied());
        }
    }
    false
}

/// Each step's level: 0 for steps with no dependencies, else one more than the highest
/// dependency. Err with the steps of a cycle.
fn levels_of(steps: &[Step]) -> Result<Vec<usize>, Vec<usize>> {
    let n = steps.len();
    let mut indegree: Vec<usize> = steps.iter().map(|s| s.deps.len()).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in steps.iter().enumerate() {
        for &d in &s.deps {
            dependents[d].push(i);
        }
    }
    let mut level = vec![0usize; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = queue.pop() {
        done += 1;
        for &j in &dependents[i] {
            level[j] = level[j].max(level[i] + 1);
            indegree[j] -= 1;
            if indegree[j] == 0 {
                queue.push(j);
            }
        }
    }
    if done == n { Ok(level) } else { Err((0..n).filter(|&i| indegree[i] > 0).collect()) }
}

fn cycle_error(cycle: &[usize], steps: &[Step], desired: &DesiredState) -> Diagnostic {
    let names: Vec<&str> = cycle.iter().map(|&i| steps[i].name.as_str()).collect();
    let at: Option<Location> =
        cycle.iter().find_map(|&i| desired.resources.get(&steps[i].resource).map(|d| d.origin.clone()));
    Diagnostic::error(at, format!("the declarations depend on each other in a cycle: {}", names.join(", ")))
}

fn summarize(steps: &[Step], members: &[usize]) -> String {
    let mut counts: BTreeMap<(Verb, &str), usize> = BTreeMap::new();
    for &i in members {
        *counts.entry((steps[i].verb, steps[i].resource.kind.as_str())).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((verb, kind), n)| {
            let verb = match verb {
                Verb::Create => "create",
                Verb::Update => "update",
                Verb::Delete => "delete",
            };
            format!("{verb} {n} {kind}{}", if n == 1 { "" } else { "s" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::ResourceChange;
    use crate::model::{DesiredResource, Reference};

    fn declared(name: &str, refs: &[&str]) -> DesiredResource {
        let at = Location::new("m.yaml", 1, 1);
        DesiredResource {
            id: ResourceId::new("app", name),
            spec: serde_json::Value::Null,
            origin: at.clone(),
            references: refs.iter().map(|r| Reference { target: ResourceId::new("app", *r), at: at.clone() }).collect(),
            exclusive: None,
        }
    }

    fn change(name: &str, action: Action) -> ResourceChange {
        ResourceChange {
            id: ResourceId::new("app", name),
            action,
            origin: None,
            before: None,
            after: None,
            changes: Vec::new(),
            reason: None,
        }
    }

    #[test]
    fn an_order_holds_through_a_resource_that_does_not_change() {
        let mut desired = DesiredState::default();
        for d in [declared("a", &["b"]), declared("b", &["c"]), declared("c", &[])] {
            desired.resources.insert(d.id.clone(), d);
        }
        let changes = ChangeSet {
            changes: vec![change("a", Action::Update), change("b", Action::NoOp), change("c", Action::Update)],
            ..ChangeSet::default()
        };
        let plan = build(&changes, &desired, &LiveState::default()).unwrap();
        let step = |n: &str| plan.steps.iter().position(|s| s.resource.name == n).unwrap();
        assert_eq!(plan.steps.len(), 2);
        assert_eq!(plan.steps[step("a")].deps, vec![step("c")]);
        assert_eq!(plan.phases.len(), 2);
    }

    #[test]
    fn an_order_inferred_through_live_resources_never_closes_a_cycle() {
        // s1 uses k2 (staged by p2), s2 uses k1 (staged by p1); each pipeline's stager is
        // declared (p1 after s1, p2 after s2): the inferred orders would close a cycle.
        let mut desired = DesiredState::default();
        for d in [declared("s1", &["k2"]), declared("s2", &["k1"]), declared("p1", &["s1"]), declared("p2", &["s2"])] {
            desired.resources.insert(d.id.clone(), d);
        }
        let mut live = LiveState::default();
        for (k, p) in [("k1", "p1"), ("k2", "p2")] {
            live.insert(crate::model::LiveResource {
                id: ResourceId::new("app", k),
                spec: serde_json::Value::Null,
                owned: false,
                owner: None,
                parent: None,
                depends_on: vec![ResourceId::new("app", p)],
                exclusive: None,
                removes: Vec::new(),
                keep: None,
            });
        }
        let changes = ChangeSet {
            changes: ["s1", "s2", "p1", "p2"].into_iter().map(|n| change(n, Action::Create)).collect(),
            ..ChangeSet::default()
        };
        let plan = build(&changes, &desired, &live).unwrap();
        let step = |n: &str| plan.steps.iter().position(|s| s.resource.name == n).unwrap();
        assert!(plan.steps[step("p1")].deps.contains(&step("s1")), "declared orders hold");
        assert!(plan.steps[step("p2")].deps.contains(&step("s2")), "declared orders hold");
        let inferred = [(step("p2"), step("s1")), (step("p1"), step("s2"))];
        let kept = inferred.iter().filter(|(b, a)| plan.steps[*a].deps.contains(b)).count();
        assert_eq!(kept, 1, "one inferred order kept, the one closing the cycle left out");
    }

    #[test]
    fn an_order_holds_through_a_live_resource_that_is_not_declared() {
        let mut desired = DesiredState::default();
        for d in [declared("job", &["package"]), declared("pipeline", &[])] {
            desired.resources.insert(d.id.clone(), d);
        }
        let mut live = LiveState::default();
        live.insert(crate::model::LiveResource {
            id: ResourceId::new("app", "package"),
            spec: serde_json::Value::Null,
            owned: false,
            owner: None,
            parent: None,
            depends_on: vec![ResourceId::new("app", "pipeline")],
            exclusive: None,
            removes: Vec::new(),
            keep: None,
        });
        let changes = ChangeSet {
            changes: vec![change("job", Action::Create), change("pipeline", Action::Create)],
            ..ChangeSet::default()
        };
        let plan = build(&changes, &desired, &live).unwrap();
        let step = |n: &str| plan.steps.iter().position(|s| s.resource.name == n).unwrap();
        assert_eq!(plan.steps[step("job")].deps, vec![step("pipeline")]);
    }
}
