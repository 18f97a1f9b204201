//! What each command does, on top of the pipeline in `engine`.

use super::output::{self, Style};
use super::{
    Cli, Command, DaemonArgs, InputArgs, PlanAction, PlanFormat, PreviewArgs, RenderFormat, RollbackArgs, SandboxArgs,
    SandboxCommand, TargetArgs, markdown, note, out, outln, shutdown_signal,
};
use crate::apply::{self, ApplyOptions, Observer, Status, StepOutcome};
use crate::base::diagnostic::{Diagnostics, InvalidInput};
use crate::config::Config;
use crate::engine::{self, PlanError};
use crate::plan::Plan;
use crate::providers;
use crate::render::{RenderOptions, Rendered};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::source::git::{GitSource, RepoSpec};
use crate::source::{self, Snapshot};
use anyhow::Context;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use tracing::Level;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;

pub async fn run(cli: Cli) -> u8 {
    let err_style = Style::stderr(cli.color);
    let result = match cli.command {
        Command::Render { input, output } => render(&input, output, cli.color).await,
        Command::Validate { input } => validate(&input, cli.color).await,
        Command::Plan { action: Some(action), .. } => drive_daemon(action, cli.color).await,
        Command::Plan { action: None, input, target, detailed_exitcode, output, preview } => {
            plan(&input, &target, detailed_exitcode, output, &preview, cli.color).await
        }
        Command::Daemon(args) => daemon(args).await,
        Command::Rollback(args) => rollback(args, cli.color).await,
        Command::Apply { input, target, yes, parallelism, allow_mass_delete } => {
            apply(&input, &target, yes, parallelism, allow_mass_delete, cli.color).await
        }
        Command::Sandbox(SandboxCommand::Serve(args)) => serve(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            // Into memory first: the generator panics when its writer fails (a closed pipe).
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "capstan", &mut text);
            out(&String::from_utf8_lossy(&text)).map(|()| EXIT_OK).map_err(Into::into)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .and_then(|()| out(&String::from_utf8_lossy(&text)))
                .map(|()| EXIT_OK)
                .map_err(Into::into)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(InvalidInput(diags)) = e.downcast_ref::<InvalidInput>() {
                print_diagnostics(diags, err_style);
                note(
                    Level::ERROR,
                    &format!("capstan: {} error(s) in the manifests; nothing was applied.", diags.errors().count()),
                );
            } else {
                // Whatever failed, a URL in the message is shown without its credentials.
                note(Level::ERROR, &crate::redact::url(&format!("{}: {e:#}", err_style.red("capstan: error"))));
            }
            EXIT_ERROR
        }
    }
}

/// Said when a repository URL carries credentials (they are used, never shown or stored).
const CREDENTIALS_IN_URL: &str = "warning: the credentials in the repository URL are visible to other users of this machine (ps, shell history); prefer CAPSTAN_GIT_USERNAME/CAPSTAN_GIT_PASSWORD or a git credential helper";

/// The manifests to work on, the configuration that goes with them, and where state lives.
struct Input {
    snapshot: Snapshot,
    config: Config,
    state_dir: PathBuf,
    /// The repository and commit, when reading from git.
    git: Option<GitSource>,
    commit: Option<String>,
}

fn read_input(input: &InputArgs) -> anyhow::Result<Input> {
    let (snapshot, state_dir, git, commit) = match &input.repo {
        Some(location) => {
            let state_dir = input.state_dir.clone().unwrap_or_else(|| PathBuf::from(".capstan"));
            let spec = RepoSpec::new(location, input.git_ref.clone(), input.path.clone());
            if spec.credentials.is_some() {
                note(Level::WARN, CREDENTIALS_IN_URL);
            }
            let git = GitSource::open(spec, &state_dir)?;
            git.fetch()?;
            let commit = git.resolve()?;
            note(Level::INFO, &format!("Using commit {commit} of {}.", git.spec.location));
            (git.snapshot(&commit)?, state_dir, Some(git), Some(commit))
        }
        None => {
            let state_dir = input.state_dir.clone().unwrap_or_else(|| input.dir.join(".capstan"));
            (source::dir::snapshot(&input.dir)?, state_dir, None, None)
        }
    };
    let (mut config, config_path) = match (&input.config, &snapshot.config) {
        (Some(path), _) => (Config::load(path, true)?.0, Some((path.clone(), false))),
        (None, Some(file)) => {
            (Config::parse(&file.path, &file.text).map_err(InvalidInput)?, Some((file.path.clone(), git.is_some())))
        }
        (None, None) => (Config::default(), None),
    };
    // A relative ca_cert is next to capstan.yaml: on disk, or in the commit it came from.
    if let Some((path, from_git)) = config_path {
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        match (from_git, &git, &commit) {
            (true, Some(g), Some(c)) => config.read_ca_certs(dir, g.reader_at(c))?,
            _ => config.read_ca_certs(dir, |p| Ok(std::fs::read(p)?))?,
        }
    }
    Ok(Input { snapshot, config, state_dir, git, commit })
}

fn render_options(input: &InputArgs) -> RenderOptions {
    input.variables.render_options(false)
}

/// Render offline with the platform the configuration names.
fn render_offline(
    args: &InputArgs,
    input: &Input,
    keep_documents: bool,
) -> anyhow::Result<(Rendered, Box<dyn providers::Provider>)> {
    let platform = crate::target::platform_of(&input.config, None)?;
    let provider = providers::provider_for(&platform, None, input.config.owner())?;
    let opts = RenderOptions { keep_documents, ..render_options(args) };
    let rendered = engine::render(&input.snapshot, &input.config, &opts, provider.as_ref(), None)?;
    Ok((rendered, provider))
}

fn print_warnings(warnings: &Diagnostics, color: super::ColorChoice) {
    if !warnings.0.is_empty() {
        print_diagnostics(warnings, Style::stderr(color));
    }
}

/// On stderr: as text, or one JSON line per diagnostic.
fn print_diagnostics(diags: &Diagnostics, style: Style) {
    if !super::json_stderr() {
        return note(Level::INFO, &output::diagnostics_text(diags, style));
    }
    for d in &diags.0 {
        let level = match d.severity {
            crate::base::diagnostic::Severity::Error => Level::ERROR,
            crate::base::diagnostic::Severity::Warning => Level::WARN,
        };
        note(level, &output::diagnostic_text(d, style));
    }
}

async fn render(input: &InputArgs, format: RenderFormat, color: super::ColorChoice) -> anyhow::Result<u8> {
    let (rendered, provider) = render_offline(input, &read_input(input)?, true)?;
    print_warnings(&rendered.warnings, color);
    let merged = rendered.redactor.value(&provider.merge_documents(&rendered.documents));
    let text = match format {
        RenderFormat::Json => serde_json::to_string_pretty(&merged)? + "\n",
        RenderFormat::Yaml => serde_yaml::to_string(&merged)?,
    };
    out(&text)?;
    Ok(EXIT_OK)
}

async fn validate(input: &InputArgs, color: super::ColorChoice) -> anyhow::Result<u8> {
    let read = read_input(input)?;
    let (rendered, provider) = render_offline(input, &read, false)?;
    // References to what is not declared here (a system service, a package) can only be
    // checked against a target: plan and apply do, each with the first place it is written.
    let mut external: std::collections::BTreeMap<String, &crate::model::Reference> = Default::default();
    for x in rendered.desired.resources.values().flat_map(|r| &r.references) {
        if !rendered.desired.resources.contains_key(&x.target) {
            external.entry(x.target.to_string()).or_insert(x);
        }
    }
    // With pruning configured, a reference to an undeclared resource of a kind capstan manages
    // is one plan refuses if this owner made it (it would be deleted while referenced).
    let mut warnings = rendered.warnings.clone();
    if read.config.prune {
        for (name, x) in &external {
            if provider.kind_info(&x.target.kind).managed {
                warnings.push(crate::base::diagnostic::Diagnostic::warning(
                    Some(x.at.clone()),
                    format!(
                        "{name} is not declared here and capstan.yaml prunes: if owner {:?} made it, plan refuses to delete it while this points at it",
                        read.config.owner()
                    ),
                ));
            }
        }
    }
    print_warnings(&warnings, color);
    outln(&format!(
        "{} valid: {} resources in {} documents.",
        input.dir.display(),
        rendered.desired.resources.len(),
        rendered.document_count
    ))?;
    if !external.is_empty() {
        outln(&format!(
            "{} referenced resources are not declared here; plan checks them on the target:",
            external.len()
        ))?;
        for (name, x) in &external {
            outln(&format!("  {name} ({})", x.at))?;
        }
    }
    Ok(EXIT_OK)
}

async fn plan(
    input: &InputArgs,
    target: &TargetArgs,
    detailed: bool,
    format: PlanFormat,
    preview: &PreviewArgs,
    color: super::ColorChoice,
) -> anyhow::Result<u8> {
    let mut input = input.clone();
    if let Some(head) = &preview.head {
        input.git_ref = Some(head.clone());
    }
    let head = read_input(&input)?;
    let declared = match &preview.base {
        Some(base) => Some(declared_change(&input, &head, base)?),
        None => None,
    };
    let template = match &preview.template {
        Some(p) => Some((
            p.as_path(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read the template {}", p.display()))?,
        )),
        None => None,
    };
    if preview.no_live {
        let d = declared.expect("--no-live requires --base");
        return print_declared_only(
            &d,
            format,
            template.as_ref().map(|(p, t)| (*p, t.as_str())),
            preview,
            detailed,
            color,
        );
    }
    let Input { snapshot, config, state_dir, .. } = head;
    let connected = crate::target::connect(&config, target.target.as_deref(), &state_dir, target.force).await?;
    let flags = target.plan_flags(&config);
    let result =
        engine::plan(connected.provider.as_ref(), &snapshot, &config, &render_options(&input), flags, None).await;
    let platform = connected.provider.platform();
    let description = connected.description.clone();
    connected.close().await?;
    let planned = result.map_err(plan_error)?;
    let (changes, warnings, redactor) = (&planned.changes, &planned.rendered.warnings, &planned.rendered.redactor);
    // Built only for the outputs that show it: at ten thousand resources it is not small.
    let json = || {
        let mut json =
            output::plan_json(platform, changes, &planned.plan, warnings, redactor, planned.preview.as_ref());
        if let Some(d) = &declared {
            json["declared_changes"] = d.json(redactor);
        }
        if let Some(p) = &planned.checks {
            json[p.key()] = output::checks_json(p, redactor);
        }
        json
    };
    match format {
        PlanFormat::Json => outln(&serde_json::to_string_pretty(&json())?)?,
        PlanFormat::Markdown => {
            let report = markdown::Report {
                title: preview.title.clone(),
                target: description,
                changes,
                warnings,
                redactor,
                plan_json: json(),
                declared: declared.as_ref().map(|d| d.markdown()),
                live: true,
                max_bytes: preview.max_bytes,
            };
            out(&markdown::render(&report, template.as_ref().map(|(p, t)| (*p, t.as_str())))?)?;
        }
        PlanFormat::Text => {
            note(Level::INFO, &Style::stderr(color).dim(&format!("Planning against {description}.")));
            if let Some(d) = &declared {
                out(&d.text(Style::stdout(color)))?;
            }
            out(&output::plan_text(changes, &planned.plan, warnings, Style::stdout(color), redactor))?;
            if let Some(p) = &planned.preview {
                out(&output::preview_text(p, Style::stdout(color), redactor))?;
            }
            if let Some(p) = &planned.checks {
                out(&output::checks_text(p, Style::stdout(color), redactor))?;
            }
        }
    }
    if !target.allow_check_failures
        && let Err(why) = engine::check_checks(&planned)
    {
        let why = redactor.text(&why);
        note(
            Level::ERROR,
            &format!(
                "{}: {why}; pass --allow-policy-failures if this is intended",
                Style::stderr(color).red("capstan: error")
            ),
        );
        return Ok(EXIT_ERROR);
    }
    Ok(if detailed && changes.has_changes() { EXIT_CHANGES } else { EXIT_OK })
}

/// What a change between two commits does to the declared state.
struct Declared {
    base: String,
    head: String,
    platform: &'static str,
    changes: crate::diff::ChangeSet,
    redactor: crate::redact::Redactor,
    warnings: Diagnostics,
}

impl Declared {
    fn json(&self, redactor: &crate::redact::Redactor) -> serde_json::Value {
        let mut r = redactor.clone();
        r.merge(&self.redactor);
        serde_json::json!({
            "base": self.base,
            "head": self.head,
            "summary": output::summary_json(&self.changes),
            "resource_changes": output::resource_changes_json(&self.changes, &r),
        })
    }

    fn markdown(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .changes
            .changes
            .iter()
            .filter(|c| c.action != crate::diff::Action::NoOp)
            .map(|c| {
                let action = serde_json::to_value(c.action).unwrap_or_default();
                let origin = c.origin.as_ref().map(|o| o.to_string());
                markdown::row(c.action.symbol(), &c.id.to_string(), action.as_str().unwrap_or_default(), origin)
            })
            .collect();
        serde_json::json!({
            "base": self.base,
            "head": self.head,
            "base_short": short(&self.base),
            "head_short": short(&self.head),
            "summary_line": output::summary_line(&self.changes).replacen("Plan:", "Declared:", 1),
            "resources": rows,
        })
    }

    fn text(&self, style: Style) -> String {
        let empty = Plan::default();
        let body = output::plan_text(&self.changes, &empty, &Diagnostics::default(), style, &self.redactor)
            .replacen("Plan:", "Declared:", 1)
            .replacen("No changes. The platform matches the manifests.", "No change to the declared state.", 1)
            .replacen("capstan will perform the following actions:", "", 1);
        format!(
            "{}\n{}\n",
            style.bold(&format!("Changes to the declared state from {} to {}:", short(&self.base), short(&self.head))),
            body.trim_matches('\n')
        )
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Render the base commit too, and compare what the two declare.
fn declared_change(input: &InputArgs, head: &Input, base: &str) -> anyhow::Result<Declared> {
    let git = head.git.as_ref().ok_or_else(|| anyhow::anyhow!("--base needs --repo"))?;
    let base_sha = git.resolve_rev(base)?;
    let base_snapshot = git.snapshot(&base_sha)?;
    let base_config = match &base_snapshot.config {
        Some(f) => Config::parse(&f.path, &f.text).map_err(InvalidInput)?,
        None => Config::default(),
    };
    let platform = crate::target::platform_of(&head.config, None)?;
    let provider = providers::provider_for(&platform, None, head.config.owner())?;
    let opts = render_options(input);
    let base_rendered = engine::render(&base_snapshot, &base_config, &opts, provider.as_ref(), None).map_err(|e| {
        anyhow::anyhow!(
            "the base commit {} does not render:\n{}",
            short(&base_sha),
            output::diagnostics_text(&e.0, Style::new(super::ColorChoice::Never, false))
        )
    })?;
    let head_rendered = engine::render(&head.snapshot, &head.config, &opts, provider.as_ref(), None)?;
    let mut redactor = head_rendered.redactor.clone();
    redactor.merge(&base_rendered.redactor);
    let changes = crate::diff::diff_declared(provider.as_ref(), &base_rendered.desired, &head_rendered.desired);
    redactor.learn_changes(&changes);
    Ok(Declared {
        base: base_sha,
        head: head.commit.clone().unwrap_or_default(),
        platform: provider.platform(),
        changes,
        redactor,
        warnings: head_rendered.warnings,
    })
}

fn print_declared_only(
    d: &Declared,
    format: PlanFormat,
    template: Option<markdown::Template<'_>>,
    preview: &PreviewArgs,
    detailed: bool,
    color: super::ColorChoice,
) -> anyhow::Result<u8> {
    match format {
        PlanFormat::Json => {
            let v = serde_json::json!({
                "format_version": output::PLAN_FORMAT_VERSION,
                "platform": d.platform,
                "declared_changes": d.json(&d.redactor),
            });
            outln(&serde_json::to_string_pretty(&v)?)?;
        }
        PlanFormat::Markdown => {
            let report = markdown::Report {
                title: preview.title.clone(),
                target: format!("the declared state at {}", short(&d.head)),
                changes: &d.changes,
                warnings: &d.warnings,
                redactor: &d.redactor,
                plan_json: d.json(&d.redactor),
                declared: Some(d.markdown()),
                live: false,
                max_bytes: preview.max_bytes,
            };
            out(&markdown::render(&report, template)?)?;
        }
        PlanFormat::Text => out(&d.text(Style::stdout(color)))?,
    }
    Ok(if detailed && d.changes.has_changes() { EXIT_CHANGES } else { EXIT_OK })
}

fn plan_error(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::Invalid(i) => i.into(),
        other => anyhow::anyhow!(other),
    }
}

/// Shows apply's progress: on a terminal a bar (steps done of total, what is running, time
/// elapsed) with finished steps printed above it; otherwise one plain line per step.
struct Progress<'a> {
    style: Style,
    redactor: &'a crate::redact::Redactor,
    desired: &'a crate::model::DesiredState,
    bar: Option<indicatif::ProgressBar>,
    running: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl<'a> Progress<'a> {
    fn new(
        plan: &Plan,
        style: Style,
        redactor: &'a crate::redact::Redactor,
        desired: &'a crate::model::DesiredState,
    ) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(plan.steps.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {wide_msg}",
                )
                .expect("a valid progress template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        Progress { style, redactor, desired, bar, running: Default::default() }
    }

    fn show_running(&self) {
        if let Some(bar) = &self.bar {
            let running = self.running.lock().unwrap();
            let mut names: Vec<&str> = running.iter().map(String::as_str).take(2).collect();
            if running.len() > 2 {
                names.push("…");
            }
            bar.set_message(names.join(", "));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress<'_> {
    fn step_started(&self, plan: &Plan, step: usize) {
        self.running.lock().unwrap().insert(plan.steps[step].name.clone());
        self.show_running();
    }

    fn step_finished(&self, plan: &Plan, step: usize, outcome: &StepOutcome) {
        let name = &plan.steps[step].name;
        self.running.lock().unwrap().remove(name);
        let ms = outcome.duration.as_millis();
        let line = match outcome.status {
            Status::Complete => format!("  {} {name} ({ms} ms)", self.style.green("done ")),
            _ => format!(
                "  {} {}: {}",
                self.style.red("ERROR"),
                output::step_label(plan, step, self.desired),
                self.redactor.text(&outcome.message)
            ),
        };
        match &self.bar {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
                self.show_running();
            }
            None => {
                let _ = outln(&line);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    input: &InputArgs,
    target: &TargetArgs,
    yes: bool,
    parallelism: usize,
    allow_mass_delete: bool,
    color: super::ColorChoice,
) -> anyhow::Result<u8> {
    let Input { snapshot, config, state_dir, .. } = read_input(input)?;
    let connected = crate::target::connect(&config, target.target.as_deref(), &state_dir, target.force).await?;
    let style = Style::stdout(color);
    let code = async {
        // One apply per target: a second fails at once, naming the holder.
        let _lock = crate::lock::TargetLock::acquire(&connected.key)?;
        for earlier in crate::journal::Journal::take_unfinished(&state_dir, &connected.key)? {
            note(Level::WARN, &Style::stderr(color).yellow(&format!("Resuming: {}.", earlier.describe())));
        }
        let flags = target.plan_flags(&config);
        let planned =
            engine::plan(connected.provider.as_ref(), &snapshot, &config, &render_options(input), flags, None)
                .await
                .map_err(plan_error)?;
        note(Level::INFO, &Style::stderr(color).dim(&format!("Applying to {}.", connected.description)));
        let redactor = &planned.rendered.redactor;
        out(&output::plan_text(&planned.changes, &planned.plan, &planned.rendered.warnings, style, redactor))?;
        if let Some(p) = &planned.preview {
            out(&output::preview_text(p, style, redactor))?;
        }
        if let Some(p) = &planned.checks {
            out(&output::checks_text(p, style, redactor))?;
        }
        if !target.allow_check_failures
            && let Err(why) = engine::check_checks(&planned)
        {
            anyhow::bail!("{}; pass --allow-policy-failures if this is intended", redactor.text(&why));
        }
        if planned.plan.is_empty() {
            return Ok(EXIT_OK);
        }
        if !allow_mass_delete && let Err(why) = engine::check_mass_delete(&planned, &config.mass_delete) {
            anyhow::bail!("{why}");
        }
        if !yes && !confirm()? {
            outln("Apply cancelled; nothing was changed.")?;
            return Ok(EXIT_ERROR);
        }
        let journal = std::sync::Arc::new(crate::journal::Journal::begin(&state_dir, &connected.key, &planned.plan)?);
        let opts = ApplyOptions { parallelism, journal: Some(journal.clone()), ..ApplyOptions::default() };
        let progress = Progress::new(&planned.plan, style, redactor, &planned.rendered.desired);
        let started = std::time::Instant::now();
        let outcome = apply::apply(
            connected.provider.as_ref(),
            &planned.plan,
            &planned.rendered.desired,
            &planned.live,
            &opts,
            &progress,
        )
        .await;
        progress.finish();
        tracing::info!(
            steps = planned.plan.steps.len(),
            phases = planned.plan.phases.len(),
            apply_ms = started.elapsed().as_secs_f64() * 1e3,
            "applied"
        );
        // A step that said done and was not is caught by planning again what was touched.
        let verified = match outcome.converged() {
            true => engine::verify(connected.provider.as_ref(), &planned).await,
            false => Ok(()),
        };
        journal.end(if outcome.converged() && verified.is_ok() { "done" } else { "failed" })?;
        let text = output::outcome_text(&planned.plan, &planned.rendered.desired, &outcome, style, redactor);
        match &verified {
            Ok(()) => out(&text)?,
            Err(_) => out(&text.replacen("Apply complete:", "Apply not converged:", 1))?,
        }
        if let Err(why) = verified {
            anyhow::bail!("{}", redactor.text(&why));
        }
        anyhow::Ok(if outcome.converged() { EXIT_OK } else { EXIT_ERROR })
    }
    .await;
    connected.close().await?;
    code
}

/// Ask on the terminal; refuse when nobody can answer.
fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to apply without --yes: standard input is not a terminal, so nobody can confirm");
    }
    out("\nDo you want to apply these changes? Only 'yes' will be accepted: ")?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

async fn serve(args: SandboxArgs) -> anyhow::Result<u8> {
    let mut opts = SandboxOptions::new(args.platform.parse()?);
    opts.listen = args.listen;
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the sandbox listens on loopback only; {} is not a loopback address",
        args.listen
    );
    opts.state_file = args.state;
    opts.latency_ms = args.latency_ms;
    opts.rollout_ms = args.rollout_ms;
    opts.token = args.token;
    opts.seed = args.seed;
    opts.faults = crate::sandbox::Faults {
        fail_rate: args.fail_rate,
        reset_rate: args.reset_rate,
        latency_ms: args.latency_ms,
        latency_jitter_ms: args.latency_jitter_ms,
        rollout_ms: args.rollout_ms,
        methods: Vec::new(),
        grouped_steps: args.grouped_steps,
        step_ms: args.step_ms,
        ..Default::default()
    };
    let sandbox = Sandbox::start(opts).await?;
    outln(&format!("capstan sandbox ({}) listening on {}", args.platform, sandbox.url()))?;
    shutdown_signal().await;
    sandbox.shutdown().await?;
    Ok(EXIT_OK)
}

async fn daemon(args: DaemonArgs) -> anyhow::Result<u8> {
    let read_env = |name: &Option<String>, what: &str| -> anyhow::Result<Option<String>> {
        match name {
            Some(var) => match std::env::var(var) {
                Ok(v) if v.trim().is_empty() => anyhow::bail!("{what} is read from ${var}, which is empty"),
                Ok(v) => Ok(Some(v)),
                Err(_) => anyhow::bail!("{what} is read from ${var}, which is not set"),
            },
            None => Ok(None),
        }
    };
    let token = read_env(&args.token_env, "the API token")?;
    if token.is_none() && !args.listen.ip().is_loopback() && !args.insecure_listen {
        anyhow::bail!(
            "refusing to listen on {} with no token: anyone who can reach it could read the daemon's history and trigger syncs and rollbacks; set --token-env (and put TLS in front), or pass --insecure-listen",
            args.listen
        );
    }
    let repo = RepoSpec::new(&args.repo, args.git_ref, args.path);
    if repo.credentials.is_some() {
        note(Level::WARN, CREDENTIALS_IN_URL);
    }
    let opts = crate::daemon::DaemonOptions {
        repo,
        target: args.target,
        listen: args.listen,
        state_dir: args.state_dir,
        store: args.store,
        interval: args.interval,
        resync: args.resync,
        self_heal: args.self_heal,
        token,
        metrics_need_token: args.metrics_need_token,
        webhook_secret: read_env(&args.webhook_secret_env, "the webhook secret")?,
        render: args.variables.render_options(true),
        parallelism: args.parallelism,
        force: args.force,
        allow_mass_delete: args.allow_mass_delete,
        allow_check_failures: args.allow_check_failures,
        take_ownership: args.take_ownership,
    };
    crate::daemon::serve(opts).await?;
    Ok(EXIT_OK)
}

/// `rollback --to REV`: apply that commit's configuration from here, or have a daemon do it.
async fn rollback(args: RollbackArgs, color: super::ColorChoice) -> anyhow::Result<u8> {
    if let Some(daemon) = &args.daemon {
        let body = serde_json::json!({ "to": args.to, "force": args.any_commit });
        let answer =
            ask_daemon(daemon, reqwest::Method::POST, "/v1/rollback", args.token_env.as_deref(), Some(&body)).await?;
        outln(answer.get("message").and_then(|m| m.as_str()).unwrap_or(""))?;
        return Ok(EXIT_OK);
    }
    let input = InputArgs {
        dir: PathBuf::from("."),
        repo: Some(args.repo.clone()),
        git_ref: Some(args.to.clone()),
        path: args.path.clone(),
        state_dir: args.state_dir.clone(),
        config: None,
        variables: args.variables.clone(),
    };
    note(
        Level::INFO,
        &Style::stderr(color)
            .bold(&format!("Rolling back to {}: its configuration is planned and applied again.", args.to)),
    );
    apply(&input, &args.target, args.yes, args.parallelism, args.allow_mass_delete, color).await
}

/// One call to a daemon's API, with the token from `token_env`; Err with the daemon's own
/// message unless it answers 2xx.
async fn ask_daemon(
    daemon: &str,
    method: reqwest::Method,
    path: &str,
    token_env: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", daemon.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(var) = token_env {
        let token =
            std::env::var(var).map_err(|_| anyhow::anyhow!("the token is read from ${var}, which is not set"))?;
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach the daemon at {daemon}: {e}"))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {}", answer.get("message").and_then(|m| m.as_str()).unwrap_or(""));
    }
    Ok(answer)
}

/// `plan interrupt|continue|status --daemon URL`.
async fn drive_daemon(action: PlanAction, color: super::ColorChoice) -> anyhow::Result<u8> {
    let (r, method, path) = match &action {
        PlanAction::Interrupt(r) => (r, reqwest::Method::POST, "/v1/plans/deploy/interrupt"),
        PlanAction::Continue(r) => (r, reqwest::Method::POST, "/v1/plans/deploy/continue"),
        PlanAction::Status(r) => (r, reqwest::Method::GET, "/v1/plans/deploy"),
    };
    let body = ask_daemon(&r.daemon, method, path, r.token_env.as_deref(), None).await?;
    match (&action, r.output) {
        (_, PlanFormat::Json) => outln(&serde_json::to_string_pretty(&body)?)?,
        (PlanAction::Status(_), _) => out(&output::daemon_plan_text(&body, Style::stdout(color)))?,
        (_, _) => outln(body.get("message").and_then(|m| m.as_str()).unwrap_or("ok"))?,
    }
    Ok(EXIT_OK)
}
