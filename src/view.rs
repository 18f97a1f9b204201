//! One typed view of a plan and of an outcome, as programs read them (in the manner of
//! terraform's jsonplan): the CLI's `--output json` and the markdown report's data
//! (`schemas/plan.schema.json`), the daemon's plan API (`GET /v1/plans/deploy`, seed 000's
//! shape, with live statuses) and what its store keeps. Every string in a view has been through
//! the redactor when the view is built, and only then: the text of `cli::output` and the
//! markdown report of `cli::markdown` are rendered from a view and take no `Redactor`. What
//! only text shows (a change's diff lines, origin, step labels, a check's line) is in the view
//! too, kept out of the JSON with `#[serde(skip)]`.

use crate::apply::{Outcome, Status};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::diff::{Action, ChangeSet, ResourceChange};
use crate::model::{CheckReport, DesiredState, PlatformPreview, SubStep, Verb};
use crate::plan::Plan;
use crate::redact::Redactor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

/// The version of the JSON plan format; bumped on any incompatible change.
pub const PLAN_FORMAT_VERSION: &str = "1.0";

/// A plan, as `capstan plan --output json` prints it and the daemon stores it. Nothing in it
/// depends on the time or the run, and no secret value is in it.
#[derive(Debug, Serialize)]
pub struct PlanView {
    pub format_version: &'static str,
    pub platform: String,
    pub summary: Summary,
    pub resource_changes: Vec<ResourceChangeView>,
    pub orphans: Vec<String>,
    pub plan: PhasesView,
    pub warnings: Vec<WarningView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<KeptView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_preview: Option<PreviewView>,
    /// The platform's pre-apply checks ([`PlanView::with_checks`]): in the JSON plan under
    /// their own key ([`ChecksView::key`]), which the outputs that show it add.
    #[serde(skip)]
    pub checks: Option<ChecksView>,
}

impl PlanView {
    /// The view with every change's redacted `before` and `after` (the JSON plan, the markdown
    /// report, the daemon): text's view ([`PlanView::for_text`]) with the sides added.
    pub fn new(
        platform: &str,
        changes: &ChangeSet,
        plan: &Plan,
        warnings: &Diagnostics,
        redactor: &Redactor,
        preview: Option<&PlatformPreview>,
    ) -> PlanView {
        let (mut view, _) = Self::for_text(platform, changes, plan, warnings, redactor, preview);
        for (v, c) in view.resource_changes.iter_mut().zip(&changes.changes) {
            add_sides(v, c, redactor);
        }
        view
    }

    /// The view text renders, and its [`Diffs`]: no change keeps its `before` and `after`;
    /// each resource's diff is made from the change set, redacted as [`PlanView::new`] redacts
    /// the sides, when text shows it, and dropped after. At ten thousand updates the redacted
    /// sides of every change at once are most of the view.
    pub fn for_text<'a>(
        platform: &str,
        changes: &'a ChangeSet,
        plan: &Plan,
        warnings: &Diagnostics,
        redactor: &'a Redactor,
        preview: Option<&PlatformPreview>,
    ) -> (PlanView, Diffs<'a>) {
        let view = PlanView {
            format_version: PLAN_FORMAT_VERSION,
            platform: platform.to_string(),
            summary: Summary::of(changes),
            resource_changes: changes.changes.iter().map(|c| resource_change(c, redactor)).collect(),
            orphans: changes.orphans.iter().map(|o| o.to_string()).collect(),
            plan: PhasesView::new(plan, redactor, None),
            warnings: warnings.0.iter().map(|w| WarningView::new(w, redactor)).collect(),
            kept: (!changes.kept.is_empty()).then(|| {
                changes.kept.iter().map(|k| KeptView { address: k.id.to_string(), reason: k.reason.clone() }).collect()
            }),
            platform_preview: preview.map(|p| PreviewView::new(p, redactor)),
            checks: None,
        };
        (view, Diffs { changes, redactor })
    }

    /// With the platform's pre-apply checks, when it answered any.
    pub fn with_checks(mut self, checks: Option<&CheckReport>, redactor: &Redactor) -> PlanView {
        self.checks = checks.map(|c| ChecksView::new(c, redactor));
        self
    }

    /// The view with `before` and `after` (what a diff is made of) kept for the first `n`
    /// changed resources only: for an output that shows no more diffs than those (the markdown
    /// report), once the JSON plan, which has them all, is made. At ten thousand updates they
    /// are most of the view, and freed they are memory the report reuses.
    pub fn keep_diffs(mut self, n: usize) -> PlanView {
        for c in self.resource_changes.iter_mut().filter(|c| c.action != Action::NoOp).skip(n) {
            (c.before, c.after) = (None, None);
        }
        self
    }

    /// The resources that change (every one but the no-ops), in plan order.
    pub fn changed(&self) -> impl Iterator<Item = &ResourceChangeView> {
        self.changed_at().map(|(_, c)| c)
    }

    /// The resources that change, each with its place in `resource_changes` (what
    /// [`Diffs::lines`] takes).
    pub fn changed_at(&self) -> impl Iterator<Item = (usize, &ResourceChangeView)> {
        self.resource_changes.iter().enumerate().filter(|(_, c)| c.action != Action::NoOp)
    }

    pub fn has_changes(&self) -> bool {
        self.changed().next().is_some()
    }

    /// The plan's steps (each is in one phase).
    pub fn step_count(&self) -> usize {
        self.plan.phases.iter().map(|p| p.steps.len()).sum()
    }

    /// As JSON, for the outputs that add to it (`declared_changes`, a platform's checks).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

impl Summary {
    pub fn of(changes: &ChangeSet) -> Summary {
        Summary {
            create: changes.count(Action::Create),
            update: changes.count(Action::Update),
            replace: changes.count(Action::Replace),
            delete: changes.count(Action::Delete),
            no_op: changes.count(Action::NoOp),
        }
    }
}

impl Summary {
    /// `Plan: 1 to create, ...`: the summary as one line.
    pub fn line(&self) -> String {
        format!(
            "Plan: {} to create, {} to update, {} to replace, {} to delete.",
            self.create, self.update, self.replace, self.delete
        )
    }
}

/// `Plan: 1 to create, ...`: the summary as one line (text, markdown, the daemon's events).
pub fn summary_line(changes: &ChangeSet) -> String {
    Summary::of(changes).line()
}

/// A diagnostic of the plan (a warning) with its message and note redacted, as the JSON plan
/// has it and text shows it; and its whole line redacted, as the markdown report lists it.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct WarningView {
    pub json: Value,
    #[serde(skip)]
    pub diagnostic: Diagnostic,
    /// `file:line:column: warning: message` (and the note), as one redacted string.
    #[serde(skip)]
    pub line: String,
}

impl WarningView {
    pub fn new(w: &Diagnostic, redactor: &Redactor) -> WarningView {
        let mut diagnostic = Diagnostic { message: redactor.text(&w.message), ..w.clone() };
        // A note can hold what a secret expanded into too (a key made from a variable).
        if let Some(related) = &mut diagnostic.related {
            related.1 = redactor.text(&related.1);
        }
        let json = serde_json::to_value(&diagnostic).unwrap_or(Value::Null);
        WarningView { json, diagnostic, line: redactor.text(&w.to_string()) }
    }
}

#[derive(Debug, Serialize)]
pub struct KeptView {
    pub address: String,
    pub reason: String,
}

/// One resource of a change set, with secrets masked.
#[derive(Debug, Serialize)]
pub struct ResourceChangeView {
    pub address: String,
    pub kind: String,
    pub name: String,
    pub action: Action,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub changes: Vec<FieldChangeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ResourceChangeView {
    /// The unified diff of the resource's YAML, from the view's (redacted) `before` and
    /// `after`.
    pub fn diff_lines(&self) -> Vec<DiffLine> {
        redacted_diff_lines(self.before.as_ref(), self.after.as_ref())
    }
}

#[derive(Debug, Serialize)]
pub struct FieldChangeView {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct OriginView {
    pub file: std::path::PathBuf,
    pub line: usize,
    pub column: usize,
}

/// `file:line:column`, as a `Location` shows.
impl fmt::Display for OriginView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Every resource of a change set, as the JSON plan lists them, with secrets masked.
pub fn resource_changes(changes: &ChangeSet, redactor: &Redactor) -> Vec<ResourceChangeView> {
    let with_sides = |c| {
        let mut v = resource_change(c, redactor);
        add_sides(&mut v, c, redactor);
        v
    };
    changes.changes.iter().map(with_sides).collect()
}

/// A change's `before` and `after`, redacted.
fn add_sides(v: &mut ResourceChangeView, c: &ResourceChange, redactor: &Redactor) {
    (v.before, v.after) = redactor.pair(c.before.as_ref(), c.after.as_ref());
}

/// A change without its `before` and `after` ([`add_sides`]).
fn resource_change(c: &ResourceChange, redactor: &Redactor) -> ResourceChangeView {
    let fields = c
        .changes
        .iter()
        .map(|f| {
            let leaf = f.path.rsplit(['.', '[']).next().unwrap_or("");
            let (before, after) = if redactor.is_sensitive(leaf) {
                let mask = |v: &Option<Value>| v.as_ref().map(|_| json!(crate::redact::MASK));
                let changed = f.before.is_some() && f.after.is_some();
                (mask(&f.before), if changed { Some(json!(crate::redact::MASK_CHANGED)) } else { mask(&f.after) })
            } else {
                redactor.pair(f.before.as_ref(), f.after.as_ref())
            };
            FieldChangeView { path: redactor.text(&f.path), before, after }
        })
        .collect();
    ResourceChangeView {
        address: c.id.to_string(),
        kind: c.id.kind.clone(),
        name: c.id.name.clone(),
        action: c.action,
        before: None,
        after: None,
        changes: fields,
        origin: c.origin.as_ref().map(|o| OriginView { file: o.file.clone(), line: o.line, column: o.column }),
        reason: c.reason.clone(),
    }
}

/// The diffs of a [`PlanView::for_text`] view's changes, made one resource at a time when text
/// shows them: both sides redacted as [`PlanView::new`] redacts them, so the lines are those
/// [`ResourceChangeView::diff_lines`] makes of a kept view, and nothing unredacted leaves.
pub struct Diffs<'a> {
    changes: &'a ChangeSet,
    redactor: &'a Redactor,
}

impl Diffs<'_> {
    /// The diff of the view's `resource_changes[i]`.
    pub fn lines(&self, i: usize) -> Vec<DiffLine> {
        let Some(c) = self.changes.changes.get(i) else { return Vec::new() };
        let (before, after) = self.redactor.pair(c.before.as_ref(), c.after.as_ref());
        redacted_diff_lines(before.as_ref(), after.as_ref())
    }
}

/// The platform's own preview, as it goes into the JSON plan.
#[derive(Debug, Serialize)]
pub struct PreviewView {
    pub request: String,
    pub steps: Vec<Vec<PreviewActionView>>,
    pub disagreements: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PreviewActionView {
    pub action: String,
    pub resource: String,
    /// The resource's name alone, as text shows it.
    #[serde(skip)]
    pub name: String,
}

impl PreviewView {
    pub fn new(p: &PlatformPreview, redactor: &Redactor) -> PreviewView {
        PreviewView {
            request: p.request.clone(),
            steps: p
                .steps
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|a| PreviewActionView {
                            action: a.action.clone(),
                            resource: a.resource.to_string(),
                            name: a.resource.name.clone(),
                        })
                        .collect()
                })
                .collect(),
            disagreements: p.disagreements.iter().map(|d| redactor.text(d)).collect(),
            error: p.error.as_ref().map(|e| redactor.text(e)),
        }
    }
}

/// The platform's pre-apply checks, as the JSON plan has them (every string redacted, and
/// `failed`, the count of failed checks); and for text, each shown check's line and each
/// realm's lines, redacted.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ChecksView {
    pub json: Value,
    /// The JSON plan's key (`policy_checks`).
    #[serde(skip)]
    pub key: String,
    /// As a heading: `Policy checks`.
    #[serde(skip)]
    pub title: String,
    /// Why they could not be run.
    #[serde(skip)]
    pub error: Option<String>,
    /// How many checks are declared.
    #[serde(skip)]
    pub count: usize,
    /// The checks whose answer changes or that fail, as text describes them.
    #[serde(skip)]
    pub shown: Vec<CheckLineView>,
    /// What changes per realm (when nothing is checked).
    #[serde(skip)]
    pub scopes: Vec<ScopeView>,
}

#[derive(Debug)]
pub struct CheckLineView {
    pub failed: bool,
    pub line: String,
}

#[derive(Debug)]
pub struct ScopeView {
    pub scope: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

impl ChecksView {
    pub fn new(p: &CheckReport, redactor: &Redactor) -> ChecksView {
        let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
        v["failed"] = json!(p.checks.iter().filter(|c| c.failed).count());
        if let Some(e) = &p.error {
            v["error"] = json!(redactor.text(e));
        }
        let lines = |ls: &[String]| ls.iter().map(|l| redactor.text(l)).collect();
        ChecksView {
            json: redactor.value(&v),
            key: p.key(),
            title: checks_title(p.name),
            error: p.error.as_ref().map(|e| redactor.text(e)),
            count: p.checks.len(),
            shown: p
                .checks
                .iter()
                .filter(|c| c.failed || c.changed)
                .map(|c| CheckLineView { failed: c.failed, line: redactor.text(&c.describe()) })
                .collect(),
            scopes: p
                .scopes
                .iter()
                .map(|r| ScopeView { scope: r.scope.clone(), before: lines(&r.before), after: lines(&r.after) })
                .collect(),
        }
    }
}

/// What a kind of check is called as a heading: `policy check` → `Policy checks`.
pub fn checks_title(name: &str) -> String {
    let mut c = name.chars();
    c.next().map(|f| format!("{}{}s", f.to_uppercase(), c.as_str())).unwrap_or_default()
}

/// A plan's phases and steps with their statuses, in seed 000's shape: the plan of the JSON
/// plan (all pending), and the outcome of a run as the daemon's `GET /v1/plans/deploy`
/// answers and its store keeps it (and `capstan plan status --daemon` reads it back).
#[derive(Debug, Serialize, Deserialize)]
pub struct PhasesView {
    pub status: Status,
    pub strategy: String,
    pub errors: Vec<Value>,
    pub phases: Vec<PhaseView>,
    /// The commit the plan is of (the daemon's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PhaseView {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub strategy: String,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub message: String,
    pub verb: Verb,
    pub resource: String,
    pub depends_on: Vec<String>,
    /// The steps of the platform's own plan that this step followed (a service's deploy plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substeps: Option<Vec<SubStep>>,
    /// The step's place in the plan (`Plan::steps`), the order an outcome lists steps in.
    #[serde(skip)]
    pub index: usize,
    /// The step as an outcome line names it ([`step_label`]); its name unless the view is an
    /// outcome's ([`PhasesView::outcome`]).
    #[serde(skip)]
    pub label: String,
}

impl PhasesView {
    pub fn new(plan: &Plan, redactor: &Redactor, outcome: Option<&Outcome>) -> PhasesView {
        let status_of = |i: usize| outcome.map(|o| o.steps[i].status).unwrap_or(Status::Pending);
        let message_of = |i: usize| outcome.map(|o| redactor.text(&o.steps[i].message)).unwrap_or_default();
        let substeps_of = |i: usize| {
            let subs = outcome.map(|o| o.steps[i].substeps.as_slice()).unwrap_or_default();
            let redacted = subs.iter().map(|x| SubStep { message: redactor.text(&x.message), ..x.clone() });
            (!subs.is_empty()).then(|| redacted.collect::<Vec<_>>())
        };
        let phases = plan
            .phases
            .iter()
            .map(|p| PhaseView {
                id: p.id.clone(),
                name: p.name.clone(),
                status: aggregate(p.steps.iter().map(|&i| status_of(i))),
                strategy: "parallel".into(),
                steps: p
                    .steps
                    .iter()
                    .map(|&i| {
                        let s = &plan.steps[i];
                        StepView {
                            id: s.id.clone(),
                            name: s.name.clone(),
                            status: status_of(i),
                            message: message_of(i),
                            verb: s.verb,
                            resource: s.resource.to_string(),
                            depends_on: s.deps.iter().map(|&d| plan.steps[d].id.clone()).collect(),
                            substeps: substeps_of(i),
                            index: i,
                            label: s.name.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        PhasesView {
            status: aggregate((0..plan.steps.len()).map(status_of)),
            strategy: "serial".into(),
            errors: Vec::new(),
            phases,
            commit: None,
        }
    }

    /// The outcome of a run, each step labelled with where its resource is declared.
    pub fn outcome(plan: &Plan, desired: &DesiredState, outcome: &Outcome, redactor: &Redactor) -> PhasesView {
        let mut view = PhasesView::new(plan, redactor, Some(outcome));
        for step in view.phases.iter_mut().flat_map(|p| p.steps.iter_mut()) {
            step.label = step_label(plan, step.index, desired);
        }
        view
    }

    /// Every step, in plan order.
    pub fn steps(&self) -> Vec<&StepView> {
        let mut steps: Vec<&StepView> = self.phases.iter().flat_map(|p| &p.steps).collect();
        steps.sort_by_key(|s| s.index);
        steps
    }
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

/// The status of a group of steps, as seed 000 reports a phase or plan.
pub fn aggregate(statuses: impl Iterator<Item = Status>) -> Status {
    let all: Vec<Status> = statuses.collect();
    if all.contains(&Status::Error) {
        Status::Error
    } else if all.iter().all(|s| *s == Status::Complete) {
        Status::Complete
    } else if all.contains(&Status::InProgress) || (all.contains(&Status::Complete) && all.contains(&Status::Pending)) {
        Status::InProgress
    } else if all.contains(&Status::Waiting) {
        Status::Waiting
    } else {
        Status::Pending
    }
}

/// One line of a resource's diff.
pub enum DiffLine {
    Hunk(String),
    Removed(String),
    Added(String),
    Same(String),
}

impl DiffLine {
    /// As in a unified diff (`+`, `-`, ` `), the form GitHub colours in a `diff` block.
    pub fn plain(&self) -> String {
        match self {
            DiffLine::Hunk(h) => h.clone(),
            DiffLine::Removed(l) => format!("- {l}"),
            DiffLine::Added(l) => format!("+ {l}"),
            DiffLine::Same(l) => format!("  {l}"),
        }
    }
}

fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_else(|_| v.to_string())
}

/// The unified diff of one resource's YAML, of values already redacted (a view's `before` and
/// `after`): everything added for a create, everything removed for a delete, hunks with two
/// lines of context otherwise.
pub fn redacted_diff_lines(before: Option<&Value>, after: Option<&Value>) -> Vec<DiffLine> {
    let before = before.filter(|v| !v.is_null()).map(yaml).unwrap_or_default();
    let after = after.filter(|v| !v.is_null()).map(yaml).unwrap_or_default();
    if before.is_empty() || after.is_empty() {
        let added = before.is_empty();
        let text = if added { &after } else { &before };
        return text
            .lines()
            .map(|l| if added { DiffLine::Added(l.to_string()) } else { DiffLine::Removed(l.to_string()) })
            .collect();
    }
    let diff = similar::TextDiff::from_lines(&before, &after);
    let mut out = Vec::new();
    for hunk in diff.unified_diff().context_radius(2).iter_hunks() {
        out.push(DiffLine::Hunk(hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let line = change.value().trim_end_matches('\n').to_string();
            out.push(match change.tag() {
                similar::ChangeTag::Delete => DiffLine::Removed(line),
                similar::ChangeTag::Insert => DiffLine::Added(line),
                similar::ChangeTag::Equal => DiffLine::Same(line),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::FieldChange;
    use crate::model::ResourceId;

    const SECRET: &str = "hunter2-s3cr3t";

    fn change(name: &str, action: Action, before: Option<Value>, after: Option<Value>) -> ResourceChange {
        let changes = vec![FieldChange { path: "password".into(), before: before.clone(), after: after.clone() }];
        ResourceChange { id: ResourceId::new("job", name), action, origin: None, before, after, changes, reason: None }
    }

    /// Text's diffs, made one resource at a time from the change set, are the lines a view
    /// that keeps every side makes, secrets masked alike; the text view keeps no side and is
    /// otherwise the same view.
    #[test]
    fn text_diffs_made_one_at_a_time_are_those_of_a_view_that_keeps_the_sides() {
        let mut redactor = Redactor::default();
        redactor.add_value(SECRET);
        let old = json!({ "cmd": format!("run {SECRET}"), "password": "old-pw", "n": 1, "keep": [1, 2, 3] });
        let new = json!({ "cmd": format!("run {SECRET} --fast"), "password": "new-pw", "n": 2, "keep": [1, 2, 3] });
        let set = ChangeSet {
            changes: vec![
                change("a", Action::Create, None, Some(new.clone())),
                change("b", Action::Update, Some(old.clone()), Some(new.clone())),
                change("c", Action::NoOp, Some(new.clone()), Some(new.clone())),
                change("d", Action::Delete, Some(old), None),
            ],
            ..Default::default()
        };
        let (plan, warnings) = (Plan::default(), Diagnostics::default());
        let kept = PlanView::new("p", &set, &plan, &warnings, &redactor, None);
        let (text, diffs) = PlanView::for_text("p", &set, &plan, &warnings, &redactor, None);
        let plain = |lines: Vec<DiffLine>| lines.iter().map(DiffLine::plain).collect::<Vec<_>>();
        for (i, c) in kept.resource_changes.iter().enumerate() {
            let lines = plain(diffs.lines(i));
            assert_eq!(lines, plain(c.diff_lines()), "{}", c.address);
            assert!(!lines.is_empty() || c.action == Action::NoOp, "{}", c.address);
            assert!(!lines.concat().contains(SECRET) && !lines.concat().contains("-pw"), "{lines:?}");
        }
        let password = plain(diffs.lines(1)).into_iter().filter(|l| l.starts_with("+ password:")).collect::<String>();
        assert!(password.contains(crate::redact::MASK_CHANGED), "{password}");
        assert!(text.resource_changes.iter().all(|c| c.before.is_none() && c.after.is_none()));
        let mut sides_left = kept.to_value();
        for c in sides_left["resource_changes"].as_array_mut().unwrap() {
            (c["before"], c["after"]) = (Value::Null, Value::Null);
        }
        assert_eq!(text.to_value(), sides_left);
        assert_eq!(text.changed_at().map(|(i, _)| i).collect::<Vec<_>>(), [0, 1, 3]);
    }
}
