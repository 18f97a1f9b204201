//! Environment variables of apps (`/1.0/apps/{app}/env`, seed L717-763) and jobs
//! (`/1.13/jobs/{name}/env`, `/1.16/...`, L2407-2452): tsuru's `setAppEnv`, `SetEnvs`,
//! `unsetAppEnv` and `EnvsForApp`.

use super::input::Input;
use super::model::{EnvVar, ServiceEnv};
use super::streams::{self, Stream};
use super::{Api, Fail, Req, reply, units};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Names no request may set (tsuru's `internalEnvs`).
const INTERNAL: &[&str] = &["TSURU_APPNAME", "TSURU_SERVICES", "TSURU_APPDIR"];

const APP_DIR: &str = "/home/application/current";

/// A set request: `envs`, `managedBy`, `private`, `pruneUnused`, `noRestart`.
struct SetRequest {
    envs: Vec<EnvVar>,
    managed_by: String,
    prune: bool,
    no_restart: bool,
}

impl SetRequest {
    fn parse(input: &Input) -> Result<SetRequest, Fail> {
        let n = input.node();
        let managed_by = n.get("managedBy").string()?;
        let all_private = n.get("private").bool()?.unwrap_or(false);
        let mut envs = Vec::new();
        for e in n.get("envs").items()? {
            let private = e.get("private").bool()?.unwrap_or(false) || all_private;
            envs.push(EnvVar {
                name: e.get("name").string()?,
                value: e.get("value").string()?,
                alias: e.get("alias").string()?,
                public: !private,
                // Every variable takes the request's manager: tsuru ignores a per-item one.
                managed_by: managed_by.clone(),
            });
        }
        let req = SetRequest {
            envs,
            managed_by,
            prune: n.get("pruneUnused").bool()?.unwrap_or(false),
            no_restart: n.get("noRestart").bool()?.unwrap_or(false) || input.flag("noRestart"),
        };
        if req.managed_by.is_empty() && req.envs.is_empty() {
            return Err(Fail::bad("You must provide the list of environment variables"));
        }
        if req.prune && req.managed_by.is_empty() {
            return Err(Fail::bad("Prune unused requires a managed-by value"));
        }
        let errors: Vec<String> = req.envs.iter().filter_map(|e| name_error(&e.name)).collect();
        if !errors.is_empty() {
            return Err(Fail::bad(format!("There were errors validating environment variables: {}", multi(&errors))));
        }
        Ok(req)
    }

    /// Prune, then set, writing what it does.
    fn apply(self, vars: &mut BTreeMap<String, EnvVar>, stream: &mut Stream) {
        if self.prune {
            let gone: Vec<String> = vars
                .values()
                .filter(|v| v.managed_by == self.managed_by && !self.envs.iter().any(|e| e.name == v.name))
                .map(|v| v.name.clone())
                .collect();
            for name in gone {
                stream.section(format!("Pruning {name} from environment variables"));
                vars.remove(&name);
            }
        }
        for e in self.envs {
            vars.insert(e.name.clone(), e);
        }
    }
}

/// tsuru's `MultiError` text.
fn multi(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => {
            let mut s = format!("multiple errors reported ({}):\n", many.len());
            for (i, e) in many.iter().enumerate() {
                s.push_str(&format!("error #{i}: {e}\n"));
            }
            s
        }
    }
}

/// Why a name cannot be set, if it cannot.
fn name_error(name: &str) -> Option<String> {
    if INTERNAL.contains(&name) {
        return Some(format!(
            "cannot change an internal environment variable ({name}): write-protected environment variable"
        ));
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    (!ok).then(|| {
        format!(
            "{name:?} is not valid environment variable name: a valid environment variable name must consist of alphabetic characters, digits, '_' and must not start with a digit: invalid environment variable name"
        )
    })
}

/// The `env` names of an unset (query string, form or JSON), none being 400.
fn unset_names(input: &Input) -> Result<Vec<String>, Fail> {
    let names = input.values("env");
    if names.first().is_none_or(|n| n.is_empty()) {
        return Err(Fail::bad("You must provide the list of environment variables."));
    }
    Ok(names)
}

/// Every variable of an app or job as `GET env` lists them: its own, its services', tsuru's.
fn merged(own: &BTreeMap<String, EnvVar>, services: &[ServiceEnv], app: Option<&str>) -> BTreeMap<String, EnvVar> {
    let mut all = own.clone();
    for s in services {
        let mut v = s.var.clone();
        v.managed_by = format!("{}/{}", s.service, s.instance);
        all.insert(v.name.clone(), v);
    }
    // An alias reads the value of the variable it names (followed a few steps, no loops).
    let aliased: Vec<String> = own.values().filter(|v| !v.alias.is_empty()).map(|v| v.name.clone()).collect();
    for name in aliased {
        let mut target = own[&name].alias.clone();
        for _ in 0..8 {
            match own.get(&target) {
                Some(t) if !t.alias.is_empty() && t.alias != name => target = t.alias.clone(),
                _ => break,
            }
        }
        if let Some(value) = all.get(&target).map(|t| t.value.clone())
            && let Some(v) = all.get_mut(&name)
        {
            v.value = value;
        }
    }
    let tsuru = |name: &str, value: String, public: bool| EnvVar {
        name: name.into(),
        value,
        alias: String::new(),
        public,
        managed_by: "tsuru".into(),
    };
    all.insert("TSURU_SERVICES".into(), tsuru("TSURU_SERVICES", services_json(services), false));
    if let Some(app) = app {
        all.insert("TSURU_APPNAME".into(), tsuru("TSURU_APPNAME", app.to_string(), true));
        all.insert("TSURU_APPDIR".into(), tsuru("TSURU_APPDIR", APP_DIR.to_string(), true));
    }
    all
}

/// `TSURU_SERVICES`: `{"<service>": [{"instance_name", "envs": {...}}]}`.
fn services_json(services: &[ServiceEnv]) -> String {
    type Instances = Vec<(String, BTreeMap<String, String>)>;
    let mut out: BTreeMap<&str, Instances> = BTreeMap::new();
    for s in services {
        let list = out.entry(&s.service).or_default();
        match list.iter_mut().find(|(i, _)| *i == s.instance) {
            Some((_, envs)) => {
                envs.insert(s.var.name.clone(), s.var.value.clone());
            }
            None => list.push((s.instance.clone(), BTreeMap::from([(s.var.name.clone(), s.var.value.clone())]))),
        }
    }
    let v: BTreeMap<&str, Vec<Value>> = out
        .into_iter()
        .map(|(k, l)| (k, l.into_iter().map(|(i, e)| json!({"instance_name": i, "envs": e})).collect()))
        .collect();
    serde_json::to_string(&v).unwrap_or_default()
}

/// A `GET env` answer: every variable, or those of `?env=` among the own ones (`null` when
/// none, as Go encodes a nil list).
fn read(own: &BTreeMap<String, EnvVar>, services: &[ServiceEnv], app: Option<&str>, req: &Req) -> Response {
    let wanted = req.queries("env");
    let items: Vec<Value> = if wanted.is_empty() {
        merged(own, services, app).values().map(EnvVar::to_json).collect()
    } else {
        wanted.iter().filter_map(|n| own.get(*n)).map(EnvVar::to_json).collect()
    };
    reply(StatusCode::OK, &if items.is_empty() { Value::Null } else { Value::Array(items) })
}

/// `GET /apps/{app}/env`.
pub fn get_app(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let app = data.apps.get(req.param(0)).ok_or_else(|| Fail::no_app(req.param(0)))?;
    Ok(read(&app.env, &app.service_envs, Some(&app.name), req))
}

/// `POST /apps/{app}/env`, streamed.
pub fn set_app(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    super::need(api, &name)?;
    let set = SetRequest::parse(&Input::parse(req)?)?;
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        if !set.envs.is_empty() {
            stream.section(format!("Setting {} new environment variables", set.envs.len()));
        }
        // tsuru's `validateEnvConflicts`: found once the stream has begun, nothing changed.
        let conflicts: Vec<String> = set
            .envs
            .iter()
            .filter_map(|e| app.service_envs.iter().find(|s| s.var.name == e.name))
            .map(|s| {
                format!(
                    "Environment variable {:?} is already in use by service bind \"{}/{}\"",
                    s.var.name, s.service, s.instance
                )
            })
            .collect();
        if !conflicts.is_empty() {
            let err = multi(&conflicts);
            stream.section(format!("environment variables have conflicts with service binds: {err}"));
            stream.fail(err);
            return Ok(());
        }
        let no_restart = set.no_restart;
        set.apply(&mut app.env, stream);
        if !no_restart {
            units::restart(app, None, stream, rollout);
        }
        Ok(())
    })
}

/// `DELETE /apps/{app}/env?env=A&env=B`, streamed.
pub fn unset_app(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    super::need(api, &name)?;
    let input = Input::parse(req)?;
    let names = unset_names(&input)?;
    let no_restart = input.flag("noRestart");
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        stream.section(format!("Unsetting {} environment variables", names.len()));
        for n in &names {
            app.env.remove(n);
        }
        if !no_restart {
            units::restart(app, None, stream, rollout);
        }
        Ok(())
    })
}

/// `GET /1.16/jobs/{name}/env`.
pub fn get_job(api: &Api, req: &Req) -> Result<Response, Fail> {
    let data = api.lock();
    let job = data.jobs.get(req.param(0)).ok_or_else(|| Fail::no_job(req.param(0)))?;
    Ok(read(&job.envs, &job.service_envs, None, req))
}

/// `POST /1.13/jobs/{name}/env`, streamed (no restart, no conflict check: tsuru's job
/// `SetEnvs` has neither).
pub fn set_job(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    let set = SetRequest::parse(&Input::parse(req)?)?;
    streams::run(api, req, move |data, stream| {
        let job = data.jobs.get_mut(&name).ok_or_else(|| Fail::no_job(&name))?;
        if !set.envs.is_empty() {
            stream.section(format!("Setting {} new environment variables", set.envs.len()));
        }
        set.apply(&mut job.envs, stream);
        Ok(())
    })
}

/// `DELETE /1.13/jobs/{name}/env?env=A`, streamed.
pub fn unset_job(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    let names = unset_names(&Input::parse(req)?)?;
    streams::run(api, req, move |data, stream| {
        let job = data.jobs.get_mut(&name).ok_or_else(|| Fail::no_job(&name))?;
        stream.section(format!("Unsetting {} environment variables", names.len()));
        for n in &names {
            job.envs.remove(n);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, managed_by: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: "v".into(),
            public: true,
            managed_by: managed_by.into(),
            ..EnvVar::default()
        }
    }

    #[test]
    fn prune_removes_only_the_managers_own_variables() {
        let mut vars: BTreeMap<String, EnvVar> =
            [var("A", "capstan"), var("B", "capstan"), var("HAND", ""), var("OTHER", "helm")]
                .into_iter()
                .map(|v| (v.name.clone(), v))
                .collect();
        let set =
            SetRequest { envs: vec![var("A", "capstan")], managed_by: "capstan".into(), prune: true, no_restart: true };
        set.apply(&mut vars, &mut Stream::new());
        assert_eq!(vars.keys().collect::<Vec<_>>(), ["A", "HAND", "OTHER"]);
    }

    #[test]
    fn names_tsuru_refuses() {
        assert!(name_error("TSURU_APPNAME").is_some());
        assert!(name_error("TSURU_SERVICES").is_some());
        assert!(name_error("TSURU_FOO").is_none(), "only the three internal names are protected");
        assert!(name_error("1X").is_some());
        assert!(name_error("A-B").is_some());
        assert!(name_error("_a1").is_none());
    }

    #[test]
    fn reads_mask_private_values_and_add_tsurus_own() {
        let mut own = BTreeMap::new();
        own.insert("SECRET".into(), EnvVar { name: "SECRET".into(), value: "hunter2".into(), ..EnvVar::default() });
        let services = vec![ServiceEnv {
            service: "mysql".into(),
            instance: "db".into(),
            var: EnvVar { name: "MYSQL_HOST".into(), value: "h".into(), ..EnvVar::default() },
        }];
        let all = merged(&own, &services, Some("web"));
        let text = serde_json::to_string(&all.values().map(EnvVar::to_json).collect::<Vec<_>>()).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("\"h\""), "{text}");
        assert_eq!(all["MYSQL_HOST"].managed_by, "mysql/db");
        assert_eq!(all["TSURU_APPNAME"].value, "web");
        assert!(all["TSURU_SERVICES"].value.contains(r#""instance_name":"db""#));
    }
}
