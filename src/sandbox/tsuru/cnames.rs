//! Cnames: `POST|DELETE /1.0/apps/{app}/cname` (seed L682-703), as tsuru's
//! `validateNewCNames` and `checkCNameExists` check them. Not streamed: 200 with no body.

use super::input::Input;
use super::{Api, Fail, Req, empty, need};
use axum::http::StatusCode;
use axum::response::Response;

/// `^(\*\.)?[a-zA-Z0-9][\w-.]+$`.
fn valid(cname: &str) -> bool {
    let rest = cname.strip_prefix("*.").unwrap_or(cname);
    let b = rest.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn cnames(input: &Input) -> Result<Vec<String>, Fail> {
    let list = input.values("cname");
    if list.is_empty() {
        return Err(Fail::bad("You must provide the cname."));
    }
    Ok(list)
}

/// `POST /apps/{app}/cname`: each must be valid and held by no app on the same router or of
/// another team owner.
pub fn add(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0);
    need(api, name)?;
    let list = cnames(&Input::parse(req)?)?;
    let mut data = api.lock();
    let app = data.apps.get(name).ok_or_else(|| Fail::no_app(name))?;
    for c in &list {
        if !valid(c) {
            return Err(Fail::bad("Invalid cname"));
        }
        if app.cname.iter().flatten().any(|x| x == c) {
            return Err(Fail::internal(format!("cname {c} already exists for this app")));
        }
        let holders = data.apps.values().filter(|a| a.name != app.name && a.cname.iter().flatten().any(|x| x == c));
        for other in holders {
            if other.router == app.router {
                return Err(Fail::internal(format!(
                    "cname {c} already exists for app {} using same router",
                    other.name
                )));
            }
            if other.team_owner != app.team_owner {
                return Err(Fail::internal(format!(
                    "cname {c} already exists for another app {} and belongs to a different team owner",
                    other.name
                )));
            }
        }
    }
    let app = data.apps.get_mut(name).ok_or_else(|| Fail::no_app(name))?;
    let held = app.cname.get_or_insert_with(Vec::new);
    for c in list {
        if !held.contains(&c) {
            held.push(c);
        }
    }
    api.changed();
    Ok(empty(StatusCode::OK))
}

/// `DELETE /apps/{app}/cname?cname=x`: each must be held by some app (tsuru checks them all,
/// then removes them from this one).
pub fn remove(api: &Api, req: &Req) -> Result<Response, Fail> {
    let name = req.param(0);
    need(api, name)?;
    let list = cnames(&Input::parse(req)?)?;
    let mut data = api.lock();
    for c in &list {
        if !data.apps.values().any(|a| a.cname.iter().flatten().any(|x| x == c)) {
            return Err(Fail::internal(format!("cname {c} not exists in app")));
        }
    }
    let app = data.apps.get_mut(name).ok_or_else(|| Fail::no_app(name))?;
    if let Some(held) = app.cname.as_mut() {
        held.retain(|c| !list.contains(c));
    }
    api.changed();
    Ok(empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cnames_as_tsuru_accepts_them() {
        for ok in ["shop.example.com", "*.example.com", "a_b.example", "ab"] {
            assert!(super::valid(ok), "{ok}");
        }
        for bad in ["", "a", "-a.example", "a b", "*.", "a/b", ".example"] {
            assert!(!super::valid(bad), "{bad}");
        }
    }
}
