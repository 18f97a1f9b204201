//! tsuru (seed 002): apps with their units per process, env, cnames and binds; service
//! instances; jobs (tsuru 1.13). The sandbox (`sandbox/tsuru`) is an independent reading of the
//! same seed.
//!
//! Manifests. A document holds any of `apps:`, `serviceInstances:` (keyed `service/instance`)
//! and `jobs:`, each keyed by name, with the seed's field names; `variables:` works as for the
//! other platforms. `default_namespace` means nothing to tsuru and is an error.
//!
//! Ownership. capstan marks what it creates with the tag `capstan-owner=<owner>` (apps,
//! instances and jobs all have tags; metadata labels are app-only and restart the units when
//! changed). A person keeps a resource from being pruned with the tag `capstan-prune=false`.
//! Both tags are left out of comparisons and kept when capstan writes the tags.
//!
//! Observing costs `GET /1.0/apps?extended=true`, `GET /1.0/services/instances` (which also
//! says what each instance is bound to), `GET /1.13/jobs` (its 404 `Not founds.` is empty) and
//! one `GET /1.0/apps/{app}/env` per declared app that exists: never a call per undeclared
//! resource. Env ownership and private values: see `env.rs`. Streamed answers: `stream.rs`.
//!
//! Order. An app or job that binds an instance references it, so instances are created first;
//! binds are made by the app's (job's) step; an instance's delete unbinds its apps and jobs
//! first. A cname that moves between two declared apps in one apply is taken from the app
//! that no longer declares it by the step of the app that now does.

mod app;
mod client;
mod env;
mod job;
mod kind;
mod service_instance;
mod stream;
mod units;

use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, ResourceId};
use crate::http::Idempotent;
use crate::providers::{ApiError, Compare, Connection, Decode, DocumentPart, Drive, Operation, Verb};
use crate::base::yaml::{Document, Node, NodeValue};
use async_trait::async_trait;
use client::{Client, enc};
use reqwest::Method;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Mutex;

/// Env reads in flight at once while observing (one per declared app).
const ENV_READS: usize = 64;

/// The tag that marks what capstan created: `capstan-owner=<owner>`.
pub const OWNER_TAG: &str = "capstan-owner=";
/// The tag by which a person keeps a resource from being pruned.
pub const KEEP_TAG: &str = "capstan-prune=false";

use kind::{KINDS, Kind};

pub struct Tsuru {
    client: Option<Client>,
    owner: String,
    /// Cnames by the app that holds them (live), and the cnames each declared app declares:
    /// filled by `observe`, for moving a cname between apps in one apply.
    cnames: Mutex<Cnames>,
}

#[derive(Default)]
struct Cnames {
    holder: BTreeMap<String, String>,
    declared: BTreeMap<String, BTreeSet<String>>,
}

/// Tags without capstan's marks; the owner the mark names; the keep mark, if any.
pub fn unmark(tags: Option<&Value>) -> (Vec<String>, Option<String>, Option<String>) {
    let mut out = Vec::new();
    let (mut owner, mut keep) = (None, None);
    for t in tags.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if let Some(o) = t.strip_prefix(OWNER_TAG) {
            owner = Some(o.to_string());
        } else if t == KEEP_TAG {
            keep = Some(format!("tag {KEEP_TAG}"));
        } else {
            out.push(t.to_string());
        }
    }
    (out, owner, keep)
}

/// The declared tags plus capstan's mark (and a person's keep mark, kept).
pub fn marked(tags: Option<&Value>, owner: &str, keep: Option<&str>) -> Vec<String> {
    let (mut out, _, _) = unmark(tags);
    out.push(format!("{OWNER_TAG}{owner}"));
    if keep.is_some() {
        out.push(KEEP_TAG.to_string());
    }
    out
}

/// This platform's entry in the registry (`crate::providers::PLATFORMS`).
pub static PLATFORM: super::PlatformDef = super::PlatformDef {
    name: "tsuru",
    schemas: &[
        ("tsuru/manifest.schema.json", include_str!("../../../schemas/tsuru/manifest.schema.json")),
        ("tsuru/app.schema.json", include_str!("../../../schemas/tsuru/app.schema.json")),
        ("tsuru/env.schema.json", include_str!("../../../schemas/tsuru/env.schema.json")),
        ("tsuru/service_instance.schema.json", include_str!("../../../schemas/tsuru/service_instance.schema.json")),
        ("tsuru/job.schema.json", include_str!("../../../schemas/tsuru/job.schema.json")),
    ],
    new: |connection, owner| Ok(Box::new(Tsuru::new(connection, owner)?)),
};

impl Tsuru {
    pub fn new(connection: Option<Connection>, owner: &str) -> anyhow::Result<Self> {
        Ok(Tsuru {
            client: connection.as_ref().map(Client::new).transpose()?,
            owner: owner.to_string(),
            cnames: Mutex::new(Cnames::default()),
        })
    }

    fn client(&self) -> Result<&Client, ApiError> {
        self.client.as_ref().ok_or_else(|| ApiError::other("-", "-", "no target to talk to (offline)"))
    }

    /// Before `app` adds `cnames`: take each one another declared app holds and no longer
    /// declares from that app. One held by an app that still declares it, or by an app capstan
    /// does not manage, is left alone (tsuru then refuses the add with its own message).
    async fn take_cnames(&self, app: &str, cnames: &[&str]) -> Result<(), ApiError> {
        let moves: Vec<(String, String)> = {
            let c = self.cnames.lock().unwrap();
            cnames
                .iter()
                .filter_map(|cn| {
                    let holder = c.holder.get(*cn).filter(|h| *h != app)?;
                    let still = c.declared.get(holder)?.contains(*cn);
                    (!still).then(|| (holder.clone(), cn.to_string()))
                })
                .collect()
        };
        for (holder, cname) in moves {
            let path = format!("/1.0/apps/{}/cname?cname={}", enc(&holder), enc(&cname));
            match self.client()?.send(Method::DELETE, &path, None, Idempotent::Yes).await {
                Err(e) if e.message.contains("not exists") => {}
                other => {
                    other?;
                }
            }
            self.cnames.lock().unwrap().holder.remove(&cname);
        }
        Ok(())
    }
}

impl Decode for Tsuru {
    fn platform(&self) -> &'static str {
        "tsuru"
    }

    fn document_parts(&self, root: &Node) -> Result<Vec<DocumentPart>, String> {
        match root.value {
            NodeValue::Map(_) => {
                Ok(vec![DocumentPart { pointer: String::new(), schema: "tsuru/manifest.schema.json" }])
            }
            _ => Err("a mapping (apps:, serviceInstances:, jobs:)".into()),
        }
    }

    fn namespace_slot(&self, _text: &str, _range: Range<usize>) -> bool {
        false
    }

    fn apply_default_namespace(&self, _doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics) {
        if let Some(ns) = namespace {
            diags.push(Diagnostic::error(
                None,
                format!("default_namespace ({ns:?}) has no meaning for tsuru: apps, service instances and jobs are named as they are; remove it"),
            ));
        }
    }

    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
        let mut out = Vec::new();
        let section = |name: &str| value.get(name).and_then(Value::as_object).into_iter().flatten();
        for (key, entry) in section("serviceInstances") {
            out.push(service_instance::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("apps") {
            out.push(app::decode(doc, key, entry, diags));
        }
        for (key, entry) in section("jobs") {
            out.push(job::decode(doc, key, entry, diags));
        }
        out
    }

    /// A cname two declared apps both declare can never converge.
    fn link(&self, desired: &mut DesiredState, diags: &mut Diagnostics) {
        let mut seen: BTreeMap<&str, &DesiredResource> = BTreeMap::new();
        for r in desired.resources.values().filter(|r| r.id.kind == Kind::App.name()) {
            for c in r.spec.get("cnames").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if let Some(first) = seen.insert(c, r) {
                    diags.push(Diagnostic::error(
                        Some(r.origin.clone()),
                        format!(
                            "cname {c} is declared by app {} and app {}: a cname belongs to one app",
                            first.id.name, r.id.name
                        ),
                    ));
                }
            }
        }
    }

    fn merge_documents(&self, docs: &[Value]) -> Value {
        let mut merged = Map::new();
        for doc in docs {
            for (k, v) in doc.as_object().into_iter().flatten() {
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

impl Compare for Tsuru {
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
        match (desired, live) {
            (Some(d), Some(l)) => {
                let (dv, lv) = match Kind::parse(&d.id.kind) {
                    Some(Kind::App) => app::comparable(&self.owner, &d.spec, &l.spec),
                    Some(Kind::ServiceInstance) => (d.spec.clone(), service_instance::comparable(&d.spec, &l.spec)),
                    Some(Kind::Job) | None => (d.spec.clone(), job::comparable(&d.spec, &l.spec)),
                };
                (Some(Cow::Owned(dv)), Some(Cow::Owned(lv)))
            }
            (Some(d), None) if d.id.kind == Kind::App.name() => {
                let (dv, _) = app::comparable(&self.owner, &d.spec, &Value::Null);
                (Some(Cow::Owned(dv)), None)
            }
            (d, l) => (d.map(|d| Cow::Borrowed(&d.spec)), l.map(|l| Cow::Borrowed(&l.spec))),
        }
    }

}

#[async_trait]
impl Drive for Tsuru {
    async fn observe(&self, _kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError> {
        let client = self.client()?;
        let (apps, services, jobs) = tokio::try_join!(
            client.list("/1.0/apps?extended=true"),
            client.list("/1.0/services/instances"),
            client.jobs()
        )?;
        let mut state = LiveState {
            resources: Default::default(),
            observed_kinds: KINDS.iter().map(|(k, _)| k.to_string()).collect(),
        };
        let mut app_binds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut job_binds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in &services {
            let service = entry.get("service").and_then(Value::as_str).unwrap_or_default();
            for item in entry.get("service_instances").and_then(Value::as_array).into_iter().flatten() {
                let Some(live) = service_instance::from_live(&self.owner, service, item) else { continue };
                for (list, into) in [("apps", &mut app_binds), ("jobs", &mut job_binds)] {
                    for a in live.spec[list].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        into.entry(a.to_string()).or_default().push(live.id.name.clone());
                    }
                }
                state.insert(live);
            }
        }
        // One env read per declared app that exists, ENV_READS at a time: all at once, ten
        // thousand apps were ten thousand connections and 550 MB.
        let declared = |kind: &str, name: &str| desired.resources.contains_key(&ResourceId::new(kind, name));
        let names: Vec<&str> =
            apps.iter().filter_map(|a| a.get("name")?.as_str()).filter(|n| declared(Kind::App.name(), n)).collect();
        let envs: Vec<Vec<Value>> = {
            use futures::{StreamExt, TryStreamExt};
            // Made first (a future does nothing until polled): a closure inside the stream
            // would not be `Send` for every lifetime, as async_trait asks.
            let reads: Vec<_> = names.iter().map(|n| client.list_or_empty_env(n)).collect();
            futures::stream::iter(reads).buffered(ENV_READS)
                .try_collect()
                .await?
        };
        let envs: BTreeMap<&str, Vec<Value>> = names.into_iter().zip(envs).collect();
        let mut cnames = Cnames::default();
        for item in &apps {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut binds = app_binds.remove(name).unwrap_or_default();
            binds.sort();
            if let Some(live) = app::from_live(self, item, binds, envs.get(name).map(Vec::as_slice)) {
                for c in live.spec["cnames"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    cnames.holder.insert(c.to_string(), name.to_string());
                }
                state.insert(live);
            }
        }
        for item in &jobs {
            let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut binds = job_binds.remove(name).unwrap_or_default();
            binds.sort();
            if let Some(live) = job::from_live(&self.owner, item, binds) {
                state.insert(live);
            }
        }
        for r in desired.resources.values().filter(|r| r.id.kind == Kind::App.name()) {
            let declared: BTreeSet<String> = r
                .spec
                .get("cnames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(String::from))
                .collect();
            cnames.declared.insert(r.id.name.clone(), declared);
        }
        *self.cnames.lock().unwrap() = cnames;
        Ok(state)
    }

    async fn execute(&self, op: Operation<'_>, live_state: &LiveState) -> Result<(), ApiError> {
        let name = op.id.name.as_str();
        let spec = op.desired.map(|d| &d.spec);
        let Some(kind) = Kind::parse(&op.id.kind) else {
            return Err(ApiError::other("-", "-", format!("capstan cannot {:?} tsuru {} {name}", op.verb, op.id.kind)));
        };
        match (kind, op.verb, spec) {
            (Kind::App, Verb::Create, Some(s)) => app::create(self, name, s).await,
            (Kind::App, Verb::Update, Some(s)) => app::update(self, name, s, op.live).await,
            (Kind::App, Verb::Delete, _) => app::delete(self, name).await,
            (Kind::ServiceInstance, Verb::Create, Some(s)) => service_instance::create(self, name, s).await,
            (Kind::ServiceInstance, Verb::Update, Some(s)) => service_instance::update(self, name, s, op.live).await,
            (Kind::ServiceInstance, Verb::Delete, _) => service_instance::delete(self, name, op.live, live_state).await,
            (Kind::Job, Verb::Create, Some(s)) => job::create(self, name, s).await,
            (Kind::Job, Verb::Update, Some(s)) => job::update(self, name, s, op.live).await,
            (Kind::Job, Verb::Delete, _) => job::delete(self, name).await,
            (kind, verb, _) => {
                Err(ApiError::other("-", "-", format!("capstan cannot {verb:?} tsuru {} {name}", kind.name())))
            }
        }
    }
}
