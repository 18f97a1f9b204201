//! DC/OS (seeds 000 and 001, digest `research/dcos.md`): Marathon apps and groups behind the
//! cluster's admin router, where an app that is a service's scheduler is ready when the
//! service's own plan is.
//!
//! A target's `url` is the cluster: Marathon is at `<url>/service/marathon`, a service `db` at
//! `<url>/service/db`. Manifests are Marathon's, taken exactly as the Marathon platform takes
//! them: this provider is capstan's Marathon provider (decoding, comparing, observing and
//! changing apps and groups, by composition) plus, for an app whose labels make it an SDK
//! service (`DCOS_COMMONS_API_VERSION: v1`, `DCOS_SERVICE_NAME: <name>`) or a legacy Cassandra
//! (`DCOS_PACKAGE_FRAMEWORK_NAME: cassandra`, no API version), a readiness that follows the
//! service's deploy plan after Marathon's deployment is over (`plan.rs`), failing the step with
//! the failing step's message. The token goes as `Authorization: token=<TOKEN>` (seeds 000 and
//! 001), to Marathon behind the admin router too; `ca_cert` is the cluster's CA, for both.

pub mod plan;
mod service;

use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::{Document, Node};
use crate::diff::ChangeSet;
use crate::http::{HttpClient, TokenForm};
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, ResourceId, ServiceOp, SubStep};
use crate::providers::marathon::{self, Marathon};
use crate::providers::{ApiError, Compare, Connection, Decode, DocumentPart, Drive, Operation, PlatformPreview, Verb};
use async_trait::async_trait;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

/// This platform's entry in the registry (`crate::providers::PLATFORMS`). Its manifests are
/// Marathon's, validated with Marathon's schemas (registered by that platform); its own schema
/// is Marathon's manifest schema by reference, for editors.
pub static PLATFORM: super::PlatformDef = super::PlatformDef {
    name: "dcos",
    schemas: &[("dcos/manifest.schema.json", include_str!("../../../schemas/dcos/manifest.schema.json"))],
    new: |connection, owner| Ok(Box::new(Dcos::new(connection, owner)?)),
};

/// The key under which observing notes a service's plan that is not COMPLETE, in a scheduler
/// app's live state (and its comparable form: `COMPLETE` is what the declaration wants).
const PLAN_KEY: &str = "servicePlan";

pub struct Dcos {
    marathon: Marathon,
    /// The admin router, for the services' own APIs.
    cluster: Option<HttpClient>,
    /// How long a service's plan may take, after Marathon's deployment (`timeouts: {app: …}`).
    plan_timeout: Duration,
}

impl Dcos {
    pub fn new(connection: Option<Connection>, owner: &str) -> anyhow::Result<Self> {
        let connection = connection.map(|c| Connection { token_form: TokenForm::Equals, ..c });
        let cluster = connection.as_ref().map(HttpClient::new).transpose()?;
        let plan_timeout = connection
            .as_ref()
            .map_or(marathon::DEPLOYMENT_TIMEOUT, |c| c.ready_timeout("app", marathon::DEPLOYMENT_TIMEOUT));
        let marathon_connection = connection.map(|mut c| {
            c.url = format!("{}/service/marathon", c.url.trim_end_matches('/'));
            c
        });
        Ok(Dcos { marathon: Marathon::new(marathon_connection, owner)?, cluster, plan_timeout })
    }

    /// After a change to an app has been deployed: when it is a service's scheduler, wait for
    /// the service's plan.
    async fn ready(&self, op: &Operation<'_>) -> Result<(), ApiError> {
        let Some((service, api)) = op.desired.filter(|_| op.verb != Verb::Delete).and_then(|d| plan::service_of(&d.spec))
        else {
            return Ok(());
        };
        let http = self.cluster.as_ref().ok_or_else(|| ApiError::other("-", "-", "no target to talk to (offline)"))?;
        plan::follow(http, &service, api, self.plan_timeout, op.paused, op.report).await
    }
}

impl Dcos {
    /// An update whose only difference is a service plan still running: nothing to send to
    /// Marathon (a second deployment would restart the plan), only the plan to follow.
    fn only_following(&self, op: &Operation<'_>, live_state: &LiveState) -> bool {
        let Some(live) = op.live.filter(|l| op.verb == Verb::Update && l.spec.get(PLAN_KEY).is_some()) else {
            return false;
        };
        let mut plain = live.clone();
        if let Value::Object(o) = &mut plain.spec {
            o.remove(PLAN_KEY);
        }
        let (d, l) = self.marathon.comparable(op.desired, Some(&plain), live_state);
        d.is_some() && d == l
    }
}

impl Decode for Dcos {
    fn platform(&self) -> &'static str {
        "dcos"
    }
    fn document_parts(&self, root: &Node) -> Result<Vec<DocumentPart>, String> {
        self.marathon.document_parts(root)
    }
    fn document_settings(&self) -> bool {
        self.marathon.document_settings()
    }
    fn runtime_variable(&self, name: &str) -> bool {
        self.marathon.runtime_variable(name)
    }
    fn namespace_slot(&self, text: &str, range: Range<usize>) -> bool {
        self.marathon.namespace_slot(text, range)
    }
    fn apply_default_namespace(&self, doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics) {
        self.marathon.apply_default_namespace(doc, namespace, diags)
    }
    /// Marathon's apps and groups; a service's name (from its scheduler's labels) goes into the
    /// URLs of its plan, so one that would leave `/service/<name>` is an error at the app.
    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
        let resources = self.marathon.decode(doc, value, diags);
        for r in &resources {
            if let Some((name, _)) = plan::service_of(&r.spec)
                && let Err(e) = plan::check_name("service", &name, true)
            {
                let message = format!("{}: DCOS_SERVICE_NAME (or DCOS_PACKAGE_FRAMEWORK_NAME): {}", r.id, e.message);
                diags.push(Diagnostic::error_at(r.origin.clone(), message));
            }
        }
        resources
    }
    fn link(&self, desired: &mut DesiredState, diags: &mut Diagnostics) {
        self.marathon.link(desired, diags)
    }
    fn merge_documents(&self, docs: &[Value]) -> Value {
        self.marathon.merge_documents(docs)
    }
}

impl Compare for Dcos {
    fn owner(&self) -> &str {
        self.marathon.owner()
    }
    fn names(&self, target: &ResourceId, id: &ResourceId) -> bool {
        self.marathon.names(target, id)
    }
    fn kinds(&self) -> &'static [(&'static str, KindInfo)] {
        self.marathon.kinds()
    }
    /// Marathon's comparison, plus the service's plan where observing found it not COMPLETE:
    /// that is a difference to carry out (by following the plan, see [`Dcos::execute`]).
    fn comparable<'a>(
        &self,
        desired: Option<&'a DesiredResource>,
        live: Option<&'a LiveResource>,
        live_state: &LiveState,
    ) -> (Option<Cow<'a, Value>>, Option<Cow<'a, Value>>) {
        let Some(running) = live.and_then(|l| l.spec.get(PLAN_KEY)).cloned() else {
            return self.marathon.comparable(desired, live, live_state);
        };
        let mut plain = live.cloned().expect("a live resource");
        if let Value::Object(o) = &mut plain.spec {
            o.remove(PLAN_KEY);
        }
        let (d, l) = self.marathon.comparable(desired, Some(&plain), live_state);
        let with = |v: Option<Cow<'_, Value>>, status: Value| {
            v.map(|v| {
                let mut v = v.into_owned();
                if let Value::Object(o) = &mut v {
                    o.insert(PLAN_KEY.into(), status);
                }
                Cow::Owned(v)
            })
        };
        (with(d, Value::from("COMPLETE")), with(l, running))
    }
}

#[async_trait]
impl Drive for Dcos {
    fn timed_kinds(&self) -> &'static [&'static str] {
        self.marathon.timed_kinds()
    }

    /// Marathon's live state; and for each declared service whose scheduler is live, its
    /// deploy plan's status when that is not COMPLETE (a plan a killed run left running), so
    /// the plan is followed rather than the app deployed again.
    async fn observe(&self, kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError> {
        let mut state = self.marathon.observe(kinds, desired).await?;
        let Some(http) = self.cluster.as_ref() else { return Ok(state) };
        for d in desired.resources.values() {
            let (Some((service, api)), Some(live)) = (plan::service_of(&d.spec), state.get(&d.id)) else {
                continue;
            };
            if let Some(status) = plan::status(http, &service, api).await?
                && status != "COMPLETE"
            {
                let mut live = live.clone();
                if let Value::Object(o) = &mut live.spec {
                    o.insert(PLAN_KEY.into(), Value::from(status));
                }
                state.insert(live);
            }
        }
        Ok(state)
    }

    async fn execute(&self, op: Operation<'_>, live_state: &LiveState) -> Result<(), ApiError> {
        let follow = Operation { verb: op.verb, id: op.id, desired: op.desired, live: op.live, paused: op.paused, report: op.report };
        if !self.only_following(&op, live_state) {
            self.marathon.execute(op, live_state).await?;
        }
        self.ready(&follow).await
    }

    fn batch(&self, op: &Operation<'_>, desired: &DesiredState) -> Option<String> {
        self.marathon.batch(op, desired)
    }

    async fn execute_batch(&self, ops: Vec<Operation<'_>>, live_state: &LiveState) -> Vec<Result<(), ApiError>> {
        if ops.iter().any(|op| self.only_following(op, live_state)) {
            return futures::future::join_all(ops.into_iter().map(|op| self.execute(op, live_state))).await;
        }
        let follow: Vec<Operation<'_>> = ops
            .iter()
            .map(|op| Operation { verb: op.verb, id: op.id, desired: op.desired, live: op.live, paused: op.paused, report: op.report })
            .collect();
        let done = self.marathon.execute_batch(ops, live_state).await;
        let ready = follow.iter().zip(done).map(|(op, done)| async move {
            done?;
            self.ready(op).await
        });
        futures::future::join_all(ready).await
    }

    async fn preview(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<PlatformPreview> {
        self.marathon.preview(changes, desired, live).await
    }

    /// `capstan service …`: see `service.rs`.
    async fn service(
        &self,
        service: &str,
        op: &ServiceOp,
        progress: &(dyn Fn(Vec<SubStep>) + Send + Sync),
    ) -> Result<Value, ApiError> {
        let http = self.cluster.as_ref().ok_or_else(|| ApiError::plain("no target to talk to (offline)"))?;
        service::run(http, service, op, self.plan_timeout, progress).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_editors_schema_is_marathons_by_reference_and_takes_the_example() {
        crate::providers::provider_for("dcos", None, "test").unwrap();
        let schema = crate::base::schema::schema_json("dcos/manifest.schema.json");
        assert_eq!(schema["$ref"], "../marathon/manifest.schema.json", "shared, never a copy");
        let v = crate::base::schema::validator("dcos/manifest.schema.json");
        for example in [
            include_str!("../../../examples/manifests/dcos/cassandra.json"),
            include_str!("../../../examples/manifests/dcos/reports.json"),
        ] {
            let doc: serde_json::Value = serde_json::from_str(example).unwrap();
            assert!(v.is_valid(&doc), "{doc}");
        }
        assert!(!v.is_valid(&json!({"id": "/x", "cpus": "many"})));
        assert!(!v.is_valid(&json!({"id": "/x", "instancez": 1})));
    }
}
