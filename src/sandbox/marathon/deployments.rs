//! `/v2/deployments`: the deployments in flight, and cancelling one (with or without rolling
//! back).

use super::api::Api;
use super::deploy::{Change, Put, cancel, commit, plan, steps_json};
use super::http::{Fail, Req, deployed, reply};
use super::model::Deployment;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn deployment_json(d: &Deployment) -> Value {
    let current: Vec<Value> = d.steps[d.current]
        .iter()
        .map(|a| json!({"action": a.kind.name(), "app": a.app, "readinessCheckResults": []}))
        .collect();
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.affected,
        "affectedPods": [],
        "steps": steps_json(&d.steps, "action"),
        "currentActions": current,
        "currentStep": d.current + 1,
        "totalSteps": d.steps.len(),
    })
}

/// `GET /v2/deployments`: a bare array.
pub fn list(api: &Api) -> Result<Response, Fail> {
    let data = api.lock();
    let list: Vec<Value> = data.deployments.values().map(deployment_json).collect();
    Ok(reply(StatusCode::OK, &Value::Array(list)))
}

/// `DELETE /v2/deployments/{id}`: roll back, or with `force=true` just stop (202).
pub fn delete(api: &Api, req: &Req, id: &str) -> Result<Response, Fail> {
    let force = req.flag("force")?;
    let mut data = api.lock();
    let ctx = api.ctx();
    let Some(d) = data.deployments.get(id).cloned() else {
        return Err(Fail::status(StatusCode::NOT_FOUND, format!("DeploymentPlan {id} does not exist")));
    };
    if force {
        cancel(&mut data, &ctx, id);
        drop(data);
        api.changed();
        return Ok((StatusCode::ACCEPTED, [(axum::http::header::CONTENT_LENGTH, "0")]).into_response());
    }
    cancel(&mut data, &ctx, id);
    let mut change = Change { group_id: d.group_id.clone(), ..Default::default() };
    for (app, before) in d.original {
        match before {
            Some(def) => change.puts.push(Put { id: app.clone(), def, restart: false, bump: true }),
            None if data.apps.contains_key(&app) => change.removes.push(app.clone()),
            None => continue,
        }
        change.locked.push(app);
    }
    // Forced, so the rollback cannot be refused once the deployment is cancelled.
    let plan = plan(&data, &change)?;
    let (deployment, version) = commit(&mut data, &ctx, change, plan, true)?;
    drop(data);
    api.changed();
    Ok(deployed(StatusCode::OK, &deployment, &version, None))
}
