//! The plan as a markdown report, ready to post as a pull-request comment: rendered with
//! handlebars from a built-in template (`templates/plan.md.hbs`) or the user's own
//! (`--template FILE`), from a context that holds nothing secret.
//!
//! The context: `title`, `target`, `summary_line`, `summary` (counts), `has_changes`, `table`
//! (every changed resource: `symbol`, `address`, `action`, `origin`), `details` (the first ones
//! with their unified `diff`, `cut` lines left out), `table_cut`, `details_cut`, `orphans`,
//! `warnings`, and with `--base/--head` `declared` (the change to the declared state: `base`,
//! `head`, `summary_line`, `resources`) and `live` (false with `--no-live`). The JSON plan is
//! there too, as `plan`.

use super::output::{diff_lines, summary_line};
use crate::diagnostic::Diagnostics;
use crate::diff::{Action, ChangeSet};
use crate::redact::Redactor;
use serde_json::{Value, json};

pub const BUILTIN: &str = include_str!("templates/plan.md.hbs");

/// Lines of one resource's diff shown before the rest is cut.
const DIFF_LINES: usize = 120;
/// Resources listed in the table, and shown with their diff.
const TABLE_ROWS: usize = 500;
const DETAILS: usize = 50;

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
        Action::NoOp => "no-op",
    }
}

/// Table cells: a pipe would end the cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

pub struct Report<'a> {
    pub title: Option<String>,
    pub target: String,
    pub changes: &'a ChangeSet,
    pub warnings: &'a Diagnostics,
    pub redactor: &'a Redactor,
    pub plan_json: Value,
    /// The declared-state change between two commits (`--base/--head`).
    pub declared: Option<Value>,
    /// Whether `changes` is a plan against the live platform.
    pub live: bool,
}

pub fn context(r: &Report<'_>) -> Value {
    let changed: Vec<_> = r.changes.changes.iter().filter(|c| c.action != Action::NoOp).collect();
    let table: Vec<Value> = changed
        .iter()
        .take(TABLE_ROWS)
        .map(|c| {
            json!({
                "symbol": c.action.symbol(),
                "address": cell(&c.id.to_string()),
                "action": action_word(c.action),
                "origin": c.origin.as_ref().map(|o| cell(&o.to_string())),
            })
        })
        .collect();
    let details: Vec<Value> = changed
        .iter()
        .take(DETAILS)
        .map(|c| {
            let lines: Vec<String> = diff_lines(c, r.redactor).iter().map(|l| l.plain()).collect();
            let cut = lines.len().saturating_sub(DIFF_LINES);
            json!({
                "symbol": c.action.symbol(),
                "address": c.id.to_string().replace('<', "&lt;"),
                "describe": c.action.describe(),
                "reason": c.reason,
                "diff": lines.into_iter().take(DIFF_LINES).collect::<Vec<_>>().join("\n").replace("```", "`\u{200b}``"),
                "cut": if cut > 0 { json!(cut) } else { Value::Null },
            })
        })
        .collect();
    let count = |a| r.changes.count(a);
    json!({
        "title": r.title,
        "target": r.target,
        "summary_line": summary_line(r.changes),
        "summary": {
            "create": count(Action::Create),
            "update": count(Action::Update),
            "replace": count(Action::Replace),
            "delete": count(Action::Delete),
        },
        "has_changes": !changed.is_empty(),
        "table": table,
        "table_cut": changed.len().saturating_sub(TABLE_ROWS),
        "details": details,
        "details_cut": changed.len().saturating_sub(DETAILS),
        "orphans": r.changes.orphans.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
        "orphan_count": r.changes.orphans.len(),
        "warnings": r.warnings.0.iter().map(|w| r.redactor.text(&w.to_string())).collect::<Vec<_>>(),
        "warning_count": r.warnings.0.len(),
        "declared": r.declared,
        "live": r.live,
        "platform_preview": r.plan_json.get("platform_preview").cloned().unwrap_or(Value::Null),
        "plan": r.plan_json,
    })
}

/// Render the report with the built-in template or `template` (handlebars, strict: a name
/// the context does not have is an error rather than an empty string).
pub fn render(r: &Report<'_>, template: Option<&str>) -> anyhow::Result<String> {
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    // Markdown, not HTML: values are escaped where they are put (table cells), not by the engine.
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_template_string("plan", template.unwrap_or(BUILTIN))
        .map_err(|e| anyhow::anyhow!("the markdown template is not valid: {e}"))?;
    let text =
        hb.render("plan", &context(r)).map_err(|e| anyhow::anyhow!("cannot render the markdown template: {e}"))?;
    // Collapse the blank lines template control lines leave behind.
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out.trim_start_matches('\n').to_string())
}
