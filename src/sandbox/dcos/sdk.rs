//! An SDK scheduler's API (seed 000, upstream dcos-commons `PlansResource`,
//! `ConfigResource`, `StateResource`): plans and their commands, configurations, state
//! properties; pods and endpoints are in `pods.rs`.

use super::scheduler::{Outcome, Req, empty, not_allowed, not_found};
use super::plan::{Element, Plan, Refusal};
use super::service::Service;
use super::{Ctx, command_result, json_reply, pods, text_reply};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Upstream's answer to a command that has nothing to do.
pub const ALREADY: &str = "Command has already been reported or completed";

pub fn route(s: &mut Service, ctx: &Ctx, req: &Req) -> Outcome {
    let get = req.method == Method::GET;
    match req.segments().as_slice() {
        ["v1", "plans"] if get => Outcome::read(json_reply(StatusCode::OK, &json!(["deploy", "recovery"]))),
        ["v1", "plans", plan] if get => Outcome::read(get_plan(s, plan, ctx)),
        ["v1", "plans", plan, command] if req.command() => plan_command(s, plan, command, ctx, req),
        ["v1", "pod", ..] | ["v1", "endpoints", ..] => pods::route(s, ctx, req),
        ["v1", "configurations"] if get => {
            Outcome::read(json_reply(StatusCode::OK, &json!(s.configs.keys().collect::<Vec<_>>())))
        }
        ["v1", "configurations", "targetId"] if get => Outcome::read(match &s.target {
            Some(id) => json_reply(StatusCode::OK, &json!([id])),
            None => empty(StatusCode::NOT_FOUND),
        }),
        ["v1", "configurations", "target"] if get => Outcome::read(match s.target_spec() {
            Some(spec) => json_reply(StatusCode::OK, &spec.to_json(&s.name)),
            None => empty(StatusCode::NOT_FOUND),
        }),
        ["v1", "configurations", id] if get => Outcome::read(if uuid::Uuid::parse_str(id).is_err() {
            empty(StatusCode::BAD_REQUEST)
        } else {
            match s.configs.get(*id) {
                Some(spec) => json_reply(StatusCode::OK, &spec.to_json(&s.name)),
                None => empty(StatusCode::NOT_FOUND),
            }
        }),
        ["v1", "state", "frameworkId"] if get => Outcome::read(json_reply(StatusCode::OK, &json!([s.framework_id]))),
        ["v1", "state", "properties"] if get => Outcome::read(json_reply(StatusCode::OK, &json!(["suppressed"]))),
        ["v1", "state", "properties", "suppressed"] if get => {
            Outcome::read(json_reply(StatusCode::OK, &json!(suppressed(s, ctx))))
        }
        ["v1", "state", "properties", _] if get => Outcome::read(empty(StatusCode::NOT_FOUND)),
        ["v1", "plans"]
        | ["v1", "plans", _]
        | ["v1", "plans", _, _]
        | ["v1", "configurations", ..]
        | ["v1", "state", ..] => Outcome::read(not_allowed()),
        _ => Outcome::read(not_found()),
    }
}

/// A scheduler with nothing to do needs no offers: every plan complete.
fn suppressed(s: &Service, ctx: &Ctx) -> bool {
    s.deploy.complete(&ctx.clock) && s.recovery.complete(&ctx.clock)
}

fn plan_mut<'a>(s: &'a mut Service, name: &str) -> Option<&'a mut Plan> {
    match name {
        "deploy" => Some(&mut s.deploy),
        "recovery" => Some(&mut s.recovery),
        _ => None,
    }
}

/// `GET /v1/plans/<plan>`: the plan in all three answers: 417 when it has errors, 200 when
/// it is complete, 202 otherwise.
fn get_plan(s: &mut Service, name: &str, ctx: &Ctx) -> Response {
    let Some(plan) = plan_mut(s, name) else {
        return text_reply(StatusCode::NOT_FOUND, &format!("Plan {name} not found"));
    };
    plan_response(plan, ctx)
}

pub fn plan_response(plan: &Plan, ctx: &Ctx) -> Response {
    let status = if !plan.all_errors().is_empty() {
        StatusCode::EXPECTATION_FAILED
    } else if plan.complete(&ctx.clock) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    json_reply(status, &plan.sdk_json(&ctx.clock))
}

fn plan_command(s: &mut Service, name: &str, command: &str, ctx: &Ctx, req: &Req) -> Outcome {
    let clock = &ctx.clock;
    let Some(plan) = plan_mut(s, name) else {
        return Outcome::read(text_reply(StatusCode::NOT_FOUND, &format!("Plan {name} not found")));
    };
    let (phase, step) = (req.param("phase"), req.param("step"));
    let refused = |r: Refusal| match r {
        Refusal::BadRequest(m) => text_reply(StatusCode::BAD_REQUEST, &m),
        Refusal::NotFound(m) => text_reply(StatusCode::NOT_FOUND, &m),
    };
    let done = |changed: bool, what: String| match changed {
        true => Outcome::wrote(command_result(&what)),
        false => Outcome::read(text_reply(StatusCode::ALREADY_REPORTED, ALREADY)),
    };
    // Upstream writes an absent query parameter as `null`.
    let described = |cmd: &str| {
        format!("{cmd} for Plan: {name}, Phase: {}, Step: {}", phase.unwrap_or("null"), step.unwrap_or("null"))
    };
    match command {
        "interrupt" | "continue" => {
            let element = match phase.filter(|p| !p.is_empty()) {
                None => Element::Plan,
                Some(p) => match plan.find(Some(p), None) {
                    Ok(e) => e,
                    Err(r) => return Outcome::read(refused(r)),
                },
            };
            let changed =
                if command == "interrupt" { plan.interrupt(element, clock) } else { plan.proceed(element, clock) };
            done(changed, command.to_string())
        }
        "forceComplete" | "restart" => match plan.find(phase, step) {
            Err(r) => Outcome::read(refused(r)),
            Ok(e) => {
                let changed = if command == "restart" { plan.restart(e, clock) } else { plan.force_complete(e, clock) };
                done(changed, described(command))
            }
        },
        "start" => {
            let parameters = match parameters(&req.body) {
                Ok(p) => p,
                Err(m) => {
                    return Outcome::read(text_reply(
                        StatusCode::BAD_REQUEST,
                        &format!("Couldn't parse parameters: {m}"),
                    ));
                }
            };
            let shown =
                format!("{{{}}}", parameters.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
            plan.start(parameters, clock);
            Outcome::wrote(command_result(&format!("start {name} with parameters: {shown}")))
        }
        "stop" => {
            plan.stop();
            Outcome::wrote(command_result("stop"))
        }
        _ => Outcome::read(not_found()),
    }
}

/// `start`'s body: a JSON object of strings whose keys could be environment variables.
fn parameters(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else { return Err("expected a JSON object of strings".into()) };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let mut chars = k.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{k} is not a valid environment variable name"));
        }
        let Value::String(v) = v else { return Err(format!("the value of {k} is not a string")) };
        out.insert(k, v);
    }
    Ok(out)
}
