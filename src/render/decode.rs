//! What render needs of a platform: how its documents are laid out, which of their strings
//! expansion may touch, and how a document becomes resources. The platform's folder under
//! `src/providers/` implements it.

use crate::base::diagnostic::Diagnostics;
use crate::base::yaml::{Document, Node};
use crate::model::{DesiredResource, DesiredState};
use serde_json::Value;
use std::ops::Range;

/// One part of a manifest document and the JSON Schema (a path under `schemas/`) it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentPart {
    /// JSON pointer of the part inside the document ("" for the whole document).
    pub pointer: String,
    pub schema: &'static str,
}

pub trait Decode: Send + Sync {
    /// The platform's name as written in capstan.yaml (`apcera`).
    fn platform(&self) -> &'static str;

    /// The parts of one parsed manifest document and the schema each follows, or what a
    /// document was expected to be when this one is none of it.
    fn document_parts(&self, root: &Node) -> Result<Vec<DocumentPart>, String>;

    /// Whether a document's top-level `variables` and `default_namespace` are capstan's own
    /// settings (Apcera's manifest format has them; Marathon's app and group objects do not,
    /// so their variables and default namespace come from capstan.yaml and the command line).
    fn document_settings(&self) -> bool {
        true
    }

    /// Whether an unresolved `${NAME}` is the platform's to expand when it runs the resource
    /// (Marathon's `${PORT0}`, `${HOST}`): it is then left exactly as written.
    fn runtime_variable(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// Whether a byte range of a string lies in the namespace part of an identity (where an
    /// unresolved variable is filled by the default namespace rather than being an error).
    fn namespace_slot(&self, text: &str, range: Range<usize>) -> bool;

    /// Write the default namespace into an expanded document, and report identities left
    /// without one. Runs before schema validation.
    fn apply_default_namespace(&self, doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics);

    /// Turn one expanded, schema-valid document into resources.
    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource>;

    /// Work on the whole declared state once every document has decoded: references between
    /// resources declared in different files, and what only the whole can show (a cycle).
    fn link(&self, desired: &mut DesiredState, diags: &mut Diagnostics) {
        let _ = (desired, diags);
    }

    /// JSON pointers of the strings of an expanded document that may name a data file next to
    /// the manifest (`file:deployers.pol`): render replaces each by the file's text before
    /// [`Decode::decode`] sees the document.
    fn file_values(&self, value: &Value) -> Vec<String> {
        let _ = value;
        Vec::new()
    }

    /// Merge expanded documents into the one manifest `capstan render` prints.
    fn merge_documents(&self, docs: &[Value]) -> Value;
}
