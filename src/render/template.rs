//! Manifest templates: a `*.yaml.hbs` (or `.yml.hbs`, `.json.hbs`) file is rendered with
//! handlebars in strict mode before it is parsed, with the variables of capstan.yaml and
//! `--var` as its context (`{{#if PROD}}...{{else}}...{{/if}}`, `{{#if (eq REGION "eu")}}`).
//! A name the context does not have is an error at its file:line:column, never an empty
//! string. Positions of later problems refer to the rendered text, which `capstan render`
//! shows. `${VAR}` expansion still runs afterwards, as for any manifest.
//!
//! handlebars renders by recursion and has no limit of its own, so one file could end the
//! process with a stack overflow (a partial that includes itself, ten thousand nested blocks)
//! or fill memory. [`Limits`] are checked before anything renders — how deep blocks, partials
//! and subexpressions nest, and no partial that includes itself or whose name is computed —
//! and the output is cut off at a size; each is an error at its file:line:column. The markdown
//! report's `--template` goes through the same checks ([`render_guarded`]).

use crate::base::diagnostic::{Diagnostic, Location};
use handlebars::template::{DecoratorTemplate, Parameter, Template, TemplateElement};
use handlebars::{Handlebars, JsonValue};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// What one template may do. The numbers are far beyond what a manifest or a report needs.
pub struct Limits {
    /// Blocks, partials and subexpressions nested in one another, partials followed.
    pub depth: usize,
    /// Bytes of output.
    pub output: usize,
}

/// The limits of manifest templates.
pub const LIMITS: Limits = Limits { depth: 64, output: super::yaml::MAX_FILE_BYTES };

/// A template problem: a message and, when known, its line and column.
pub struct TemplateProblem {
    pub at: Option<(usize, usize)>,
    pub message: String,
    /// The name the context has no value for, when that is the problem.
    pub missing: Option<String>,
}

impl TemplateProblem {
    fn new(at: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        TemplateProblem { at, message: message.into(), missing: None }
    }
}

pub fn render(file: &Path, text: &str, context: &Value) -> Result<String, Diagnostic> {
    let at = |p: Option<(usize, usize)>| match p {
        Some((l, c)) => Location::new(file.to_path_buf(), l, c),
        None => Location::file_start(file),
    };
    render_guarded(text, context, &LIMITS).map_err(|p| {
        let message = match &p.missing {
            Some(name) => format!(
                "no value found for {name:?} in the template: expected it in `variables` (capstan.yaml) or from `--var {name}=VALUE`"
            ),
            None => p.message,
        };
        Diagnostic::error_at(at(p.at), message)
    })
}

/// Render `text` with `context` in strict mode and without HTML escaping, within `limits`.
pub fn render_guarded(text: &str, context: &Value, limits: &Limits) -> Result<String, TemplateProblem> {
    render_guarded_in(text, &handlebars::Context::from(context.clone()), limits)
}

/// [`render_guarded`] with a context already made: a caller that renders one template many
/// times over mostly the same data (the markdown report, once per `--max-bytes` cut) changes
/// it in place rather than having the whole data converted again for each render.
pub fn render_guarded_in(
    text: &str,
    context: &handlebars::Context,
    limits: &Limits,
) -> Result<String, TemplateProblem> {
    // Before compiling: the parser recurses into nested subexpressions.
    prescan(text, limits)?;
    let template = Template::compile(text)
        .map_err(|e| TemplateProblem::new(e.pos(), format!("invalid template: {}", e.reason())))?;
    check(&template, limits)?;
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    // Manifests are YAML and JSON, and reports markdown, not HTML.
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_template("t", template);
    let mut out = Capped { bytes: Vec::new(), limit: limits.output };
    match hb.render_with_context_to_write("t", context, &mut out) {
        Ok(()) => String::from_utf8(out.bytes)
            .map_err(|_| TemplateProblem::new(None, "the template's output is not UTF-8 text")),
        Err(e) => {
            let at = e.line_no.map(|l| (l, e.column_no.unwrap_or(1)));
            let mut missing = None;
            let message = match e.reason() {
                handlebars::RenderErrorReason::MissingVariable(Some(name)) => {
                    missing = Some(name.clone());
                    format!("no value found for {name:?} in the template")
                }
                _ if out.bytes.len() > limits.output => format!(
                    "the template's output is larger than {} bytes: expected at most that (a loop or partial that repeats too much?)",
                    limits.output
                ),
                other => format!("the template does not render: {other}"),
            };
            Err(TemplateProblem { missing, ..TemplateProblem::new(at, message) })
        }
    }
}

/// Output that refuses to grow past its limit.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.bytes.resize(self.limit + 1, 0);
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |i| before[i + 1..].chars().count()) + 1;
    (line, column)
}

/// How deep blocks and subexpressions nest, read from the text of the tags, so that neither
/// the parser nor the renderer recurses past `limits.depth`. Comments and raw blocks may
/// count too: the bound only errs on the side of refusing absurd nesting.
fn prescan(text: &str, limits: &Limits) -> Result<(), TemplateProblem> {
    let mut depth = 0usize;
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{") {
        let start = rest + open;
        let Some(len) = text[start..].find("}}") else { break };
        let tag = text[start + 2..start + len].trim_start_matches('{').trim_start_matches('~').trim_start();
        rest = start + len + 2;
        if tag.starts_with('!') {
            // A comment may hold `}}`: skip to its end.
            if tag.starts_with("!--") && !tag.ends_with("--") {
                match text[start..].find("--}}") {
                    Some(end) => rest = start + end + 4,
                    None => break,
                }
            }
            continue;
        }
        let too_deep = || {
            TemplateProblem::new(
                Some(line_col(text, start)),
                format!(
                    "blocks and subexpressions nest more than {d} deep here: expected at most {d}",
                    d = limits.depth
                ),
            )
        };
        if tag.starts_with('#') || (tag.starts_with('^') && tag.len() > 1 && !tag[1..].trim().is_empty()) {
            depth += 1;
        } else if tag.starts_with('/') {
            depth = depth.saturating_sub(1);
        }
        if depth > limits.depth {
            return Err(too_deep());
        }
        // Parentheses outside string literals.
        let (mut parens, mut quote) = (0usize, None);
        for c in tag.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '(') => {
                    parens += 1;
                    if depth + parens > limits.depth {
                        return Err(too_deep());
                    }
                }
                (None, ')') => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Every partial call must name an inline partial outright, no partial may include itself
/// (directly or through others), and blocks with the partials they call nest at most
/// `limits.depth` deep.
fn check(template: &Template, limits: &Limits) -> Result<(), TemplateProblem> {
    let mut inline: HashMap<String, Vec<&Template>> = HashMap::new();
    collect_inline(template, &mut inline);
    let mut walk = Walk { inline: &inline, depth_of: HashMap::new(), calling: Vec::new(), limits };
    let depth = walk.depth(template, None)?;
    if depth > limits.depth {
        return Err(TemplateProblem::new(
            None,
            format!("blocks and partials nest {depth} deep: expected at most {}", limits.depth),
        ));
    }
    Ok(())
}

fn children(e: &TemplateElement) -> Vec<&Template> {
    match e {
        TemplateElement::HelperBlock(h) => h.template.iter().chain(h.inverse.iter()).collect(),
        TemplateElement::DecoratorBlock(d) | TemplateElement::PartialBlock(d) => d.template.iter().collect(),
        _ => Vec::new(),
    }
}

fn inline_name(d: &DecoratorTemplate) -> Option<String> {
    if d.name.as_name() != Some("inline") {
        return None;
    }
    match d.params.first() {
        Some(Parameter::Literal(JsonValue::String(s))) => Some(s.clone()),
        _ => None,
    }
}

fn collect_inline<'a>(t: &'a Template, into: &mut HashMap<String, Vec<&'a Template>>) {
    for e in &t.elements {
        if let TemplateElement::DecoratorBlock(d) = e
            && let (Some(name), Some(body)) = (inline_name(d), d.template.as_ref())
        {
            into.entry(name).or_default().push(body);
        }
        for c in children(e) {
            collect_inline(c, into);
        }
    }
}

struct Walk<'a> {
    inline: &'a HashMap<String, Vec<&'a Template>>,
    /// The depth each partial reaches, once known.
    depth_of: HashMap<String, usize>,
    /// The partials being followed, outermost first.
    calling: Vec<String>,
    limits: &'a Limits,
}

impl Walk<'_> {
    /// How deep rendering `t` nests; `at` is the position of the call that led here.
    fn depth(&mut self, t: &Template, at: Option<(usize, usize)>) -> Result<usize, TemplateProblem> {
        let mut deepest = 0;
        for (i, e) in t.elements.iter().enumerate() {
            let here = t.mapping.get(i).map(|m| (m.0, m.1)).or(at);
            let called = match e {
                TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                    Some(self.partial(d, here)?)
                }
                _ => None,
            };
            let mut inner = called.unwrap_or(0);
            // An inline definition is not rendered where it stands.
            let defines = matches!(e, TemplateElement::DecoratorBlock(d) if inline_name(d).is_some());
            if !defines {
                for c in children(e) {
                    inner = inner.max(self.depth(c, here)?);
                }
            }
            let level = if called.is_some() || !children(e).is_empty() { 1 + inner } else { 0 };
            if level > self.limits.depth {
                return Err(TemplateProblem::new(
                    here,
                    format!(
                        "blocks and partials nest more than {d} deep here: expected at most {d}",
                        d = self.limits.depth
                    ),
                ));
            }
            deepest = deepest.max(level);
        }
        Ok(deepest)
    }

    fn partial(&mut self, d: &DecoratorTemplate, at: Option<(usize, usize)>) -> Result<usize, TemplateProblem> {
        let name = match (&d.name, d.name.as_name()) {
            (_, Some("@partial-block")) => return Ok(0),
            (Parameter::Name(_) | Parameter::Path(_), Some(n)) => n.to_string(),
            _ => {
                return Err(TemplateProblem::new(
                    at,
                    "a partial's name is computed here: expected the name of an inline partial written out (`{{> name}}`)",
                ));
            }
        };
        if let Some(&d) = self.depth_of.get(&name) {
            return Ok(d);
        }
        if let Some(first) = self.calling.iter().position(|c| *c == name) {
            let cycle = self.calling[first..].iter().chain([&name]).cloned().collect::<Vec<_>>().join(" → ");
            return Err(TemplateProblem::new(
                at,
                format!("the partial {name:?} includes itself ({cycle}): expected partials that do not recurse"),
            ));
        }
        let Some(bodies) = self.inline.get(&name) else {
            // Not defined: handlebars says so when it renders.
            return Ok(0);
        };
        let bodies = bodies.clone();
        self.calling.push(name.clone());
        let mut deepest = 0;
        for b in bodies {
            deepest = deepest.max(self.depth(b, at)?);
        }
        self.calling.pop();
        self.depth_of.insert(name, deepest);
        Ok(deepest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_render_in_strict_mode_without_escaping() {
        let t = "{{#if PROD}}instances: 5{{else}}instances: 1{{/if}}\ncmd: \"run <{{NAME}}>\"\n";
        let out = render(Path::new("a.yaml.hbs"), t, &json!({"PROD": "yes", "NAME": "a&b"})).unwrap();
        assert_eq!(out, "instances: 5\ncmd: \"run <a&b>\"\n");
    }

    #[test]
    fn a_missing_name_is_an_error_at_its_place() {
        let e = render(Path::new("a.yaml.hbs"), "a: 1\nb: {{NOPE}}\n", &json!({})).unwrap_err();
        let at = e.location.unwrap();
        assert_eq!((at.line, at.column), (2, 4));
        assert!(e.message.contains("NOPE"), "{}", e.message);
        let e = render(Path::new("a.yaml.hbs"), "a: {{#if x}}\n", &json!({})).unwrap_err();
        assert!(e.message.starts_with("invalid template"), "{}", e.message);
    }

    #[test]
    fn a_template_that_renders_too_large_is_an_error_not_a_huge_string() {
        let big = "x".repeat(1 << 20);
        let e = render(Path::new("a.yaml.hbs"), &"{{BIG}}".repeat(20), &json!({"BIG": big})).unwrap_err();
        assert!(e.message.contains("larger than 16777216 bytes"), "{}", e.message);
    }

    /// On a thread with the default 2 MiB stack, as the per-file rendering threads have.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new().stack_size(2 << 20).spawn(f).unwrap().join().unwrap()
    }

    #[test]
    fn a_partial_that_includes_itself_is_an_error_at_its_call() {
        for (text, at) in [
            ("{{#*inline \"a\"}}x{{> a}}{{/inline}}{{> a}}", (1, 18)),
            (
                "a: 1\n{{#*inline \"a\"}}{{> b}}{{/inline}}\n{{#*inline \"b\"}}{{#if x}}{{> a}}{{/if}}{{/inline}}\n{{> a}}\n",
                (3, 26),
            ),
            ("{{#*inline \"a\"}}{{#> a}}y{{/a}}{{/inline}}{{> a}}", (1, 17)),
        ] {
            let e = on_small_stack(move || render(Path::new("boom.yaml.hbs"), text, &json!({"x": true})).unwrap_err());
            assert!(e.message.contains("includes itself"), "{text}: {}", e.message);
            let l = e.location.unwrap();
            assert_eq!((l.line, l.column), at, "{text}");
        }
        let e = render(Path::new("d.yaml.hbs"), "{{> (lookup . \"n\")}}", &json!({"n": "a"})).unwrap_err();
        assert!(e.message.contains("computed") || e.message.starts_with("invalid template"), "{}", e.message);
    }

    #[test]
    fn nesting_is_bounded_before_parsing_and_rendering_and_what_is_allowed_renders_on_a_small_stack() {
        let nested = |n: usize| format!("{}a{}", "{{#if x}}".repeat(n), "{{/if}}".repeat(n));
        let ok = on_small_stack(move || render(Path::new("d.yaml.hbs"), &nested(LIMITS.depth), &json!({"x": 1})));
        assert_eq!(ok.unwrap(), "a");
        for text in [nested(200_000), format!("a: {{{{x {}{}}}}}", "(x ".repeat(100_000), ")".repeat(100_000))] {
            let e = on_small_stack(move || render(Path::new("d.yaml.hbs"), &text, &json!({"x": 1})).unwrap_err());
            assert!(e.message.contains("nest more than 64"), "{}", e.message);
            assert_eq!(e.location.unwrap().line, 1);
        }
        // Partials count towards the depth: a chain of them, each in a block.
        let mut chain = String::new();
        for i in 0..100 {
            chain.push_str(&format!(
                "{{{{#*inline \"p{i}\"}}}}{{{{#if x}}}}{{{{> p{}}}}}{{{{/if}}}}{{{{/inline}}}}",
                i + 1
            ));
        }
        chain.push_str("{{#*inline \"p100\"}}end{{/inline}}{{> p0}}");
        let e = on_small_stack(move || render(Path::new("d.yaml.hbs"), &chain, &json!({"x": 1})).unwrap_err());
        assert!(e.message.contains("nest more than 64"), "{}", e.message);
        // Partials that do not recurse work as before.
        let t = "{{#*inline \"job\"}}  job::::{{name}}: {state: started}\n{{/inline}}jobs:\n{{#each NAMES}}{{> job name=this}}{{/each}}";
        let out = render(Path::new("j.yaml.hbs"), t, &json!({"NAMES": ["a", "b"]})).unwrap();
        assert_eq!(out, "jobs:\n  job::::a: {state: started}\n  job::::b: {state: started}\n");
    }

    #[test]
    fn output_is_bounded() {
        let limits = Limits { depth: 64, output: 1000 };
        let e = render_guarded(
            "{{#each L}}{{#each ../L}}0123456789{{/each}}{{/each}}",
            &json!({"L": vec![0; 100]}),
            &limits,
        )
        .err()
        .unwrap();
        assert!(e.message.contains("larger than 1000 bytes"), "{}", e.message);
        assert!(e.at.is_some());
        assert_eq!(
            render_guarded("{{#each L}}x{{/each}}", &json!({"L": vec![0; 1000]}), &limits).ok().unwrap().len(),
            1000
        );
    }
}
