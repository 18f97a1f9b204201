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

use crate::diagnostic::Diagnostics;
use crate::model::{DesiredResource, KindInfo, LiveResource, LiveState, ResourceId};
use crate::render::yaml::Document;
use async_trait::async_trait;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

pub use http::ApiError;

/// How to reach a platform's API.
#[derive(Clone, Debug)]
pub struct Connection {
    pub url: String,
    /// The bearer token, already read from the environment variable the target names.
    pub token: Option<String>,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
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

    /// The kinds this platform knows, in the order they are shown.
    fn kinds(&self) -> &'static [(&'static str, KindInfo)];

    fn kind_info(&self, kind: &str) -> KindInfo {
        self.kinds()
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, i)| *i)
            .unwrap_or(KindInfo { managed: false, updatable: false })
    }

    /// Path of the JSON Schema of one manifest document, relative to `schemas/`.
    fn document_schema(&self) -> &'static str;

    /// Whether a byte range of a string lies in the namespace part of an identity (where an
    /// unresolved variable is filled by the default namespace rather than being an error).
    fn namespace_slot(&self, text: &str, range: Range<usize>) -> bool;

    /// Write the default namespace into an expanded document, and report identities left
    /// without one. Runs before schema validation.
    fn apply_default_namespace(&self, doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics);

    /// Turn one expanded, schema-valid document into resources.
    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource>;

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

    /// List the live resources of these kinds (and of whatever they are derived from).
    async fn observe(&self, kinds: &BTreeSet<String>) -> Result<LiveState, ApiError>;

    /// Carry out one step and wait until the platform reports it done.
    async fn execute(&self, op: Operation<'_>, live_state: &LiveState) -> Result<(), ApiError>;
}

/// The platforms capstan can manage, by name.
pub const PLATFORMS: &[&str] = &["apcera"];

/// Build the provider for a platform; `connection` is None for offline work (render, validate).
pub fn provider_for(platform: &str, connection: Option<Connection>, owner: &str) -> anyhow::Result<Box<dyn Provider>> {
    match platform {
        "apcera" => Ok(Box::new(apcera::Apcera::new(connection, owner)?)),
        other => anyhow::bail!("unknown platform {other:?}: expected one of {}", PLATFORMS.join(", ")),
    }
}
