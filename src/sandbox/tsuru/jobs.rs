//! Jobs (tsuru 1.13): `POST|GET /1.13/jobs`, `GET|PUT|DELETE /1.13/jobs/{name}`,
//! `POST /1.13/jobs/{name}/trigger` (seed L2221-2395). The request is flat, the read nests the
//! spec under `spec` (and `GET /jobs/{name}` wraps it under `job`).

use super::apps::valid_name;
use super::metadata::Metadata;
use super::catalogue;
use super::model::{EnvVar, ServiceEnv};
use super::input::{Input, Node, process_tags};
use super::{Api, Data, Fail, Req, empty, reply};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a manual job's schedule reads back as (tsuru's `buildFakeSchedule`).
const MANUAL_SCHEDULE: &str = "* * 31 2 *";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    pub name: String,
    pub team_owner: String,
    pub owner: String,
    pub plan: String,
    pub pool: String,
    pub description: String,
    pub tags: Vec<String>,
    pub metadata: Metadata,
    pub schedule: String,
    pub manual: bool,
    pub active_deadline_seconds: i64,
    pub concurrency_policy: Option<String>,
    pub image: String,
    pub command: Vec<String>,
    pub envs: BTreeMap<String, EnvVar>,
    pub service_envs: Vec<ServiceEnv>,
}

/// A create or update body.
struct JobInput {
    name: String,
    team_owner: String,
    plan: String,
    pool: String,
    description: String,
    tags: Option<Vec<String>>,
    metadata: Metadata,
    schedule: String,
    manual: bool,
    active_deadline_seconds: Option<i64>,
    concurrency_policy: Option<String>,
    image: String,
    command: Option<Vec<String>>,
    envs: Vec<EnvVar>,
}

impl JobInput {
    fn parse(input: &Input) -> Result<JobInput, Fail> {
        let n = input.node();
        let container = n.get("container");
        let envs = container
            .get("envs")
            .items()?
            .into_iter()
            .map(|e: Node| {
                Ok(EnvVar {
                    name: e.get("name").string()?,
                    value: e.get("value").string()?,
                    alias: e.get("alias").string()?,
                    public: e.get("public").bool()?.unwrap_or(false),
                    managed_by: e.get("managedBy").string()?,
                })
            })
            .collect::<Result<Vec<_>, Fail>>()?;
        let job = JobInput {
            name: n.get("name").string()?,
            team_owner: n.get("teamOwner").string()?,
            plan: n.get("plan").string()?,
            pool: n.get("pool").string()?,
            description: n.get("description").string()?,
            tags: n.get("tags").strings()?,
            metadata: Metadata::parse(n.get("metadata"))?,
            schedule: n.get("schedule").string()?,
            manual: n.get("manual").bool()?.unwrap_or(false),
            active_deadline_seconds: n.get("activeDeadlineSeconds").int()?,
            concurrency_policy: n.get("concurrencyPolicy").str()?,
            image: container.get("image").string()?,
            command: container.get("command").strings()?,
            envs,
        };
        if job.manual && !job.schedule.is_empty() {
            return Err(Fail::new(StatusCode::CONFLICT, "you can't set schedule and manual job at the same time"));
        }
        Ok(job)
    }
}

/// tsuru's `validateJob`: the schedule (unless manual) and the concurrency policy.
fn validate(job: &Job) -> Result<(), Fail> {
    if !job.manual && !valid_schedule(&job.schedule) {
        return Err(Fail::bad("invalid schedule"));
    }
    if job.concurrency_policy.as_deref().is_some_and(|p| !["Allow", "Forbid", "Replace"].contains(&p)) {
        return Err(Fail::bad("invalid concurrency policy, allowed values are: Allow, Forbid, Replace"));
    }
    job.metadata.validate()
}

/// `POST /jobs`: 201 `{"status": "success", "jobName": ...}`.
pub fn create(api: &Api, req: &Req) -> Result<Response, Fail> {
    let j = JobInput::parse(&Input::parse(req)?)?;
    let name = j.name.clone();
    let failed = |why: &str| format!("tsuru failed to create job {name:?}: {why}");
    let mut data = api.lock();
    if !valid_name(&name) {
        return Err(Fail::bad(failed(
            "your job should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.",
        )));
    }
    if data.jobs.contains_key(&name) {
        return Err(Fail::new(StatusCode::CONFLICT, failed("a job with the same name already exists")));
    }
    if !catalogue::POOLS.contains(&j.pool.as_str()) {
        return Err(Fail::bad(failed("Pool does not exist.")));
    }
    let plan = if j.plan.is_empty() { catalogue::default_plan().name.to_string() } else { j.plan };
    if catalogue::plan(&plan).is_none() {
        return Err(Fail::bad(failed("plan not found")));
    }
    let job = Job {
        name: name.clone(),
        team_owner: if j.team_owner.is_empty() { api.team().to_string() } else { j.team_owner },
        owner: api.shared.principal.clone(),
        plan,
        pool: j.pool,
        description: j.description,
        tags: process_tags(j.tags.unwrap_or_default()),
        metadata: Metadata {
            labels: j.metadata.labels.into_iter().filter(|i| !i.delete).collect(),
            annotations: j.metadata.annotations.into_iter().filter(|i| !i.delete).collect(),
        },
        schedule: if j.manual { MANUAL_SCHEDULE.to_string() } else { j.schedule },
        manual: j.manual,
        active_deadline_seconds: j.active_deadline_seconds.filter(|s| *s >= 0).unwrap_or(0),
        concurrency_policy: j.concurrency_policy,
        image: j.image,
        command: j.command.unwrap_or_default(),
        envs: j.envs.into_iter().map(|e| (e.name.clone(), e)).collect(),
        service_envs: Vec::new(),
    };
    validate(&job)?;
    data.jobs.insert(name.clone(), job);
    api.changed();
    Ok(reply(StatusCode::CREATED, &json!({"status": "success", "jobName": name})))
}

/// `PUT /jobs/{name}`: merged as tsuru's mergo merge does (an empty field keeps its value);
/// 200 with the job.
pub fn update(api: &Api, req: &Req) -> Result<Response, Fail> {
    let j = JobInput::parse(&Input::parse(req)?)?;
    let name = req.param(0);
    let mut data = api.lock();
    let old = data.jobs.get(name).ok_or_else(|| Fail::no_job(name))?;
    if !j.pool.is_empty() && j.pool != old.pool {
        return Err(Fail::bad("Update pool is not implemented yet"));
    }
    j.metadata.validate()?;
    let mut job = old.clone();
    job.metadata.merge(&j.metadata);
    if !j.schedule.is_empty() {
        job.manual = false;
        job.schedule = j.schedule;
    }
    if j.manual {
        job.manual = true;
        job.schedule = MANUAL_SCHEDULE.to_string();
    }
    if let Some(s) = j.active_deadline_seconds.filter(|s| *s >= 0) {
        job.active_deadline_seconds = s;
    }
    let keep = |new: String, old: &mut String| {
        if !new.is_empty() {
            *old = new;
        }
    };
    keep(j.team_owner, &mut job.team_owner);
    keep(j.description, &mut job.description);
    keep(j.image, &mut job.image);
    if !j.plan.is_empty() {
        if catalogue::plan(&j.plan).is_none() {
            return Err(Fail::bad("plan not found"));
        }
        job.plan = j.plan;
    }
    if let Some(t) = j.tags.filter(|t| !t.is_empty()) {
        job.tags = process_tags(t);
    }
    if let Some(c) = j.command.filter(|c| !c.is_empty()) {
        job.command = c;
    }
    if !j.envs.is_empty() {
        job.envs = j.envs.into_iter().map(|e| (e.name.clone(), e)).collect();
    }
    if j.concurrency_policy.is_some() {
        job.concurrency_policy = j.concurrency_policy;
    }
    validate(&job)?;
    let body = job_json(&job);
    data.jobs.insert(name.to_string(), job);
    api.changed();
    Ok(reply(StatusCode::OK, &body))
}

/// `DELETE /jobs/{name}`: 200 with no body; its binds go with it.
pub fn delete(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0);
    let mut data = api.lock();
    if data.jobs.remove(name).is_none() {
        return Err(Fail::no_job(name));
    }
    for i in data.instances.values_mut() {
        i.jobs.retain(|j| j != name);
    }
    api.changed();
    Ok(empty(StatusCode::OK))
}

/// `POST /jobs/{name}/trigger`.
pub fn trigger(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    if !data.jobs.contains_key(req.param(0)) {
        return Err(Fail::no_job(req.param(0)));
    }
    Ok(reply(StatusCode::OK, &json!({"status": "success"})))
}

/// `GET /jobs/{name}`: `{job, units, serviceInstanceBinds}`.
pub fn info(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let job = data.jobs.get(req.param(0)).ok_or_else(|| Fail::no_job(req.param(0)))?;
    Ok(reply(
        StatusCode::OK,
        &json!({"job": job_json(job), "units": [], "serviceInstanceBinds": binds_json(&data, &job.name)}),
    ))
}

/// `GET /jobs`: **404 `Not founds.`** when there is none (seed L2257).
pub fn list(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let tags = req.queries("tag");
    let filter = |key: &str, value: &str| req.query(key).is_none_or(|want| want.is_empty() || want == value);
    let items: Vec<Value> = data
        .jobs
        .values()
        .filter(|j| req.query("name").is_none_or(|n| j.name.contains(n)))
        .filter(|j| filter("teamOwner", &j.team_owner) && filter("owner", &j.owner) && filter("pool", &j.pool))
        .filter(|j| tags.iter().all(|t| j.tags.iter().any(|x| x == t)))
        .map(job_json)
        .collect();
    if items.is_empty() {
        return Err(Fail::new(StatusCode::NOT_FOUND, "Not founds."));
    }
    Ok(reply(StatusCode::OK, &Value::Array(items)))
}

fn binds_json(data: &Data, job: &str) -> Vec<Value> {
    data.instances
        .values()
        .filter(|i| i.jobs.iter().any(|j| j == job))
        .map(|i| json!({"service": i.service, "instance": i.name, "plan": i.plan}))
        .collect()
}

/// A job as reads show it (seed L2258-2289).
fn job_json(job: &Job) -> Value {
    let mut spec = json!({
        "schedule": job.schedule,
        "manual": job.manual,
        "activeDeadlineSeconds": job.active_deadline_seconds,
        "container": {
            "image": job.image,
            "command": job.command,
            "envs": job.envs.values().map(EnvVar::to_json).collect::<Vec<_>>(),
        },
    });
    if let Some(p) = &job.concurrency_policy {
        spec["concurrencyPolicy"] = json!(p);
    }
    json!({
        "name": job.name,
        "description": job.description,
        "owner": job.owner,
        "teamOwner": job.team_owner,
        "teams": [job.team_owner],
        "pool": job.pool,
        "plan": catalogue::plan_json(&job.plan, &Default::default()),
        "metadata": job.metadata.to_json(),
        "tags": job.tags,
        "spec": spec,
    })
}

const MONTHS: &[&str] = &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A schedule robfig/cron's standard parser (what tsuru uses) accepts: five fields, or a
/// descriptor (`@daily`, `@every 1h30m`).
pub fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    if let Some(d) = s.strip_prefix('@') {
        return matches!(d, "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly")
            || d.strip_prefix("every ").is_some_and(|dur| go_duration(dur.trim()));
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    let bounds: [(u32, u32, &[&str], u32); 5] =
        [(0, 59, &[], 0), (0, 23, &[], 0), (1, 31, &[], 0), (1, 12, MONTHS, 1), (0, 6, DAYS, 0)];
    fields.len() == 5 && fields.iter().zip(bounds).all(|(f, (lo, hi, names, base))| cron_field(f, lo, hi, names, base))
}

fn cron_field(field: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> bool {
    let value = |v: &str| -> Option<u32> {
        v.parse().ok().or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(v)).map(|i| i as u32 + base))
    };
    field.split(',').all(|term| {
        let (range, step) = match term.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (term, None),
        };
        if step.is_some_and(|s| s.parse::<u32>().map_or(true, |n| n == 0)) {
            return false;
        }
        if range == "*" || range == "?" {
            return true;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        matches!((value(a), value(b)), (Some(a), Some(b)) if lo <= a && a <= b && b <= hi)
    })
}

/// Go's `time.ParseDuration`: `1h30m`, `90s`, `1.5h`.
fn go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "h", "m", "s"].iter().find(|u| rest.starts_with(*u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_as_cron_reads_them() {
        for ok in [
            "0 3 * * *",
            "*/5 * * * *",
            "0 0 1,15 * MON-FRI",
            MANUAL_SCHEDULE,
            "@daily",
            "@every 1h30m",
            "0 0 * jan sun",
        ] {
            assert!(valid_schedule(ok), "{ok}");
        }
        for bad in
            ["", "0 3 * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "*/0 * * * *", "@often", "@every x", "0 3 * * * *"]
        {
            assert!(!valid_schedule(bad), "{bad}");
        }
    }
}
