//! Binds of service instances to apps (`PUT|DELETE /1.0/services/{s}/instances/{i}/{app}`,
//! `/1.13/.../apps/{app}`) and jobs (`/1.13/.../jobs/{job}`), seed L241-343. A bind injects
//! the instance's variables, private and managed by `<service>/<instance>` (tsuru's
//! `setBoundEnvsAction`); an unbind takes them away.

use super::model::{EnvVar, ServiceEnv};
use super::input::Input;
use super::streams::{self, Stream};
use super::{Api, Data, Fail, Req, empty, need, units};
use axum::http::StatusCode;
use axum::response::Response;
use rand::Rng;

/// The variables a bind of `instance` injects, by the service's recipe.
fn bind_envs(data: &Data, k: &str) -> Vec<ServiceEnv> {
    let Some(i) = data.instances.get(k) else { return Vec::new() };
    let Some(s) = data.services.get(&i.service) else { return Vec::new() };
    let password: String = {
        let mut rng = rand::rng();
        (0..16).map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)])).collect()
    };
    let mut vars = vec![
        ("HOST", format!("{}.{}.sandbox.test", i.name, i.service)),
        ("PORT", s.port.to_string()),
        ("PASSWORD", password),
    ];
    if s.database {
        vars.push(("USER", i.name.clone()));
        vars.push(("DATABASE_NAME", i.name.replace('-', "_")));
    }
    let mut envs: Vec<ServiceEnv> = vars
        .into_iter()
        .map(|(suffix, value)| ServiceEnv {
            service: i.service.clone(),
            instance: i.name.clone(),
            var: EnvVar { name: format!("{}_{suffix}", s.env_prefix), value, public: false, ..EnvVar::default() },
        })
        .collect();
    envs.sort_by(|a, b| a.var.name.cmp(&b.var.name));
    envs
}

/// The instance's key, 404 when there is none.
fn instance(api: &Api, req: &Req) -> Result<String, Fail> {
    let k = key(req.param(0), req.param(1));
    if api.lock().instances.contains_key(&k) { Ok(k) } else { Err(Fail::no_instance()) }
}

/// `PUT .../{app}` or `.../apps/{app}`: bind, inject, restart unless `noRestart`; streamed.
pub fn bind_app(api: &Api, req: &Req) -> Result<Response, Fail> {
    let app_name = req.param(2).to_string();
    need(api, &app_name)?;
    let input = Input::parse(req)?;
    let n = input.node();
    let no_restart = n.get("noRestart").bool()?.unwrap_or(false) || input.flag("noRestart");
    n.get("parameters").object()?;
    let k = instance(api, req)?;
    let instance_name = req.param(1).to_string();
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        if !data.apps.contains_key(&app_name) {
            return Err(Fail::no_app(&app_name));
        }
        let i = data.instances.get(&k).ok_or_else(Fail::no_instance)?;
        if i.apps.contains(&app_name) {
            return Err(Fail::internal(format!(
                "app is already bound to this service instance ({instance_name:?} is up)"
            )));
        }
        let envs = bind_envs(data, &k);
        if let Some(i) = data.instances.get_mut(&k) {
            i.apps.push(app_name.clone());
        }
        let app = data.apps.get_mut(&app_name).ok_or_else(|| Fail::no_app(&app_name))?;
        stream.section(format!("Setting {} new environment variables", envs.len() + 1));
        let names: Vec<String> = envs.iter().map(|e| e.var.name.clone()).collect();
        app.service_envs.extend(envs);
        if !no_restart {
            units::restart(app, None, stream, rollout);
        }
        stream.msg(format!("\nInstance {instance_name:?} is now bound to the app {app_name:?}.\n"));
        stream.msg("The following environment variables are available for use in your app:\n\n");
        for name in names.iter().chain(std::iter::once(&"TSURU_SERVICES".to_string())) {
            stream.msg(format!("- {name}\n"));
        }
        Ok(())
    })
}

/// Unbind `app` from the instance `k`: its variables go, its units restart if `restart`.
pub fn unbind_app_in(data: &mut Data, k: &str, app: &str, restart: bool, stream: &mut Stream, rollout: u64) {
    let Some(i) = data.instances.get_mut(k) else { return };
    i.apps.retain(|a| a != app);
    let (service, instance) = (i.service.clone(), i.name.clone());
    let Some(app) = data.apps.get_mut(app) else { return };
    let before = app.service_envs.len();
    app.service_envs.retain(|e| !(e.service == service && e.instance == instance));
    let gone = before - app.service_envs.len();
    if gone > 0 {
        stream.section(format!("Unsetting {gone} environment variables"));
        if restart {
            units::restart(app, None, stream, rollout);
        }
    }
}

/// `DELETE .../{app}` or `.../apps/{app}[?noRestart=true]`, streamed.
pub fn unbind_app(api: &Api, req: &Req) -> Result<Response, Fail> {
    let app_name = req.param(2).to_string();
    need(api, &app_name)?;
    let no_restart = Input::parse(req)?.flag("noRestart");
    let k = instance(api, req)?;
    let instance_name = req.param(1).to_string();
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        if !data.instances.get(&k).ok_or_else(Fail::no_instance)?.apps.contains(&app_name) {
            return Err(Fail::internal("app is not bound to this service instance"));
        }
        unbind_app_in(data, &k, &app_name, !no_restart, stream, rollout);
        stream.msg(format!("\nInstance {instance_name:?} is not bound to the app {app_name:?} anymore.\n"));
        Ok(())
    })
}

/// `PUT .../jobs/{job}`: bind and inject; 200 with no body (tsuru does not stream it).
pub fn bind_job(api: &Api, req: &Req) -> Result<Response, Fail> {
    let k = instance(api, req)?;
    let job_name = req.param(2);
    Input::parse(req)?.node().get("parameters").object()?;
    let mut data = api.lock();
    if !data.jobs.contains_key(job_name) {
        return Err(Fail::no_job(job_name));
    }
    let i = data.instances.get(&k).ok_or_else(Fail::no_instance)?;
    if i.jobs.iter().any(|j| j == job_name) {
        return Err(Fail::internal(format!(
            "job is already bound to this service instance ({:?} is up)",
            req.param(1)
        )));
    }
    let envs = bind_envs(&data, &k);
    if let Some(i) = data.instances.get_mut(&k) {
        i.jobs.push(job_name.to_string());
    }
    if let Some(job) = data.jobs.get_mut(job_name) {
        job.service_envs.extend(envs);
    }
    api.changed();
    Ok(empty(StatusCode::OK))
}

/// Unbind `job` from the instance `k`: its variables go.
pub fn unbind_job_in(data: &mut Data, k: &str, job: &str, stream: &mut Stream) {
    let Some(i) = data.instances.get_mut(k) else { return };
    i.jobs.retain(|j| j != job);
    let (service, instance) = (i.service.clone(), i.name.clone());
    let Some(job) = data.jobs.get_mut(job) else { return };
    let before = job.service_envs.len();
    job.service_envs.retain(|e| !(e.service == service && e.instance == instance));
    let gone = before - job.service_envs.len();
    if gone > 0 {
        stream.section(format!("Unsetting {gone} environment variables"));
    }
}

/// `DELETE .../jobs/{job}`, streamed.
pub fn unbind_job(api: &Api, req: &Req) -> Result<Response, Fail> {
    let job_name = req.param(2).to_string();
    if !api.lock().jobs.contains_key(&job_name) {
        return Err(Fail::no_job(&job_name));
    }
    Input::parse(req)?;
    let k = instance(api, req)?;
    let instance_name = req.param(1).to_string();
    streams::run(api, req, move |data, stream| {
        if !data.instances.get(&k).ok_or_else(Fail::no_instance)?.jobs.contains(&job_name) {
            return Err(Fail::internal("job is not bound to this service instance"));
        }
        unbind_job_in(data, &k, &job_name, stream);
        stream.msg(format!("\nInstance {instance_name:?} is not bound to the job {job_name:?} anymore.\n"));
        Ok(())
    })
}

/// An instance's key in `Data::instances`: `<service>/<instance>`.
pub fn key(service: &str, instance: &str) -> String {
    format!("{service}/{instance}")
}
