//! Apcera fully-qualified names, `type::/namespace::local-name` (seed 003, e.g. `job::/dev::myapp`),
//! and the default-namespace rule of `POST /v1/manifests/expansion`.

use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::{Document, Node, NodeValue};
use crate::render::expand::CONTROL_KEYS;
use std::ops::Range;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fqn<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub local: &'a str,
}

/// Split an FQN into its three parts, or None when it does not have the `a::b::c` shape.
pub fn split(text: &str) -> Option<Fqn<'_>> {
    let (kind, rest) = text.split_once("::")?;
    let (namespace, local) = rest.split_once("::")?;
    Some(Fqn { kind, namespace, local })
}

/// Check that `text` is a complete FQN of `kind`; the error says what was expected.
pub fn check(text: &str, kind: &str) -> Result<(), String> {
    let expected = format!("expected {kind}::/namespace::name");
    let Some(f) = split(text) else {
        return Err(format!("{text:?} is not an FQN: {expected}"));
    };
    if f.kind != kind {
        return Err(format!("{text:?} is a {} FQN: {expected}", f.kind));
    }
    if f.namespace.is_empty() {
        return Err(format!(
            "{text:?} has an empty namespace and no default namespace is set: {expected}, or set default_namespace (capstan.yaml, the file, or --namespace)"
        ));
    }
    if !f.namespace.starts_with('/') {
        return Err(format!("{text:?}: the namespace must be absolute (start with /): {expected}"));
    }
    if f.local.is_empty() || f.local.contains("::") || f.local.chars().any(char::is_whitespace) {
        return Err(format!("{text:?}: the name part is empty or malformed: {expected}"));
    }
    Ok(())
}

/// Whether a byte range of `text` is inside the namespace part of an FQN.
pub fn in_namespace_part(text: &str, range: Range<usize>) -> bool {
    let Some(first) = text.find("::") else {
        return false;
    };
    let is_type = text[..first]
        .chars()
        .enumerate()
        .all(|(i, c)| c == '*' || c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if first == 0 || !is_type {
        return false;
    }
    let ns_start = first + 2;
    let Some(len) = text[ns_start..].find("::") else {
        return false;
    };
    range.start >= ns_start && range.end <= ns_start + len
}

/// The seed's rule: every key and string value of the form `type::::rest` gets the default
/// namespace, `type::<namespace>::rest`. Without a default namespace they are left as they
/// are; the checks of identities and references then report them.
pub fn apply_default_namespace(doc: &mut Document, namespace: Option<&str>, _diags: &mut Diagnostics) {
    let Some(ns) = namespace else { return };
    if let NodeValue::Map(entries) = &mut doc.root.value {
        for e in entries.iter_mut().filter(|e| !CONTROL_KEYS.contains(&e.key.as_str())) {
            rewrite(&mut e.value, ns);
        }
    }
}

fn rewrite(node: &mut Node, ns: &str) {
    match &mut node.value {
        NodeValue::Str(s, _) => {
            if let Some(new) = with_namespace(s, ns) {
                *s = new;
            }
        }
        NodeValue::Seq(items) => items.iter_mut().for_each(|n| rewrite(n, ns)),
        NodeValue::Map(entries) => {
            for e in entries.iter_mut() {
                if let Some(new) = with_namespace(&e.key, ns) {
                    e.key = new;
                }
                rewrite(&mut e.value, ns);
            }
        }
        _ => {}
    }
}

/// `type::::rest` → `type::<ns>::rest` when `type` is `[A-Za-z*][A-Za-z0-9_*]*`.
pub fn with_namespace(s: &str, ns: &str) -> Option<String> {
    let idx = s.find("::::")?;
    let ty = &s[..idx];
    let mut chars = ty.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '*');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*') {
        return None;
    }
    Some(format!("{ty}::{ns}::{}", &s[idx + 4..]))
}

/// Report an invalid FQN at the place it is written.
pub fn require(
    doc: &Document,
    pointer: &str,
    key_of: Option<&str>,
    text: &str,
    kind: &str,
    diags: &mut Diagnostics,
) -> bool {
    match check(text, kind) {
        Ok(()) => true,
        Err(msg) => {
            let at = match key_of {
                Some(key) => doc.locate_key(pointer, key),
                None => doc.locate(pointer),
            };
            diags.push(Diagnostic::error_at(at, msg));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_fills_empty_namespaces_only() {
        assert_eq!(with_namespace("job::::local-name", "/dev").as_deref(), Some("job::/dev::local-name"));
        assert_eq!(with_namespace("package::/apcera::x", "/dev"), None);
        assert_eq!(with_namespace("1job::::x", "/dev"), None);
    }

    #[test]
    fn namespace_part_detection() {
        let s = "job::${NAMESPACE}::${JOBNAME}";
        assert!(in_namespace_part(s, 5..17));
        assert!(!in_namespace_part(s, 19..29));
        assert!(!in_namespace_part("x-${A}", 2..6));
    }

    #[test]
    fn checks_say_what_was_expected() {
        assert!(check("job::/dev::web", "job").is_ok());
        assert!(check("job::/::web", "job").is_ok());
        assert!(check("job::::web", "job").unwrap_err().contains("empty namespace"));
        assert!(check("service::/dev::db", "job").unwrap_err().contains("expected job::/namespace::name"));
        assert!(check("web", "job").is_err());
    }
}
