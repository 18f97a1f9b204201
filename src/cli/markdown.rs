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
//!
//! Names and file names come from the manifests, that is from whoever opened the pull request,
//! and GitHub renders the comment: a backtick in a name would end its code span, and what
//! follows would be a live link, a mention or HTML. So every string from a manifest or the
//! platform is also in the context escaped for the place the built-in template puts it: `*_md`
//! is a complete code span (its fence longer than any run of backticks in it, `|` escaped for
//! a table cell), `*_html` is HTML-escaped text for inside `<code>`, `*_text` is markdown text
//! in which nothing is a link, mention or HTML, and `diff_fence` is a fence longer than any
//! run of backticks in its `diff`. The plain fields are as they were, for user templates that
//! print them elsewhere than in markdown.
//!
//! Size: GitHub refuses a comment over 65,536 characters. The report is kept within
//! `--max-bytes` (60,000 by default): the summary and every changed address are kept, diffs
//! are cut first (with a note saying so), then the address table becomes a compact list, and
//! only a plan with more addresses than fit even so lists the first ones and says how many
//! more there are.
//!
//! The context is made from the plan's typed view (`crate::view::PlanView`), redacted where
//! it was built: nothing here takes a `Redactor`.

use crate::diff::Action;
use crate::render::template::{Limits, render_guarded_in};
use crate::view::{PlanView, ResourceChangeView};
use serde_json::{Value, json};

pub const BUILTIN: &str = include_str!("templates/plan.md.hbs");

/// The default of `--max-bytes`: under GitHub's 65,536 characters, with room for a header.
pub const MAX_BYTES: usize = 60_000;
/// Lines of one resource's diff shown before the rest is cut.
const DIFF_LINES: usize = 120;
/// Characters of one diff line shown before the rest of it is cut.
const LINE_CHARS: usize = 500;
/// Resources shown with their diff (the report needs no other diff: `PlanView::keep_diffs`).
pub const DETAILS: usize = 50;

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

/// The longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `s` as one inline code span that nothing in it can end: its fence is longer than any run of
/// backticks inside, line breaks become spaces, and in a table cell `|` is escaped (GFM
/// removes the backslash before it reads the span).
pub fn code(s: &str, in_table: bool) -> String {
    let mut inner = s.replace(['\n', '\r'], " ");
    if in_table {
        inner = cell(&inner);
    }
    let fence = "`".repeat(longest_backtick_run(&inner) + 1);
    // A span that starts or ends with a backtick or a space needs a space of padding, which
    // CommonMark strips again.
    let pad = if inner.starts_with(['`', ' ']) || inner.ends_with(['`', ' ']) { " " } else { "" };
    format!("{fence}{pad}{inner}{pad}{fence}")
}

/// Text for inside an HTML element (`<code>`): no tag, entity or attribute can start in it.
pub fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;")
}

/// Markdown text that renders as exactly `s`: every ASCII punctuation character is escaped
/// (no emphasis, link, image, autolink, HTML or entity can start), and a zero-width space
/// breaks what GitHub would turn into a mention (`@name`, `#1`) or an autolink (`www.`,
/// `http://`), which escapes cannot prevent.
pub fn text(s: &str) -> String {
    let chars: Vec<char> = s.replace(['\n', '\r'], " ").chars().collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
        let next = |k: usize| chars.get(i + k).copied().unwrap_or(' ');
        let breaks = matches!(c, '@' | '#')
            || (c == ':' && next(1) == '/' && next(2) == '/')
            || (c.eq_ignore_ascii_case(&'w')
                && i > 0
                && chars[i - 1].eq_ignore_ascii_case(&'w')
                && next(1).eq_ignore_ascii_case(&'w'));
        if breaks {
            out.push('\u{200b}');
        }
    }
    out
}

/// A fenced code block's fence for `body`: longer than any run of backticks in it.
fn fence_for(body: &str) -> String {
    "`".repeat((longest_backtick_run(body) + 1).max(3))
}

pub struct Report<'a> {
    pub title: Option<String>,
    pub target: String,
    /// The plan (or, with `--no-live`, the declared change) the report shows.
    pub view: &'a PlanView,
    /// The JSON plan, as `--output json` prints it (the template's `plan`).
    pub plan_json: Value,
    /// The declared-state change between two commits (`--base/--head`).
    pub declared: Option<Value>,
    /// Whether `view` is a plan against the live platform.
    pub live: bool,
    /// The most bytes the report may have (`--max-bytes`).
    pub max_bytes: usize,
}

/// How much of the report is shown: what [`render`] cuts to stay within `max_bytes`.
#[derive(Clone, Copy, Debug)]
struct Cut {
    /// Resources shown with their diff.
    details: usize,
    /// Lines of each diff; of the last one shown, perhaps fewer (`last_lines`).
    lines: usize,
    last_lines: usize,
    /// Addresses listed in a table, or (compact) one per line.
    compact: bool,
    /// Addresses listed (the rest are counted).
    rows: usize,
}

/// One row of an address table, with its escaped forms.
pub fn row(symbol: &str, address: &str, action: &str, origin: Option<String>) -> Value {
    json!({
        "symbol": symbol,
        "address": cell(address),
        "address_md": code(address, true),
        "action": action,
        "origin": origin.as_deref().map(cell),
        "origin_md": origin.as_deref().map(|o| code(o, true)),
    })
}

/// Addresses one per line in a fenced block (symbol, address, action), the compact form.
fn compact_block(rows: &[Value]) -> String {
    let body: String = rows
        .iter()
        .map(|r| {
            let address = r["address"].as_str().unwrap_or_default().replace("\\|", "|");
            format!("{} {address}\n", r["symbol"].as_str().unwrap_or_default())
        })
        .collect();
    let fence = fence_for(&body);
    format!("{fence}\n{body}{fence}")
}

fn detail(c: &ResourceChangeView, lines: usize) -> Value {
    let all: Vec<String> = c
        .diff_lines()
        .iter()
        .map(|l| {
            let l = l.plain();
            match l.char_indices().nth(LINE_CHARS) {
                Some((i, _)) => format!("{}… ({} more characters)", &l[..i], l[i..].chars().count()),
                None => l,
            }
        })
        .collect();
    let cut = all.len().saturating_sub(lines);
    let diff = all.into_iter().take(lines).collect::<Vec<_>>().join("\n");
    let address = &c.address;
    json!({
        "symbol": c.action.symbol(),
        "address": address.replace('<', "&lt;"),
        "address_html": html(address),
        "describe": c.action.describe(),
        "reason": c.reason,
        "reason_html": c.reason.as_deref().map(html),
        "diff_fence": fence_for(&diff),
        "diff": diff,
        "cut": if cut > 0 { json!(cut) } else { Value::Null },
    })
}

/// Every changed resource's table row, built once per report rather than once per cut tried.
fn all_rows(r: &Report<'_>) -> Vec<Value> {
    r.view
        .changed()
        .map(|c| row(c.action.symbol(), &c.address, action_word(c.action), c.origin.as_ref().map(|o| o.to_string())))
        .collect()
}

/// The first `shown` changed resources' details with their whole diff (up to `DIFF_LINES`),
/// built once per report: a cut only drops some of them or shortens the last one.
fn all_details(changed: &[&ResourceChangeView], shown: usize) -> Vec<Value> {
    changed.iter().take(shown).map(|c| detail(c, DIFF_LINES)).collect()
}

/// Put into the template data what depends on `cut` (the table, the details, the declared
/// rows and the notes on what is cut), in place: the rest, the whole JSON plan among it, is
/// built and converted once per report rather than once per cut tried (issue 18).
fn set_cut(data: &mut Value, r: &Report<'_>, cut: Cut, all_rows: &[Value], details: &[Value]) {
    let changed: Vec<_> = r.view.changed().collect();
    // The rows only ever shrink from one cut to the next: truncate the table already there.
    let n = cut.rows.min(all_rows.len());
    match data["table"].as_array_mut() {
        Some(table) if table.len() >= n => table.truncate(n),
        _ => data["table"] = Value::Array(all_rows[..n].to_vec()),
    }
    let table = data["table"].as_array().map_or(&[][..], Vec::as_slice);
    let compact = json!(cut.compact && !table.is_empty());
    let block = json!(compact_block(table));
    let details: Vec<Value> = changed
        .iter()
        .take(cut.details)
        .enumerate()
        .map(|(i, c)| {
            let lines = if i + 1 == cut.details { cut.last_lines } else { cut.lines };
            match details.get(i) {
                Some(d) if lines == DIFF_LINES => d.clone(),
                _ => detail(c, lines),
            }
        })
        .collect();
    let declared = r.declared.clone().map(|mut d| {
        let rows: Vec<Value> = d["resources"].as_array().cloned().unwrap_or_default();
        d["resources_cut"] = json!(rows.len().saturating_sub(cut.rows));
        let rows: Vec<Value> = rows.into_iter().take(cut.rows).collect();
        d["compact"] = json!(cut.compact && !rows.is_empty());
        d["compact_block"] = json!(compact_block(&rows));
        d["resources"] = json!(rows);
        d
    });
    data["compact"] = compact;
    data["compact_block"] = block;
    data["table_cut"] = json!(changed.len().saturating_sub(cut.rows));
    data["details"] = json!(details);
    data["details_cut"] = json!(changed.len().saturating_sub(cut.details));
    data["size_cut"] = json!(cut.details < changed.len().min(DETAILS) || cut.last_lines < cut.lines);
    data["declared"] = declared.unwrap_or(Value::Null);
}

/// The template data for `cut`. Its keys are in the order the context always had them (a user
/// template that walks them sees that order); [`set_cut`] fills the cut's own in place.
fn context(r: &Report<'_>, cut: Cut, all_rows: &[Value], details: &[Value]) -> Value {
    let changed: Vec<_> = r.view.changed().collect();
    let summary = &r.view.summary;
    let preview = r.view.platform_preview.as_ref().map(|p| {
        let mut p = serde_json::to_value(p).unwrap_or(Value::Null);
        if let Some(req) = p.get("request").and_then(Value::as_str) {
            p["request_html"] = json!(html(req));
        }
        if let Some(e) = p.get("error").and_then(Value::as_str) {
            p["error_text"] = json!(text(e));
        }
        let disagreements: Vec<String> = p["disagreements"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| code(d.as_str().unwrap_or_default(), false))
            .collect();
        p["disagreements_md"] = json!(disagreements);
        if let Some(steps) = p.get_mut("steps").and_then(Value::as_array_mut) {
            for step in steps.iter_mut().flat_map(|s| s.as_array_mut().into_iter().flatten()) {
                step["action_text"] = json!(text(step["action"].as_str().unwrap_or_default()));
                step["resource_md"] = json!(code(step["resource"].as_str().unwrap_or_default(), false));
            }
        }
        p
    });
    // The platform's pre-apply checks, as the JSON plan has them.
    let checks = r.view.checks.as_ref().map(|c| {
        let mut p = c.json.clone();
        // Only the checks whose answer changes or that fail; each as one code span.
        let shown: Vec<String> = p["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["failed"] == true || c["changed"] == true)
            .map(|c| {
                let input: Vec<&str> = c["input"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let line = format!(
                    "{} {} for {} [{}]: expected {}, {} now, {} after this plan",
                    c["claim"].as_str().unwrap_or_default(),
                    c["fqn"].as_str().unwrap_or_default(),
                    if input.is_empty() { "anyone".to_string() } else { input.join(" ") },
                    c["at"].as_str().unwrap_or_default(),
                    c["expect"].as_str().unwrap_or_default(),
                    c["before"].as_str().unwrap_or_default(),
                    c["after"].as_str().unwrap_or_default(),
                );
                format!("{} {}", if c["failed"] == true { "❌" } else { "~" }, code(&line, false))
            })
            .collect();
        p["shown_md"] = json!(shown);
        p["title"] = json!(c.title);
        p["check_count"] = json!(p["checks"].as_array().map_or(0, Vec::len));
        if let Some(e) = p.get("error").and_then(Value::as_str) {
            p["error_text"] = json!(text(e));
        }
        let realms: Vec<Value> = p["realms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let lines = |k: &str| -> Vec<String> {
                    let ls: Vec<String> =
                        r[k].as_array().into_iter().flatten().filter_map(Value::as_str).map(|l| code(l, false)).collect();
                    if ls.is_empty() { vec!["nothing permitted".to_string()] } else { ls }
                };
                json!({ "realm_md": code(r["realm"].as_str().unwrap_or_default(), false), "before": lines("before"), "after": lines("after") })
            })
            .collect();
        p["realms_md"] = json!(realms);
        p
    });
    let warnings: Vec<&str> = r.view.warnings.iter().map(|w| w.line.as_str()).collect();
    let orphans = &r.view.orphans;
    let mut data = json!({
        "title": r.title,
        "title_text": r.title.as_deref().map(text),
        "target": r.target,
        "target_text": text(&r.target),
        "summary_line": summary.line(),
        "summary": {
            "create": summary.create,
            "update": summary.update,
            "replace": summary.replace,
            "delete": summary.delete,
        },
        "has_changes": !changed.is_empty(),
        "compact": null,
        "compact_block": null,
        "table": null,
        "table_cut": null,
        "details": null,
        "details_cut": null,
        "size_cut": null,
        "max_bytes": r.max_bytes,
        "orphans_md": orphans.iter().map(|o| code(o, false)).collect::<Vec<_>>(),
        "orphans": orphans,
        "orphan_count": orphans.len(),
        "warnings_md": warnings.iter().map(|w| code(w, false)).collect::<Vec<_>>(),
        "warnings": warnings,
        "warning_count": warnings.len(),
        "declared": null,
        "live": r.live,
        "platform_preview": preview.unwrap_or(Value::Null),
        "checks": checks.unwrap_or(Value::Null),
        "plan": r.plan_json,
    });
    set_cut(&mut data, r, cut, all_rows, details);
    data
}

/// Template limits: a user's template is checked as manifest templates are; its output may be
/// larger than the report (it is cut to `max_bytes` afterwards).
const TEMPLATE_LIMITS: Limits = Limits { depth: 64, output: 64 * 1024 * 1024 };

/// A user's template: its file (for errors) and text.
pub type Template<'a> = (&'a std::path::Path, &'a str);

fn render_once(template: Option<Template<'_>>, data: &handlebars::Context) -> anyhow::Result<String> {
    let text = render_guarded_in(template.map_or(BUILTIN, |t| t.1), data, &TEMPLATE_LIMITS).map_err(|p| {
        let file = template.map_or("the built-in template".into(), |t| t.0.display().to_string());
        let at = p.at.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        anyhow::anyhow!("cannot render the markdown template {file}{at}: {}", p.message)
    })?;
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

/// Render the report with the built-in template or `template` (handlebars, strict: a name
/// the context does not have is an error rather than an empty string), within `max_bytes`.
pub fn render(r: &Report<'_>, template: Option<Template<'_>>) -> anyhow::Result<String> {
    let changed: Vec<_> = r.view.changed().collect();
    let rows = changed.len().max(r.declared.as_ref().and_then(|d| d["resources"].as_array()).map_or(0, Vec::len));
    let shown = changed.len().min(DETAILS);
    let full = Cut { details: shown, lines: DIFF_LINES, last_lines: DIFF_LINES, compact: false, rows };
    // What no cut changes is built once; each try only changes the cut's own fields in place.
    let all = all_rows(r);
    let details = all_details(&changed, shown);
    let mut data = handlebars::Context::from(context(r, full, &all, &details));
    let mut first = true;
    let mut render_once = |_: &Report<'_>, template, cut| {
        if !std::mem::take(&mut first) {
            set_cut(data.data_mut(), r, cut, &all, &details);
        }
        render_once(template, &data)
    };
    let out = render_once(r, template, full)?;
    if out.len() <= r.max_bytes {
        return Ok(out);
    }
    // Too big. First the addresses alone, in a table, else one per line, else as many as fit.
    let mut cut = Cut { details: 0, ..full };
    let mut base = render_once(r, template, cut)?;
    if base.len() > r.max_bytes {
        cut.compact = true;
        base = render_once(r, template, cut)?;
    }
    // At most a few dozen tries: each keeps a share of the rows in proportion to the excess.
    let mut tries = 0;
    while base.len() > r.max_bytes && cut.rows > 0 && tries < 40 {
        let keep = (cut.rows as f64 * r.max_bytes as f64 / base.len() as f64 * 0.95) as usize;
        cut.rows = keep.min(cut.rows - 1);
        base = render_once(r, template, cut)?;
        tries += 1;
    }
    if base.len() > r.max_bytes {
        // Nothing left to cut but what the template itself writes.
        return Ok(truncate(&base, r.max_bytes));
    }
    // Then diffs, in plan order, while they fit: whole ones, then as many lines of the next as fit.
    let mut best = base;
    for n in 1..=shown {
        let whole = Cut { details: n, ..cut };
        let out = render_once(r, template, whole)?;
        if out.len() <= r.max_bytes {
            best = out;
            continue;
        }
        let (mut lo, mut hi) = (0usize, DIFF_LINES.min(changed[n - 1].diff_lines().len()));
        // Binary search for the most lines of this diff that fit.
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let out = render_once(r, template, Cut { last_lines: mid, ..whole })?;
            if out.len() <= r.max_bytes { lo = mid } else { hi = mid - 1 }
        }
        if lo > 0 {
            best = render_once(r, template, Cut { last_lines: lo, ..whole })?;
        }
        break;
    }
    Ok(best)
}

/// The whole lines of `text` that fit in `max` bytes with a note saying the rest is cut (the
/// lines alone when the note does not fit: the report never exceeds `max`). Never part of a
/// line: a line cut inside a code span would leave its fence open, and what the span held
/// (a link, a mention, HTML from a name) would be live markdown.
fn truncate(text: &str, max: usize) -> String {
    let note = "\n_The report is cut here: it is longer than `--max-bytes` allows._\n";
    let whole_lines = |room: usize| {
        let mut end = room.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..text[..end].rfind('\n').map_or(0, |i| i + 1)]
    };
    if note.len() > max {
        return whole_lines(max).to_string();
    }
    format!("{}{note}", whole_lines(max - note.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::diagnostic::Diagnostics;
    use crate::diff::{ChangeSet, FieldChange, ResourceChange};
    use crate::model::ResourceId;
    use crate::plan::Plan;
    use crate::redact::Redactor;

    /// Issue 18: the data one context carries through a report's cuts, each changed in place by
    /// `set_cut`, is at every cut exactly (values and key order) the data built afresh for it.
    #[test]
    fn data_changed_in_place_from_cut_to_cut_is_the_data_built_afresh() {
        let changes: Vec<ResourceChange> = (0..80)
            .map(|i| {
                // Some diffs longer than DIFF_LINES, so the last detail shown can be shortened.
                let lines = if i % 9 == 0 { 150 } else { 3 };
                let before: Vec<String> = (0..lines).map(|l| format!("line {l}")).collect();
                let after: Vec<String> = (0..lines).map(|l| format!("line {l} of job {i}")).collect();
                ResourceChange {
                    id: ResourceId::new("job", format!("/g::svc-{i:03}|`x`")),
                    action: if i % 5 == 0 { Action::Create } else { Action::Update },
                    origin: None,
                    before: (i % 5 != 0).then(|| json!({ "lines": before })),
                    after: Some(json!({ "lines": after })),
                    changes: vec![FieldChange { path: "lines".into(), before: None, after: None }],
                    reason: None,
                }
            })
            .collect();
        let set = ChangeSet { changes, ..Default::default() };
        let (warnings, redactor) = (Diagnostics::default(), Redactor::default());
        let view = PlanView::new("p", &set, &Plan::default(), &warnings, &redactor, None);
        let resources: Vec<Value> = (0..90).map(|i| json!({ "address": format!("job::/g::svc-{i:03}") })).collect();
        let r = Report {
            title: Some("t".into()),
            target: "sb".into(),
            view: &view,
            plan_json: json!({ "resource_changes": [1, 2, 3], "z": { "a": 1 } }),
            declared: Some(json!({ "base": "a", "resources": resources, "head": "b" })),
            live: true,
            max_bytes: 1000,
        };
        let changed: Vec<_> = view.changed().collect();
        let all = all_rows(&r);
        let details = all_details(&changed, DETAILS);
        let full = Cut { details: DETAILS, lines: DIFF_LINES, last_lines: DIFF_LINES, compact: false, rows: 90 };
        let mut data = context(&r, full, &all, &details);
        // The cuts render tries, in its order: fewer rows, then details back, the last shortened.
        let mut cuts = vec![full, Cut { details: 0, ..full }, Cut { details: 0, compact: true, ..full }];
        for rows in [70, 40, 12, 0] {
            cuts.push(Cut { details: 0, compact: true, rows, ..full });
        }
        for (details, last_lines) in
            [(1, DIFF_LINES), (2, DIFF_LINES), (10, 60), (10, 1), (10, DIFF_LINES), (DETAILS, 7)]
        {
            cuts.push(Cut { details, last_lines, compact: true, rows: 12, ..full });
        }
        for cut in cuts {
            set_cut(&mut data, &r, cut, &all, &details);
            let afresh = context(&r, cut, &all_rows(&r), &[]);
            assert_eq!(
                serde_json::to_string(&data).unwrap(),
                serde_json::to_string(&afresh).unwrap(),
                "the data for {cut:?} differs from the data built afresh"
            );
        }
        assert_eq!(data["table"].as_array().map(Vec::len), Some(12));
        assert_eq!(data["details"].as_array().map(Vec::len), Some(DETAILS));
        assert_eq!((data["table_cut"].clone(), data["details_cut"].clone()), (json!(68), json!(30)));
    }

    /// A report cut by `truncate` keeps within `max` however small, and never ends in part of
    /// a line (a code span cut open would make what it held a live link).
    #[test]
    fn truncate_keeps_within_max_and_cuts_only_between_lines() {
        let span = code("job::/g::y`[x](https://evil.example)@octocat", false);
        let text = format!("## plan\n{span} and more\n");
        for max in 0..text.len() + 100 {
            let out = truncate(&text, max);
            assert!(out.len() <= max, "{max}: {} bytes: {out:?}", out.len());
            let kept = out.split("\n_The report is cut here").next().unwrap();
            assert!(kept.is_empty() || kept.ends_with('\n'), "{max}: part of a line kept: {out:?}");
            assert!(!kept.contains("evil") || kept.contains(&span), "{max}: the span is cut open: {out:?}");
        }
        // No newline at all: nothing of the line, only the note.
        let out = truncate(&span, 100);
        assert!(!out.contains("evil"), "{out:?}");
        assert!(out.contains("The report is cut here"), "{out:?}");
    }

    #[test]
    fn code_spans_cannot_be_ended_by_what_they_hold() {
        assert_eq!(code("job::/g::web", true), "`job::/g::web`");
        assert_eq!(code("a`b", false), "``a`b``");
        assert_eq!(code("`a``", false), "``` `a`` ```");
        assert_eq!(code("x|y", true), "`x\\|y`");
        assert_eq!(code("x|y\nz", false), "`x|y z`");
        assert_eq!(html("<img src=\"x\">&"), "&lt;img src=&quot;x&quot;>&amp;");
        assert_eq!(text("a*b"), "a\\*b");
        assert_eq!(text("@octocat"), "\\@\u{200b}octocat");
        assert_eq!(text("see www.x.io or http://x.io"), "see ww\u{200b}w\\.x\\.io or http\\:\u{200b}\\/\\/x\\.io");
        assert_eq!(text("capstan: plan"), "capstan\\: plan");
        assert_eq!(fence_for("a ```` b"), "`````");
        assert_eq!(fence_for("plain"), "```");
    }
}
