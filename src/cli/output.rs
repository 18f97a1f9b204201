//! How plans, outcomes and problems are shown: text for people (coloured only on a terminal),
//! JSON for programs (`--output json`, described by `schemas/plan.schema.json`).

use crate::apply::{Outcome, Status};
use crate::base::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::diff::{Action, ChangeSet, ResourceChange};
use crate::model::DesiredState;
use crate::plan::Plan;
use crate::providers::PlatformPreview;
use crate::redact::Redactor;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::IsTerminal;

pub use crate::view::{DiffLine, PLAN_FORMAT_VERSION, aggregate, redacted_diff_lines, summary_line};
use crate::view::{PhasesView, PlanView, PreviewView, Summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colour on a terminal, unless NO_COLOR is set; `--color` overrides.
    pub fn new(choice: ColorChoice, stream_is_terminal: bool) -> Self {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stream_is_terminal && std::env::var_os("NO_COLOR").is_none(),
        };
        Style { color }
    }

    pub fn stdout(choice: ColorChoice) -> Self {
        Self::new(choice, std::io::stdout().is_terminal())
    }

    /// Never coloured when stderr carries JSON lines.
    pub fn stderr(choice: ColorChoice) -> Self {
        if super::json_stderr() {
            return Style { color: false };
        }
        Self::new(choice, std::io::stderr().is_terminal())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }

    fn action(&self, action: Action, t: &str) -> String {
        match action {
            Action::Create => self.green(t),
            Action::Update => self.yellow(t),
            Action::Replace | Action::Delete => self.red(t),
            Action::NoOp => t.to_string(),
        }
    }
}

pub fn diagnostics_text(diags: &Diagnostics, style: Style) -> String {
    let mut out = String::new();
    for d in &diags.0 {
        out.push_str(&diagnostic_text(d, style));
        out.push('\n');
    }
    out
}

pub fn diagnostic_text(d: &Diagnostic, style: Style) -> String {
    let label = match d.severity {
        Severity::Error => style.red("error"),
        Severity::Warning => style.yellow("warning"),
    };
    let mut s = match &d.location {
        Some(l) => format!("{}: {label}: {}", style.bold(&l.to_string()), d.message),
        None => format!("{label}: {}", d.message),
    };
    if let Some(related) = &d.related {
        let (loc, note) = related.as_ref();
        let _ = write!(s, "\n  {loc}: note: {note}");
    }
    s
}

/// The unified diff of one resource's YAML (secrets masked): everything added for a create,
/// everything removed for a delete, hunks with two lines of context otherwise.
pub fn diff_lines(c: &ResourceChange, redactor: &Redactor) -> Vec<DiffLine> {
    let (before, after) = redactor.pair(c.before.as_ref(), c.after.as_ref());
    redacted_diff_lines(before.as_ref(), after.as_ref())
}

/// The diff for a terminal, each line marked and coloured as terraform does.
fn resource_diff(c: &ResourceChange, style: Style, redactor: &Redactor) -> String {
    let mut out = String::new();
    for line in diff_lines(c, redactor) {
        let text = match &line {
            DiffLine::Hunk(_) => style.dim(&line.plain()),
            DiffLine::Removed(_) => style.red(&line.plain()),
            DiffLine::Added(_) => style.green(&line.plain()),
            DiffLine::Same(_) => line.plain(),
        };
        let _ = writeln!(out, "      {text}");
    }
    out
}

pub fn plan_text(
    changes: &ChangeSet,
    plan: &Plan,
    warnings: &Diagnostics,
    style: Style,
    redactor: &Redactor,
) -> String {
    let mut out = String::new();
    if !warnings.0.is_empty() {
        out.push_str(&diagnostics_text(warnings, style));
        out.push('\n');
    }
    if !changes.has_changes() {
        out.push_str(&style.green("No changes. The platform matches the manifests.\n"));
    } else {
        out.push_str("capstan will perform the following actions:\n\n");
        for c in changes.changes.iter().filter(|c| c.action != Action::NoOp) {
            let mut head = format!("  # {} {}", c.id, c.action.describe());
            if let Some(origin) = &c.origin {
                let _ = write!(head, "  {}", style.dim(&format!("({origin})")));
            }
            if let Some(reason) = &c.reason {
                let _ = write!(head, "\n  # {}", style.dim(reason));
            }
            let _ = writeln!(out, "{head}");
            let _ = writeln!(out, "  {} {}", style.action(c.action, c.action.symbol()), style.bold(&c.id.to_string()));
            out.push_str(&resource_diff(c, style, redactor));
            out.push('\n');
        }
        out.push_str(&style.bold(&summary_line(changes)));
        out.push('\n');
        if plan.phases.len() > 1 {
            let _ =
                writeln!(out, "{}", style.dim(&format!("{} steps in {} phases:", plan.steps.len(), plan.phases.len())));
            for p in &plan.phases {
                let _ = writeln!(out, "{}", style.dim(&format!("  {}", p.name)));
            }
        }
    }
    if !changes.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.yellow(&format!(
                "{} resource(s) created by this owner are no longer declared; run with --prune to delete them:",
                changes.orphans.len()
            ))
        );
        for o in &changes.orphans {
            let _ = writeln!(out, "  {o}");
        }
    }
    if !changes.kept.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.yellow(&format!(
                "{} resource(s) created by this owner are no longer declared, and pruning leaves them:",
                changes.kept.len()
            ))
        );
        for k in &changes.kept {
            let _ = writeln!(out, "  {}: {}", k.id, k.reason);
        }
    }
    out
}

/// The plan as JSON (schemas/plan.schema.json). Nothing in it depends on the time or the run,
/// and no secret value is in it.
pub fn plan_json(
    platform: &str,
    changes: &ChangeSet,
    plan: &Plan,
    warnings: &Diagnostics,
    redactor: &Redactor,
    preview: Option<&PlatformPreview>,
) -> Value {
    PlanView::new(platform, changes, plan, warnings, redactor, preview).to_value()
}

/// The platform's pre-apply checks, as they go into the JSON plan.
pub fn checks_json(p: &crate::model::CheckReport, redactor: &Redactor) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    v["failed"] = json!(p.checks.iter().filter(|c| c.failed).count());
    if let Some(e) = &p.error {
        v["error"] = json!(redactor.text(e));
    }
    redactor.value(&v)
}

/// The platform's pre-apply checks as text: those whose answer changes or that fail, and what
/// changes per scope when nothing is checked.
pub fn checks_text(p: &crate::model::CheckReport, style: Style, redactor: &Redactor) -> String {
    let mut out = format!("\n{}\n", style.bold(&format!("{} (simulated):", checks_title(p.name))));
    if let Some(e) = &p.error {
        out.push_str(&format!("  {}\n", style.red(&format!("could not be run: {}", redactor.text(e)))));
        return out;
    }
    let shown: Vec<_> = p.checks.iter().filter(|c| c.failed || c.changed).collect();
    if !p.checks.is_empty() && shown.is_empty() {
        out.push_str(&format!("  {}\n", style.green(&format!("all {} hold, none changes", p.checks.len()))));
    }
    for c in shown {
        let line = redactor.text(&c.describe());
        out.push_str(&format!("  {}\n", if c.failed { style.red(&format!("✗ {line}")) } else { format!("~ {line}") }));
    }
    if p.checks.is_empty() && p.scopes.is_empty() {
        out.push_str("  no checks declared, and the changes name no realm\n");
    }
    for r in &p.scopes {
        out.push_str(&format!("  realm {}:\n", r.scope));
        for (when, lines) in [("now", &r.before), ("after this plan", &r.after)] {
            out.push_str(&format!("    {when}:{}\n", if lines.is_empty() { " nothing permitted" } else { "" }));
            for l in lines {
                out.push_str(&format!("      {}\n", redactor.text(l)));
            }
        }
    }
    out
}

/// What a kind of check is called as a heading: `policy check` → `Policy checks`.
pub fn checks_title(name: &str) -> String {
    let mut c = name.chars();
    c.next().map(|f| format!("{}{}s", f.to_uppercase(), c.as_str())).unwrap_or_default()
}

/// The platform's own preview, as it goes into the JSON plan.
pub fn preview_json(p: &PlatformPreview, redactor: &Redactor) -> Value {
    serde_json::to_value(PreviewView::new(p, redactor)).unwrap_or(Value::Null)
}

/// The platform's own preview as text, after capstan's plan.
pub fn preview_text(p: &PlatformPreview, style: Style, redactor: &Redactor) -> String {
    let mut out = format!("\n{}\n", style.bold(&format!("The platform's own preview ({}):", p.request)));
    if let Some(e) = &p.error {
        out.push_str(&format!("  {}\n", style.yellow(&format!("unavailable: {}", redactor.text(e)))));
        return out;
    }
    if p.steps.is_empty() {
        out.push_str("  no steps\n");
    }
    for (i, step) in p.steps.iter().enumerate() {
        let actions: Vec<String> = step.iter().map(|a| format!("{} {}", a.action, a.resource.name)).collect();
        out.push_str(&format!("  step {}: {}\n", i + 1, actions.join(", ")));
    }
    if p.disagreements.is_empty() {
        out.push_str(&format!("  {}\n", style.green("It agrees with capstan's plan.")));
    } else {
        out.push_str(&format!("  {}\n", style.yellow("Where it disagrees with capstan's plan:")));
        for d in &p.disagreements {
            out.push_str(&format!("    {}\n", style.yellow(&format!("! {}", redactor.text(d)))));
        }
    }
    out
}

/// The plan's phases and steps with their statuses, in seed 000's shape (what the daemon's
/// `GET /v1/plans/deploy` answers).
pub fn phases_json(plan: &Plan, redactor: &Redactor, outcome: Option<&Outcome>) -> Value {
    serde_json::to_value(PhasesView::new(plan, redactor, outcome)).unwrap_or(Value::Null)
}

pub fn summary_json(changes: &ChangeSet) -> Value {
    serde_json::to_value(Summary::of(changes)).unwrap_or(Value::Null)
}

/// Every resource of a change set, as the JSON plan lists them, with secrets masked.
pub fn resource_changes_json(changes: &ChangeSet, redactor: &Redactor) -> Vec<Value> {
    crate::view::resource_changes(changes, redactor)
        .iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect()
}

/// A step as an outcome line names it: its name, and where its resource is declared (a
/// deletion's resource is declared nowhere).
pub fn step_label(plan: &Plan, step: usize, desired: &DesiredState) -> String {
    let s = &plan.steps[step];
    match desired.resources.get(&s.resource) {
        Some(d) => format!("{} ({})", s.name, d.origin),
        None => s.name.clone(),
    }
}

pub fn outcome_text(
    plan: &Plan,
    desired: &DesiredState,
    outcome: &Outcome,
    style: Style,
    redactor: &Redactor,
) -> String {
    let mut out = String::new();
    for (i, s) in outcome.steps.iter().enumerate() {
        if s.status == Status::Complete {
            continue;
        }
        let name = step_label(plan, i, desired);
        let line = match s.status {
            Status::Error => style.red(&format!("  ERROR    {name}: {}", redactor.text(&s.message))),
            _ => style.yellow(&format!("  {:<8} {name}: {}", status_word(s.status), redactor.text(&s.message))),
        };
        let _ = writeln!(out, "{line}");
    }
    let total = outcome.steps.len();
    let done = outcome.count(Status::Complete);
    if outcome.converged() {
        let _ = writeln!(out, "{}", style.green(&format!("Apply complete: {done} of {total} steps done.")));
    } else {
        let _ = writeln!(
            out,
            "{}",
            style.red(&format!(
                "Apply incomplete: {done} of {total} steps done, {} failed, {} not started.",
                outcome.count(Status::Error),
                total - done - outcome.count(Status::Error)
            ))
        );
    }
    out
}

/// A sub-step (a platform's own plan step a step follows): `phase / step  STATUS  message`.
pub fn substep_line(sub: &Value) -> String {
    let text = |k: &str| sub[k].as_str().unwrap_or_default();
    let mut line = format!("{:<11} {} / {}", text("status"), text("phase"), text("step"));
    if !text("message").is_empty() {
        line.push_str(&format!(": {}", text("message")));
    }
    line
}

pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "PENDING",
        Status::InProgress => "RUNNING",
        Status::Complete => "COMPLETE",
        Status::Error => "ERROR",
        Status::Waiting => "WAITING",
    }
}

/// A daemon's plan (seed 000 shape) for people: phases, steps and their statuses.
pub fn daemon_plan_text(plan: &Value, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan deploy ({}): {}",
        plan["commit"].as_str().map(|c| &c[..c.len().min(12)]).unwrap_or("?"),
        plan["status"].as_str().unwrap_or("?")
    );
    for phase in plan["phases"].as_array().into_iter().flatten() {
        let _ =
            writeln!(out, "  {} [{}]", phase["name"].as_str().unwrap_or(""), phase["status"].as_str().unwrap_or(""));
        for step in phase["steps"].as_array().into_iter().flatten() {
            let status = step["status"].as_str().unwrap_or("");
            let line = format!("    {status:<11} {}", step["name"].as_str().unwrap_or(""));
            let line = match status {
                "COMPLETE" => style.green(&line),
                "ERROR" => style.red(&line),
                "IN_PROGRESS" | "WAITING" => style.yellow(&line),
                _ => line,
            };
            let _ = writeln!(out, "{line}");
            if let Some(m) = step["message"].as_str().filter(|m| !m.is_empty()) {
                let _ = writeln!(out, "                {}", style.dim(m));
            }
            for sub in step["substeps"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "      {}", substep_line(sub));
            }
        }
    }
    out
}
