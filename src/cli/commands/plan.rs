//! `capstan plan`: against the target, or between two commits of the declared state.

use super::*;

pub(super) async fn plan(
    input: &InputArgs,
    target: &TargetArgs,
    detailed: bool,
    format: PlanFormat,
    preview: &PreviewArgs,
    color: crate::cli::ColorChoice,
) -> anyhow::Result<u8> {
    plan_into(input, target, detailed, format, preview, color, None).await
}

/// `plan`, with the JSON output kept in `json_sink` instead of printed when one is given (a
/// unit's plan among several: `units.rs` prints them as one list).
pub(super) async fn plan_into(
    input: &InputArgs,
    target: &TargetArgs,
    detailed: bool,
    format: PlanFormat,
    preview: &PreviewArgs,
    color: crate::cli::ColorChoice,
    json_sink: Option<&mut Vec<serde_json::Value>>,
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
    // Every output renders from this view, redacted here (text's without the changes' sides,
    // whose diffs it makes one at a time: `PlanView::for_text`).
    let view = || output::PlanView::new(platform, changes, &planned.plan, warnings, redactor, planned.preview.as_ref());
    // Built only for the outputs that show it: at ten thousand resources it is not small.
    let json = |view: &output::PlanView| {
        let mut json = view.to_value();
        if let Some(d) = &declared {
            json["declared_changes"] = d.json(redactor);
        }
        if let Some(c) = &view.checks {
            json[&c.key] = c.json.clone();
        }
        json
    };
    match format {
        PlanFormat::Json => {
            let view = view().with_checks(planned.checks.as_ref(), redactor);
            let json = json(&view);
            drop(view);
            match json_sink {
                Some(sink) => sink.push(json),
                None => outln(&serde_json::to_string_pretty(&json)?)?,
            }
        }
        PlanFormat::Markdown => {
            let view = view().with_checks(planned.checks.as_ref(), redactor);
            let plan_json = json(&view);
            let view = view.keep_diffs(markdown::DETAILS);
            let report = markdown::Report {
                title: preview.title.clone(),
                target: description,
                view: &view,
                plan_json,
                declared: declared.as_ref().map(|d| d.markdown()),
                live: true,
                max_bytes: preview.max_bytes,
            };
            let started = std::time::Instant::now();
            let text = markdown::render(&report, template.as_ref().map(|(p, t)| (*p, t.as_str())))?;
            // The report's own time, on top of the plan (what benches/plan_noop reads for issue 18).
            tracing::info!(bytes = text.len(), markdown_ms = started.elapsed().as_secs_f64() * 1e3, "markdown report");
            out(&text)?;
        }
        PlanFormat::Text => {
            note(Level::INFO, &Style::stderr(color).dim(&format!("Planning against {description}.")));
            if let Some(d) = &declared {
                out(&d.text(Style::stdout(color)))?;
            }
            let (view, diffs) = output::PlanView::for_text(
                platform,
                changes,
                &planned.plan,
                warnings,
                redactor,
                planned.preview.as_ref(),
            );
            let view = view.with_checks(planned.checks.as_ref(), redactor);
            out(&output::plan_text(&view, &diffs, Style::stdout(color)))?;
            if let Some(p) = &view.platform_preview {
                out(&output::preview_text(p, Style::stdout(color)))?;
            }
            if let Some(p) = &view.checks {
                out(&output::checks_text(p, Style::stdout(color)))?;
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
pub(super) struct Declared {
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

    /// The declared change's view (the markdown report's): no steps, its own warnings.
    fn view(&self) -> output::PlanView {
        output::PlanView::new(self.platform, &self.changes, &Plan::default(), &self.warnings, &self.redactor, None)
    }

    /// The declared change as text, without its warnings (the head's plan shows them).
    fn text(&self, style: Style) -> String {
        let no_warnings = Diagnostics::default();
        let (view, diffs) = output::PlanView::for_text(
            self.platform,
            &self.changes,
            &Plan::default(),
            &no_warnings,
            &self.redactor,
            None,
        );
        let body = output::plan_text(&view, &diffs, style)
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

pub(super) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Render the base commit too, and compare what the two declare.
pub(super) fn declared_change(input: &InputArgs, head: &Input, base: &str) -> anyhow::Result<Declared> {
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
            output::diagnostics_text(&e.0, Style::new(crate::cli::ColorChoice::Never, false))
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

pub(super) fn print_declared_only(
    d: &Declared,
    format: PlanFormat,
    template: Option<markdown::Template<'_>>,
    preview: &PreviewArgs,
    detailed: bool,
    color: crate::cli::ColorChoice,
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
                view: &d.view(),
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

pub(super) fn plan_error(e: PlanError) -> anyhow::Error {
    match e {
        PlanError::Invalid(i) => i.into(),
        other => anyhow::anyhow!(other),
    }
}
