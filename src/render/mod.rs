//! Render: manifest files → the desired state, or every problem with its file:line:column.
//!
//! Per file: a handlebars template (`*.yaml.hbs`) is rendered first ([`template`]). Per
//! document: parse with positions ([`yaml`]), expand `${VAR}` ([`expand`]), write in the
//! default namespace (the provider knows where namespaces are), validate against the
//! provider's JSON Schema ([`schema`]), and decode into resources. Then across files: no two
//! declarations of one identity. Files are processed in parallel, and a file whose content and
//! rendering inputs are unchanged is not processed again when a [`RenderCache`] is kept.

pub mod decode;
pub mod expand;
pub mod template;

use crate::base::diagnostic::{Diagnostic, Diagnostics, InvalidInput};
use crate::base::{schema, yaml};
use crate::config::Config;
use crate::model::{DesiredResource, DesiredState};
use crate::redact::Redactor;
use crate::source::{Snapshot, SourceFile};
pub use decode::{Decode, DocumentPart};
use expand::Expander;
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Rendering inputs given on the command line.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// `--var NAME=VALUE`: the highest precedence.
    pub vars: IndexMap<String, String>,
    /// `--namespace`: overrides every other default namespace.
    pub namespace: Option<String>,
    /// Unresolved variables become empty with a warning (as the seed's server does).
    pub allow_missing_vars: bool,
    /// Keep every expanded document in [`Rendered::documents`] (for `capstan render` and the
    /// daemon's history); planning alone does not need them.
    pub keep_documents: bool,
}

/// The result of rendering one snapshot.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    pub desired: DesiredState,
    /// Every document after expansion, in file order (what `capstan render` prints), when
    /// [`RenderOptions::keep_documents`] asked for them.
    pub documents: Vec<Value>,
    /// Warnings (errors make rendering fail).
    pub warnings: Diagnostics,
    /// Knows the secrets of this snapshot, to mask them in every output.
    pub redactor: Redactor,
    /// How many documents the snapshot's files hold.
    pub document_count: usize,
}

/// What one file renders to; kept by content so unchanged files are not parsed again.
#[derive(Clone, Debug, Default)]
struct FileOutput {
    documents: Vec<Value>,
    resources: Vec<DesiredResource>,
    diagnostics: Vec<Diagnostic>,
    /// Values of variables whose names mark them secret.
    secrets: Vec<String>,
    /// Strings those values were substituted into.
    secretive: Vec<expand::Secretive>,
    document_count: usize,
}

/// Rendered files by content and inputs, for a long-running process (the daemon). It keeps
/// what the last render used, so it holds one snapshot's worth however many commits go by.
#[derive(Default)]
pub struct RenderCache {
    files: Mutex<HashMap<u128, Arc<FileOutput>>>,
}

impl RenderCache {
    pub fn len(&self) -> usize {
        self.files.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn render(
    snapshot: &Snapshot,
    config: &Config,
    opts: &RenderOptions,
    provider: &dyn Decode,
    cache: Option<&RenderCache>,
) -> Result<Rendered, InvalidInput> {
    let inputs = Inputs {
        config_vars: config.variables(),
        config_namespace: config.default_namespace.clone(),
        opts,
        provider,
        redactor: Redactor::new(&config.sensitive),
        data: &snapshot.data,
        data_budget: std::sync::atomic::AtomicUsize::new(MAX_DATA_BYTES),
    };
    let fingerprint = inputs.fingerprint();
    let outputs = render_files(&snapshot.files, &inputs, fingerprint, cache);

    let mut diags = Diagnostics::default();
    let mut desired = DesiredState::default();
    let mut documents = Vec::new();
    let mut redactor = inputs.redactor.clone();
    for (name, value) in inputs.config_vars.iter().chain(opts.vars.iter()) {
        if redactor.is_sensitive(name) {
            redactor.add_value(value);
        }
    }
    desired.resources.reserve(outputs.iter().map(|o| o.resources.len()).sum());
    // Resources that cannot coexist (a job on two networks) can never both be applied.
    let mut exclusive: HashMap<String, (crate::model::ResourceId, crate::base::diagnostic::Location)> = HashMap::new();
    let document_count = outputs.iter().map(|o| o.document_count).sum();
    for out in outputs {
        // Without a cache the output is ours alone: move its values instead of copying them.
        let out = Arc::try_unwrap(out).unwrap_or_else(|shared| shared.as_ref().clone());
        diags.extend(out.diagnostics);
        documents.extend(out.documents);
        out.secrets.iter().for_each(|v| redactor.add_value(v));
        out.secretive.iter().for_each(|s| redactor.add_template(&s.text, s.parts()));
        for r in out.resources {
            redactor.learn(&r.spec);
            if let Some(first) = desired.resources.get(&r.id) {
                diags.push(
                    Diagnostic::error_at(r.origin.clone(), format!("{} is declared twice", r.id))
                        .with_related(first.origin.clone(), "first declared here"),
                );
                continue;
            }
            if let Some(key) = &r.exclusive {
                if let Some((other, at)) = exclusive.get(key) {
                    diags.push(
                        Diagnostic::error_at(
                            r.origin.clone(),
                            format!("{} cannot be declared with {other}: both take {key}", r.id),
                        )
                        .with_related(at.clone(), format!("{other} is declared here")),
                    );
                    continue;
                }
                exclusive.insert(key.clone(), (r.id.clone(), r.origin.clone()));
            }
            desired.resources.insert(r.id.clone(), r);
        }
    }
    if !diags.has_errors() {
        provider.link(&mut desired, &mut diags);
    }
    diags.sort();
    // A message may quote what a secret was substituted into (an unknown field's name).
    diags.0.iter_mut().for_each(|d| redactor.diagnostic(d));
    if diags.has_errors() {
        return Err(InvalidInput(diags));
    }
    Ok(Rendered { desired, documents, warnings: diags, redactor, document_count })
}

struct Inputs<'a> {
    config_vars: IndexMap<String, String>,
    config_namespace: Option<String>,
    opts: &'a RenderOptions,
    provider: &'a dyn Decode,
    redactor: Redactor,
    /// The snapshot's data files, which a document's `file:` values name.
    data: &'a [SourceFile],
    /// What data files may still add to the rendered documents, all files together: one small
    /// file named by ten thousand `file:` values must not become gigabytes.
    data_budget: std::sync::atomic::AtomicUsize,
}

/// The most that the texts of data files (after expansion) may add to the documents of one
/// render.
pub const MAX_DATA_BYTES: usize = 64 << 20;

impl Inputs<'_> {
    fn fingerprint(&self) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut feed = |s: &str| {
            h.update(s.as_bytes());
            h.update(&[0]);
        };
        feed(self.provider.platform());
        for (k, v) in self.config_vars.iter().chain(self.opts.vars.iter()) {
            feed(k);
            feed(v);
        }
        feed(&format!("{:?}", self.redactor));
        feed(self.config_namespace.as_deref().unwrap_or("\u{1}"));
        feed(self.opts.namespace.as_deref().unwrap_or("\u{1}"));
        feed(if self.opts.allow_missing_vars { "lenient" } else { "strict" });
        feed(if self.opts.keep_documents { "keep" } else { "drop" });
        // A data file a document names is part of what it renders to.
        for f in self.data {
            feed(&f.path.to_string_lossy());
            feed(&f.text);
        }
        h.digest128()
    }

    /// What a template sees: the variables of capstan.yaml and `--var`, by name.
    fn template_context(&self) -> Value {
        let mut vars = serde_json::Map::new();
        for (k, v) in self.config_vars.iter().chain(self.opts.vars.iter()) {
            vars.insert(k.clone(), Value::String(v.clone()));
        }
        Value::Object(vars)
    }

    fn render_file(&self, file: &SourceFile) -> FileOutput {
        let path: Arc<Path> = Arc::from(file.path.as_path());
        let mut out = FileOutput::default();
        let rendered;
        let text: &str = if crate::source::is_template(&file.path) {
            match template::render(&path, &file.text, &self.template_context()) {
                Ok(t) => {
                    rendered = t;
                    &rendered
                }
                Err(e) => {
                    out.diagnostics.push(e);
                    return out;
                }
            }
        } else {
            &file.text
        };
        let docs = match yaml::parse_documents(&path, text) {
            Ok(d) => d,
            Err(e) => {
                out.diagnostics.push(e);
                return out;
            }
        };
        out.document_count = docs.len();
        for mut doc in docs {
            let mut diags = Diagnostics::default();
            let parts = match self.provider.document_parts(&doc.root) {
                Ok(parts) => parts,
                Err(expected) => {
                    out.diagnostics.push(Diagnostic::error_at(
                        doc.location(doc.root.pos),
                        format!("a manifest document must be {expected}"),
                    ));
                    continue;
                }
            };
            // Precedence: capstan.yaml < the document's own variables < --var.
            let settings = self.provider.document_settings();
            let mut vars = self.config_vars.clone();
            if settings {
                vars.extend(expand::document_variables(&doc, &mut diags));
            }
            vars.extend(self.opts.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            out.secrets.extend(vars.iter().filter(|(k, _)| self.redactor.is_sensitive(k)).map(|(_, v)| v.clone()));
            let own_namespace = || doc.root.get("default_namespace").and_then(|n| n.as_str()).map(str::to_string);
            let namespace = self
                .opts
                .namespace
                .clone()
                .or_else(|| if settings { own_namespace() } else { None })
                .or_else(|| self.config_namespace.clone());
            let slot = |text: &str, range: std::ops::Range<usize>| self.provider.namespace_slot(text, range);
            let runtime = |name: &str| self.provider.runtime_variable(name);
            let secret = |name: &str| self.redactor.is_sensitive(name);
            let expander = Expander {
                vars: &vars,
                strict: !self.opts.allow_missing_vars,
                namespace_slot: &slot,
                runtime_variable: &runtime,
                secret: &secret,
            };
            let mut secretive = expander.expand(&mut doc, &mut diags);
            self.provider.apply_default_namespace(&mut doc, namespace.as_deref(), &mut diags);
            keys_distinct_after_expansion(&doc, &mut diags);
            for part in &parts {
                if let Some(node) = doc.root.find_mut(&part.pointer) {
                    type_substitutions(node, String::new(), part.schema);
                }
            }
            let value = doc.root.to_json();
            // Schema problems are reported even when expansion had some, so one run shows all.
            for part in &parts {
                if let Some(v) = value.pointer(&part.pointer) {
                    schema::validate(part.schema, &doc, &part.pointer, v, &mut diags);
                }
            }
            let mut value = value;
            if !diags.has_errors() {
                let pointers = self.provider.file_values(&value);
                let data = DataFiles { files: self.data, expander: &expander, budget: &self.data_budget };
                secretive.extend(data.read(&doc, &mut value, &pointers, &mut diags));
            }
            if !diags.has_errors() {
                let resources = self.provider.decode(&doc, &value, &mut diags);
                secret_identities(&resources, &secretive, &mut diags);
                out.resources.extend(resources);
            }
            out.secretive.extend(secretive);
            if self.opts.keep_documents {
                out.documents.push(value);
            }
            out.diagnostics.extend(diags.0);
        }
        out
    }
}

/// Two keys of one mapping that differ as written can be one key once expanded (`job::::dn` and
/// `job::/dev/shop::dn` under the default namespace `/dev/shop`; `app` and `${K}` with K=app):
/// the parser's duplicate check cannot see it, and the JSON value would keep only the last.
/// Both places are reported. Iterative, so a deep document costs no stack.
fn keys_distinct_after_expansion(doc: &yaml::Document, diags: &mut Diagnostics) {
    let mut stack = vec![&doc.root];
    while let Some(node) = stack.pop() {
        match &node.value {
            yaml::NodeValue::Map(entries) => {
                let mut seen: HashMap<&str, yaml::Pos> = HashMap::with_capacity(entries.len());
                for e in entries {
                    if let Some(first) = seen.insert(e.key.as_str(), e.key_pos) {
                        diags.push(
                            Diagnostic::error_at(
                                doc.location(e.key_pos),
                                format!(
                                    "this key expands to {:?}, as another key of the same mapping does: expected distinct keys once variables and the default namespace are expanded",
                                    e.key
                                ),
                            )
                            .with_related(doc.location(first), format!("the other key that expands to {:?}", e.key)),
                        );
                        seen.insert(e.key.as_str(), first);
                    }
                    stack.push(&e.value);
                }
            }
            yaml::NodeValue::Seq(items) => stack.extend(items),
            _ => {}
        }
    }
}

/// A resource is named in every output, so its identity may not hold a secret: one whose key a
/// secret variable was substituted into (or whose name contains such a value) is an error.
fn secret_identities(resources: &[DesiredResource], secretive: &[expand::Secretive], diags: &mut Diagnostics) {
    if secretive.is_empty() {
        return;
    }
    let keys: std::collections::HashSet<&crate::base::diagnostic::Location> =
        secretive.iter().filter(|s| s.key).map(|s| &s.at).collect();
    let mut values = Redactor::default();
    secretive.iter().flat_map(|s| s.values()).for_each(|v| values.add_value(v));
    for r in resources {
        let id = r.id.to_string();
        if keys.contains(&r.origin) || values.text(&id) != id {
            diags.push(Diagnostic::error_at(
                r.origin.clone(),
                "a secret variable is part of this identity: expected no secret in a resource's name or namespace, which every plan, log and event shows",
            ));
        }
    }
}

/// A plain scalar that was exactly one `${VAR}` becomes a number or boolean where the schema
/// wants one there (YAML would have typed the value had it been written in place).
fn type_substitutions(node: &mut yaml::Node, pointer: String, schema_name: &'static str) {
    match &mut node.value {
        yaml::NodeValue::Str(text, yaml::Style::Substituted) => {
            let types = schema::types_at(schema_name, &pointer);
            if types.iter().any(|t| t == "string") {
                return;
            }
            if let Ok(Some(typed)) = yaml::resolve_plain(text) {
                let fits = match &typed {
                    yaml::NodeValue::Number(n) => {
                        types.iter().any(|t| t == "number") || (types.iter().any(|t| t == "integer") && !n.is_f64())
                    }
                    yaml::NodeValue::Bool(_) => types.iter().any(|t| t == "boolean"),
                    yaml::NodeValue::Null => types.iter().any(|t| t == "null"),
                    _ => false,
                };
                if fits {
                    node.value = typed;
                }
            }
        }
        yaml::NodeValue::Seq(items) => {
            for (i, n) in items.iter_mut().enumerate() {
                type_substitutions(n, format!("{pointer}/{i}"), schema_name);
            }
        }
        yaml::NodeValue::Map(entries) => {
            for e in entries.iter_mut() {
                type_substitutions(&mut e.value, format!("{pointer}/{}", yaml::pointer_escape(&e.key)), schema_name);
            }
        }
        _ => {}
    }
}

/// The snapshot's data files, and the document's variables to expand in them.
struct DataFiles<'a, 'b> {
    files: &'a [SourceFile],
    expander: &'a Expander<'b>,
    budget: &'a std::sync::atomic::AtomicUsize,
}

impl DataFiles<'_, '_> {
    /// Replace each `file:PATH` string at these pointers by the text of the data file it names:
    /// a path relative to the document's file, inside the manifest directory. Only the snapshot's
    /// own data files are looked up (the snapshot refuses links and skips hidden entries), and a
    /// path with `..`, `.`, a hidden or an absolute part is an error, so nothing outside the
    /// manifest tree is ever read. The text gets the document's variables expanded, with problems
    /// placed in the data file; returned: where secrets went.
    fn read(
        &self,
        doc: &yaml::Document,
        value: &mut Value,
        pointers: &[String],
        diags: &mut Diagnostics,
    ) -> Vec<expand::Secretive> {
        use std::path::Component;
        use std::sync::atomic::Ordering::Relaxed;
        let (data, mut secretive) = (self.files, Vec::new());
        for pointer in pointers {
            let Some(Value::String(text)) = value.pointer_mut(pointer) else { continue };
            let Some(rel) = text.strip_prefix("file:") else { continue };
            let path = Path::new(rel);
            let plain = !rel.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, Component::Normal(n) if !n.as_encoded_bytes().starts_with(b".")));
            let dir = doc.file.parent().unwrap_or(Path::new(""));
            let found = plain.then(|| data.iter().find(|f| f.path == dir.join(path))).flatten();
            match found {
            Some(f) => {
                let (expanded, secret) = self.expander.expand_data(&f.path, &f.text, diags);
                let taken = self.budget.fetch_update(Relaxed, Relaxed, |left| left.checked_sub(expanded.len()));
                if taken.is_err() {
                    diags.push(Diagnostic::error_at(
                        doc.locate(pointer),
                        format!(
                            "file:{rel}: data files would add more than {MAX_DATA_BYTES} bytes (64 MiB) to the manifests: expected fewer or smaller `file:` values"
                        ),
                    ));
                    return secretive;
                }
                *text = expanded;
                secretive.extend(secret);
            }
            None => diags.push(Diagnostic::error_at(
                doc.locate(pointer),
                format!(
                    "file:{rel}: expected a data file ({}) next to this manifest or below it, inside the manifest directory, named without `..`, `.` or hidden parts (links are not followed)",
                    crate::source::DATA_FILES
                ),
            )),
        }
        }
        secretive
    }
}

fn render_files(
    files: &[SourceFile],
    inputs: &Inputs<'_>,
    fingerprint: u128,
    cache: Option<&RenderCache>,
) -> Vec<Arc<FileOutput>> {
    let key = |f: &SourceFile| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&fingerprint.to_le_bytes());
        h.update(f.path.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(f.text.as_bytes());
        h.digest128()
    };
    let one = |f: &SourceFile| -> Arc<FileOutput> {
        let Some(cache) = cache else {
            return Arc::new(inputs.render_file(f));
        };
        let k = key(f);
        if let Some(hit) = cache.files.lock().unwrap().get(&k) {
            return hit.clone();
        }
        let out = Arc::new(inputs.render_file(f));
        cache.files.lock().unwrap().insert(k, out.clone());
        out
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(files.len().max(1));
    let outputs = if threads <= 1 || files.len() < 8 {
        files.iter().map(one).collect()
    } else {
        // Files are independent: render them on all cores, keeping file order in the result.
        let chunk = files.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> =
                files.chunks(chunk).map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("render thread panicked")).collect()
        })
    };
    // Files changed or gone since are dropped, or a long-running daemon would keep every
    // version of every file (every file, each time a variable changes).
    if let Some(cache) = cache {
        let used: std::collections::HashSet<u128> = files.iter().map(key).collect();
        cache.files.lock().unwrap().retain(|k, _| used.contains(k));
    }
    outputs
}
