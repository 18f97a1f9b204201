//! Incremental plans (issue 18): a commit planned against the last state the platform was made
//! equal to (a [`Baseline`]), reading again only what the commit changes.
//!
//! What a commit changes is found by content: the digest of every declaration (its identity,
//! spec, references and exclusive key; not its place) against the baseline's. The scope is the
//! declarations that differ or are new and those the commit removed; the platform reads those,
//! and what they reference, by its cheapest call ([`crate::apply::Drive::observe_only`]), and
//! lists every other kind as a full plan does. The plan is then exactly a full plan's for
//! every resource whose live state was read (the same diff, `diff::diff_within`), with every
//! other declaration up to date as the baseline found it, and the baseline's orphans and kept
//! resources where nothing was read. The reference and ownership checks see the whole desired
//! state, each against what was read. Whatever the scoped plan cannot answer as a full plan
//! would is planned in full instead: a deletion or replacement (what depends on it may not have
//! been read), an orphan or kept resource the baseline did not have (its place in the list), a
//! problem found, a scope of more than [`MAX_SCOPE`] resources, a platform that reads only
//! whole lists, other inputs (capstan.yaml, variables, flags). What changed on the platform
//! outside the scope is found by the daemon's periodic full reconcile, as drift.

use super::*;
use crate::diff::{Action, Kept, ResourceChange};
use crate::model::{DesiredState, ResourceId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The most resources an incremental plan reads one by one; beyond, a full plan is cheaper.
pub const MAX_SCOPE: usize = 64;

/// What the platform was last made equal to: a commit whose plan was applied and read back, or
/// found with nothing to do.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// What it was planned with: capstan.yaml's text, the render options and the flags.
    pub inputs: u128,
    /// Each declaration's digest ([`digest`]).
    pub digests: HashMap<ResourceId, u128>,
    /// The plan's orphans and kept resources, in its order.
    pub orphans: Vec<ResourceId>,
    pub kept: Vec<Kept>,
}

/// A plan, and what it makes the next baseline of once applied.
pub struct Since {
    pub planned: Planned,
    pub baseline: Baseline,
    /// How many resources the plan read again, when it was incremental.
    pub scope: Option<usize>,
}

/// Plan a commit: against `baseline` when it has one that the commit's inputs match, reading
/// only what the commit changed; else (or when that cannot answer as a full plan) in full.
pub async fn plan_since(
    provider: &dyn Provider,
    snapshot: &Snapshot,
    config: &Config,
    opts: &RenderOptions,
    flags: PlanFlags,
    cache: Option<&RenderCache>,
    baseline: Option<&Baseline>,
) -> Result<Since, PlanError> {
    let t = Instant::now();
    let rendered = render(snapshot, config, opts, provider, cache)?;
    let rendered_in = t.elapsed();
    let inputs = inputs_digest(snapshot, opts, flags);
    let t = Instant::now();
    let digests = digests(&rendered.desired);
    tracing::info!(digest_ms = t.elapsed().as_secs_f64() * 1e3, "declarations digested");
    let mut rendered = rendered;
    if let Some(base) = baseline.filter(|b| b.inputs == inputs) {
        let changed = changed(base, &digests);
        if changed.len() <= MAX_SCOPE {
            let n = changed.len();
            match scoped(provider, rendered, flags, base, changed, snapshot.files.len(), rendered_in).await? {
                Ok(planned) => {
                    let baseline = next(inputs, digests, &planned);
                    return Ok(Since { planned, baseline, scope: Some(n) });
                }
                Err((back, why)) => {
                    tracing::info!("planning in full: {why}");
                    rendered = back;
                }
            }
        }
    }
    let planned = plan_rendered(provider, rendered, flags, snapshot.files.len(), rendered_in).await?;
    let baseline = next(inputs, digests, &planned);
    Ok(Since { planned, baseline, scope: None })
}

fn next(inputs: u128, digests: HashMap<ResourceId, u128>, planned: &Planned) -> Baseline {
    let (orphans, kept) = (planned.changes.orphans.clone(), planned.changes.kept.clone());
    Baseline { inputs, digests, orphans, kept }
}

/// What a plan is made with besides the declarations: capstan.yaml, the options, the flags.
fn inputs_digest(snapshot: &Snapshot, opts: &RenderOptions, flags: PlanFlags) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(snapshot.config.as_ref().map_or("\u{1}", |f| &*f.text).as_bytes());
    h.update(format!("\0{opts:?}\0{flags:?}").as_bytes());
    h.digest128()
}

/// Every declaration's digest ([`digest`]).
fn digests(desired: &DesiredState) -> HashMap<ResourceId, u128> {
    let mut buf = Vec::new();
    desired.resources.values().map(|d| (d.id.clone(), digest(d, &mut buf))).collect()
}

/// A declaration's content, its place aside: identity, spec, references, exclusive key. `buf`
/// is room to write the spec's JSON in, hashed at once (many small updates cost more).
pub fn digest(d: &crate::model::DesiredResource, buf: &mut Vec<u8>) -> u128 {
    buf.clear();
    for s in [&d.id.kind, &d.id.name] {
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
    }
    let _ = serde_json::to_writer(&mut *buf, &d.spec);
    for r in &d.references {
        buf.push(1);
        buf.extend_from_slice(r.target.kind.as_bytes());
        buf.push(0);
        buf.extend_from_slice(r.target.name.as_bytes());
    }
    buf.push(2);
    buf.extend_from_slice(d.exclusive.as_deref().unwrap_or("\u{1}").as_bytes());
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// Declarations new or different since the baseline, and those it had that are gone.
fn changed(base: &Baseline, digests: &HashMap<ResourceId, u128>) -> Vec<ResourceId> {
    let mut out: Vec<ResourceId> =
        digests.iter().filter(|(id, d)| base.digests.get(*id) != Some(*d)).map(|(id, _)| id.clone()).collect();
    out.extend(base.digests.keys().filter(|id| !digests.contains_key(*id)).cloned());
    out.sort();
    out
}

/// The incremental plan of `scope`, or `rendered` back with why it must be planned in full.
async fn scoped(
    provider: &dyn Provider,
    mut rendered: Rendered,
    flags: PlanFlags,
    base: &Baseline,
    scope: Vec<ResourceId>,
    files: usize,
    rendered_in: Duration,
) -> Result<Result<Planned, (Rendered, String)>, PlanError> {
    let desired = &rendered.desired;
    // What the scope's declarations reference is read too, so their references are checked
    // as a full plan checks them.
    let mut only: Vec<ResourceId> = scope.clone();
    for id in &scope {
        only.extend(desired.resources.get(id).into_iter().flat_map(|d| d.references.iter().map(|r| r.target.clone())));
    }
    only.sort();
    only.dedup();
    let kinds = kinds_to_observe(provider, &rendered, flags.prune);
    let t = Instant::now();
    let read = provider.observe_only(&kinds, desired, &only).await;
    let read = match read {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Err((rendered, "the platform reads whole lists only".into()))),
        Err(e) => return Err(PlanError::Observe(rendered.redactor.redact(&e.to_string()))),
    };
    let observed_in = t.elapsed();
    if let Some(id) = scope.iter().find(|id| !read.covers(id)) {
        let why = format!("{id} was not read");
        return Ok(Err((rendered, why)));
    }
    let t = Instant::now();
    let covers = |id: &ResourceId| read.covers(id);
    let live = &read.live;
    let mut problems = diff::check_references_within(desired, live, &covers);
    if !flags.take_ownership {
        problems.extend(diff::check_owners_within(provider, desired, live, &covers).0);
    }
    if problems.has_errors() {
        return Ok(Err((rendered, "the commit has problems: a full plan reports them all".into())));
    }
    let fresh = diff::diff_within(provider, desired, live, flags.prune, &covers);
    if fresh.changes.iter().any(|c| matches!(c.action, Action::Delete | Action::Replace)) {
        return Ok(Err((rendered, "it deletes or replaces: what depends on that may not have been read".into())));
    }
    let known = |o: &ResourceId| base.orphans.contains(o);
    if !fresh.orphans.iter().all(known) || !fresh.kept.iter().all(|k| base.kept.contains(k)) {
        return Ok(Err((rendered, "an orphan or kept resource the baseline did not have".into())));
    }
    let changes = whole(provider, desired, fresh, base, &covers);
    let mut problems = diff::check_deletions(provider, desired, live, &changes);
    problems.extend(diff::check_exclusive(desired, live, &changes).0);
    if problems.has_errors() {
        return Ok(Err((rendered, "the commit has problems: a full plan reports them all".into())));
    }
    // Secrets the platform holds (an old password about to be replaced) are masked as well.
    for l in live.resources.values() {
        rendered.redactor.learn(&l.spec);
    }
    let read_count = read.covered.len();
    let planned = planned(provider, rendered, read.live, changes, flags).await?;
    tracing::info!(
        files,
        desired = planned.rendered.desired.resources.len(),
        scope = scope.len(),
        read = read_count,
        steps = planned.plan.steps.len(),
        render_ms = rendered_in.as_secs_f64() * 1e3,
        observe_ms = observed_in.as_secs_f64() * 1e3,
        diff_and_plan_ms = t.elapsed().as_secs_f64() * 1e3,
        "planned incrementally"
    );
    Ok(Ok(planned))
}

/// The change set a full plan makes, from the scope's: every declaration not read is up to
/// date as the baseline found it; the baseline's orphans and kept resources stand where
/// nothing was read. In the order [`diff::diff`] gives.
fn whole(
    provider: &dyn Provider,
    desired: &DesiredState,
    fresh: ChangeSet,
    base: &Baseline,
    covers: &dyn Fn(&ResourceId) -> bool,
) -> ChangeSet {
    let ChangeSet { mut changes, orphans, kept } = fresh;
    let orphans_read: HashSet<&ResourceId> = orphans.iter().collect();
    let orphans = base.orphans.iter().filter(|o| !covers(o) || orphans_read.contains(o)).cloned().collect();
    let mut all_kept: Vec<Kept> = base.kept.iter().filter(|k| !covers(&k.id)).cloned().collect();
    all_kept.extend(kept);
    for d in desired.resources.values().filter(|d| !covers(&d.id)) {
        if provider.kind_info(&d.id.kind).managed {
            changes.push(ResourceChange {
                id: d.id.clone(),
                action: Action::NoOp,
                origin: Some(d.origin.clone()),
                before: None,
                after: None,
                changes: Vec::new(),
                reason: None,
            });
        }
    }
    let order = |id: &ResourceId| provider.kinds().iter().position(|(k, _)| *k == id.kind).unwrap_or(usize::MAX);
    changes.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    all_kept.sort_by(|a, b| (order(&a.id), &a.id).cmp(&(order(&b.id), &b.id)));
    ChangeSet { changes, orphans, kept: all_kept }
}
