//! The pipeline end to end: render, observe, diff, plan (the target is chosen in
//! [`crate::target`]). Every mode (the one-shot commands and the daemon) goes through these
//! functions, so a plan is made the same way wherever it is made.

use crate::base::diagnostic::{Diagnostics, InvalidInput};
use crate::config::Config;
use crate::diff::{self, ChangeSet};
use crate::model::CheckReport;
use crate::model::LiveState;
use crate::plan::{self, Plan};
use crate::providers::{PlatformPreview, Provider};
use crate::render::{self, RenderCache, RenderOptions, Rendered};
use crate::source::Snapshot;
use std::collections::BTreeSet;
use std::time::Instant;

mod scoped;
pub use scoped::{Baseline, MAX_SCOPE, Since, plan_since};

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Masked where it entered: the API's answer may echo a declared secret.
    #[error("cannot read the live state: {0}")]
    Observe(crate::redact::Redacted),
}

/// What a plan may do beyond bringing declared resources to their declaration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanFlags {
    /// Delete resources this owner marks that are no longer declared.
    pub prune: bool,
    /// Take over declared resources that another owner marks (rewriting the mark).
    pub take_ownership: bool,
}

/// Everything known once a plan is made.
pub struct Planned {
    pub rendered: Rendered,
    pub live: LiveState,
    pub changes: ChangeSet,
    pub plan: Plan,
    /// The platform's own preview of the same changes, where it has one and there are changes.
    pub preview: Option<PlatformPreview>,
    /// The platform's pre-apply checks of the same changes, where it has any.
    pub checks: Option<CheckReport>,
    /// What the plan was made with, so it can be made again the same way ([`verify`]).
    pub flags: PlanFlags,
}

pub fn render(
    snapshot: &Snapshot,
    config: &Config,
    opts: &RenderOptions,
    provider: &dyn Provider,
    cache: Option<&RenderCache>,
) -> Result<Rendered, InvalidInput> {
    render::render(snapshot, config, opts, provider, cache)
}

/// The kinds a plan must observe: those declared, those referenced, and when pruning every
/// kind capstan manages.
pub fn kinds_to_observe(provider: &dyn Provider, rendered: &Rendered, prune: bool) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for r in rendered.desired.resources.values() {
        kinds.insert(r.id.kind.clone());
        kinds.extend(r.references.iter().map(|x| x.target.kind.clone()));
    }
    if prune {
        kinds.extend(provider.kinds().iter().filter(|(_, i)| i.managed).map(|(k, _)| k.to_string()));
    }
    kinds
}

pub async fn plan(
    provider: &dyn Provider,
    snapshot: &Snapshot,
    config: &Config,
    opts: &RenderOptions,
    flags: PlanFlags,
    cache: Option<&RenderCache>,
) -> Result<Planned, PlanError> {
    let t = Instant::now();
    let rendered = render(snapshot, config, opts, provider, cache)?;
    plan_rendered(provider, rendered, flags, snapshot.files.len(), t.elapsed()).await
}

/// [`plan`] from what is already rendered: observe every kind it needs, diff, plan.
pub async fn plan_rendered(
    provider: &dyn Provider,
    rendered: Rendered,
    flags: PlanFlags,
    files: usize,
    rendered_in: std::time::Duration,
) -> Result<Planned, PlanError> {
    let prune = flags.prune;
    let kinds = kinds_to_observe(provider, &rendered, prune);
    let t = Instant::now();
    let live = if kinds.is_empty() {
        LiveState::default()
    } else {
        provider
            .observe(&kinds, &rendered.desired)
            .await
            .map_err(|e| PlanError::Observe(rendered.redactor.redact(&e.to_string())))?
    };
    let observed_in = t.elapsed();
    // Secrets the platform holds (an old password about to be replaced) are masked as well.
    let mut rendered = rendered;
    for l in live.resources.values() {
        rendered.redactor.learn(&l.spec);
    }
    let t = Instant::now();
    let mut problems = diff::check_references(&rendered.desired, &live);
    if !flags.take_ownership {
        problems.extend(diff::check_owners(provider, &rendered.desired, &live).0);
    }
    if problems.has_errors() {
        return Err(InvalidInput(problems).into());
    }
    let changes = diff::diff(provider, &rendered.desired, &live, prune);
    let mut problems = diff::check_deletions(provider, &rendered.desired, &live, &changes);
    problems.extend(diff::check_exclusive(&rendered.desired, &live, &changes).0);
    if problems.has_errors() {
        return Err(InvalidInput(problems).into());
    }
    let planned = planned(provider, rendered, live, changes, flags).await?;
    tracing::info!(
        files,
        desired = planned.rendered.desired.resources.len(),
        live = planned.live.resources.len(),
        steps = planned.plan.steps.len(),
        render_ms = rendered_in.as_secs_f64() * 1e3,
        observe_ms = observed_in.as_secs_f64() * 1e3,
        diff_and_plan_ms = t.elapsed().as_secs_f64() * 1e3,
        "planned"
    );
    Ok(planned)
}

/// A checked change set made a plan, full or incremental alike: the old secrets it shows
/// masked, its steps, the platform's preview and checks.
async fn planned(
    provider: &dyn Provider,
    mut rendered: Rendered,
    live: LiveState,
    changes: ChangeSet,
    flags: PlanFlags,
) -> Result<Planned, PlanError> {
    // A field a secret variable fills holds the old secret on the live side: masked too.
    rendered.redactor.learn_changes(&changes);
    let plan = plan::build(&changes, &rendered.desired, &live)
        .map_err(|d| PlanError::Invalid(InvalidInput(Diagnostics(vec![d]))))?;
    let preview = if plan.is_empty() { None } else { provider.preview(&changes, &rendered.desired, &live).await };
    let checks = provider.checks(&changes, &rendered.desired, &live).await;
    Ok(Planned { rendered, live, changes, plan, preview, checks, flags })
}

/// After an apply whose every step reported success: observe again and plan what it touched.
/// That must be empty; what is left is a step that said done and was not (an answer taken for
/// "already there" that was not, a platform that accepts and drops a change), and the apply
/// fails naming it rather than claiming to have converged. `capstan apply` and the daemon both
/// end with this.
pub async fn verify(provider: &dyn Provider, planned: &Planned) -> Result<(), String> {
    let touched: std::collections::HashSet<&crate::model::ResourceId> =
        planned.plan.steps.iter().map(|s| &s.resource).collect();
    if touched.is_empty() {
        return Ok(());
    }
    let kinds = kinds_to_observe(provider, &planned.rendered, planned.flags.prune);
    let desired = &planned.rendered.desired;
    let failed = |e: crate::http::ApiError| format!("cannot read the platform back after applying: {e}");
    // What was touched is read again, by the platform's cheapest call for a few resources.
    let ids: Vec<crate::model::ResourceId> = touched.iter().map(|id| (*id).clone()).collect();
    let scoped = match ids.len() <= scoped::MAX_SCOPE {
        true => provider.observe_only(&kinds, desired, &ids).await.map_err(failed)?,
        false => None,
    };
    let again = match &scoped {
        Some(s) => diff::diff_within(provider, desired, &s.live, planned.flags.prune, &|id| s.covers(id)),
        None => {
            let live = provider.observe(&kinds, desired).await.map_err(failed)?;
            diff::diff(provider, desired, &live, planned.flags.prune)
        }
    };
    let left: Vec<String> = again
        .changes
        .iter()
        .filter(|c| c.action != diff::Action::NoOp && touched.contains(&c.id))
        .map(|c| {
            let verb = match c.action {
                diff::Action::Create => "create",
                diff::Action::Update => "update",
                diff::Action::Replace => "replace",
                _ => "delete",
            };
            let fields: Vec<&str> =
                c.changes.iter().map(|f| f.path.as_str()).filter(|p| *p != "(whole)").take(5).collect();
            let fields = if fields.is_empty() { String::new() } else { format!(" ({})", fields.join(", ")) };
            format!("{verb} {}{fields}", c.id)
        })
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    Err(format!("every step reported success, but reading the platform back there is still to {}", left.join("; ")))
}

/// The checks guard: Err with the reason when one of the platform's pre-apply checks fails
/// after the plan (or they could not be run).
pub fn check_checks(planned: &Planned) -> Result<(), String> {
    match planned.checks.as_ref().and_then(|p| p.failure()) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The mass-delete guard: Err with the reason when a plan deletes too much. A deletion counts
/// everything it removes (a Marathon group and every app and group under it), as a share of
/// the resources this owner manages.
pub fn check_mass_delete(planned: &Planned, limits: &crate::config::MassDelete) -> Result<(), String> {
    let removed: usize = planned
        .changes
        .changes
        .iter()
        .filter(|c| c.action == crate::diff::Action::Delete)
        .map(|c| 1 + planned.live.get(&c.id).map_or(0, |l| l.removes.len()))
        .sum();
    if removed == 0 {
        return Ok(());
    }
    let managed = planned.live.resources.values().filter(|l| l.owned).count().max(removed);
    let percent = removed as f64 * 100.0 / managed as f64;
    if removed > limits.max_deletes || percent > limits.max_percent {
        let empty = if planned.rendered.desired.resources.is_empty() { " (nothing is declared at all)" } else { "" };
        return Err(format!(
            "refusing to delete {removed} of the {managed} resources this owner manages ({percent:.0}%){empty}: the limits are {} resources or {}% (mass_delete in capstan.yaml); pass --allow-mass-delete if this is intended",
            limits.max_deletes, limits.max_percent
        ));
    }
    Ok(())
}
