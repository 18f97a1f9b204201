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
//! group has no labels, so it counts as capstan's when it holds apps of its own and every app
//! under it is capstan's. A group that only holds other groups (`/bench` above `/bench/g01`)
//! is never capstan's to delete. Deleting a group removes everything under it, so the core
//! prunes one only when nothing under it is declared or kept (`LiveResource::removes`). A
//! person keeps an app from ever being pruned with the label `capstan-prune: "false"`, which
//! capstan leaves out of comparisons (unless the manifest writes it) and keeps when it writes.
//!
//! Dependencies (`../backend`, `/shop/db`, of apps and groups alike) name every declared app
//! at or under that path, whether a document declares the group or app ids only imply it; one
//! naming nothing declared must name something live (checked with the live state).
//!
//! Observing is one call, `GET /v2/groups?embed=group.groups&embed=group.apps`, for any plan.
//! A change is a `PUT` (idempotent, so a lost answer is simply sent again) followed by a wait
//! for its deployment (by id, or by the version it made, see `client.rs`). A change refused
//! because a deployment holds the app (409) waits for that deployment and is sent again, or
//! with `--force` is sent with `force=true` at once. The apps of one group document that are
//! ready together go in one `PUT /v2/apps` (one deployment) when Marathon would run them in one
//! step, as capstan's plan does (see `app::put_together`).

mod app;
mod client;
mod dry_run;
mod group;
mod kind;
pub mod path;

use crate::base::diagnostic::{Diagnostic, Diagnostics, Location};
use crate::base::yaml::{Document, Node, NodeValue};
use crate::diff::ChangeSet;
use crate::model::{DesiredResource, DesiredState, KindInfo, LiveResource, LiveState, Reference, ResourceId};
use crate::providers::{ApiError, Compare, Connection, Decode, DocumentPart, Drive, Operation, PlatformPreview, Verb};
use async_trait::async_trait;
use client::Ticket;
use client::{Client, Ended};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The app label that marks what capstan wrote, with the owner as value.
pub const OWNER_LABEL: &str = "capstan-owner";

/// The app label by which a person keeps an app from being pruned (with the value "false").
pub const PRUNE_LABEL: &str = "capstan-prune";

/// What `Marathon::steps` knows: nothing yet, one step per app, independent apps together.
const STEPS_UNKNOWN: u8 = 0;
const STEPS_ONE_EACH: u8 = 1;
const STEPS_TOGETHER: u8 = 2;

/// How long one change's deployment may take before its step fails, unless capstan.yaml's
/// `timeouts` says otherwise for the kind (`app`, `group`).
pub const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(600);

use kind::{KINDS, Kind};

/// This platform's entry in the registry (`crate::providers::PLATFORMS`).
pub static PLATFORM: super::PlatformDef = super::PlatformDef {
    name: "marathon",
    schemas: &[
        ("marathon/manifest.schema.json", include_str!("../../../schemas/marathon/manifest.schema.json")),
        ("marathon/app.schema.json", include_str!("../../../schemas/marathon/app.schema.json")),
        ("marathon/group.schema.json", include_str!("../../../schemas/marathon/group.schema.json")),
    ],
    new: |connection, owner| Ok(Box::new(Marathon::new(connection, owner)?)),
};

const APP_SCHEMA: &str = "marathon/app.schema.json";
const GROUP_SCHEMA: &str = "marathon/group.schema.json";

pub struct Marathon {
    client: Option<Client>,
    owner: String,
    force: bool,
    /// Deployment timeouts by kind.
    timeouts: HashMap<Kind, Duration>,
    /// How this Marathon runs a deployment's independent apps, once a dry run has shown it:
    /// one step each (as seed 004's example does: several apps in one deployment would take
    /// turns, so they are sent one by one), or together.
    steps: AtomicU8,
}

impl Marathon {
    pub fn new(connection: Option<Connection>, owner: &str) -> anyhow::Result<Self> {
        let timeouts = Kind::ALL
            .into_iter()
            .map(|k| {
                (k, connection.as_ref().map_or(DEPLOYMENT_TIMEOUT, |c| c.ready_timeout(k.name(), DEPLOYMENT_TIMEOUT)))
            })
            .collect();
        Ok(Marathon {
            force: connection.as_ref().is_some_and(|c| c.force),
            client: connection.as_ref().map(Client::new).transpose()?,
            owner: owner.to_string(),
            timeouts,
            steps: AtomicU8::new(STEPS_UNKNOWN),
        })
    }

    fn client(&self) -> Result<&Client, ApiError> {
        self.client.as_ref().ok_or_else(|| ApiError::other("-", "-", "no target to talk to (offline)"))
    }

    /// Send a change to `id` and wait for the deployment it starts (followed by its id, or by
    /// the version it made when Marathon answers only that). While another deployment holds
    /// `id` (409), wait for that one and send the change again.
    async fn until_unlocked<F, Fut>(&self, kind: Kind, id: &str, send: F) -> Result<(), ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Ticket>, ApiError>>,
    {
        let client = self.client()?;
        let timeout = self.timeouts.get(&kind).copied().unwrap_or(DEPLOYMENT_TIMEOUT);
        let deadline = Instant::now() + timeout;
        loop {
            client.follow_events().await;
            let err = match send().await {
                Ok(None) => return Ok(()),
                Ok(Some(ticket)) => {
                    return match client.wait(&ticket, deadline).await? {
                        Some(Ended::Succeeded | Ended::Gone) => Ok(()),
                        Some(Ended::Failed) => Err(ApiError::other(
                            "GET",
                            "/v2/deployments",
                            format!("Marathon reports that {} of {id} failed", ticket.describe()),
                        )),
                        None => Err(timed_out(&ticket.describe(), id, timeout)),
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
                    return Err(timed_out(&format!("deployment {d}"), id, timeout));
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
            "{deployment} of {id} is still running after {}s (capstan.yaml `timeouts`): see GET /v2/deployments, or pass --force to override it",
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

impl Decode for Marathon {
    fn platform(&self) -> &'static str {
        "marathon"
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
}

impl Compare for Marathon {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn names(&self, target: &ResourceId, id: &ResourceId) -> bool {
        target == id || (target.kind == Kind::Dependency.name() && target.name == id.name)
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
            (Some(d), Some(l)) if Kind::parse(&d.id.kind) == Some(Kind::App) => {
                let (d, l) = app::comparable(&d.spec, &l.spec);
                (Some(Cow::Owned(d)), Some(Cow::Owned(l)))
            }
            (d, l) => (d.map(|d| Cow::Borrowed(&d.spec)), l.map(|l| Cow::Borrowed(&l.spec))),
        }
    }
}

#[async_trait]
impl Drive for Marathon {
    fn timed_kinds(&self) -> &'static [&'static str] {
        const TIMED: &[&str] = &[Kind::App.name(), Kind::Group.name()];
        TIMED
    }

    async fn observe(&self, _kinds: &BTreeSet<String>, desired: &DesiredState) -> Result<LiveState, ApiError> {
        let root = self.client()?.root_group().await?;
        let mut state = live_state(&root, &self.owner);
        // A dependency that names nothing declared must name something live.
        let named: BTreeSet<&str> = desired
            .resources
            .values()
            .flat_map(|r| &r.references)
            .filter(|x| x.target.kind == Kind::Dependency.name())
            .map(|x| x.target.name.as_str())
            .collect();
        for name in named {
            let live = |kind: &str| state.get(&ResourceId::new(kind, name)).is_some();
            if live(Kind::Group.name()) || live(Kind::App.name()) {
                state.insert(LiveResource {
                    id: ResourceId::new(Kind::Dependency.name(), name),
                    spec: Value::Null,
                    owned: false,
                    owner: None,
                    parent: None,
                    depends_on: Vec::new(),
                    exclusive: None,
                    removes: Vec::new(),
                    keep: None,
                });
            }
        }
        Ok(state)
    }

    async fn execute(&self, op: Operation<'_>, _live_state: &LiveState) -> Result<(), ApiError> {
        let id = op.id.name.as_str();
        let spec = op.desired.map(|d| &d.spec);
        let Some(kind) = Kind::parse(&op.id.kind) else {
            return Err(ApiError::other("-", "-", format!("capstan cannot {:?} Marathon {} {id}", op.verb, op.id.kind)));
        };
        match (kind, op.verb, spec) {
            (Kind::App, Verb::Create | Verb::Update, Some(spec)) => {
                app::put(self, id, spec, op.live.map(|l| &l.spec)).await
            }
            (Kind::App, Verb::Delete, _) => app::delete(self, id).await,
            (Kind::Group, Verb::Create | Verb::Update, Some(spec)) => group::put(self, id, spec).await,
            (Kind::Group, Verb::Delete, _) => group::delete(self, id, op.live).await,
            (kind @ (Kind::App | Kind::Group | Kind::Dependency), verb, _) => {
                Err(ApiError::other("-", "-", format!("capstan cannot {verb:?} Marathon {} {id}", kind.name())))
            }
        }
    }

    /// The apps a group document declares (the group is declared in the same file) go
    /// together.
    fn batch(&self, op: &Operation<'_>, desired: &DesiredState) -> Option<String> {
        if op.id.kind != Kind::App.name() || !matches!(op.verb, Verb::Create | Verb::Update) {
            return None;
        }
        let app = op.desired?;
        let group = path::parent(&op.id.name);
        let declared = desired.resources.get(&ResourceId::new(Kind::Group.name(), group))?;
        (declared.origin.file == app.origin.file).then(|| format!("{} {group}", Kind::Group.name()))
    }

    async fn execute_batch(&self, ops: Vec<Operation<'_>>, live_state: &LiveState) -> Vec<Result<(), ApiError>> {
        let apps: Vec<(&str, &Value, Option<&Value>)> = ops
            .iter()
            .filter_map(|op| Some((op.id.name.as_str(), &op.desired?.spec, op.live.map(|l| &l.spec))))
            .collect();
        if ops.len() > 1 && apps.len() == ops.len() && self.steps.load(Ordering::SeqCst) != STEPS_ONE_EACH {
            let group = path::parent(apps[0].0);
            if let Some(done) = app::put_together(self, group, &apps).await {
                return vec![done; ops.len()];
            }
        }
        futures::future::join_all(ops.into_iter().map(|op| self.execute(op, live_state))).await
    }

    async fn preview(&self, changes: &ChangeSet, desired: &DesiredState, live: &LiveState) -> Option<PlatformPreview> {
        let client = self.client.as_ref()?;
        Some(dry_run::preview(self, client, changes, desired, live).await)
    }
}

/// Everything one `GET /v2/groups` answer says, in comparable form. Deletions run in the
/// reverse of Marathon's order: an app before its group, a dependent before what it depends on.
/// A group is capstan's when it holds apps of its own and every app under it is capstan's; what
/// deleting it removes is everything under it.
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
    // Per group: the apps under it, how many of them are capstan's, how many it holds itself;
    // and everything a delete of it removes.
    let mut holds: HashMap<String, (usize, usize, usize)> = HashMap::new();
    let mut removes: HashMap<String, Vec<ResourceId>> = HashMap::new();
    for (a, _) in &apps {
        for (i, g) in path::ancestors(&a.id.name).enumerate() {
            let e = holds.entry(g.to_string()).or_default();
            e.0 += 1;
            e.1 += usize::from(a.owned);
            e.2 += usize::from(i == 0);
            removes.entry(g.to_string()).or_default().push(a.id.clone());
        }
    }
    for (g, _) in &groups {
        for above in path::ancestors(&g.id.name) {
            removes.entry(above.to_string()).or_default().push(g.id.clone());
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
            out.push(ResourceId::new(Kind::Group.name(), parent));
        }
        for d in deps {
            if group_ids.contains(d) {
                out.push(ResourceId::new(Kind::Group.name(), d.clone()));
                out.extend(apps_below(d));
            } else {
                out.push(ResourceId::new(Kind::App.name(), d.clone()));
            }
        }
        out
    };
    let mut state = LiveState::default();
    for (mut g, deps) in std::mem::take(&mut groups) {
        g.owned = holds.get(&g.id.name).is_some_and(|(all, mine, own)| *own > 0 && all == mine);
        g.depends_on = depends(&g.id.name, &deps);
        g.removes = removes.remove(&g.id.name).unwrap_or_default();
        g.removes.sort();
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

/// Across files: a dependency (of an app, or of a group and so of everything under it) names
/// every declared app at or under its path, whether a document declares that group or only app
/// ids imply it; one naming nothing declared must name something live (a reference of kind
/// `app or group`, checked against the live state). A dependency on what holds the resource
/// itself orders nothing, as in Marathon. A cycle is an error naming its dependencies' places.
fn link(desired: &mut DesiredState, diags: &mut Diagnostics) {
    // What each declaration depends on itself, as written: paths (in `target.name`), places.
    let own: HashMap<ResourceId, Vec<Reference>> =
        desired.resources.values().map(|r| (r.id.clone(), r.references.clone())).collect();
    let apps: BTreeSet<String> =
        desired.resources.keys().filter(|id| id.kind == Kind::App.name()).map(|id| id.name.clone()).collect();
    let groups: HashSet<String> =
        desired.resources.keys().filter(|id| id.kind == Kind::Group.name()).map(|id| id.name.clone()).collect();
    let apps_at = |p: &str| -> Vec<ResourceId> {
        let prefix = if p == "/" { "/".to_string() } else { format!("{p}/") };
        let below = apps.range(prefix.clone()..).take_while(|a| a.starts_with(&prefix));
        apps.get(p).into_iter().chain(below).map(|a| ResourceId::new(Kind::App.name(), a.clone())).collect()
    };
    for r in desired.resources.values_mut() {
        let written = std::iter::once(r.id.clone())
            .chain(path::ancestors(&r.id.name).map(|g| ResourceId::new(Kind::Group.name(), g)))
            .filter_map(|k| own.get(&k))
            .flatten();
        let mut refs: Vec<Reference> = Vec::new();
        let mut seen: HashSet<ResourceId> = HashSet::new();
        for dep in written {
            let p = dep.target.name.as_str();
            if path::within(&r.id.name, p) {
                continue;
            }
            let mut targets = apps_at(p);
            if targets.is_empty() {
                let kind = if groups.contains(p) { Kind::Group.name() } else { Kind::Dependency.name() };
                targets.push(ResourceId::new(kind, p));
            }
            for t in targets {
                if seen.insert(t.clone()) {
                    refs.push(Reference { target: t, at: dep.at.clone() });
                }
            }
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
                let key = if g == from.name { from.clone() } else { ResourceId::new(Kind::Group.name(), g) };
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

/// diff's deletion check, with this platform's references by path.
#[cfg(test)]
mod deletion_tests {
    use crate::base::diagnostic::Location;
    use crate::diff::{Action, ChangeSet, ResourceChange, check_deletions};
    use crate::model::{DesiredResource, DesiredState, LiveResource, LiveState, Reference, ResourceId};
    use serde_json::Value;

    #[test]
    fn a_reference_to_what_another_deletion_removes_is_an_error_at_its_place() {
        let provider = super::Marathon::new(None, "o").unwrap();
        let at = Location::new("web.json", 4, 20);
        let app = |n: &str| ResourceId::new("app", n);
        let mut desired = DesiredState::default();
        let web = DesiredResource {
            id: app("/shop/web"),
            spec: Value::Null,
            origin: Location::new("web.json", 1, 1),
            references: vec![Reference { target: app("/old/api"), at: at.clone() }],
            exclusive: None,
        };
        desired.resources.insert(web.id.clone(), web);
        let group = ResourceId::new("group", "/old");
        let mut live = LiveState::default();
        live.insert(LiveResource {
            id: group.clone(),
            spec: Value::Null,
            owned: true,
            owner: None,
            parent: None,
            depends_on: Vec::new(),
            exclusive: None,
            removes: vec![app("/old/api")],
            keep: None,
        });
        let delete = ResourceChange {
            id: group,
            action: Action::Delete,
            origin: None,
            before: None,
            after: None,
            changes: Vec::new(),
            reason: Some("pruned".into()),
        };
        let changes = ChangeSet { changes: vec![delete], ..ChangeSet::default() };
        let diags = check_deletions(&provider, &desired, &live, &changes);
        let text: Vec<String> = diags.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            [
                "web.json:4:20: error: app /shop/web points at app /old/api, which this plan deletes with group /old (pruned): expected it declared, or no reference to it"
            ]
        );
    }
}
