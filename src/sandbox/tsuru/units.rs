//! Units per process: `PUT|DELETE /1.0/apps/{app}/units` (seed L910-937) and
//! `POST /1.0/apps/{app}/{start|stop|restart}` (L784-816), all streamed. A unit is a
//! Kubernetes pod: it starts (`starting`, not ready) for the rollout time, then runs.

use super::model::{App, Unit};
use super::input::Input;
use super::streams::{self, Stream};
use super::{Api, Fail, Req, need, unix_ms};
use axum::http::StatusCode;
use axum::response::Response;

/// The process a request without one means: the app's only process, else `web`.
fn default_process(app: &App, given: String) -> String {
    if !given.is_empty() {
        return given;
    }
    let mut processes: Vec<&str> = app.units.iter().map(|u| u.process.as_str()).collect();
    processes.sort();
    processes.dedup();
    match processes.as_slice() {
        [one] => one.to_string(),
        _ => "web".to_string(),
    }
}

/// tsuru's `numberOfUnits`: a decimal string greater than 0.
fn number_of_units(input: &Input) -> Result<usize, Fail> {
    let units = input.value("units");
    if units.is_empty() {
        return Err(Fail::bad("You must provide the number of units."));
    }
    match units.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n as usize),
        _ => Err(Fail::bad("Invalid number of units: the number must be an integer greater than 0.")),
    }
}

/// Restart the units of `process` (all when `None`): new pods, starting for the rollout time;
/// the stream waits for them. An app without units is left alone (tsuru's `restartIfUnits`).
pub fn restart(app: &mut App, process: Option<&str>, stream: &mut Stream, rollout: u64) {
    let now = unix_ms();
    let mut processes: Vec<String> = Vec::new();
    let mut ready = 0;
    let name = app.name.clone();
    for u in app.units.iter_mut().filter(|u| process.is_none_or(|p| u.process == p)) {
        if !processes.contains(&u.process) {
            processes.push(u.process.clone());
        }
        let process = u.process.clone();
        *u = Unit::new(&name, &process, now, rollout);
        ready += 1;
    }
    if ready == 0 {
        return;
    }
    processes.sort();
    for p in &processes {
        stream.action(format!("Restarting process {p:?}"));
    }
    stream.until(now + rollout);
    stream.action(format!("{ready} units ready"));
}

/// `PUT /apps/{app}/units`: `units` more units of `process`.
pub fn add(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    need(api, &name)?;
    let input = Input::parse(req)?;
    let n = number_of_units(&input)?;
    let process = input.value("process");
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        if app.units.iter().any(|u| u.stopped) {
            return Err(Fail::internal("Cannot add units to an app that has stopped units"));
        }
        let process = default_process(app, process);
        let before = app.units.iter().filter(|u| u.process == process).count();
        stream.section(format!("Patching from {before} to {} units", before + n));
        let now = unix_ms();
        for _ in 0..n {
            app.units.push(Unit::new(&name, &process, now, rollout));
        }
        stream.action(format!("{n} of {n} new units created"));
        stream.until(now + rollout);
        stream.action(format!("{n} of {n} new units ready"));
        Ok(())
    })
}

/// `DELETE /apps/{app}/units?units=N&process=P`: the newest go first; more than the process
/// has is 403.
pub fn remove(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    need(api, &name)?;
    let input = Input::parse(req)?;
    let n = number_of_units(&input)?;
    let process = input.value("process");
    streams::run(api, req, move |data, stream| {
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        let process = default_process(app, process);
        let have = app.units.iter().filter(|u| u.process == process).count();
        if n > have {
            return Err(Fail::new(
                StatusCode::FORBIDDEN,
                format!("Not enough units to remove: process {process:?} has {have}"),
            ));
        }
        stream.section(format!("Patching from {have} to {} units", have - n));
        if have == n {
            stream.section("Calling app stop internally as the number of units is zero");
        }
        let mut left = n;
        for i in (0..app.units.len()).rev() {
            if left > 0 && app.units[i].process == process {
                app.units.remove(i);
                left -= 1;
            }
        }
        stream.action(format!("{n} units removed"));
        Ok(())
    })
}

/// `POST /apps/{app}/restart`.
pub fn restart_route(api: &Api, req: &Req) -> Result<Response, Fail> {
    state_change(api, req, |app, process, stream, rollout| {
        stream.section(format!("Restarting the app {:?}", app.name));
        restart(app, process, stream, rollout);
    })
}

/// `POST /apps/{app}/start`: stopped units start again.
pub fn start(api: &Api, req: &Req) -> Result<Response, Fail> {
    state_change(api, req, |app, process, stream, rollout| {
        stream.section(format!("Starting the app {:?}", app.name));
        let now = unix_ms();
        let mut started = 0;
        for u in app.units.iter_mut().filter(|u| u.stopped && process.is_none_or(|p| u.process == p)) {
            u.stopped = false;
            u.ready_ms = now + rollout;
            started += 1;
        }
        if started > 0 {
            stream.until(now + rollout);
            stream.action(format!("{started} units ready"));
        }
    })
}

/// `POST /apps/{app}/stop`.
pub fn stop(api: &Api, req: &Req) -> Result<Response, Fail> {
    state_change(api, req, |app, process, stream, _| {
        stream.section(format!("Stopping the app {:?}", app.name));
        for u in app.units.iter_mut().filter(|u| process.is_none_or(|p| u.process == p)) {
            u.stopped = true;
        }
    })
}

fn state_change(
    api: &Api,
    req: &Req,
    change: impl FnOnce(&mut App, Option<&str>, &mut Stream, u64),
) -> Result<Response, Fail> {
    let name = req.param(0).to_string();
    need(api, &name)?;
    let input = Input::parse(req)?;
    let process = input.value("process");
    streams::run(api, req, move |data, stream| {
        let rollout = api.rollout_ms();
        let app = data.apps.get_mut(&name).ok_or_else(|| Fail::no_app(&name))?;
        change(app, (!process.is_empty()).then_some(process.as_str()), stream, rollout);
        Ok(())
    })
}
