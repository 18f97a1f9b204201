//! Manifest templates: a `*.yaml.hbs` (or `.yml.hbs`, `.json.hbs`) file is rendered with
//! handlebars in strict mode before it is parsed, with the variables of capstan.yaml and
//! `--var` as its context (`{{#if PROD}}...{{else}}...{{/if}}`, `{{#if (eq REGION "eu")}}`).
//! A name the context does not have is an error at its file:line:column, never an empty
//! string. Positions of later problems refer to the rendered text, which `capstan render`
//! shows. `${VAR}` expansion still runs afterwards, as for any manifest.

use crate::diagnostic::{Diagnostic, Location};
use handlebars::Handlebars;
use serde_json::Value;
use std::path::Path;

pub fn render(file: &Path, text: &str, context: &Value) -> Result<String, Diagnostic> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    // Manifests are YAML and JSON, not HTML.
    hb.register_escape_fn(handlebars::no_escape);
    let at = |line: Option<usize>, column: Option<usize>| match line {
        Some(l) => Location::new(file.to_path_buf(), l, column.unwrap_or(1)),
        None => Location::file_start(file),
    };
    let template = handlebars::Template::compile(text).map_err(|e| {
        let (line, column) = e.pos().map_or((None, None), |(l, c)| (Some(l), Some(c)));
        Diagnostic::error_at(at(line, column), format!("invalid template: {}", e.reason()))
    })?;
    hb.register_template("manifest", template);
    // Into a bounded buffer: `{{BIG}}` a million times must not take terabytes first.
    let mut out = Bounded(Vec::new());
    let rendered = hb.render_to_write("manifest", context, &mut out);
    if out.0.len() > super::yaml::MAX_FILE_BYTES {
        return Err(Diagnostic::error_at(
            Location::file_start(file),
            format!("the template renders to more than {} bytes: expected at most 16 MiB", super::yaml::MAX_FILE_BYTES),
        ));
    }
    rendered.map(|()| String::from_utf8_lossy(&out.0).into_owned()).map_err(|e| {
        let message = match e.reason() {
            handlebars::RenderErrorReason::MissingVariable(Some(name)) => format!(
                "no value found for {name:?} in the template: expected it in `variables` (capstan.yaml) or from `--var {name}=VALUE`"
            ),
            other => format!("the template does not render: {other}"),
        };
        Diagnostic::error_at(at(e.line_no, e.column_no), message)
    })
}

/// A buffer that refuses to grow past the size of one manifest file.
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > super::yaml::MAX_FILE_BYTES {
            self.0.resize(super::yaml::MAX_FILE_BYTES + 1, 0);
            return Err(std::io::Error::other("the template renders to more than 16 MiB"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        assert!(e.message.contains("more than 16777216 bytes"), "{}", e.message);
    }
}
