//! Validation against the JSON Schemas in `schemas/`, with errors placed at file:line:column.
//!
//! The schemas are the same files editors use through yaml-language-server; they are compiled
//! into the binary and their relative `$ref`s are resolved from memory, never from the network.

use super::yaml::{Document, pointer_escape};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub const CONFIG_SCHEMA: &str = "capstan.schema.json";
pub const PLAN_SCHEMA: &str = "plan.schema.json";

/// capstan's own schema files, by their path under `schemas/`.
pub const FILES: &[(&str, &str)] = &[
    ("capstan.schema.json", include_str!("../../schemas/capstan.schema.json")),
    ("plan.schema.json", include_str!("../../schemas/plan.schema.json")),
];

/// The platforms' schema files, handed over by the platform registry (`base` knows no
/// platform) before the first provider is built.
static PLATFORM_FILES: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();

/// Add the platforms' schema files (once per process; later calls change nothing).
pub fn add_platform_files(files: impl FnOnce() -> Vec<(&'static str, &'static str)>) {
    PLATFORM_FILES.get_or_init(files);
}

/// Every schema file known: capstan's own and the platforms'.
fn all_files() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    FILES.iter().chain(PLATFORM_FILES.get().into_iter().flatten())
}

const BASE: &str = "file:///capstan/schemas/";

struct Embedded;

impl Retrieve for Embedded {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let path = uri.as_str().strip_prefix(BASE).ok_or_else(|| format!("schema {uri} is not one of capstan's"))?;
        let text =
            all_files().find(|(p, _)| *p == path).map(|(_, t)| *t).ok_or_else(|| format!("no schema file {path}"))?;
        Ok(serde_json::from_str(text)?)
    }
}

/// A schema file, parsed once per process.
pub fn schema_json(name: &str) -> &'static Value {
    static PARSED: Mutex<Option<HashMap<&'static str, &'static Value>>> = Mutex::new(None);
    let mut parsed = PARSED.lock().unwrap_or_else(|e| e.into_inner());
    let parsed = parsed.get_or_insert_with(HashMap::new);
    if let Some(v) = parsed.get(name) {
        return v;
    }
    let (path, text) = all_files().find(|(p, _)| *p == name).unwrap_or_else(|| panic!("no schema {name}"));
    // Parsed once per process and kept for its life, like the validators built from it.
    let v: &'static Value =
        Box::leak(Box::new(serde_json::from_str(text).unwrap_or_else(|e| panic!("schema {path} is not JSON: {e}"))));
    parsed.insert(path, v);
    v
}

/// The compiled validator for one schema file, built once per process.
pub fn validator(name: &'static str) -> Arc<Validator> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Arc<Validator>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(name) {
        return v.clone();
    }
    let v = Arc::new(
        jsonschema::options()
            .with_base_uri(format!("{BASE}{name}"))
            .with_retriever(Embedded)
            .build(schema_json(name))
            .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}")),
    );
    cache.lock().unwrap().insert(name, v.clone());
    v
}

/// Schema problems reported for one document at most: placing each costs a walk of the
/// document, so fifty thousand unknown fields must not cost fifty thousand walks.
pub const MAX_ERRORS: usize = 100;

/// Check the part of a document at `prefix` (a JSON pointer, "" for the whole) against a
/// schema; each violation becomes an error at its place.
pub fn validate(name: &'static str, doc: &Document, prefix: &str, value: &Value, diags: &mut Diagnostics) {
    let v = validator(name);
    if v.is_valid(value) {
        return;
    }
    let before = diags.0.len();
    let mut truncated = false;
    for err in v.iter_errors(value) {
        if diags.0.len() - before >= MAX_ERRORS {
            truncated = true;
            break;
        }
        let relative = err.instance_path().to_string();
        let pointer = format!("{prefix}{relative}");
        let field = field_name(&pointer);
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                let allowed = allowed_properties(name, &relative);
                truncated |= unexpected.len() > MAX_ERRORS;
                for prop in unexpected.iter().take(MAX_ERRORS) {
                    let mut msg = format!("unknown field `{prop}`{}", context(&pointer));
                    if !allowed.is_empty() {
                        if let Some(s) = suggestion(prop, &allowed) {
                            msg.push_str(&format!(": did you mean `{s}`?"));
                        }
                        msg.push_str(&format!(" (expected one of: {})", allowed.join(", ")));
                    }
                    diags.push(Diagnostic::error_at(doc.locate_key(&pointer, prop), msg));
                }
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => ts.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" or "),
                };
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("wrong type for {field}: expected {expected}, found {}", json_type(err.instance())),
                ));
            }
            ValidationErrorKind::Required { property } => {
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("missing required field {property}{}", context(&pointer)),
                ));
            }
            ValidationErrorKind::Enum { options } => {
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("invalid value for {field}: expected one of {options}"),
                ));
            }
            ValidationErrorKind::Pattern { pattern } => {
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("invalid value for {field}: expected a string matching {pattern}"),
                ));
            }
            ValidationErrorKind::Maximum { limit } | ValidationErrorKind::Minimum { limit } => {
                let bound = if matches!(err.kind(), ValidationErrorKind::Maximum { .. }) { "most" } else { "least" };
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("out of range for {field}: expected at {bound} {limit}"),
                ));
            }
            ValidationErrorKind::PropertyNames { .. } => {
                // Identity keys are checked, with a precise message, by the provider.
            }
            _ => {
                diags.push(Diagnostic::error_at(
                    doc.locate(&pointer),
                    format!("invalid value for {field}: {}", err.masked()),
                ));
            }
        }
    }
    if truncated {
        diags.0.truncate(before + MAX_ERRORS);
        diags.push(Diagnostic::error_at(
            doc.location(doc.root.pos),
            format!("more schema problems in this document: the first {MAX_ERRORS} are shown"),
        ));
    }
}

fn field_name(pointer: &str) -> String {
    if pointer.is_empty() {
        return "the document".into();
    }
    let segs: Vec<String> = super::yaml::pointer_segments(pointer).collect();
    format!("`{}`", segs.join("."))
}

fn context(pointer: &str) -> String {
    if pointer.is_empty() { " at the top level".into() } else { format!(" in {}", field_name(pointer)) }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The subschema that applies at an instance path, found by walking the schema along it
/// (following `$ref`s, `properties`, `additionalProperties`, `items`).
fn schema_at(schema_name: &str, pointer: &str) -> Option<&'static Value> {
    let mut file = schema_name.to_string();
    let mut schema = schema_json(schema_name);
    for seg in super::yaml::pointer_segments(pointer) {
        (file, schema) = deref(&file, schema);
        schema = schema
            .get("properties")
            .and_then(|p| p.get(&seg))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| schema.get("items"))?;
    }
    Some(deref(&file, schema).1)
}

/// The field names a schema allows for the object at `pointer`.
fn allowed_properties(schema_name: &str, pointer: &str) -> Vec<String> {
    schema_at(schema_name, pointer)
        .and_then(|s| s.get("properties").and_then(Value::as_object).map(|p| p.keys().cloned().collect()))
        .unwrap_or_default()
}

/// The JSON types the schema allows at `pointer` (empty when it does not say).
pub fn types_at(schema_name: &str, pointer: &str) -> Vec<String> {
    match schema_at(schema_name, pointer).and_then(|s| s.get("type")) {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Follow a `$ref` to another file or to a `#/$defs/...` inside one.
fn deref(file: &str, mut schema: &'static Value) -> (String, &'static Value) {
    static NULL: Value = Value::Null;
    let mut file = file.to_string();
    for _ in 0..8 {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let (path, fragment) = r.split_once('#').unwrap_or((r, ""));
        if !path.is_empty() {
            let dir = file.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
            file = format!("{dir}{path}");
        }
        let target = schema_json(&file);
        schema = if fragment.is_empty() { target } else { target.pointer(fragment).unwrap_or(&NULL) };
    }
    (file, schema)
}

fn suggestion(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Escape helper re-exported for callers building pointers.
pub fn key(k: &str) -> String {
    pointer_escape(k)
}
