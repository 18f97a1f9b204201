//! `${VAR}` expansion, as seed 003 specifies it for `POST /v1/manifests/expansion`.
//!
//! References are expanded in every mapping key and every string value at any depth, except in
//! the document's own `variables` and `default_namespace`. A reference with no value becomes the
//! empty string and yields the seed's warning, `no value found for variable NAME`, once per
//! variable and document. On top of the seed, capstan is stricter where that protects the user:
//! an unresolved reference is an error unless it sits in the namespace part of an identity (where
//! the default namespace fills it, as in the seed's worked example) or `--allow-missing-vars` is
//! given. `$${` writes a literal `${`. A plain (unquoted) YAML scalar that is exactly one
//! reference is typed after substitution where the schema expects a number or boolean there,
//! so `num_instances: ${N}` becomes a number while `tags: {build: ${N}}` stays a string.
//!
//! Substitution may add at most [`MAX_GROWTH`] bytes to one document (a 1 MB variable used a
//! thousand times is an error, not a gigabyte), and every string a secret variable was
//! substituted into is reported ([`Secretive`]), so that its value is masked on both sides of a
//! change — the live side holds the old secret, which no list of current values knows.

use crate::base::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::base::yaml::{Document, Node, NodeValue, Pos, Style};
use indexmap::IndexMap;
use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The most that substituting variables may add to one document.
pub const MAX_GROWTH: usize = 16 << 20;

/// A string a secret variable was substituted into: its text after expansion, and where in it
/// each secret went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secretive {
    pub text: String,
    pub secrets: Vec<Range<usize>>,
    /// Where the string is written, and whether it is a mapping key.
    pub at: Location,
    pub key: bool,
}

/// Tells whether a byte range of a string lies in the namespace part of an identity, where an
/// empty expansion is filled by the default namespace instead of being an error.
pub type NamespaceSlot<'a> = &'a dyn Fn(&str, Range<usize>) -> bool;

pub struct Expander<'a> {
    pub vars: &'a IndexMap<String, String>,
    /// Unresolved references outside a namespace slot are errors.
    pub strict: bool,
    pub namespace_slot: NamespaceSlot<'a>,
    /// Names the platform expands itself at run time (Marathon's `${PORT0}`): an unresolved
    /// reference to one is left as written, with neither error nor warning.
    pub runtime_variable: &'a dyn Fn(&str) -> bool,
    /// Whether a variable's value is secret (its name says so, or `sensitive` lists it).
    pub secret: &'a dyn Fn(&str) -> bool,
}

/// The top-level keys that configure expansion and are never expanded themselves.
pub const CONTROL_KEYS: [&str; 2] = ["variables", "default_namespace"];

struct Pass<'a, 'b> {
    ex: &'b Expander<'a>,
    doc_file: &'b Document,
    missing_seen: HashSet<String>,
    diags: &'b mut Diagnostics,
    /// Bytes substitution has added to the document so far.
    growth: usize,
    secretive: Vec<Secretive>,
}

impl Secretive {
    /// The literal parts around the secrets (`run --key ${SECRET}` gives `["run --key ", ""]`).
    pub fn parts(&self) -> Vec<String> {
        let mut parts = Vec::with_capacity(self.secrets.len() + 1);
        let mut from = 0;
        for r in &self.secrets {
            parts.push(self.text[from..r.start].to_string());
            from = r.end;
        }
        parts.push(self.text[from..].to_string());
        parts
    }

    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(|r| &self.text[r.clone()])
    }
}

impl Expander<'_> {
    /// Expand one document in place; problems go to `diags`. Returns the strings that secret
    /// variables were substituted into.
    pub fn expand(&self, doc: &mut Document, diags: &mut Diagnostics) -> Vec<Secretive> {
        let mut root = std::mem::replace(&mut doc.root, Node { pos: Pos::default(), value: NodeValue::Null });
        let mut pass =
            Pass { ex: self, doc_file: doc, missing_seen: HashSet::new(), diags, growth: 0, secretive: Vec::new() };
        if let NodeValue::Map(entries) = &mut root.value {
            for e in entries.iter_mut() {
                if CONTROL_KEYS.contains(&e.key.as_str()) {
                    continue;
                }
                pass.entry(e);
            }
        } else {
            pass.node(&mut root);
        }
        let secretive = pass.secretive;
        doc.root = root;
        secretive
    }
}

impl Expander<'_> {
    /// Expand the text of a data file a document names with `file:` (a `.pol` file): references
    /// as in documents, line by line (a reference never spans lines), so each problem is placed
    /// at its line and column in that file. Substitution adds at most [`MAX_GROWTH`] bytes.
    /// Returns the text, and where secrets went in it, if any did.
    pub fn expand_data(&self, file: &Path, text: &str, diags: &mut Diagnostics) -> (String, Option<Secretive>) {
        let place =
            Document { file: Arc::from(file), index: 0, root: Node { pos: Pos::default(), value: NodeValue::Null } };
        let mut pass =
            Pass { ex: self, doc_file: &place, missing_seen: HashSet::new(), diags, growth: 0, secretive: Vec::new() };
        let mut out = String::with_capacity(text.len());
        let mut secrets = Vec::new();
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let pos = Pos { line: n as u32 + 1, column: 1 };
            let start = out.len();
            match pass.string(line, pos, Style::Plain, false) {
                Some(expanded) => out.push_str(&expanded),
                None => out.push_str(line),
            }
            for s in pass.secretive.drain(..) {
                secrets.extend(s.secrets.into_iter().map(|r| r.start + start..r.end + start));
            }
        }
        let secretive = (!secrets.is_empty()).then(|| Secretive {
            text: out.clone(),
            secrets,
            at: place.location(Pos { line: 1, column: 1 }),
            key: false,
        });
        (out, secretive)
    }
}

impl Pass<'_, '_> {
    fn entry(&mut self, e: &mut super::yaml::Entry) {
        if let Some(s) = self.string(&e.key, e.key_pos, e.key_style, true) {
            e.key = s;
        }
        self.node(&mut e.value);
    }

    fn node(&mut self, node: &mut Node) {
        match &mut node.value {
            NodeValue::Str(text, style) => {
                let style = *style;
                let whole_reference = style == Style::Plain && is_single_reference(text);
                if let Some(expanded) = self.string(text, node.pos, style, false) {
                    let style = if whole_reference { Style::Substituted } else { style };
                    node.value = NodeValue::Str(expanded, style);
                }
            }
            NodeValue::Seq(items) => items.iter_mut().for_each(|n| self.node(n)),
            NodeValue::Map(entries) => entries.iter_mut().for_each(|e| self.entry(e)),
            _ => {}
        }
    }

    /// The expanded text, or None when it contains no reference (nothing to rewrite).
    fn string(&mut self, text: &str, pos: Pos, style: Style, key: bool) -> Option<String> {
        if !text.contains('$') || self.growth > MAX_GROWTH {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut secrets: Vec<Range<usize>> = Vec::new();
        let mut rest = 0;
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut changed = false;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            if text[i..].starts_with("$${") {
                out.push_str(&text[rest..i]);
                out.push_str("${");
                i += 3;
                rest = i;
                changed = true;
                continue;
            }
            if !text[i..].starts_with("${") {
                i += 1;
                continue;
            }
            let Some(close) = text[i + 2..].find('}') else {
                self.diags.push(Diagnostic::error_at(
                    self.place(pos, style, i),
                    format!("unterminated variable reference in {text:?}: expected `${{NAME}}`"),
                ));
                return None;
            };
            let name = &text[i + 2..i + 2 + close];
            if !is_variable_name(name) {
                self.diags.push(Diagnostic::error_at(
                    self.place(pos, style, i),
                    format!(
                        "invalid variable name {name:?}: expected letters, digits and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
                    ),
                ));
                return None;
            }
            let end = i + 3 + close;
            out.push_str(&text[rest..i]);
            match self.ex.vars.get(name) {
                Some(value) => {
                    self.growth = self.growth.saturating_add(value.len().saturating_sub(end - i));
                    if self.growth > MAX_GROWTH {
                        self.diags.push(Diagnostic::error_at(
                            self.place(pos, style, i),
                            format!(
                                "variables make this document too large here: expected substitution to add at most {MAX_GROWTH} bytes (16 MiB) to one document"
                            ),
                        ));
                        return None;
                    }
                    let start = out.len();
                    out.push_str(value);
                    if (self.ex.secret)(name) {
                        secrets.push(start..out.len());
                    }
                }
                None if (self.ex.runtime_variable)(name) => out.push_str(&text[i..end]),
                None => self.missing(name, text, i..end, pos, style),
            }
            changed = true;
            i = end;
            rest = end;
        }
        if !changed {
            return None;
        }
        out.push_str(&text[rest..]);
        if !secrets.is_empty() {
            let at = self.doc_file.location(pos);
            self.secretive.push(Secretive { text: out.clone(), secrets, at, key });
        }
        Some(out)
    }

    fn missing(&mut self, name: &str, text: &str, range: Range<usize>, pos: Pos, style: Style) {
        let at = self.place(pos, style, range.start);
        if self.ex.strict && !(self.ex.namespace_slot)(text, range) {
            self.diags.push(Diagnostic::error_at(
                at,
                format!(
                    "no value found for variable {name}: expected it in `variables` (capstan.yaml or this file) or from `--var {name}=VALUE` (or pass --allow-missing-vars)"
                ),
            ));
            return;
        }
        if self.missing_seen.insert(name.to_string()) {
            self.diags.push(Diagnostic::warning(Some(at), format!("no value found for variable {name}")));
        }
    }

    /// The place of byte `offset` inside a scalar written at `pos`: exact for plain and quoted
    /// one-line scalars, the scalar's start otherwise.
    fn place(&self, pos: Pos, style: Style, offset: usize) -> Location {
        let mut pos = pos;
        match style {
            Style::Plain | Style::Substituted => pos.column += offset as u32,
            Style::Quoted => pos.column += 1 + offset as u32,
            Style::Block => {}
        }
        self.doc_file.location(pos)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_single_reference(text: &str) -> bool {
    text.starts_with("${") && text.ends_with('}') && is_variable_name(&text[2..text.len() - 1])
}

/// Read the variables a document declares itself. Values must be scalars; they become strings.
pub fn document_variables(doc: &Document, diags: &mut Diagnostics) -> IndexMap<String, String> {
    let mut vars = IndexMap::new();
    let Some(node) = doc.root.get("variables") else {
        return vars;
    };
    let NodeValue::Map(entries) = &node.value else {
        diags.push(Diagnostic::error_at(doc.location(node.pos), "`variables` must be a mapping of names to values"));
        return vars;
    };
    for e in entries {
        let value = match &e.value.value {
            NodeValue::Str(s, _) => s.clone(),
            NodeValue::Number(n) => n.to_string(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Null => String::new(),
            _ => {
                diags.push(Diagnostic::error_at(
                    doc.location(e.value.pos),
                    format!("variable {} must be a string, number or boolean, found a collection", e.key),
                ));
                continue;
            }
        };
        vars.insert(e.key.clone(), value);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::yaml::parse_documents;
    use std::path::Path;
    use std::sync::Arc;

    fn apcera_ns_slot(text: &str, range: Range<usize>) -> bool {
        // type::NAMESPACE::local
        let Some(first) = text.find("::") else {
            return false;
        };
        let ns_start = first + 2;
        let ns_end = text[ns_start..].find("::").map(|i| ns_start + i).unwrap_or(text.len());
        range.start >= ns_start && range.end <= ns_end
    }

    fn run(text: &str, vars: &[(&str, &str)], strict: bool) -> (serde_json::Value, Diagnostics) {
        let mut docs = parse_documents(&Arc::from(Path::new("m.yaml")), text).unwrap();
        let vars: IndexMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut diags = Diagnostics::default();
        Expander {
            vars: &vars,
            strict,
            namespace_slot: &apcera_ns_slot,
            runtime_variable: &|_| false,
            secret: &crate::redact::name_says_secret,
        }
        .expand(&mut docs[0], &mut diags);
        (docs[0].root.to_json(), diags)
    }

    #[test]
    fn expands_keys_and_values_and_warns_like_the_seed() {
        let (v, d) = run(
            "jobs:\n  job::${NAMESPACE}::${JOBNAME}:\n    state: ${JOBSTATE}\nvariables:\n  JOBNAME: myapp\n",
            &[("JOBNAME", "myapp"), ("JOBSTATE", "started")],
            true,
        );
        assert_eq!(v["jobs"]["job::::myapp"]["state"], "started");
        let msgs: Vec<_> = d.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs, vec!["m.yaml:2:8: warning: no value found for variable NAMESPACE"]);
    }

    #[test]
    fn unresolved_outside_a_namespace_is_an_error_with_its_column() {
        let (_, d) = run("jobs:\n  job::/a::b:\n    state: \"x-${MISSING}\"\n", &[], true);
        let e = d.errors().next().unwrap();
        assert_eq!(e.location.as_ref().unwrap().to_string(), "m.yaml:3:15");
        assert!(e.message.contains("MISSING"));
    }

    #[test]
    fn allow_missing_vars_turns_errors_into_the_seed_warning() {
        let (v, d) = run("a: x-${MISSING}\n", &[], false);
        assert_eq!(v["a"], "x-");
        assert!(!d.has_errors());
        assert_eq!(d.warnings().count(), 1);
    }

    #[test]
    fn whole_plain_references_are_marked_for_typing() {
        let mut docs = parse_documents(&Arc::from(Path::new("m.yaml")), "n: ${N}\ns: \"${N}\"\n").unwrap();
        let vars: IndexMap<String, String> = [("N".to_string(), "3".to_string())].into_iter().collect();
        let mut diags = Diagnostics::default();
        Expander {
            vars: &vars,
            strict: true,
            namespace_slot: &apcera_ns_slot,
            runtime_variable: &|_| false,
            secret: &|_| false,
        }
        .expand(&mut docs[0], &mut diags);
        assert_eq!(docs[0].root.get("n").unwrap().value, NodeValue::Str("3".into(), Style::Substituted));
        assert_eq!(docs[0].root.get("s").unwrap().value, NodeValue::Str("3".into(), Style::Quoted));
    }

    #[test]
    fn control_fields_are_not_expanded_and_escapes_are_literal() {
        let (v, d) = run("variables:\n  A: ${B}\na: $${A} and $HOME\n", &[("A", "1")], true);
        assert_eq!(v["variables"]["A"], "${B}");
        assert_eq!(v["a"], "${A} and $HOME");
        assert!(d.0.is_empty());
    }

    #[test]
    fn malformed_references_are_errors() {
        let (_, d) = run("a: ${oops\nb: ${1x}\n", &[], true);
        assert_eq!(d.errors().count(), 2);
    }

    #[test]
    fn strings_a_secret_is_substituted_into_are_reported_with_their_literal_parts() {
        let mut docs = parse_documents(
            &Arc::from(Path::new("m.yaml")),
            "a: run --key ${API_KEY} --host ${HOST}\nb: ${HOST}\n\"t-${API_KEY}\": v\n",
        )
        .unwrap();
        let vars: IndexMap<String, String> =
            [("API_KEY", "k1"), ("HOST", "h")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut diags = Diagnostics::default();
        let found = Expander {
            vars: &vars,
            strict: true,
            namespace_slot: &apcera_ns_slot,
            runtime_variable: &|_| false,
            secret: &crate::redact::name_says_secret,
        }
        .expand(&mut docs[0], &mut diags);
        let got: Vec<_> = found.iter().map(|s| (s.text.as_str(), s.parts(), s.key, s.at.line)).collect();
        assert_eq!(
            got,
            vec![
                ("run --key k1 --host h", vec!["run --key ".to_string(), " --host h".to_string()], false, 1),
                ("t-k1", vec!["t-".to_string(), String::new()], true, 3),
            ]
        );
    }

    #[test]
    fn substitution_is_bounded_by_what_it_adds_to_a_document() {
        let big = "x".repeat(1 << 20);
        let refs: String = (0..20).map(|i| format!("a{i}: ${{BIG}}\n")).collect();
        let (_, d) = run(&refs, &[("BIG", &big)], true);
        let e = d.errors().next().expect("an error");
        assert!(e.message.contains("too large"), "{}", e.message);
        assert_eq!(d.errors().count(), 1, "one error, then no more substitution");
        let refs: String = (0..15).map(|i| format!("a{i}: ${{BIG}}\n")).collect();
        assert!(!run(&refs, &[("BIG", &big)], true).1.has_errors());
    }
}
