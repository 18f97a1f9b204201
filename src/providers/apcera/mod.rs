//! Apcera (seed 003): jobs, services, service providers, virtual networks with their job
//! membership, service bindings and job links, managed through the REST API at `/v1/...`.
//!
//! Ownership. capstan marks what it creates: a job with the label `capstan-owner: <owner>`
//! (labels are the job's own filterable metadata), and services, providers and networks, which
//! have no labels in the seed, with ` [capstan-owner=<owner>]` at the end of their description
//! (the way other tools write "Managed by ..." into descriptions). The mark is removed before
//! comparing. Bindings, links and memberships belong to the job or network that declares them.
//! Policy documents carry a first line `// capstan-owner: <owner>` (policy.rs). Semantic pipeline
//! rules and staging pipelines have no place for a mark at all: capstan records the uuid of each
//! one it creates in the state directory (created.rs) and prunes only a recorded one.
//!
//! Keeping. A person keeps a resource from ever being pruned with the job label
//! `capstan-prune: "false"`, or ` [capstan-prune=false]` anywhere in a description. The mark is
//! left out of comparisons (unless the manifest writes it too) and kept when capstan writes.
//!
//! Observing costs one list call per kind: `GET /v1/jobs` (which also carries every job's
//! bindings and links), `/v1/networks` (with membership), `/v1/services`, `/v1/providers` and
//! `/v1/packages` (to resolve package FQNs), only for the kinds a plan touches.

mod binding;
mod client;
mod created;
mod drain;
mod fqn;
mod job;
mod kind;
mod listed;
mod network;
mod observe;
mod pipeline;
mod policy;
mod policy_check;
mod rule;
mod service;
mod service_provider;

use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::{Document, Node, NodeValue};
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, ResourceId};
use crate::providers::{ApiError, Compare, Connection, Decode, DocumentPart, Drive, Operation, Verb};
use async_trait::async_trait;
use client::Client;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::ops::Range;
use std::sync::Mutex;

/// The job label that marks what capstan created, with the owner as value.
pub const OWNER_LABEL: &str = "capstan-owner";
const MARK_PREFIX: &str = "[capstan-owner=";
/// The job label by which a person keeps a job from being pruned (with the value "false").
pub const PRUNE_LABEL: &str = "capstan-prune";
/// The same mark in a description, for the kinds without labels.
const KEEP_MARK: &str = "[capstan-prune=false]";

/// This platform's entry in the registry (`crate::providers::PLATFORMS`).
pub static PLATFORM: super::PlatformDef = super::PlatformDef {
    name: "apcera",
    schemas: &[
        ("apcera/manifest.schema.json", include_str!("../../../schemas/apcera/manifest.schema.json")),
        ("apcera/job.schema.json", include_str!("../../../schemas/apcera/job.schema.json")),
        ("apcera/service.schema.json", include_str!("../../../schemas/apcera/service.schema.json")),
        ("apcera/network.schema.json", include_str!("../../../schemas/apcera/network.schema.json")),
        ("apcera/provider.schema.json", include_str!("../../../schemas/apcera/provider.schema.json")),
        ("apcera/policy.schema.json", include_str!("../../../schemas/apcera/policy.schema.json")),
        ("apcera/policy_check.schema.json", include_str!("../../../schemas/apcera/policy_check.schema.json")),
        ("apcera/sempiperule.schema.json", include_str!("../../../schemas/apcera/sempiperule.schema.json")),
        ("apcera/stagingpipeline.schema.json", include_str!("../../../schemas/apcera/stagingpipeline.schema.json")),
    ],
    new: |connection, owner| Ok(Box::new(Apcera::new(connection, owner)?)),
};

use kind::{KINDS, Kind};

pub struct Apcera {
    client: Option<Client>,
    /// Where the client points and how long waits may take; None offline.
    connection: Option<Connection>,
    owner: String,
    /// Platform ids by (kind, FQN): filled by observing, kept current by creates and deletes,
    /// so steps never look a resource up one by one. Each observation replaces the ids of the
    /// kinds it lists: a resource deleted behind capstan's back is forgotten, never used again.
    uuids: Mutex<HashMap<(&'static str, String), String>>,
    packages: Mutex<Packages>,
    /// The rules and staging pipelines capstan created (they have no place for a mark).
    created: created::Created,
}

#[derive(Default)]
struct Packages {
    fqn_by_uuid: HashMap<String, String>,
    uuid_by_fqn: HashMap<String, String>,
}

impl Apcera {
    pub fn new(connection: Option<Connection>, owner: &str) -> anyhow::Result<Self> {
        Ok(Apcera {
            client: connection.as_ref().map(Client::new).transpose()?,
            owner: owner.to_string(),
            uuids: Mutex::default(),
            packages: Mutex::default(),
            created: created::Created::open(connection.as_ref().and_then(|c| c.state_dir.as_deref()))?,
            connection,
        })
    }

    fn client(&self) -> Result<&Client, ApiError> {
        self.client.as_ref().ok_or_else(|| ApiError::other("-", "-", "no target to talk to (offline)"))
    }

    /// How long a change of `kind` may take to be ready: capstan.yaml's `timeouts`, else five
    /// minutes (a job starting its instances).
    fn ready_timeout(&self, kind: &str) -> std::time::Duration {
        let default = std::time::Duration::from_secs(300);
        self.connection.as_ref().map_or(default, |c| c.ready_timeout(kind, default))
    }

    fn remember(&self, kind: &'static str, fqn: &str, uuid: &str) {
        self.uuids.lock().unwrap().insert((kind, fqn.to_string()), uuid.to_string());
    }

    fn forget(&self, kind: &'static str, fqn: &str) {
        self.uuids.lock().unwrap().remove(&(kind, fqn.to_string()));
    }

    fn known_uuid(&self, kind: &'static str, fqn: &str) -> Option<String> {
        self.uuids.lock().unwrap().get(&(kind, fqn.to_string())).cloned()
    }

    /// The uuid of a resource: known since observing, or looked up (after a lost answer, or a
    /// resource created by a step of this run that another step needs).
    async fn uuid(&self, kind: &'static str, fqn: &str, client: &Client) -> Result<Option<String>, ApiError> {
        if let Some(u) = self.known_uuid(kind, fqn) {
            return Ok(Some(u));
        }
        let found = match Kind::parse(kind) {
            Some(Kind::Job) => client.find_job(fqn).await?,
            k => {
                let list = match k {
                    Some(Kind::Network) => client.list_networks().await?,
                    Some(Kind::Service) => client.list_services().await?,
                    Some(Kind::Rule) => client.list_rules().await?,
                    Some(Kind::Pipeline) => client.list_pipelines().await?,
                    _ => client.list_providers().await?,
                };
                list.into_iter().find(|o| o.get("fqn").and_then(Value::as_str) == Some(fqn))
            }
        };
        let uuid = found.and_then(|o| o.get("uuid").and_then(Value::as_str).map(str::to_string));
        if let Some(u) = &uuid {
            self.remember(kind, fqn, u);
        }
        Ok(uuid)
    }

    fn package_uuid(&self, fqn: &str) -> Option<String> {
        self.packages.lock().unwrap().uuid_by_fqn.get(fqn).cloned()
    }

    /// A job with its package references by FQN where known; borrowed when nothing changes.
    fn named_packages<'a>(&self, spec: &'a Value) -> Cow<'a, Value> {
        let by_uuid = spec.get("packages").and_then(Value::as_array).is_some_and(|ps| {
            let pk = self.packages.lock().unwrap();
            ps.iter().any(|p| p.get("uuid").and_then(Value::as_str).is_some_and(|u| pk.fqn_by_uuid.contains_key(u)))
        });
        if !by_uuid {
            return Cow::Borrowed(spec);
        }
        let mut s = spec.clone();
        if let Some(p) = s.get_mut("packages") {
            *p = self.packages_by_name(p);
        }
        Cow::Owned(s)
    }

    /// Package references written by FQN wherever the package is known, on both sides alike.
    fn packages_by_name(&self, list: &Value) -> Value {
        let pk = self.packages.lock().unwrap();
        let Some(items) = list.as_array() else {
            return list.clone();
        };
        Value::Array(
            items
                .iter()
                .map(|p| match p.get("uuid").and_then(Value::as_str).and_then(|u| pk.fqn_by_uuid.get(u)) {
                    Some(f) => json!({ "fqn": f }),
                    None => p.clone(),
                })
                .collect(),
        )
    }
}

/// Append the ownership mark to a description.
fn mark(description: &str, owner: &str) -> String {
    if description.is_empty() {
        format!("{MARK_PREFIX}{owner}]")
    } else {
        format!("{description} {MARK_PREFIX}{owner}]")
    }
}

/// Why a description keeps its resource from being pruned, if it does.
fn keep_mark(description: &str) -> Option<String> {
    description.contains(KEEP_MARK).then(|| format!("its description carries {KEEP_MARK}"))
}

/// A description without the keep mark (and the spaces around it).
fn without_keep_mark(description: &str) -> String {
    let parts: Vec<&str> = description.split(KEEP_MARK).map(str::trim).filter(|p| !p.is_empty()).collect();
    parts.join(" ")
}

/// A declaration as compared: a keep mark it writes in its description is not compared, as
/// the live side's is not.
fn declared_without_keep_mark(spec: &Value) -> Cow<'_, Value> {
    match spec.get("description").and_then(Value::as_str) {
        Some(d) if d.contains(KEEP_MARK) => {
            let mut s = spec.clone();
            s["description"] = json!(without_keep_mark(d));
            Cow::Owned(s)
        }
        _ => Cow::Borrowed(spec),
    }
}

/// Remove the ownership mark (and a keep mark) from a description; says whose it was, if it
/// had one.
fn unmark(description: &str) -> (String, Option<String>) {
    let description =
        if description.contains(KEEP_MARK) { without_keep_mark(description) } else { description.to_string() };
    let description = description.as_str();
    if let Some(idx) = description.rfind(MARK_PREFIX)
        && description.ends_with(']')
    {
        let mark_owner = &description[idx + MARK_PREFIX.len()..description.len() - 1];
        return (description[..idx].trim_end().to_string(), Some(mark_owner.to_string()));
    }
    (description.to_string(), None)
}

/// A declaration's `name` and `fqn` fields, when written, must agree with its key.
fn check_name_fields(doc: &Document, pointer: &str, key: &str, entry: &Value, diags: &mut Diagnostics) {
    if let Some(f) = entry.get("fqn").and_then(Value::as_str)
        && f != key
    {
        diags.push(Diagnostic::error_at(
            doc.locate(&format!("{pointer}/fqn")),
            format!(
                "fqn {f:?} differs from the key {key:?} it is declared under: expected the same FQN or no fqn field"
            ),
        ));
    }
    let local = fqn::split(key).map(|f| f.local).unwrap_or(key);
    if let Some(n) = entry.get("name").and_then(Value::as_str)
        && n != local
    {
        diags.push(Diagnostic::error_at(
            doc.locate(&format!("{pointer}/name")),
            format!("name {n:?} differs from the FQN's name part {local:?}: expected {local:?} or no name field"),
        ));
    }
}

/// `POST` a new object marked in its description. If the answer is lost, or the platform says
/// it exists already, look it up instead of creating it twice.
async fn create_once<F, Fut>(
    client: &Client,
    collection: &str,
    body: &Value,
    owner: &str,
    find: F,
) -> Result<Value, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<Value>, ApiError>>,
{
    let mine = |v: &Value| {
        unmark(v.get("description").and_then(Value::as_str).unwrap_or_default()).1.as_deref() == Some(owner)
    };
    settle_create(client.max_attempts(), || client.create(collection, body), find, mine).await
}

/// Create something once, whatever the network does: a transient failure may or may not have
/// created it, so look before trying again; a conflict means an earlier attempt made it — but
/// only if what is found there carries this owner's mark (`mine`), or it is someone else's.
/// Tried at most `max_attempts` times, as capstan.yaml's `retry` says for every other request.
async fn settle_create<C, CFut, F, FFut>(
    max_attempts: u32,
    create: C,
    find: F,
    mine: impl Fn(&Value) -> bool,
) -> Result<Value, ApiError>
where
    C: Fn() -> CFut,
    CFut: Future<Output = Result<Value, ApiError>>,
    F: Fn() -> FFut,
    FFut: Future<Output = Result<Option<Value>, ApiError>>,
{
    let not_mine = |e: ApiError| ApiError {
        message: format!("{}; read back, it exists without this owner's mark: someone else made it", e.message),
        ..e
    };
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match create().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_conflict() => {
                return match find().await? {
                    Some(v) if mine(&v) => Ok(v),
                    Some(_) => Err(not_mine(e)),
                    None => Err(e),
                };
            }
            Err(e) if e.transient && attempts < u64::from(max_attempts) => {
                match find().await? {
                    Some(v) if mine(&v) => return Ok(v),
                    Some(_) => return Err(not_mine(e)),
                    None => {}
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempts)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run a list call only when its kinds are wanted.
async fn maybe<T>(on: bool, call: impl Future<Output = Result<T, ApiError>>) -> Result<Option<T>, ApiError> {
    if on { call.await.map(Some) } else { Ok(None) }
}

impl Decode for Apcera {
    fn platform(&self) -> &'static str {
        "apcera"
    }

    fn document_parts(&self, root: &Node) -> Result<Vec<DocumentPart>, String> {
        match root.value {
            NodeValue::Map(_) => {
                Ok(vec![DocumentPart { pointer: String::new(), schema: "apcera/manifest.schema.json" }])
            }
            _ => Err("a mapping (jobs:, services:, networks:, ...)".into()),
        }
    }

    fn namespace_slot(&self, text: &str, range: Range<usize>) -> bool {
        fqn::in_namespace_part(text, range)
    }

    fn apply_default_namespace(&self, doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics) {
        fqn::apply_default_namespace(doc, namespace, diags)
    }

    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
        let mut out = Vec::new();
        let section = |name: &str| value.get(name).and_then(Value::as_object).into_iter().flatten();
        for (key, entry) in section("providers") {
            out.extend(service_provider::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("services") {
            out.extend(service::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("networks") {
            out.extend(network::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("jobs") {
            out.extend(job::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("stagingpipelines") {
            out.extend(pipeline::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("sempiperules") {
            out.extend(rule::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("policies") {
            out.extend(policy::decode(doc, key, entry, diags));
        }
        if let Some(checks) = value.get("policy_checks").and_then(Value::as_array) {
            out.extend(policy_check::decode(doc, checks, diags));
        }
        out
    }

    /// A policy document's `text` may be `file:NAME.pol`, so policy keeps its own syntax in git.
    fn file_values(&self, value: &Value) -> Vec<String> {
        let docs = value.get("policies").and_then(Value::as_object).into_iter().flatten();
        docs.filter(|(_, d)| d.get("text").is_some_and(Value::is_string))
            .map(|(name, _)| format!("/policies/{}/text", crate::base::yaml::pointer_escape(name)))
            .collect()
    }

    fn merge_documents(&self, docs: &[Value]) -> Value {
        let mut merged = Map::new();
        for doc in docs {
            let Some(obj) = doc.as_object() else { continue };
            for (k, v) in obj {
                match (merged.get_mut(k), v) {
                    (Some(Value::Object(into)), Value::Object(from)) => {
                        into.extend(from.iter().map(|(a, b)| (a.clone(), b.clone())));
                    }
                    _ => {
                        merged.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Value::Object(merged)
    }
}

impl Compare for Apcera {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn kinds(&self) -> &'static [(&'static str, KindInfo)] {
        KINDS
    }

    fn comparable<'a>(
        &self,
        desired: Option<&'a DesiredResource>,
        live: Option<&'a LiveResource>,
        _live_state: &LiveState,
    ) -> (Option<Cow<'a, Value>>, Option<Cow<'a, Value>>) {
        let kind = desired.map(|d| d.id.kind.as_str()).or(live.map(|l| l.id.kind.as_str())).and_then(Kind::parse);
        match (kind, desired, live) {
            (Some(Kind::Job), Some(d), Some(l)) => {
                let (d, l) = job::comparable(self, &d.spec, &l.spec);
                (Some(d), Some(Cow::Owned(l)))
            }
            (Some(Kind::Policy), d, l) => {
                (d.map(|d| Cow::Owned(policy::comparable(&d.spec))), l.map(|l| Cow::Owned(policy::comparable(&l.spec))))
            }
            (Some(Kind::Job), d, l) => {
                (d.map(|d| self.named_packages(&d.spec)), l.map(|l| self.named_packages(&l.spec)))
            }
            (Some(Kind::Provider), d, l) => (
                d.map(|d| {
                    let mut s = declared_without_keep_mark(&d.spec).into_owned();
                    s.as_object_mut().map(|o| o.remove(service_provider::WRITE_ONLY));
                    Cow::Owned(s)
                }),
                l.map(|l| Cow::Borrowed(&l.spec)),
            ),
            (_, d, l) => (d.map(|d| declared_without_keep_mark(&d.spec)), l.map(|l| Cow::Borrowed(&l.spec))),
        }
    }
}

#[async_trait]
impl Drive for Apcera {
    fn timed_kinds(&self) -> &'static [&'static str] {
        const TIMED: &[&str] = &[Kind::Job.name()];
        TIMED
    }

    async fn observe(&self, kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError> {
        Ok(self.read(kinds, desired, None).await?.live)
    }

    /// Jobs (and the bindings and links they carry) are read by FQN, one `GET /v1/jobs?FQN=`
    /// each; every other kind is listed as `observe` lists it.
    async fn observe_only(
        &self,
        kinds: &BTreeSet<String>,
        desired: &DesiredState,
        only: &[ResourceId],
    ) -> Result<Option<crate::model::Scoped>, ApiError> {
        self.read(kinds, desired, Some(only)).await.map(Some)
    }

    async fn checks(
        &self,
        changes: &crate::diff::ChangeSet,
        desired: &DesiredState,
        _live: &LiveState,
    ) -> Option<crate::providers::CheckReport> {
        policy_check::run(self, changes, desired).await
    }

    /// A plan's policy documents are written in one request (a `PUT`, or a `DELETE` of many).
    fn batch(&self, op: &Operation<'_>, _desired: &DesiredState) -> Option<String> {
        (op.id.kind == Kind::Policy.name()).then(|| format!("{} {}", Kind::Policy.name(), op.verb == Verb::Delete))
    }

    async fn execute_batch(&self, ops: Vec<Operation<'_>>, live_state: &LiveState) -> Vec<Result<(), ApiError>> {
        if ops.first().is_some_and(|o| o.id.kind == Kind::Policy.name()) {
            let n = ops.len();
            let done = match self.client() {
                Ok(client) => policy::execute_all(self, client, &ops).await,
                Err(e) => Err(e),
            };
            return vec![done; n];
        }
        futures::future::join_all(ops.into_iter().map(|op| self.execute(op, live_state))).await
    }

    async fn execute(&self, op: Operation<'_>, _live_state: &LiveState) -> Result<(), ApiError> {
        let client = self.client()?;
        let Some(kind) = Kind::parse(&op.id.kind) else {
            return Err(ApiError::other("-", "-", format!("capstan does not manage {} resources", op.id.kind)));
        };
        match kind {
            Kind::Job => job::execute(self, client, op.verb, op.desired, op.live, op.id).await,
            Kind::Service => service::execute(self, client, op.verb, op.desired, op.id).await,
            Kind::Provider => service_provider::execute(self, client, op.verb, op.desired, op.id).await,
            Kind::Network => network::execute(self, client, op.verb, op.desired, op.id).await,
            Kind::Membership => network::execute_membership(self, client, op.verb, op.desired, op.live).await,
            Kind::Binding | Kind::Link => binding::execute(self, client, op.verb, op.desired, op.live).await,
            Kind::Policy => policy::execute_all(self, client, &[op]).await,
            Kind::Rule => rule::execute(self, client, op.verb, op.desired, op.id).await,
            Kind::Pipeline => pipeline::execute(self, client, op.verb, op.desired, op.id).await,
            other @ (Kind::Package | Kind::PolicyCheck) => {
                Err(ApiError::other("-", "-", format!("capstan does not manage {} resources", other.name())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_mark_round_trips_through_descriptions() {
        let team_a = Some("team-a".to_string());
        assert_eq!(
            unmark(&mark("Network for developers.", "team-a")),
            ("Network for developers.".into(), team_a.clone())
        );
        assert_eq!(unmark(&mark("", "team-a")), (String::new(), team_a));
        assert_eq!(unmark(&mark("x", "team-b")), ("x".into(), Some("team-b".into())));
        assert_eq!(unmark("plain"), ("plain".into(), None));
    }
}

/// Render's cache, exercised with this platform's manifests.
#[cfg(test)]
mod render_tests {
    use crate::config::Config;
    use crate::render::{RenderCache, RenderOptions, render};
    use crate::source::{Origin, Snapshot, SourceFile};

    fn snapshot(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            origin: Origin::Dir { path: ".".into() },
            files: files.iter().map(|(p, t)| SourceFile { path: p.into(), text: (*t).into() }).collect(),
            data: Vec::new(),
            config: None,
        }
    }

    #[test]
    fn the_cache_holds_the_last_render_only() {
        let provider = crate::providers::provider_for(super::PLATFORM.name, None, "test").unwrap();
        let (cache, config, opts) = (RenderCache::default(), Config::default(), RenderOptions::default());
        let render = |files: &[(&str, &str)]| {
            render(&snapshot(files), &config, &opts, provider.as_ref(), Some(&cache)).unwrap();
        };
        render(&[("a.yaml", "jobs:\n  job::/t::a: {}\n"), ("b.yaml", "jobs:\n  job::/t::b: {}\n")]);
        assert_eq!(cache.len(), 2);
        for n in 0..5 {
            render(&[
                ("a.yaml", &format!("jobs:\n  job::/t::a: {{weight: {n}}}\n")),
                ("b.yaml", "jobs:\n  job::/t::b: {}\n"),
            ]);
            assert_eq!(cache.len(), 2, "a changed file replaces its old entry");
        }
        render(&[("b.yaml", "jobs:\n  job::/t::b: {}\n")]);
        assert_eq!(cache.len(), 1, "a removed file leaves the cache");
    }
}
