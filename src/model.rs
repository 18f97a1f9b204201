//! The data that flows between the pipeline stages, the same for every platform.
//!
//! A resource is identified by its kind and its name inside that kind ([`ResourceId`]); its
//! content is a JSON value in a form the provider chose so that "desired" and "live" compare
//! equal exactly when nothing needs doing. The core never looks inside that value except to
//! diff and display it.

use crate::base::diagnostic::Location;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// A resource's identity: `job` + `job::/dev::web`, `binding` + `job::/dev::web -> service::/dev::db`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceId {
    pub kind: String,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceId { kind: kind.into(), name: name.into() }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names that already start with their kind (Apcera FQNs) are shown as they are.
        if self.name.starts_with(&format!("{}::", self.kind)) {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

/// A resource that must exist for another to be created: a binding's job and service, a
/// membership's network. Checked against what is declared and what is live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reference {
    pub target: ResourceId,
    /// Where the reference is written.
    pub at: Location,
}

/// One resource as the manifests declare it, after rendering.
#[derive(Clone, Debug, Serialize)]
pub struct DesiredResource {
    pub id: ResourceId,
    /// The declared content in the provider's comparable form.
    pub spec: Value,
    /// Where it is declared.
    pub origin: Location,
    /// Resources it needs (ordering edges, and existence checks).
    pub references: Vec<Reference>,
    /// Resources of this key cannot coexist (a job is on at most one network): a create waits
    /// for the deletion of a live resource with the same key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<String>,
}

/// One resource as the platform reports it.
#[derive(Clone, Debug, Serialize)]
pub struct LiveResource {
    pub id: ResourceId,
    /// The live content, normalised to the same comparable form as [`DesiredResource::spec`].
    pub spec: Value,
    /// Marked as created by this capstan's owner.
    pub owned: bool,
    /// The owner its mark names, if it carries one (another owner's: a declaration of it is a
    /// takeover). None for resources without a mark of their own (attachments, groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// For attachments (bindings, memberships): the resource whose declaration lists them
    /// exhaustively. When that parent is declared, an attachment it no longer lists is removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ResourceId>,
    /// Live resources this one depends on (deletions run in the reverse order).
    pub depends_on: Vec<ResourceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<String>,
    /// What deleting this removes with it (a Marathon group: every app and group under it). The
    /// mass-delete guard counts them, and it is deleted only when every one of them may be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removes: Vec<ResourceId>,
    /// The mark a person put on it to keep it from being pruned, as the provider found it
    /// (`label capstan-prune: "false"`): such a resource is never deleted by pruning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
}

/// Resources by identity. Looked up several times per resource by every stage, so hashed with
/// foldhash (seeded per process, so crafted names cannot force collisions) rather than SipHash.
pub type ResourceMap<V> = IndexMap<ResourceId, V, foldhash::fast::RandomState>;

/// Everything the manifests of one commit declare.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DesiredState {
    pub resources: ResourceMap<DesiredResource>,
}

/// What the platform has, for the kinds that were observed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveState {
    pub resources: ResourceMap<LiveResource>,
    /// Kinds that were listed: a resource of another kind is unknown, not absent.
    pub observed_kinds: Vec<String>,
}

impl LiveState {
    pub fn get(&self, id: &ResourceId) -> Option<&LiveResource> {
        self.resources.get(id)
    }

    pub fn insert(&mut self, r: LiveResource) {
        self.resources.insert(r.id.clone(), r);
    }
}

/// What a platform read of a few resources ([`crate::apply::Drive::observe_only`]): the live
/// state of every kind asked for, except that of the `partial` kinds only the resources in
/// `covered` were read (those asked for and whatever is read with them: a job's bindings). Of
/// a resource of a partial kind that is not covered nothing is known, not even whether it is
/// live.
#[derive(Clone, Debug, Default)]
pub struct Scoped {
    pub live: LiveState,
    pub partial: Vec<String>,
    /// Resources of the partial kinds whose live state is known exactly (live or not), and
    /// whose declarations (when declared) may be compared with it.
    pub covered: std::collections::HashSet<ResourceId>,
}

impl Scoped {
    /// Whether what is live of `id` is known.
    pub fn covers(&self, id: &ResourceId) -> bool {
        !self.partial.contains(&id.kind) || self.covered.contains(id)
    }
}

/// The same value with every map and list holding exactly as much room as it needs. Maps built
/// by inserting grow their storage in steps and keep the slack; ten thousand resources of a few
/// dozen fields each are held for a whole plan, so providers compact what they keep.
pub fn compact(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k, compact(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(compact).collect()),
        other => other,
    }
}

/// A JSON value parsed straight into the form [`compact`] gives: every map and list built with
/// exactly the room its entries need, so what a provider keeps of an answer is made once, not
/// parsed and then copied. Otherwise it is what `serde_json::Value` parses (the same key order,
/// numbers and strings; a repeated key keeps its first place and its last value).
pub struct Compact(pub Value);

impl<'de> Deserialize<'de> for Compact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CompactVisitor).map(Compact)
    }
}

struct CompactVisitor;

impl<'de> serde::de::Visitor<'de> for CompactVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Compact::deserialize(d).map(|c| c.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Compact(v)) = seq.next_element()? {
            items.push(v);
        }
        items.shrink_to_fit();
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // The entries are gathered first, so the map is made once with the room they need.
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some((k, Compact(v))) = map.next_entry::<String, Compact>()? {
            entries.push((k, v));
        }
        let mut out = serde_json::Map::with_capacity(entries.len());
        for (k, v) in entries {
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// How a kind behaves, as its provider describes it to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// capstan creates, changes and deletes resources of this kind. Unmanaged kinds (packages)
    /// are observed only to resolve and check references.
    pub managed: bool,
    /// The platform can change a resource of this kind in place; otherwise a change is a replace.
    pub updatable: bool,
}

/// What one plan step asks the platform to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Update,
    Delete,
}

/// A platform's checks of a plan before it is applied, each answered as things are now and as
/// the plan would leave them; a failed one stops the plan unless allowed on purpose.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// What one check is called in messages (`policy check`); the JSON plan's key and the
    /// daemon's refusal reason are made from it.
    #[serde(skip)]
    pub name: &'static str,
    /// Every declared check, with both answers.
    pub checks: Vec<Check>,
    /// When nothing is checked: what changes, per scope the plan touches, before and after.
    #[serde(rename = "realms")]
    pub scopes: Vec<ScopeSummary>,
    /// Why the checks could not be run, when they could not (the plan is then refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckReport {
    /// Why the plan must not be applied as it is, if it must not.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("the {}s could not be run: {e}", self.name));
        }
        let failed: Vec<String> = self.checks.iter().filter(|c| c.failed).map(Check::describe).collect();
        (!failed.is_empty()).then(|| format!("{} {}(s) fail: {}", failed.len(), self.name, failed.join("; ")))
    }

    /// The JSON plan's key for the report (`policy_checks`).
    pub fn key(&self) -> String {
        format!("{}s", self.reason())
    }

    /// The reason a refusal for a failed check gives (`policy_check`).
    pub fn reason(&self) -> String {
        self.name.replace(' ', "_")
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// Where the check is declared (`file:line:column`).
    pub at: String,
    /// What is asked about (an FQN).
    #[serde(rename = "fqn")]
    pub subject: String,
    /// Who asks, as the platform's claims (`name=ci`).
    pub input: Vec<String>,
    /// What is asked for (`permit=update`).
    pub claim: String,
    /// `permit` or `deny`.
    pub expect: String,
    /// The answers: `permit`, `deny` or `unknown` (the platform cannot tell).
    pub before: String,
    pub after: String,
    pub changed: bool,
    /// The answer after the plan is not the one expected.
    pub failed: bool,
}

impl Check {
    pub fn describe(&self) -> String {
        format!(
            "{} {} for {} [{}]: expected {}, {} now, {} after this plan ({})",
            self.claim,
            self.subject,
            if self.input.is_empty() { "anyone".to_string() } else { self.input.join(" ") },
            self.at,
            self.expect,
            self.before,
            self.after,
            if self.failed { "FAILS" } else { "holds" }
        )
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScopeSummary {
    #[serde(rename = "realm")]
    pub scope: String,
    /// The platform's lines for the scope (`context: value`).
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// The platform's own preview of a change, shown beside capstan's plan (Marathon's `dryRun`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PlatformPreview {
    /// The request that asked for it (`PUT /v2/groups/product?dryRun=true`).
    pub request: String,
    /// The platform's steps in order, each a list of actions.
    pub steps: Vec<Vec<PreviewAction>>,
    /// Where the platform's preview and capstan's plan do not say the same thing.
    pub disagreements: Vec<String>,
    /// Why there is no preview (the request failed), when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PreviewAction {
    /// The platform's name for the action (`StartApplication`).
    pub action: String,
    /// What it acts on, as capstan names it.
    pub resource: ResourceId,
}

/// A step of a platform's own plan that one of capstan's steps follows (a data service rolling
/// its nodes): shown under capstan's step in progress, `plan status`, the daemon's plan and
/// events, never interpreted by the core. `status` is the platform's own word.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubStep {
    pub phase: String,
    pub step: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An operation on a service a platform runs with an API of its own (`capstan service …`):
/// the provider maps it onto that API, or says the platform runs no such services.
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceOp {
    /// The service's pods (nodes) and what each runs.
    Pods,
    /// How clients connect to the service.
    Endpoints,
    /// The service's configurations: the target one, every id, whether offers are suppressed.
    Config,
    /// Move a pod to another agent (its data is lost), following the service's recovery plan.
    PodReplace(String),
    /// Restart a pod where it is, following the service's recovery plan.
    PodRestart(String),
    /// A maintenance operation of the service's own (`cleanup`, `repair`, `backup`, `restore`)
    /// started with this request body and followed until it is done.
    Maintenance { op: String, body: Value },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsing into [`Compact`] gives what `Value` parses, byte for byte and key order included
    /// (a repeated key too), for every kind of JSON value.
    #[test]
    fn a_value_parsed_compact_is_the_value_parsed() {
        let texts = [
            r#"{"b": 1, "a": [1, -2, 2.5, 1e300, "x", null, true, false, {}, []], "c": {"z": {"y": null}, "x": "\u00e9\n"}}"#,
            r#"{"k": 1, "j": 2, "k": 3}"#,
            r#"[18446744073709551615, -9223372036854775808, 0.1, 100000000000000000000000]"#,
            r#""plain""#,
            "null",
            "3",
        ];
        for text in texts {
            let want: Value = serde_json::from_str(text).unwrap();
            let Compact(got) = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&want).unwrap(), "{text}");
            assert_eq!(got, want, "{text}");
        }
        // Deeper than serde_json's recursion limit is an error, as it is for `Value`.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(serde_json::from_str::<Compact>(&deep).is_err());
    }
}
