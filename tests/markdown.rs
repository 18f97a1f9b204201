//! The markdown report as GitHub renders it (a CommonMark-GFM renderer, comrak): names and file
//! names from a pull request cannot make a link, a mention or HTML; the report keeps within
//! `--max-bytes`; a template that recurses is an error, not a crash.

mod common;
use common::git::*;
use common::*;
use comrak::nodes::{AstNode, NodeValue};
use comrak::{Arena, Options, parse_document};

const EVIL_JOB: &str = "job::/g::y`[Approve-this-PR](https://evil.example/phish)@octocat";
const EVIL_FILE: &str = "f` @octocat <img src=x onerror=alert(1)> `|z.json";

fn gfm() -> Options<'static> {
    let mut o = Options::default();
    o.extension.table = true;
    o.extension.autolink = true;
    o.extension.strikethrough = true;
    o.extension.tasklist = true;
    o
}

/// What GitHub would make of `md` that it must not: every link, image, inline HTML, HTML
/// outside the report's own `<details>`/`<summary>`/`<code>`/`<b>`, and every `@name` or `#1`
/// outside code. Also the literal text of every code span, and the cell count of every row.
struct Rendered {
    problems: Vec<String>,
    code: Vec<String>,
    row_cells: Vec<usize>,
}

fn rendered(md: &str) -> Rendered {
    let arena = Arena::new();
    let root = parse_document(&arena, md, &gfm());
    let mut r = Rendered { problems: Vec::new(), code: Vec::new(), row_cells: Vec::new() };
    visit(root, false, &mut r);
    r
}

fn mention(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(2).any(|w| matches!(w[0], '@' | '#') && w[1].is_ascii_alphanumeric())
}

fn visit<'a>(node: &'a AstNode<'a>, in_code: bool, r: &mut Rendered) {
    let value = node.data.borrow().value.clone();
    match &value {
        NodeValue::Link(l) | NodeValue::Image(l) => r.problems.push(format!("a link to {}", l.url)),
        NodeValue::HtmlInline(h) => r.problems.push(format!("inline HTML {h:?}")),
        NodeValue::HtmlBlock(h) => check_html_block(&h.literal, r),
        NodeValue::Code(c) => r.code.push(c.literal.clone()),
        NodeValue::Text(t) if !in_code && mention(t) => r.problems.push(format!("a mention in {t:?}")),
        NodeValue::TableRow(_) => r.row_cells.push(node.children().count()),
        _ => {}
    }
    let in_code = in_code || matches!(value, NodeValue::Code(_) | NodeValue::CodeBlock(_));
    for child in node.children() {
        visit(child, in_code, r);
    }
}

/// The report's HTML blocks: only its own tags, and what is between `<code>` and `</code>` has
/// no tag of its own.
fn check_html_block(html: &str, r: &mut Rendered) {
    let mut rest = html.to_string();
    for tag in ["<details>", "</details>", "<summary>", "</summary>", "<b>", "</b>"] {
        rest = rest.replace(tag, "");
    }
    let mut outside = String::new();
    while let Some(start) = rest.find("<code>") {
        outside.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("</code>") else {
            r.problems.push(format!("an unclosed <code> in {html:?}"));
            return;
        };
        let inside = &rest[start + 6..start + end];
        if inside.contains('<') {
            r.problems.push(format!("a tag inside <code>: {inside:?}"));
        }
        r.code.push(inside.replace("&lt;", "<").replace("&quot;", "\"").replace("&amp;", "&"));
        rest = rest[start + end + 7..].to_string();
    }
    outside.push_str(&rest);
    if outside.contains('<') {
        r.problems.push(format!("HTML of its own in {html:?}"));
    }
    if mention(&outside) {
        r.problems.push(format!("a mention in {outside:?}"));
    }
}

fn evil_manifest() -> String {
    serde_json::json!({
        "jobs": {
            EVIL_JOB: { "state": "started", "tags": { "note": "`` [x](https://evil.example) @octocat ${NOTE}" } },
        }
    })
    .to_string()
}

fn assert_harmless(md: &str) {
    let r = rendered(md);
    assert!(r.problems.is_empty(), "{:#?}\n{md}", r.problems);
    assert!(r.row_cells.iter().all(|&n| n == 4), "a row with other than 4 cells: {:?}\n{md}", r.row_cells);
    assert!(r.code.iter().any(|c| c == EVIL_JOB), "the name is shown whole in code: {:?}\n{md}", r.code);
    assert!(
        r.code.iter().any(|c| c.starts_with(EVIL_FILE) && c.ends_with(":1:10")),
        "the file is shown whole in code: {:?}\n{md}",
        r.code
    );
}

#[test]
fn names_and_file_names_cannot_make_links_mentions_or_html_in_the_markdown_report() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: md\n");
    w.target(&sb.url);
    w.write(EVIL_FILE, &evil_manifest());
    let md =
        w.capstan(&["plan", ".", "-o", "markdown", "--allow-missing-vars", "--title", "PR @octocat www.evil.example"]);
    md.ok();
    assert_harmless(&md.stdout);

    // The same through --base/--head, with and without the live plan.
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("keep.yaml", "jobs:\n  job::::keep: {state: started}\n");
    let base = repo.commit("base");
    repo.write(EVIL_FILE, &evil_manifest());
    repo.commit("head");
    let repo_path = repo.path().to_str().unwrap();
    for extra in [&[][..], &["--no-live"][..]] {
        let mut args =
            vec!["plan", "--repo", repo_path, "--base", base.as_str(), "-o", "markdown", "--allow-missing-vars"];
        args.extend_from_slice(extra);
        let md = run_in(repo.path(), &args);
        md.ok();
        assert_harmless(&md.stdout);
    }
}

#[test]
fn the_report_keeps_within_max_bytes_with_the_summary_and_every_changed_address() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: md\n");
    w.target(&sb.url);
    // One 100 KB value.
    w.write("big.yaml", &format!("jobs:\n  job::/g::big:\n    tags: {{blob: \"{}\"}}\n", "x".repeat(100_000)));
    let md = w.capstan(&["plan", ".", "-o", "markdown"]);
    md.ok();
    assert!(md.stdout.len() <= 60_000, "{} bytes", md.stdout.len());
    assert!(md.stdout.contains("**Plan: 1 to create") && md.stdout.contains("`job::/g::big`"), "{}", md.stdout);
    assert!(md.stdout.contains("more characters)"), "the long line is cut with a note");

    // A big plan: 1,200 jobs.
    let mut m = String::from("jobs:\n");
    for i in 0..1200 {
        m.push_str(&format!("  job::/g::job-{i:04}: {{state: started, tags: {{app: a{i}, team: t{i}}}}}\n"));
    }
    w.remove("big.yaml");
    w.write("many.yaml", &m);
    let addresses: Vec<String> = (0..1200).map(|i| format!("job::/g::job-{i:04}")).collect();
    let md = w.capstan(&["plan", ".", "-o", "markdown"]);
    md.ok();
    assert!(md.stdout.len() <= 60_000, "{} bytes", md.stdout.len());
    assert!(md.stdout.contains("**Plan: 1200 to create"), "{}", &md.stdout[..500]);
    for a in &addresses {
        assert!(md.stdout.contains(a.as_str()), "{a} is missing");
    }
    assert!(md.stdout.contains("more resources not shown"), "the cut is said");
    assert_eq!(rendered(&md.stdout).problems, Vec::<String>::new());

    // Smaller than the addresses: as many as fit, and how many more.
    let md = w.capstan(&["plan", ".", "-o", "markdown", "--max-bytes", "8000"]);
    md.ok();
    assert!(md.stdout.len() <= 8000, "{} bytes", md.stdout.len());
    assert!(md.stdout.contains("**Plan: 1200 to create") && md.stdout.contains("more not listed"), "{}", md.stdout);

    // --no-live: the declared table is bounded the same way, and cut diffs are said.
    let repo = Repo::new();
    repo.write("capstan.yaml", &config_for(&sb, ""));
    repo.write("keep.yaml", "jobs:\n  job::::keep: {state: started}\n");
    let base = repo.commit("base");
    repo.write("many.yaml", &m);
    repo.commit("head");
    let args = ["plan", "--repo", repo.path().to_str().unwrap(), "--base", &base, "--no-live", "-o", "markdown"];
    let md = run_in(repo.path(), &args);
    md.ok();
    assert!(md.stdout.len() <= 60_000, "{} bytes", md.stdout.len());
    for a in &addresses {
        assert!(md.stdout.contains(a.as_str()), "{a} is missing");
    }
    assert!(md.stdout.contains("more resources not shown"), "{}", &md.stdout[md.stdout.len() - 300..]);
}

const RECURSIVE: &str = "{{#*inline \"a\"}}x{{> a}}{{/inline}}{{> a}}";

#[test]
fn a_recursive_template_is_an_error_at_its_place_in_validate_and_plan() {
    let w = Workdir::new();
    w.write("capstan.yaml", "default_namespace: /dev\n");
    w.write("jobs/ok.yaml", "jobs:\n  job::::ok: {state: started}\n");
    w.write("jobs/boom.yaml.hbs", RECURSIVE);
    let out = w.capstan(&["validate", "."]);
    out.code(1);
    assert!(out.stderr.contains("jobs/boom.yaml.hbs:1:18: error: the partial \"a\" includes itself"), "{}", out.stderr);
    let out = w.capstan(&["plan", "."]);
    out.code(1);
    assert!(out.stderr.contains("jobs/boom.yaml.hbs:1:18"), "{}", out.stderr);

    // A markdown template that recurses.
    w.remove("jobs/boom.yaml.hbs");
    w.write("t.hbs", RECURSIVE);
    let out = w.capstan(&["plan", ".", "-o", "markdown", "--template", "t.hbs"]);
    out.code(1);
    assert!(out.stderr.contains("cannot render the markdown template t.hbs:1:18"), "{}", out.stderr);
}

/// A `--max-bytes` smaller than anything the report must say (even the note that it is cut)
/// still bounds the report, and what is kept never ends in part of a line.
#[test]
fn a_max_bytes_smaller_than_the_cut_note_still_bounds_the_report() {
    let sb = SandboxProc::start(&[]);
    let w = Workdir::new();
    w.write("capstan.yaml", "owner: md\n");
    w.target(&sb.url);
    w.write(EVIL_FILE, &evil_manifest());
    for max in ["0", "10", "40", "69", "120"] {
        let md = w.capstan(&["plan", ".", "-o", "markdown", "--allow-missing-vars", "--max-bytes", max]);
        md.ok();
        let max: usize = max.parse().unwrap();
        assert!(md.stdout.len() <= max, "--max-bytes {max}: {} bytes: {:?}", md.stdout.len(), md.stdout);
        assert!(md.stdout.is_empty() || md.stdout.ends_with('\n'), "part of a line: {:?}", md.stdout);
        assert_eq!(rendered(&md.stdout).problems, Vec::<String>::new(), "--max-bytes {max}");
    }
}
