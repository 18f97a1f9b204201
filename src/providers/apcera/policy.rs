//! Policy documents (seed 003 `GET/PUT/DELETE /v1/policy`, on the auth host).
//!
//! Declared under `policies:`, name → `text`. Compared by text only: the per-document
//! `updated_at` is not reliable (digest §2.6), and the version is bookkeeping. Documents have no
//! labels, so capstan marks its own with a first line `// capstan-owner: <owner>` (a comment to
//! the policy language), removed before comparing; a line `// capstan-prune: false` anywhere
//! keeps a document from being pruned, is left out of comparisons, and is kept when capstan
//! writes the document.
//!
//! Every created or changed document of one plan goes in one transactional `PUT`, each with
//! `for_version` = the version the plan read (none for a create): if anyone changed a document
//! meanwhile the platform refuses the whole request, and capstan reports what changed instead
//! of writing over it. Deletions go in one `DELETE ?doc=…&doc=…`, after checking that nobody
//! changed the documents since they were read (the API has no `for_version` for deletes).

use super::kind::Kind;
use super::Apcera;
use super::client::Client;
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{DesiredResource, LiveResource, ResourceId};
use crate::providers::{ApiError, Operation, Verb};
use crate::base::yaml::{Document, pointer_escape};
use serde_json::{Value, json};

const OWNER_LINE: &str = "// capstan-owner: ";
const KEEP_LINE: &str = "// capstan-prune: false";

/// Whether a document name is one the API accepts (seed L3069).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The text as compared: without keep lines.
fn compared(text: &str) -> String {
    if !text.contains(KEEP_LINE) {
        return text.to_string();
    }
    text.split_inclusive('\n').filter(|l| l.trim_end() != KEEP_LINE).collect()
}

pub fn decode(doc: &Document, key: &str, entry: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let pointer = format!("/policies/{}", pointer_escape(key));
    if !valid_name(key) {
        diags.push(Diagnostic::error_at(
            doc.locate_key("/policies", key),
            format!("policy document name {key:?}: expected letters, digits, '-' and '_', not starting with '-'"),
        ));
        return Vec::new();
    }
    let Some(text) = entry.get("text").and_then(Value::as_str) else {
        diags.push(Diagnostic::error_at(doc.locate(&pointer), "expected the policy document's text"));
        return Vec::new();
    };
    if text.starts_with(OWNER_LINE.trim_end()) {
        diags.push(Diagnostic::error_at(
            doc.locate(&format!("{pointer}/text")),
            format!("the first line {OWNER_LINE}... is capstan's ownership mark: expected the policy text without it"),
        ));
        return Vec::new();
    }
    vec![DesiredResource {
        id: ResourceId::new(Kind::Policy.name(), key),
        spec: json!({ "text": text }),
        origin: doc.locate_key("/policies", key),
        references: Vec::new(),
        exclusive: None,
    }]
}

/// The owner a document's first line names, and the text after it.
fn split_mark(text: &str) -> (Option<String>, &str) {
    match text.strip_prefix(OWNER_LINE) {
        Some(rest) => {
            let (owner, body) = rest.split_once('\n').unwrap_or((rest, ""));
            (Some(owner.trim().to_string()), body)
        }
        None => (None, text),
    }
}

/// A live document (`GET /v1/policy/{name}`), with its version kept for the `PUT`.
pub fn from_live(doc: &Value, owner: &str) -> Option<LiveResource> {
    let name = doc.get("name")?.as_str()?;
    let text = doc.get("text").and_then(Value::as_str).unwrap_or_default();
    let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
    let (mark, body) = split_mark(text);
    Some(LiveResource {
        id: ResourceId::new(Kind::Policy.name(), name),
        spec: json!({ "text": compared(body), "version": version, "kept": text.contains(KEEP_LINE) }),
        owned: mark.as_deref() == Some(owner),
        owner: mark,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep: text.contains(KEEP_LINE).then(|| format!("its text has the line {KEEP_LINE}")),
    })
}

/// Both sides as compared: text only, keep lines left out.
pub fn comparable(spec: &Value) -> Value {
    json!({ "text": compared(spec.get("text").and_then(Value::as_str).unwrap_or_default()) })
}

/// The text capstan writes: its mark, the declared text, and a person's keep line if the live
/// document had one that the declaration does not.
fn written(owner: &str, desired: &Value, live: Option<&Value>) -> String {
    let text = desired.get("text").and_then(Value::as_str).unwrap_or_default();
    let mut out = marked(owner, text);
    if live.is_some_and(|l| l["kept"] == true) && !text.contains(KEEP_LINE) {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(KEEP_LINE);
        out.push('\n');
    }
    out
}

/// A text with this owner's mark as its first line.
pub fn marked(owner: &str, text: &str) -> String {
    format!("{OWNER_LINE}{owner}\n{text}")
}

/// Every document of the cluster, read one by one after the list (policy is a few documents).
pub async fn observe(client: &Client, owner: &str) -> Result<Vec<LiveResource>, ApiError> {
    use futures::StreamExt;
    let names: Vec<String> = client
        .list_policy()
        .await?
        .iter()
        .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let docs: Vec<Result<Option<Value>, ApiError>> =
        futures::stream::iter(names.into_iter().map(|n| async move { client.get_policy(&n).await }))
            .buffered(8)
            .collect()
            .await;
    let mut out = Vec::new();
    for d in docs {
        // A document deleted between the list and its read is not there.
        if let Some(d) = d? {
            out.extend(from_live(&d, owner));
        }
    }
    Ok(out)
}

/// The documents of one plan: the creates and updates in one `PUT`, or the deletes in one
/// `DELETE`. One result for all of them: they happen together or not at all.
pub async fn execute_all(provider: &Apcera, client: &Client, ops: &[Operation<'_>]) -> Result<(), ApiError> {
    let owner = provider.owner.as_str();
    if ops.iter().all(|o| o.verb == Verb::Delete) {
        return delete_all(client, owner, ops).await;
    }
    let docs: Vec<Value> = ops
        .iter()
        .map(|o| {
            let desired = &o.desired.expect("a create or update has a declaration").spec;
            let live = o.live.map(|l| &l.spec);
            let mut d = json!({ "name": o.id.name, "text": written(owner, desired, live) });
            if let Some(v) = live.and_then(|l| l["version"].as_u64()) {
                d["for_version"] = json!(v);
            }
            d
        })
        .collect();
    let Err(e) = client.put_policy(&docs).await else { return Ok(()) };
    // The answer was lost, or the platform refused: read back. If every document holds what
    // was sent, the PUT took; otherwise say what changed, and write nothing over it.
    let mut changed = Vec::new();
    let mut all_took = true;
    for (d, o) in docs.iter().zip(ops) {
        let now = client.get_policy(&o.id.name).await?;
        let now_text = now.as_ref().and_then(|n| n.get("text")).and_then(Value::as_str);
        if now_text == d["text"].as_str() {
            continue;
        }
        all_took = false;
        let read = o.live.and_then(|l| l.spec["version"].as_u64());
        let now_version = now.as_ref().and_then(|n| n["version"].as_u64());
        if now_version != read {
            let was = read.map_or("absent".to_string(), |v| format!("at version {v}"));
            let is = now_version.map_or("absent now".to_string(), |v| format!("at version {v} now"));
            changed.push(format!("{} ({was} when planned, {is})", o.id.name));
        }
    }
    if all_took {
        return Ok(());
    }
    if changed.is_empty() {
        return Err(e);
    }
    Err(ApiError {
        message: format!(
            "policy changed since the plan read it: {}; nothing was written (the documents of a plan are written together or not at all): plan again to see the other change",
            changed.join(", ")
        ),
        transient: false,
        ..e
    })
}

async fn delete_all(client: &Client, owner: &str, ops: &[Operation<'_>]) -> Result<(), ApiError> {
    let mut names = Vec::new();
    for o in ops {
        let Some(now) = client.get_policy(&o.id.name).await? else { continue };
        let read = o.live.and_then(|l| l.spec["version"].as_u64());
        let still_mine = split_mark(now["text"].as_str().unwrap_or_default()).0.as_deref() == Some(owner);
        if now["version"].as_u64() != read || !still_mine {
            return Err(ApiError::other(
                "DELETE",
                "/v1/policy",
                format!(
                    "policy document {} changed since the plan read it (version {} then, {} now): not deleted; plan again",
                    o.id.name,
                    read.unwrap_or(0),
                    now["version"]
                ),
            ));
        }
        names.push(o.id.name.as_str());
    }
    if names.is_empty() {
        return Ok(());
    }
    client.delete_policy(&names).await
}
