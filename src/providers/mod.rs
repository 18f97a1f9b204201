//! Platforms. Each platform is one module implementing [`Provider`], with one file per resource
//! kind; the core stages (render, diff, plan, apply) only ever see this trait.
//!
//! A provider does two kinds of work. Offline, it reads manifest documents: where the namespace
//! part of an identity is, how the default namespace is written in, which JSON Schema a document
//! follows, and how a document turns into resources. Online, it lists live resources (one call
//! per kind, never one per resource) and carries out one step of a plan, waiting until the
//! platform says the change is done.

pub mod apcera;
pub mod http;
pub mod marathon;

use crate::diagnostic::Diagnostics;
use crate::diff::ChangeSet;
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, ResourceId};
use crate::render::yaml::{Document, Node};
use async_trait::async_trait;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

pub use http::ApiError;

/// How to reach a platform's API.
#[derive(Clone, Debug)]
pub struct Connection {
    pub url: String,
    /// Apcera's auth host, which serves the policy API; None: the same as `url`.
    pub auth_url: Option<String>,
    /// The bearer token, already read from the environment variable the target names.
    pub token: Option<String>,
    /// A CA certificate to trust: its path, and its content when it has been read already.
    pub ca_cert: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Override the platform's own locks instead of waiting for them (Marathon's `force=true`
    /// on a change to an app a deployment holds).
    pub force: bool,
    /// How transient failures are retried (capstan.yaml's `retry`).
    pub retry: http::RetryPolicy,
    /// How long a change of each kind may take to become ready, where capstan.yaml's
    /// `timeouts` says; other kinds get their provider's default.
    pub ready_timeouts: BTreeMap<String, Duration>,
}

impl Connection {
    /// A connection with the default retries and readiness timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Connection {
            url: url.into(),
            auth_url: None,
            token: None,
            ca_cert: None,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            force: false,
            retry: http::RetryPolicy::default(),
            ready_timeouts: BTreeMap::new(),
        }
    }

    /// How long a provider waits for a change of `kind` to be ready before the step fails:
    /// capstan.yaml's `timeouts`, else the provider's own `default` for that kind.
    pub fn ready_timeout(&self, kind: &str, default: Duration) -> Duration {
        self.ready_timeouts.get(kind).copied().unwrap_or(default)
    }
}

/// One part of a manifest document and the JSON Schema (a path under `schemas/`) it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentPart {
    /// JSON pointer of the part inside the document ("" for the whole document).
    pub pointer: String,
    pub schema: &'static str,
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

/// Declared expectations of access policy, simulated against the live policy and against the
/// policy as the plan would leave it (Apcera's `/v1/sim`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PolicyReport {
    /// Every declared check, with both answers.
    pub checks: Vec<PolicyCheck>,
    /// For changed policy: what the simulation says of each realm it touches, before and after.
    pub realms: Vec<RealmSummary>,
    /// Why the simulation could not be run, when it could not (the plan is then refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PolicyReport {
    /// Why the plan must not be applied as it is, if it must not.
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("the policy checks could not be run: {e}"));
        }
        let failed: Vec<String> = self.checks.iter().filter(|c| c.failed).map(PolicyCheck::describe).collect();
        (!failed.is_empty()).then(|| format!("{} policy check(s) fail: {}", failed.len(), failed.join("; ")))
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyCheck {
    /// Where the check is declared (`file:line:column`).
    pub at: String,
    pub fqn: String,
    pub input: Vec<String>,
    pub claim: String,
    /// `permit` or `deny`.
    pub expect: String,
    /// The answers: `permit`, `deny` or `unknown` (the simulation cannot tell).
    pub before: String,
    pub after: String,
    pub changed: bool,
    /// The answer after the plan is not the one expected.
    pub failed: bool,
}

impl PolicyCheck {
    pub fn describe(&self) -> String {
        format!(
            "{} {} for {} [{}]: expected {}, {} now, {} after this plan ({})",
            self.claim,
            self.fqn,
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
pub struct RealmSummary {
    pub realm: String,
    /// The simulation's claim lines, as `context: value`.
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// What one plan step asks the platform to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Update,
    Delete,
}

/// One step to carry out, with everything known about its resource.
pub struct Operation<'a> {
    pub verb: Verb,
    pub id: &'a ResourceId,
    pub desired: Option<&'a DesiredResource>,
    pub live: Option<&'a LiveResource>,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The platform's name as written in capstan.yaml (`apcera`).
    fn platform(&self) -> &'static str;

    /// The owner whose mark this provider writes and recognises (capstan.yaml's `owner`).
    fn owner(&self) -> &str;

    /// The kinds this platform knows, in the order they are shown.
    fn kinds(&self) -> &'static [(&'static str, KindInfo)];

    fn kind_info(&self, kind: &str) -> KindInfo {
        self.kinds()
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .unwrap_or(KindInfo { managed: false, updatable: false })
    }

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

    /// Whether a reference to `target` names the live resource `id`: the same identity, unless
    /// the platform writes references before their kind is known (Marathon: a dependency
    /// declared nowhere names an app or a group by its path). A plan that deletes what a
    /// declaration names is refused.
    fn names(&self, target: &ResourceId, id: &ResourceId) -> bool {
        target == id
    }

    /// Merge expanded documents into the one manifest `capstan render` prints.
    fn merge_documents(&self, docs: &[Value]) -> Value;

    /// The two sides of a resource in the form they are compared and shown in: the provider may
    /// project live state onto what the declaration manages, and resolve names through other
    /// live resources (a package FQN to its uuid).
    fn comparable<'a>(
        &self,
        desired: Option<&'a DesiredResource>,
        live: Option<&'a LiveResource>,
        live_state: &LiveState,
    ) -> (Option<Cow<'a, Value>>, Option<Cow<'a, Value>>) {
        let _ = live_state;
        (desired.map(|d| Cow::Borrowed(&d.spec)), live.map(|l| Cow::Borrowed(&l.spec)))
    }

    /// The kinds whose changes this provider waits for within `Connection::ready_timeout`:
    /// the only keys capstan.yaml's `timeouts` may name for this platform.
    fn timed_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    /// List the live resources of these kinds (and of whatever they are derived from).
    /// `desired` is what the manifests declare: a provider may keep of a declared resource only
    /// what [`Provider::comparable`] will look at, so ten thousand live objects do not have to
    /// be held whole.
    async fn observe(&self, kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError>;

    /// Carry out one step and wait until the platform reports it done.
    async fn execute(&self, op: Operation<'_>, live_state: &LiveState) -> Result<(), ApiError>;

    /// Steps whose operations share a key here and become ready together may be carried out in
    /// one request, through [`Provider::execute_batch`] (a Marathon group document's apps).
    fn batch(&self, op: &Operation<'_>, desired: &DesiredState) -> Option<String> {
        let _ = (op, desired);
        None
    }

    /// Carry out the steps of one batch and wait until they are done: one result per step, in
    /// order. By default each on its own, all at once.
    async fn execute_batch(&self, ops: Vec<Operation<'_>>, live_state: &LiveState) -> Vec<Result<(), ApiError>> {
        futures::future::join_all(ops.into_iter().map(|op| self.execute(op, live_state))).await
    }

    /// Declared policy checks and the simulation of changed policy, for platforms that have
    /// one; None when nothing is declared or changed that it concerns. Reads only.
    async fn policy_checks(
        &self,
        changes: &ChangeSet,
        desired: &DesiredState,
        live: &LiveState,
    ) -> Option<PolicyReport> {
        let _ = (changes, desired, live);
        None
    }

    /// The platform's own preview of these changes, for platforms that have one. Reads only;
    /// must be deterministic for the same inputs (it is part of the plan).
    async fn preview(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<PlatformPreview> {
        let _ = (changes, desired, live);
        None
    }
}

/// The platforms capstan can manage, by name.
pub const PLATFORMS: &[&str] = &["apcera", "marathon"];

/// Build the provider for a platform; `connection` is None for offline work (render, validate).
pub fn provider_for(platform: &str, connection: Option<Connection>, owner: &str) -> anyhow::Result<Box<dyn Provider>> {
    match platform {
        "apcera" => Ok(Box::new(apcera::Apcera::new(connection, owner)?)),
        "marathon" => Ok(Box::new(marathon::Marathon::new(connection, owner)?)),
        other => anyhow::bail!("unknown platform {other:?}: expected one of {}", PLATFORMS.join(", ")),
    }
}
