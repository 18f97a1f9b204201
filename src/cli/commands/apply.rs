//! `capstan apply` and `capstan rollback`, through `converge::Session`, with progress shown.

use super::daemon::ask_daemon;
use super::plan::plan_error;
use super::*;
use crate::apply::{self, ApplyOptions, Observer, Status, StepOutcome};
use crate::converge::{Applied, Guards, Refusal, Session};

/// Shows apply's progress: on a terminal a bar (steps done of total, what is running, time
/// elapsed) with finished steps printed above it; otherwise one plain line per step.
pub(super) struct Progress<'a> {
    style: Style,
    redactor: &'a crate::redact::Redactor,
    desired: &'a crate::model::DesiredState,
    bar: Option<indicatif::ProgressBar>,
    running: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Each step's sub-steps as last shown (step, phase, sub-step) → status.
    substeps: std::sync::Mutex<std::collections::BTreeMap<(usize, String, String), String>>,
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
        Progress { style, redactor, desired, bar, running: Default::default(), substeps: Default::default() }
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

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let _ = outln(line);
            }
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

    /// A line for each sub-step whose status changed, under the step's name.
    fn step_progress(&self, plan: &Plan, step: usize, substeps: &[crate::model::SubStep]) {
        let mut seen = self.substeps.lock().unwrap();
        for sub in substeps {
            let key = (step, sub.phase.clone(), sub.step.clone());
            if seen.get(&key) != Some(&sub.status) {
                seen.insert(key, sub.status.clone());
                let sub = crate::model::SubStep { message: self.redactor.text(&sub.message), ..sub.clone() };
                let line = output::substep_line(&sub);
                self.line(&format!("    {}: {}", plan.steps[step].name, self.style.dim(&line)));
            }
        }
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
pub(super) async fn apply(
    input: &InputArgs,
    target: &TargetArgs,
    yes: bool,
    parallelism: usize,
    allow_mass_delete: bool,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<u8> {
    let Input { snapshot, config, state_dir, .. } = read_input(input)?;
    let connected = crate::target::connect(&config, target.target.as_deref(), &state_dir, target.force).await?;
    let style = Style::stdout(color);
    let code = async {
        // One apply per target: a second fails at once, naming the holder.
        let (session, settled) = Session::open(&connected, &state_dir, None)?;
        for earlier in settled? {
            note(Level::WARN, &Style::stderr(color).yellow(&format!("Resuming: {}.", earlier.describe())));
        }
        let flags = target.plan_flags(&config);
        let planned =
            session.plan(&snapshot, &config, &render_options(input), flags, None).await.map_err(plan_error)?;
        note(Level::INFO, &Style::stderr(color).dim(&format!("Applying to {}.", connected.description)));
        let redactor = &planned.rendered.redactor;
        let (changes, warnings, preview) = (&planned.changes, &planned.rendered.warnings, planned.preview.as_ref());
        let (view, diffs) = output::PlanView::for_text(
            connected.provider.platform(),
            changes,
            &planned.plan,
            warnings,
            redactor,
            preview,
        );
        let view = view.with_checks(planned.checks.as_ref(), redactor);
        out(&output::plan_text(&view, &diffs, style))?;
        if let Some(p) = &view.platform_preview {
            out(&output::preview_text(p, style))?;
        }
        if let Some(p) = &view.checks {
            out(&output::checks_text(p, style))?;
        }
        drop(view);
        let guards = Guards {
            mass_delete: &config.mass_delete,
            allow_mass_delete,
            allow_check_failures: target.allow_check_failures,
        };
        let cleared = match session.guard(planned, guards) {
            Ok(c) => c,
            Err(Refusal::MassDelete { why, .. }) => anyhow::bail!("{why}"),
            Err(Refusal::Check { why, .. }) => anyhow::bail!("{why}; pass --allow-policy-failures if this is intended"),
        };
        if cleared.plan.is_empty() {
            return Ok(EXIT_OK);
        }
        if !yes && !confirm()? {
            outln("Apply cancelled; nothing was changed.")?;
            return Ok(EXIT_ERROR);
        }
        let redactor = &cleared.rendered.redactor;
        let opts = ApplyOptions { parallelism, ..ApplyOptions::default() };
        let progress = Progress::new(&cleared.plan, style, redactor, &cleared.rendered.desired);
        let applied =
            session.apply(&cleared, &cleared.plan, &apply::not_started(&cleared.plan), &opts, &progress).await?;
        progress.finish();
        // Nothing interrupts the command line's apply but a signal, which ends the process.
        let Applied::Finished { outcome, verified, ended } = applied else {
            anyhow::bail!("the apply was stopped before every step ran");
        };
        ended?;
        let view = output::PhasesView::outcome(&cleared.plan, &cleared.rendered.desired, &outcome, redactor);
        let text = output::outcome_text(&view, style);
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
pub(super) fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to apply without --yes: standard input is not a terminal, so nobody can confirm");
    }
    out("\nDo you want to apply these changes? Only 'yes' will be accepted: ")?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// `rollback --to REV`: apply that commit's configuration from here, or have a daemon do it.
pub(super) async fn rollback(args: RollbackArgs, color: crate::cli::ColorChoice) -> anyhow::Result<u8> {
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
