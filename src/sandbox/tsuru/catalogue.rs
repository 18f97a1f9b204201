//! What an administrator sets up and a reconciler only reads: plans, pools, routers and
//! platforms (fixed), and services with their plans (state, seeded with `mysql` and `redis`).

use super::{Api, Fail, Req, list, reply};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A resource plan: name, CPU in millicores, memory in bytes, whether it is the default.
pub struct Plan {
    pub name: &'static str,
    pub cpumilli: i64,
    pub memory: i64,
    pub default: bool,
}

pub const PLANS: &[Plan] = &[
    Plan { name: "c1m1", cpumilli: 1000, memory: 1 << 30, default: true },
    Plan { name: "c2m2", cpumilli: 2000, memory: 2 << 30, default: false },
    Plan { name: "c4m4", cpumilli: 4000, memory: 4 << 30, default: false },
];

pub const POOLS: &[&str] = &["default", "prod"];
pub const DEFAULT_POOL: &str = "default";
pub const ROUTERS: &[&str] = &["ingress", "traefik"];
pub const DEFAULT_ROUTER: &str = "ingress";
pub const PLATFORMS: &[&str] = &["go", "java", "nodejs", "php", "python", "ruby", "static"];

pub fn plan(name: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.name == name)
}

pub fn default_plan() -> &'static Plan {
    PLANS.iter().find(|p| p.default).unwrap_or(&PLANS[0])
}

/// An overridden plan value; 0 is none.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Override {
    pub cpumilli: i64,
    pub memory: i64,
    pub cpu_burst: f64,
}

/// A plan as apps and jobs read it back (seed L562-570).
pub fn plan_json(name: &str, o: &Override) -> Value {
    let p = plan(name).unwrap_or_else(default_plan);
    json!({
        "name": p.name,
        "cpumilli": p.cpumilli,
        "memory": p.memory,
        "default": p.default,
        "cpuBurst": {"default": 1.0, "maxAllowed": 2.0},
        "override": {"cpumilli": o.cpumilli, "memory": o.memory, "cpuBurst": o.cpu_burst},
    })
}

/// A service of the catalogue, with the variables a bind injects (`<prefix>_HOST`, ...).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    pub plans: Vec<ServicePlan>,
    pub env_prefix: String,
    pub port: u16,
    /// Whether binds also get `_USER` and `_DATABASE_NAME` (a database).
    pub database: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: String,
    pub description: String,
}

/// The services a fresh sandbox has.
pub fn services() -> BTreeMap<String, Service> {
    let plans = |list: &[(&str, &str)]| {
        list.iter().map(|(n, d)| ServicePlan { name: n.to_string(), description: d.to_string() }).collect()
    };
    BTreeMap::from([
        (
            "mysql".to_string(),
            Service {
                plans: plans(&[("small", "small plan"), ("medium", "medium plan"), ("large", "large plan")]),
                env_prefix: "MYSQL".into(),
                port: 3306,
                database: true,
            },
        ),
        (
            "redis".to_string(),
            Service {
                plans: plans(&[("basic", "basic plan"), ("plus", "plus plan")]),
                env_prefix: "REDIS".into(),
                port: 6379,
                database: false,
            },
        ),
    ])
}

/// `GET /plans`.
pub fn plans(_: &Api, _: &Req) -> Result<Response, Fail> {
    Ok(list(PLANS.iter().map(|p| plan_json(p.name, &Override::default())).collect()))
}

fn pool_json(name: &str) -> Value {
    json!({
        "name": name,
        "default": name == DEFAULT_POOL,
        "public": true,
        "provisioner": "kubernetes",
        "labels": {},
        "allowed": {"router": ROUTERS, "plan": PLANS.iter().map(|p| p.name).collect::<Vec<_>>()},
        "teams": [],
    })
}

/// `GET /pools`.
pub fn pools(_: &Api, _: &Req) -> Result<Response, Fail> {
    Ok(list(POOLS.iter().map(|p| pool_json(p)).collect()))
}

/// `GET /pools/{pool}`.
pub fn pool(_: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0);
    if !POOLS.contains(&name) {
        return Err(Fail::new(StatusCode::NOT_FOUND, "Pool does not exist."));
    }
    Ok(reply(StatusCode::OK, &pool_json(name)))
}

/// `GET /routers`.
pub fn routers(_: &Api, _: &Req) -> Result<Response, Fail> {
    Ok(list(
        ROUTERS
            .iter()
            .map(|r| {
                json!({"name": r, "type": r, "default": *r == DEFAULT_ROUTER, "dynamic": false,
                       "info": {}, "config": {}, "readinessGates": []})
            })
            .collect(),
    ))
}

/// `GET /platforms`.
pub fn platforms(_: &Api, _: &Req) -> Result<Response, Fail> {
    Ok(list(PLATFORMS.iter().map(|p| json!({"name": p, "disabled": false})).collect()))
}

/// `GET /services/{name}`: the service's instances, as tsuru's `ServiceInstanceWithInfo`
/// under the seed's names (L51-60).
pub fn service_info(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let name = req.param(0);
    if !data.services.contains_key(name) {
        return Err(Fail::no_service());
    }
    let items: Vec<Value> = data
        .instances
        .values()
        .filter(|i| i.service == name)
        .map(|i| {
            json!({"id": i.name, "name": i.name, "servicename": i.service, "planname": i.plan, "pool": i.pool,
                   "teamowner": i.team_owner, "teams": i.teams, "apps": i.apps, "jobs": i.jobs, "info": {}})
        })
        .collect();
    // tsuru encodes a nil list here: `null` when there is no instance.
    Ok(reply(StatusCode::OK, &if items.is_empty() { Value::Null } else { Value::Array(items) }))
}

/// `GET /services/{name}/plans`.
pub fn service_plans(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let service = data.services.get(req.param(0)).ok_or_else(Fail::no_service)?;
    let plans: Vec<Value> =
        service.plans.iter().map(|p| json!({"name": p.name, "description": p.description})).collect();
    Ok(reply(StatusCode::OK, &Value::Array(plans)))
}

/// `DELETE /services/{name}`: refused while it has instances.
pub fn delete_service(api: &Api, req: &Req) -> Result<Response, Fail> {
    let mut data = api.lock();
    let name = req.param(0);
    if !data.services.contains_key(name) {
        return Err(Fail::no_service());
    }
    if data.instances.values().any(|i| i.service == name) {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "This service cannot be removed because it has instances.\nPlease remove these instances before removing the service.",
        ));
    }
    data.services.remove(name);
    api.changed();
    Ok(super::empty(StatusCode::OK))
}
