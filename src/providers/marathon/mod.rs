//! Marathon (seed 004): apps and groups, tracked through the deployments that carry out every
//! change, managed through the REST API at `/v2/...`.
//!
//! Manifests. A file (or a YAML document) is one app object, one group object, or a list of
//! those, exactly as `POST /v2/apps` and `PUT /v2/groups` take them, so the JSON files people
//! keep for marathon-deploy or dcos-deploy work unchanged. Ids may be absolute or relative to
//! their group; a top-level relative id hangs from the default namespace (a group path, `/`
//! when none is set). Variables come from capstan.yaml and `--var` (Marathon's objects have no
//! place for capstan's own keys); `${PORT0}`, `${HOST}`, `${MESOS_*}` and `${MARATHON_*}` are
//! Marathon's own, expanded on the agent, and are left as written.
//!
//! Ownership. capstan marks the apps it writes with the label `capstan-owner: <owner>`; a
//! group has no labels, so it counts as capstan's when it holds apps and all of them are.
//!
//! Observing is one call, `GET /v2/groups?embed=group.groups&embed=group.apps`, for any plan.
//! A change is a `PUT` (idempotent, so a lost answer is simply sent again) followed by a wait
//! for its deployment. A change refused because a deployment holds the app (409) waits for
//! that deployment and is sent again, or with `--force` is sent with `force=true` at once.

mod app;
mod client;
mod dry_run;
mod group;
pub mod path;

use crate::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::diff::ChangeSet;
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, Reference, ResourceId};
use crate::providers::{ApiError, Connection, DocumentPart, Operation, PlatformPreview, Provider, Verb};
use crate::render::yaml::{Document, Node, NodeValue};
use async_trait::async_trait;
use client::{Client, Ended};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

/// The app label that marks what capstan wrote, with the owner as value.
pub const OWNER_LABEL: &str = "capstan-owner";

/// How long one change's deployment may take before its step fails, unless capstan.yaml's
/// `timeouts` says otherwise for the kind (`app`, `group`).
pub const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(600);

const KINDS: &[(&str, KindInfo)] = &[
    (group::KIND, KindInfo { managed: true, updatable: true }),
    (app::KIND, KindInfo { managed: true, updatable: true }),
];

/// The kind of a reference to a dependency declared nowhere: an app or a group, live or not
/// (Marathon accepts a dependency on nothing). It orders nothing and is never observed, but a
/// plan that deletes what it names is refused (see `Provider::names`).
const DEPENDENCY: &str = "dependency";

const APP_SCHEMA: &str = "marathon/app.schema.json";
const GROUP_SCHEMA: &str = "marathon/group.schema.json";

pub struct Marathon {
    client: Option<Client>,
    owner: String,
    force: bool,
    /// Deployment timeouts by kind.
    timeouts: HashMap<&'static str, Duration>,
}

impl Marathon {
    pub fn new(connection: Option<Connection>, owner: &str) -> anyhow::Result<Self> {
        let timeouts = KINDS
            .iter()
            .map(|(k, _)| {
                (*k, connection.as_ref().map_or(DEPLOYMENT_TIMEOUT, |c| c.ready_timeout(k, DEPLOYMENT_TIMEOUT)))
            })
            .collect();
        Ok(Marathon {
            force: connection.as_ref().is_some_and(|c| c.force),
            client: connection.as_ref().map(Client::new).transpose()?,
            owner: owner.to_string(),
            timeouts,
        })
    }

    fn client(&self) -> Result<&Client, ApiError> {
        self.client.as_ref().ok_or_else(|| ApiError::other("-", "-", "no target to talk to (offline)"))
    }

    /// Send a change to `id` and wait for the deployment it starts. While another deployment
    /// holds `id` (409), wait for that one and send the change again.
    async fn until_unlocked<F, Fut>(&self, kind: &str, id: &str, send: F) -> Result<(), ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<String>, ApiError>>,
    {
        let client = self.client()?;
        let timeout = self.timeouts.get(kind).copied().unwrap_or(DEPLOYMENT_TIMEOUT);
        let deadline = Instant::now() + timeout;
        loop {
            client.follow_events().await;
            let err = match send().await {
                Ok(None) => return Ok(()),
                Ok(Some(deployment)) => {
                    return match client.wait_deployment(&deployment, deadline).await? {
                        Some(Ended::Succeeded | Ended::Gone) => Ok(()),
                        Some(Ended::Failed) => Err(ApiError::other(
                            "GET",
                            "/v2/deployments",
                            format!("Marathon reports that deployment {deployment} of {id} failed"),
                        )),
                        None => Err(timed_out(&deployment, id, timeout)),
                    };
                }
                Err(e) if e.is_conflict() && !self.force => e,
                Err(e) => return Err(e),
            };
            // Locked: wait for the deployments that hold `id`, then try again.
            let holding: Vec<String> = client
                .deployments()
                .await?
                .iter()
                .filter(|d| {
                    d.get("affectedApps")
                        .and_then(Value::as_array)
                        .is_some_and(|apps| apps.iter().filter_map(Value::as_str).any(|a| path::within(a, id)))
                })
                .filter_map(|d| d.get("id").and_then(Value::as_str).map(str::to_string))
                .collect();
            tracing::debug!(%id, ?holding, "locked by a deployment; waiting for it");
            for d in &holding {
                if client.wait_deployment(d, deadline).await?.is_none() {
                    return Err(timed_out(d, id, timeout));
                }
            }
            if Instant::now() >= deadline {
                return Err(err);
            }
            if holding.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn timed_out(deployment: &str, id: &str, timeout: Duration) -> ApiError {
    ApiError::other(
        "GET",
        "/v2/deployments",
        format!(
            "deployment {deployment} of {id} is still running after {}s (capstan.yaml `timeouts`): see GET /v2/deployments, or pass --force to override it",
            timeout.as_secs()
        ),
    )
}

/// The app or group objects of a document, with their JSON pointers.
fn objects(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (format!("/{i}"), v)).collect(),
        v => vec![(String::new(), v)],
    }
}

fn is_group_node(node: &Node) -> bool {
    node.get("apps").is_some() || node.get("groups").is_some()
}

/// Marathon's task environment (`$HOST`, `$PORT0`, `$MESOS_SANDBOX`, `$MARATHON_APP_ID`, ...).
fn is_task_variable(name: &str) -> bool {
    matches!(name, "HOST" | "PORT" | "PORTS")
        || name.strip_prefix("PORT").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('_'))
        || name.starts_with("MESOS_")
        || name.starts_with("MARATHON_")
}

#[async_trait]
impl Provider for Marathon {
    fn platform(&self) -> &'static str {
        "marathon"
    }

    fn owner(&self) -> &str {
        &self.owner
    }

    fn names(&self, target: &ResourceId, id: &ResourceId) -> bool {
        target == id || (target.kind == DEPENDENCY && target.name == id.name)
    }

    fn kinds(&self) -> &'static [(&'static str, KindInfo)] {
        KINDS
    }

    fn document_parts(&self, root: &Node) -> Result<Vec<DocumentPart>, String> {
        let expected = "an app object, a group object (with `apps` or `groups`), or a list of those";
        let part = |pointer: String, node: &Node| match node.value {
            NodeValue::Map(_) => {
                Ok(DocumentPart { pointer, schema: if is_group_node(node) { GROUP_SCHEMA } else { APP_SCHEMA } })
            }
            _ => Err(expected.to_string()),
        };
        match &root.value {
            NodeValue::Seq(items) => items.iter().enumerate().map(|(i, n)| part(format!("/{i}"), n)).collect(),
            _ => Ok(vec![part(String::new(), root)?]),
        }
    }

    fn document_settings(&self) -> bool {
        false
    }

    fn timed_kinds(&self) -> &'static [&'static str] {
        &[app::KIND, group::KIND]
    }

    fn runtime_variable(&self, name: &str) -> bool {
        is_task_variable(name)
    }

    fn namespace_slot(&self, _text: &str, _range: Range<usize>) -> bool {
        // Ids have no part a default fills in: an unresolved variable in one is an error.
        false
    }

    fn apply_default_namespace(&self, doc: &mut Document, namespace: Option<&str>, diags: &mut Diagnostics) {
        let base = match namespace.map(|ns| path::resolve("/", ns).and_then(|p| path::check(&p).map(|()| p))) {
            None => "/".to_string(),
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                diags.push(Diagnostic::error(None, format!("the default namespace is a Marathon group path: {e}")));
                return;
            }
        };
        let make_absolute = |node: &mut Node| {
            if let NodeValue::Map(entries) = &mut node.value
                && let Some(e) = entries.iter_mut().find(|e| e.key == "id")
                && let NodeValue::Str(id, _) = &mut e.value.value
                && !id.starts_with('/')
                && let Ok(abs) = path::resolve(&base, id)
            {
                *id = abs;
            }
        };
        match &mut doc.root.value {
            NodeValue::Seq(items) => items.iter_mut().for_each(make_absolute),
            _ => make_absolute(&mut doc.root),
        }
    }

    fn decode(&self, doc: &Document, value: &Value, diags: &mut Diagnostics) -> Vec<DesiredResource> {
        let mut out = Vec::new();
        for (pointer, obj) in objects(value) {
            if group::is_group(obj) {
                out.extend(group::decode(doc, &pointer, obj, "/", diags));
            } else {
                out.extend(app::decode(doc, &pointer, obj, "/", diags));
            }
        }
        out
    }

    fn link(&self, desired: &mut DesiredState, diags: &mut Diagnostics) {
        link(desired, diags)
    }

    fn merge_documents(&self, docs: &[Value]) -> Value {
        // A list of every app and group object: itself a valid Marathon manifest.
        Value::Array(docs.iter().flat_map(|d| objects(d).into_iter().map(|(_, v)| v.clone())).collect())
    }

    fn comparable<'a>(
        &self,
        desired: Option<&'a DesiredResource>,
        live: Option<&'a LiveResource>,
        _live_state: &LiveState,
    ) -> (Option<Cow<'a, Value>>, Option<Cow<'a, Value>>) {
        match (desired, live) {
            (Some(d), Some(l)) if d.id.kind == app::KIND => {
                let (d, l) = app::comparable(&d.spec, &l.spec);
                (Some(Cow::Owned(d)), Some(Cow::Owned(l)))
            }
            (d, l) => (d.map(|d| Cow::Borrowed(&d.spec)), l.map(|l| Cow::Borrowed(&l.spec))),
        }
    }

    async fn observe(&self, _kinds: &BTreeSet<String>, _desired: &DesiredState) -> Result<LiveState, ApiError> {
        let root = self.client()?.root_group().await?;
        Ok(live_state(&root, &self.owner))
    }

    async fn execute(&self, op: Operation<'_>, _live_state: &LiveState) -> Result<(), ApiError> {
        let id = op.id.name.as_str();
        let spec = op.desired.map(|d| &d.spec);
        match (op.id.kind.as_str(), op.verb, spec) {
            (app::KIND, Verb::Create | Verb::Update, Some(spec)) => {
                app::put(self, id, spec, op.live.map(|l| &l.spec)).await
            }
            (app::KIND, Verb::Delete, _) => app::delete(self, id).await,
            (group::KIND, Verb::Create | Verb::Update, Some(spec)) => group::put(self, id, spec).await,
            (group::KIND, Verb::Delete, _) => group::delete(self, id).await,
            (kind, verb, _) => Err(ApiError::other("-", "-", format!("capstan cannot {verb:?} Marathon {kind} {id}"))),
        }
    }

    async fn preview(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<PlatformPreview> {
        let client = self.client.as_ref()?;
        Some(dry_run::preview(self, client, changes, desired, live).await)
    }
}

/// Everything one `GET /v2/groups` answer says, in comparable form. Deletions run in the
/// reverse of Marathon's order: an app before its group, a dependent before what it depends on.
fn live_state(root: &Value, owner: &str) -> LiveState {
    let mut apps: Vec<(LiveResource, Vec<String>)> = Vec::new();
    let mut groups: Vec<(LiveResource, Vec<String>)> = Vec::new();
    let mut stack = vec![root];
    while let Some(g) = stack.pop() {
        if g.get("id").and_then(Value::as_str).is_some_and(|id| id != "/")
            && let Some(found) = group::from_live(g)
        {
            groups.push(found);
        }
        for a in g.get("apps").and_then(Value::as_array).into_iter().flatten() {
            apps.extend(app::from_live(a, owner));
        }
        stack.extend(g.get("groups").and_then(Value::as_array).into_iter().flatten());
    }
    // A group is capstan's when it holds apps and every one of them is.
    let mut holds: HashMap<String, (usize, usize)> = HashMap::new();
    for (a, _) in &apps {
        for g in path::ancestors(&a.id.name) {
            let e = holds.entry(g.to_string()).or_default();
            e.0 += 1;
            e.1 += usize::from(a.owned);
        }
    }
    let group_ids: HashSet<String> = groups.iter().map(|(g, _)| g.id.name.clone()).collect();
    let apps_below = |group: &str| -> Vec<ResourceId> {
        apps.iter().filter(|(a, _)| path::within(&a.id.name, group)).map(|(a, _)| a.id.clone()).collect()
    };
    let depends = |id: &str, deps: &[String]| -> Vec<ResourceId> {
        let mut out = Vec::new();
        let parent = path::parent(id);
        if parent != "/" {
            out.push(ResourceId::new(group::KIND, parent));
        }
        for d in deps {
            if group_ids.contains(d) {
                out.push(ResourceId::new(group::KIND, d.clone()));
                out.extend(apps_below(d));
            } else {
                out.push(ResourceId::new(app::KIND, d.clone()));
            }
        }
        out
    };
    let mut state = LiveState::default();
    for (mut g, deps) in std::mem::take(&mut groups) {
        g.owned = holds.get(&g.id.name).is_some_and(|(all, mine)| *all > 0 && all == mine);
        g.depends_on = depends(&g.id.name, &deps);
        state.insert(g);
    }
    let app_deps: Vec<Vec<ResourceId>> = apps.iter().map(|(a, deps)| depends(&a.id.name, deps)).collect();
    for ((mut a, _), deps) in apps.into_iter().zip(app_deps) {
        a.depends_on = deps;
        state.insert(a);
    }
    state.observed_kinds = KINDS.iter().map(|(k, _)| k.to_string()).collect();
    state
}

/// Across files: what each dependency names (an app or a group; one declared nowhere orders
/// nothing, as Marathon accepts it, and is kept as a [`DEPENDENCY`] so the plan cannot delete
/// it), every app and group waits for what its enclosing groups depend on, a group's own step
/// waits for what it holds, and a cycle is an error naming its dependencies' places.
fn link(desired: &mut DesiredState, diags: &mut Diagnostics) {
    let has = |kind: &str, id: &str, d: &DesiredState| d.resources.contains_key(&ResourceId::new(kind, id));
    // What each declaration depends on itself, with the kind now known.
    let mut own: HashMap<ResourceId, Vec<Reference>> = HashMap::new();
    for r in desired.resources.values() {
        let refs = r
            .references
            .iter()
            .map(|x| {
                let id = &x.target.name;
                let kind = if has(group::KIND, id, desired) {
                    group::KIND
                } else if has(app::KIND, id, desired) {
                    app::KIND
                } else {
                    DEPENDENCY
                };
                Reference { target: ResourceId::new(kind, id.clone()), at: x.at.clone() }
            })
            .collect();
        own.insert(r.id.clone(), refs);
    }
    let mut members: HashMap<String, Vec<Reference>> = HashMap::new();
    for r in desired.resources.values() {
        let parent = path::parent(&r.id.name);
        if parent != "/" && has(group::KIND, parent, desired) {
            members
                .entry(parent.to_string())
                .or_default()
                .push(Reference { target: r.id.clone(), at: r.origin.clone() });
        }
    }
    for r in desired.resources.values_mut() {
        let mut refs = own.get(&r.id).cloned().unwrap_or_default();
        for ancestor in path::ancestors(&r.id.name) {
            if let Some(inherited) = own.get(&ResourceId::new(group::KIND, ancestor)) {
                refs.extend(inherited.iter().cloned());
            }
        }
        if r.id.kind == group::KIND {
            refs.extend(members.remove(&r.id.name).unwrap_or_default());
        }
        r.references = refs;
    }
    if let Some(d) = find_cycle(desired, &own) {
        diags.push(d);
    }
}

/// A cycle among the declarations' references, reported at the dependencies that make it.
fn find_cycle(desired: &DesiredState, own: &HashMap<ResourceId, Vec<Reference>>) -> Option<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let ids: Vec<&ResourceId> = desired.resources.keys().collect();
    let index: HashMap<&ResourceId, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut mark = vec![Mark::New; ids.len()];
    for start in 0..ids.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search; `path` holds (node, next edge to try).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let refs = &desired.resources[ids[node]].references;
            if *next >= refs.len() {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            }
            let target = &refs[*next].target;
            *next += 1;
            let Some(&t) = index.get(target) else { continue };
            match mark[t] {
                Mark::Done => {}
                Mark::New => {
                    mark[t] = Mark::Open;
                    path.push((t, 0));
                }
                Mark::Open => {
                    let from = path.iter().position(|(n, _)| *n == t).unwrap_or(0);
                    let cycle: Vec<usize> = path[from..].iter().map(|(n, _)| *n).collect();
                    return Some(cycle_error(&cycle, &ids, desired, own));
                }
            }
        }
    }
    None
}

fn cycle_error(
    cycle: &[usize],
    ids: &[&ResourceId],
    desired: &DesiredState,
    own: &HashMap<ResourceId, Vec<Reference>>,
) -> Diagnostic {
    // The places where dependencies along the cycle are written.
    let mut places: Vec<(Location, String)> = Vec::new();
    for (k, &n) in cycle.iter().enumerate() {
        let next = ids[cycle[(k + 1) % cycle.len()]];
        let from = ids[n];
        let written = std::iter::once(from.name.as_str())
            .chain(path::ancestors(&from.name))
            .flat_map(|g| {
                let key = if g == from.name { from.clone() } else { ResourceId::new(group::KIND, g) };
                own.get(&key).cloned().unwrap_or_default()
            })
            .find(|r| r.target == *next || path::within(&next.name, &r.target.name));
        if let Some(r) = written {
            places.push((r.at, format!("{} depends on {}", from.name, r.target.name)));
        }
    }
    let names: Vec<&str> = cycle.iter().map(|&n| ids[n].name.as_str()).collect();
    let message = format!("the dependencies form a cycle: {} → {}", names.join(" → "), names[0]);
    let first =
        places.first().cloned().unwrap_or_else(|| (desired.resources[ids[cycle[0]]].origin.clone(), String::new()));
    let mut d = Diagnostic::error_at(first.0, format!("{message} ({})", first.1));
    let second = places
        .get(1)
        .cloned()
        .unwrap_or_else(|| (desired.resources[ids[cycle[0]]].origin.clone(), format!("{} is declared here", names[0])));
    d = d.with_related(second.0, second.1);
    d
}
