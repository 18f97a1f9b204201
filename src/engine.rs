//! The pipeline end to end: choose the target, render, observe, diff, plan. Every mode (the
//! one-shot commands and the daemon) goes through these functions, so a plan is made the same
//! way wherever it is made.

use crate::config::{Config, Target};
use crate::diagnostic::{Diagnostics, InvalidInput};
use crate::diff::{self, ChangeSet};
use crate::model::LiveState;
use crate::plan::{self, Plan};
use crate::providers::{self, ApiError, Connection, PlatformPreview, Provider};
use crate::render::{self, RenderCache, RenderOptions, Rendered};
use crate::sandbox::{Platform, Sandbox, SandboxOptions};
use crate::source::Snapshot;
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where changes go: a configured target, or the embedded sandbox.
pub struct Connected {
    pub provider: Box<dyn Provider>,
    /// What to call the target in messages.
    pub description: String,
    /// What identifies the target for locking and journalling: its normalised URL and
    /// addresses, or the embedded sandbox's state file.
    pub key: crate::lock::TargetKey,
    /// The embedded sandbox, kept running for as long as the target is used.
    pub embedded: Option<Sandbox>,
}

impl Connected {
    /// Stop the embedded sandbox (writing its state) if there is one.
    pub async fn close(self) -> anyhow::Result<()> {
        let Connected { provider, embedded, .. } = self;
        // The provider's own connections (an event stream) end first, so the sandbox does not
        // wait for them to finish.
        drop(provider);
        if let Some(s) = embedded {
            tokio::task::yield_now().await;
            s.shutdown().await?;
        }
        Ok(())
    }
}

/// The platform the manifests are written for.
pub fn platform_of(config: &Config, target: Option<&str>) -> anyhow::Result<String> {
    Ok(match resolve_target(config, target)? {
        Some((_, t)) => t.platform.clone(),
        None => config.platform.clone().unwrap_or_else(|| "apcera".to_string()),
    })
}

fn resolve_target<'a>(config: &'a Config, name: Option<&str>) -> anyhow::Result<Option<(String, &'a Target)>> {
    let name = name.map(str::to_string).or_else(|| config.default_target.clone());
    let Some(name) = name else { return Ok(None) };
    let t = config.targets.get(&name).with_context(|| {
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        format!(
            "no target named {name:?} in capstan.yaml (known: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )
    })?;
    Ok(Some((name, t)))
}

/// Connect to the named target, the default target, or else the embedded sandbox, whose state
/// lives in `state_dir`. `force` overrides the platform's locks instead of waiting for them.
pub async fn connect(
    config: &Config,
    target: Option<&str>,
    state_dir: &Path,
    force: bool,
) -> anyhow::Result<Connected> {
    let owner = config.owner();
    if let Some((name, t)) = resolve_target(config, target)? {
        let token = match &t.token_env {
            Some(var) => Some(std::env::var(var).map_err(|e| {
                let why = match e {
                    std::env::VarError::NotPresent => "which is not set",
                    std::env::VarError::NotUnicode(_) => "which is not valid Unicode",
                };
                anyhow::anyhow!("target {name:?} reads its token from ${var}, {why}")
            })?),
            None => None,
        };
        let connection = Connection {
            token,
            ca_cert: t.ca_cert.clone(),
            ca_pem: t.ca_pem.clone(),
            auth_url: t.auth_url.clone(),
            timeout: Duration::from_secs(t.timeout.unwrap_or(30)),
            ..connection(config, &t.url, force)
        };
        check_timeouts(config, &t.platform)?;
        let provider = providers::provider_for(&t.platform, Some(connection), owner)?;
        return Ok(Connected {
            provider,
            description: format!("target {name} ({})", crate::redact::url(&t.url)),
            key: crate::lock::TargetKey::for_url(&t.url).await?,
            embedded: None,
        });
    }
    let platform_name = platform_of(config, None)?;
    let platform: Platform = platform_name.parse()?;
    check_timeouts(config, &platform_name)?;
    let dir = state_dir;
    crate::state::create_dir(dir)?;
    let mut opts = SandboxOptions::new(platform);
    let state_file = dir.join(format!("sandbox-{platform_name}.json"));
    // One sandbox, one key, however the state directory was named (a symlink, `..`).
    let real = std::fs::canonicalize(dir).map(|d| d.join(state_file.file_name().unwrap_or_default()));
    let key = crate::lock::TargetKey::named(format!(
        "sandbox:{}",
        real.unwrap_or_else(|_| std::path::absolute(&state_file).unwrap_or(state_file.clone())).display()
    ));
    opts.state_file = Some(state_file);
    let sandbox = Sandbox::start(opts).await.context("cannot start the embedded sandbox")?;
    let provider = providers::provider_for(&platform_name, Some(connection(config, sandbox.url(), force)), owner)?;
    Ok(Connected {
        provider,
        description: format!("the embedded {platform_name} sandbox ({})", sandbox.url()),
        key,
        embedded: Some(sandbox),
    })
}

/// A connection to `url` with capstan.yaml's retries and readiness timeouts.
fn connection(config: &Config, url: &str, force: bool) -> Connection {
    Connection {
        force,
        retry: config.retry.policy(),
        ready_timeouts: config.timeouts.iter().map(|(k, v)| (k.clone(), Duration::from_secs(*v))).collect(),
        ..Connection::new(url)
    }
}

/// `timeouts` may only name kinds the platform's provider waits for, so a typo (or a kind
/// nothing waits for) is not silently ignored.
fn check_timeouts(config: &Config, platform: &str) -> anyhow::Result<()> {
    let provider = providers::provider_for(platform, None, config.owner())?;
    let kinds = provider.timed_kinds();
    for kind in config.timeouts.keys() {
        if !kinds.contains(&kind.as_str()) {
            anyhow::bail!(
                "capstan.yaml: timeouts names {kind:?}, which is not a kind the {platform} provider waits for ({})",
                if kinds.is_empty() {
                    "it has no readiness timeouts".to_string()
                } else {
                    format!("expected {}", kinds.join(", "))
                }
            );
        }
    }
    Ok(())
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("cannot read the live state: {0}")]
    Observe(ApiError),
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
    /// Declared policy checks and the simulation of changed policy, where the platform has one.
    pub policy: Option<crate::providers::PolicyReport>,
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
    let prune = flags.prune;
    let t = Instant::now();
    let rendered = render(snapshot, config, opts, provider, cache)?;
    let rendered_in = t.elapsed();
    let kinds = kinds_to_observe(provider, &rendered, prune);
    let t = Instant::now();
    let live = if kinds.is_empty() {
        LiveState::default()
    } else {
        provider.observe(&kinds, &rendered.desired).await.map_err(PlanError::Observe)?
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
    // A field a secret variable fills holds the old secret on the live side: masked too.
    rendered.redactor.learn_changes(&changes);
    let plan = plan::build(&changes, &rendered.desired, &live)
        .map_err(|d| PlanError::Invalid(InvalidInput(Diagnostics(vec![d]))))?;
    let preview = if plan.is_empty() { None } else { provider.preview(&changes, &rendered.desired, &live).await };
    let policy = provider.policy_checks(&changes, &rendered.desired, &live).await;
    tracing::info!(
        files = snapshot.files.len(),
        desired = rendered.desired.resources.len(),
        live = live.resources.len(),
        steps = plan.steps.len(),
        render_ms = rendered_in.as_secs_f64() * 1e3,
        observe_ms = observed_in.as_secs_f64() * 1e3,
        diff_and_plan_ms = t.elapsed().as_secs_f64() * 1e3,
        "planned"
    );
    Ok(Planned { rendered, live, changes, plan, preview, policy, flags })
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
    let live = provider
        .observe(&kinds, &planned.rendered.desired)
        .await
        .map_err(|e| format!("cannot read the platform back after applying: {e}"))?;
    let again = diff::diff(provider, &planned.rendered.desired, &live, planned.flags.prune);
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

/// The policy guard: Err with the reason when a declared policy check fails after the plan
/// (or could not be run).
pub fn check_policy(planned: &Planned) -> Result<(), String> {
    match planned.policy.as_ref().and_then(|p| p.failure()) {
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
