//! How plans, outcomes and problems are shown: text for people (coloured only on a terminal),
//! JSON for programs (`--output json`, described by `schemas/plan.schema.json`). Both are
//! made from the typed view (`crate::view`), which is redacted where it is built: the text
//! renderers take a view and a `Style`, never a `Redactor`.

use crate::apply::Status;
use crate::base::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::diff::{Action, ChangeSet};
use crate::model::SubStep;
use crate::redact::Redactor;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::IsTerminal;

use crate::view::Summary;
pub use crate::view::{
    ChecksView, DiffLine, Diffs, PLAN_FORMAT_VERSION, PhasesView, PlanView, PreviewView, ResourceChangeView, aggregate,
    checks_title, redacted_diff_lines, step_label, summary_line,
};

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

/// The diff for a terminal, each line marked and coloured as terraform does.
fn resource_diff(lines: Vec<DiffLine>, style: Style) -> String {
    let mut out = String::new();
    for line in lines {
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

/// The plan for people, from its view (redacted when it was built) and its diffs (each made,
/// redacted, as it is shown: [`PlanView::for_text`]).
pub fn plan_text(view: &PlanView, diffs: &Diffs, style: Style) -> String {
    let mut out = String::new();
    if !view.warnings.is_empty() {
        for w in &view.warnings {
            out.push_str(&diagnostic_text(&w.diagnostic, style));
            out.push('\n');
        }
        out.push('\n');
    }
    if !view.has_changes() {
        out.push_str(&style.green("No changes. The platform matches the manifests.\n"));
    } else {
        out.push_str("capstan will perform the following actions:\n\n");
        for (i, c) in view.changed_at() {
            let mut head = format!("  # {} {}", c.address, c.action.describe());
            if let Some(origin) = &c.origin {
                let _ = write!(head, "  {}", style.dim(&format!("({origin})")));
            }
            if let Some(reason) = &c.reason {
                let _ = write!(head, "\n  # {}", style.dim(reason));
            }
            let _ = writeln!(out, "{head}");
            let _ = writeln!(out, "  {} {}", style.action(c.action, c.action.symbol()), style.bold(&c.address));
            out.push_str(&resource_diff(diffs.lines(i), style));
            out.push('\n');
        }
        out.push_str(&style.bold(&view.summary.line()));
        out.push('\n');
        let phases = &view.plan.phases;
        if phases.len() > 1 {
            let _ = writeln!(out, "{}", style.dim(&format!("{} steps in {} phases:", view.step_count(), phases.len())));
            for p in phases {
                let _ = writeln!(out, "{}", style.dim(&format!("  {}", p.name)));
            }
        }
    }
    if !view.orphans.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            style.yellow(&format!(
                "{} resource(s) created by this owner are no longer declared; run with --prune to delete them:",
                view.orphans.len()
            ))
        );
        for o in &view.orphans {
            let _ = writeln!(out, "  {o}");
        }
    }
    if let Some(kept) = view.kept.as_ref().filter(|k| !k.is_empty()) {
        let _ = writeln!(
            out,
            "\n{}",
            style.yellow(&format!(
                "{} resource(s) created by this owner are no longer declared, and pruning leaves them:",
                kept.len()
            ))
        );
        for k in kept {
            let _ = writeln!(out, "  {}: {}", k.address, k.reason);
        }
    }
    out
}

/// The platform's pre-apply checks as text: those whose answer changes or that fail, and what
/// changes per scope when nothing is checked.
pub fn checks_text(p: &ChecksView, style: Style) -> String {
    let mut out = format!("\n{}\n", style.bold(&format!("{} (simulated):", p.title)));
    if let Some(e) = &p.error {
        out.push_str(&format!("  {}\n", style.red(&format!("could not be run: {e}"))));
        return out;
    }
    if p.count > 0 && p.shown.is_empty() {
        out.push_str(&format!("  {}\n", style.green(&format!("all {} hold, none changes", p.count))));
    }
    for c in &p.shown {
        let line = &c.line;
        out.push_str(&format!("  {}\n", if c.failed { style.red(&format!("✗ {line}")) } else { format!("~ {line}") }));
    }
    if p.count == 0 && p.scopes.is_empty() {
        out.push_str("  no checks declared, and the changes name no realm\n");
    }
    for r in &p.scopes {
        out.push_str(&format!("  realm {}:\n", r.scope));
        for (when, lines) in [("now", &r.before), ("after this plan", &r.after)] {
            out.push_str(&format!("    {when}:{}\n", if lines.is_empty() { " nothing permitted" } else { "" }));
            for l in lines {
                out.push_str(&format!("      {l}\n"));
            }
        }
    }
    out
}

/// The platform's own preview as text, after capstan's plan.
pub fn preview_text(p: &PreviewView, style: Style) -> String {
    let mut out = format!("\n{}\n", style.bold(&format!("The platform's own preview ({}):", p.request)));
    if let Some(e) = &p.error {
        out.push_str(&format!("  {}\n", style.yellow(&format!("unavailable: {e}"))));
        return out;
    }
    if p.steps.is_empty() {
        out.push_str("  no steps\n");
    }
    for (i, step) in p.steps.iter().enumerate() {
        let actions: Vec<String> = step.iter().map(|a| format!("{} {}", a.action, a.name)).collect();
        out.push_str(&format!("  step {}: {}\n", i + 1, actions.join(", ")));
    }
    if p.disagreements.is_empty() {
        out.push_str(&format!("  {}\n", style.green("It agrees with capstan's plan.")));
    } else {
        out.push_str(&format!("  {}\n", style.yellow("Where it disagrees with capstan's plan:")));
        for d in &p.disagreements {
            out.push_str(&format!("    {}\n", style.yellow(&format!("! {d}"))));
        }
    }
    out
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

/// What became of a run's steps, from its view ([`PhasesView::outcome`]): every step not
/// done, in plan order, and the count.
pub fn outcome_text(view: &PhasesView, style: Style) -> String {
    let mut out = String::new();
    let steps = view.steps();
    for s in &steps {
        if s.status == Status::Complete {
            continue;
        }
        let name = &s.label;
        let line = match s.status {
            Status::Error => style.red(&format!("  ERROR    {name}: {}", s.message)),
            _ => style.yellow(&format!("  {:<8} {name}: {}", status_word(s.status), s.message)),
        };
        let _ = writeln!(out, "{line}");
    }
    let total = steps.len();
    let count = |status| steps.iter().filter(|s| s.status == status).count();
    let (done, failed) = (count(Status::Complete), count(Status::Error));
    if done == total {
        let _ = writeln!(out, "{}", style.green(&format!("Apply complete: {done} of {total} steps done.")));
    } else {
        let _ = writeln!(
            out,
            "{}",
            style.red(&format!(
                "Apply incomplete: {done} of {total} steps done, {failed} failed, {} not started.",
                total - done - failed
            ))
        );
    }
    out
}

/// A sub-step (a platform's own plan step a step follows): `phase / step  STATUS  message`.
pub fn substep_line(sub: &SubStep) -> String {
    let mut line = format!("{:<11} {} / {}", sub.status, sub.phase, sub.step);
    if !sub.message.is_empty() {
        line.push_str(&format!(": {}", sub.message));
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

/// A status as seed 000's plan API spells it (its serde name).
fn wire_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "PENDING",
        Status::InProgress => "IN_PROGRESS",
        Status::Complete => "COMPLETE",
        Status::Error => "ERROR",
        Status::Waiting => "WAITING",
    }
}

/// A daemon's plan (seed 000 shape, read back into its view) for people: phases, steps and
/// their statuses.
pub fn daemon_plan_text(plan: &PhasesView, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan deploy ({}): {}",
        plan.commit.as_deref().map(|c| c.get(..12).unwrap_or(c)).unwrap_or("?"),
        wire_word(plan.status)
    );
    for phase in &plan.phases {
        let _ = writeln!(out, "  {} [{}]", phase.name, wire_word(phase.status));
        for step in &phase.steps {
            let line = format!("    {:<11} {}", wire_word(step.status), step.name);
            let line = match step.status {
                Status::Complete => style.green(&line),
                Status::Error => style.red(&line),
                Status::InProgress | Status::Waiting => style.yellow(&line),
                Status::Pending => line,
            };
            let _ = writeln!(out, "{line}");
            if !step.message.is_empty() {
                let _ = writeln!(out, "                {}", style.dim(&step.message));
            }
            for sub in step.substeps.iter().flatten() {
                let _ = writeln!(out, "      {}", substep_line(sub));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Outcome, StepOutcome};
    use crate::base::diagnostic::Location;
    use crate::model::{DesiredResource, DesiredState, ResourceId, Verb};
    use crate::plan::{Phase, Plan, Step};
    use crate::redact::Redactor;
    use serde_json::json;

    const SECRET: &str = "hunter2-s3cr3t";

    fn redactor() -> Redactor {
        let mut r = Redactor::default();
        r.add_value(SECRET);
        r
    }

    fn plain() -> Style {
        Style::new(ColorChoice::Never, false)
    }

    /// Two steps where step 0 waits for step 1: the phases list step 1 first.
    fn plan() -> Plan {
        let step = |id: &str, name: &str, deps: Vec<usize>, phase| Step {
            id: id.into(),
            name: format!("update job::{name}"),
            verb: Verb::Update,
            resource: ResourceId::new("job", name),
            deps,
            phase,
        };
        Plan {
            steps: vec![step("s0", "a", vec![1], 1), step("s1", "b", vec![], 0)],
            phases: vec![
                Phase { id: "p0".into(), name: "phase 1".into(), steps: vec![1] },
                Phase { id: "p1".into(), name: "phase 2".into(), steps: vec![0] },
            ],
        }
    }

    fn outcome(r: &Redactor) -> Outcome {
        let step = |status, message: &str, substeps| StepOutcome {
            status,
            message: r.redact(message),
            substeps,
            duration: Default::default(),
        };
        let sub = SubStep {
            phase: "deploy".into(),
            step: "node-0".into(),
            status: "IN_PROGRESS".into(),
            message: format!("waiting for {SECRET}"),
        };
        Outcome {
            steps: vec![
                step(Status::Error, &format!("refused: {SECRET}"), vec![sub]),
                step(Status::Waiting, "interrupted", vec![]),
            ],
        }
    }

    /// `plan status --daemon` spells statuses as the daemon's JSON does.
    #[test]
    fn wire_words_are_the_serde_names() {
        for s in [Status::Pending, Status::InProgress, Status::Complete, Status::Error, Status::Waiting] {
            assert_eq!(serde_json::json!(s), serde_json::json!(wire_word(s)));
        }
    }

    /// `plan status --daemon` reads the daemon's answer back into the view it was made from:
    /// the same JSON again, the same text, every field the text shows.
    #[test]
    fn a_daemon_plan_read_back_is_the_view_it_was_and_renders_the_same() {
        let r = redactor();
        let mut view = PhasesView::new(&plan(), &r, Some(&outcome(&r)));
        view.commit = Some("0123456789abcdef0123".into());
        let json = serde_json::to_string(&view).unwrap();
        let back: PhasesView = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        let text = daemon_plan_text(&back, plain());
        assert_eq!(text, daemon_plan_text(&view, plain()));
        assert_eq!(
            text,
            "plan deploy (0123456789ab): ERROR\n\
             \x20 phase 1 [WAITING]\n\
             \x20   WAITING     update job::b\n\
             \x20               interrupted\n\
             \x20 phase 2 [ERROR]\n\
             \x20   ERROR       update job::a\n\
             \x20               refused: (sensitive)\n\
             \x20     IN_PROGRESS deploy / node-0: waiting for (sensitive)\n"
        );
        let not_a_plan = serde_json::from_value::<PhasesView>(json!({ "message": "no plan has run yet" }));
        assert!(not_a_plan.is_err());
    }

    /// An outcome lists the steps not done in plan order (not phase order), each named with
    /// where its resource is declared, from the outcome's view.
    #[test]
    fn outcome_text_lists_steps_in_plan_order_with_their_labels() {
        let r = redactor();
        let mut desired = DesiredState::default();
        let id = ResourceId::new("job", "a");
        desired.resources.insert(
            id.clone(),
            DesiredResource {
                id,
                spec: json!({}),
                origin: Location::new("jobs/a.yaml", 3, 5),
                references: vec![],
                exclusive: None,
            },
        );
        let view = PhasesView::outcome(&plan(), &desired, &outcome(&r), &r);
        assert_eq!(
            outcome_text(&view, plain()),
            "  ERROR    update job::a (jobs/a.yaml:3:5): refused: (sensitive)\n\
             \x20 WAITING  update job::b: interrupted\n\
             Apply incomplete: 0 of 2 steps done, 1 failed, 1 not started.\n"
        );
    }

    /// A warning is redacted where the view is built: its JSON message, and the text and
    /// markdown lines made from the view (text showed the message as it was).
    #[test]
    fn a_warnings_secret_is_masked_in_every_output_of_the_view() {
        let r = redactor();
        let w = Diagnostic::warning(Some(Location::new("a.yaml", 2, 1)), format!("odd value {SECRET}"))
            .with_related(Location::new("b.yaml", 1, 1), format!("also {SECRET}"));
        let (changes, warnings) = (ChangeSet::default(), Diagnostics(vec![w]));
        let view = PlanView::new("t", &changes, &Plan::default(), &warnings, &r, None);
        let json = serde_json::to_string(&view).unwrap();
        let (text_view, diffs) = PlanView::for_text("t", &changes, &Plan::default(), &warnings, &r, None);
        let text = plan_text(&text_view, &diffs, plain());
        for out in [&json, &text, &view.warnings[0].line] {
            assert!(!out.contains(SECRET), "{out}");
        }
        assert!(text.starts_with("a.yaml:2:1: warning: odd value (sensitive)\n  b.yaml:1:1: note: also (sensitive)\n"));
        assert_eq!(view.warnings[0].json["message"], "odd value (sensitive)");
    }
}
