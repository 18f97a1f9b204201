//! Marathon groups (seed 004 `/v2/groups`): a group object exactly as `POST /v2/groups` and
//! `PUT /v2/groups/{id}` take it, with its apps and subgroups nested and relative ids
//! resolved against the enclosing group (L721-743).
//!
//! A group is a resource of its own for what only a group has, its `dependencies`; its apps
//! and subgroups are resources of their own too, changed one by one (so a plan touches only
//! what differs, runs independent apps in parallel, and never removes an app it does not own).
//! A group's dependencies order its apps: every app below a group waits for what the group
//! depends on (see `link` in `mod.rs`).
//!
//! Marathon keeps a group's children when an update body has no `apps` or `groups` (its
//! scale example, L953, sends only `scaleBy`), so capstan changes a group's dependencies with
//! `PUT /v2/groups/{id}` and a body of just `id` and `dependencies`.
//!
//! `DELETE /v2/groups/{id}` removes everything under the group at the moment Marathon gets it,
//! so capstan reads the group again first and deletes it only if nothing has appeared under it
//! since the plan was made. Marathon answers only `{"version"}` (L1085-1110); the wait follows
//! that version.

use super::kind::Kind;
use super::{Marathon, app, path};
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::base::yaml::Document;
use crate::model::{DesiredResource, LiveResource, Reference, ResourceId};
use crate::providers::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Whether an object is a group rather than an app: it has `apps` or `groups`.
pub fn is_group(obj: &Value) -> bool {
    obj.get("apps").is_some() || obj.get("groups").is_some()
}

/// A declared group and everything declared inside it; `base` is the group it is written in.
pub fn decode(
    doc: &Document,
    pointer: &str,
    value: &Value,
    base: &str,
    diags: &mut Diagnostics,
) -> Vec<DesiredResource> {
    let mut out = Vec::new();
    let written = value.get("id").and_then(Value::as_str).unwrap_or("/");
    let id = match path::resolve(base, written).and_then(|id| path::check(&id).map(|()| id)) {
        Ok(id) => id,
        Err(e) => {
            diags.push(Diagnostic::error_at(doc.locate(&format!("{pointer}/id")), e));
            return out;
        }
    };
    if let Some(Value::Array(apps)) = value.get("apps") {
        for (i, a) in apps.iter().enumerate() {
            out.extend(app::decode(doc, &format!("{pointer}/apps/{i}"), a, &id, diags));
        }
    }
    if let Some(Value::Array(groups)) = value.get("groups") {
        for (i, g) in groups.iter().enumerate() {
            out.extend(decode(doc, &format!("{pointer}/groups/{i}"), g, &id, diags));
        }
    }
    // The root group holds everything and has no dependencies of its own to manage.
    if id == "/" {
        return out;
    }
    let mut references = Vec::new();
    let mut deps = Vec::new();
    if let Some(Value::Array(list)) = value.get("dependencies") {
        for (i, d) in list.iter().enumerate() {
            let Some(text) = d.as_str() else { continue };
            let at = doc.locate(&format!("{pointer}/dependencies/{i}"));
            // Relative to the group that declares them (`../backend` on /product/service).
            match path::resolve(&id, text) {
                Ok(dep) => {
                    references.push(Reference { target: ResourceId::new(Kind::Group.name(), dep.clone()), at });
                    deps.push(dep);
                }
                Err(e) => diags.push(Diagnostic::error_at(at, e)),
            }
        }
    }
    deps.sort();
    deps.dedup();
    out.push(DesiredResource {
        id: ResourceId::new(Kind::Group.name(), id.clone()),
        spec: json!({ "id": id, "dependencies": deps }),
        origin: doc.locate(pointer),
        references,
        exclusive: None,
    });
    out
}

/// A live group in comparable form, with its absolute dependencies.
pub fn from_live(group: &Value) -> Option<(LiveResource, Vec<String>)> {
    let id = group.get("id")?.as_str()?.to_string();
    let mut deps: Vec<String> = group
        .get("dependencies")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).filter_map(|d| path::resolve(&id, d).ok()).collect())
        .unwrap_or_default();
    deps.sort();
    deps.dedup();
    let live = LiveResource {
        id: ResourceId::new(Kind::Group.name(), id.clone()),
        spec: json!({ "id": id, "dependencies": deps }),
        owned: false,
        owner: None,
        parent: None,
        depends_on: Vec::new(),
        exclusive: None,
        removes: Vec::new(),
        keep: None,
    };
    Some((live, deps))
}

/// Set a group's dependencies (creating the group if need be), leaving its children as they are.
pub async fn put(provider: &Marathon, id: &str, spec: &Value) -> Result<(), ApiError> {
    let body = json!({ "id": id, "dependencies": spec.get("dependencies").cloned().unwrap_or(json!([])) });
    let client = provider.client()?;
    provider.until_unlocked(Kind::Group, id, || client.put("groups", id, &body, provider.force)).await
}

/// Delete a group and what it holds, unless something the plan did not see has appeared under
/// it (`live` is the group as the plan saw it).
pub async fn delete(provider: &Marathon, id: &str, live: Option<&LiveResource>) -> Result<(), ApiError> {
    let client = provider.client()?;
    let Some(now) = client.group(id).await? else { return Ok(()) };
    let planned: BTreeSet<&str> = live.into_iter().flat_map(|l| &l.removes).map(|r| r.name.as_str()).collect();
    let mut found: Vec<String> = Vec::new();
    let mut stack = vec![&now];
    while let Some(g) = stack.pop() {
        for a in g.get("apps").and_then(Value::as_array).into_iter().flatten() {
            found.extend(a.get("id").and_then(Value::as_str).map(str::to_string));
        }
        for sub in g.get("groups").and_then(Value::as_array).into_iter().flatten() {
            found.extend(sub.get("id").and_then(Value::as_str).map(str::to_string));
            stack.push(sub);
        }
    }
    if let Some(new) = found.iter().find(|f| !planned.contains(f.as_str())) {
        return Err(ApiError::other(
            "GET",
            &format!("/v2/groups{id}"),
            format!("not deleted: {new} has appeared under {id} since the plan was made; plan again"),
        ));
    }
    provider.until_unlocked(Kind::Group, id, || client.delete("groups", id, provider.force)).await
}
