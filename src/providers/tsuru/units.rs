//! Units per process: `PUT /1.0/apps/{app}/units` adds, `DELETE ...?units=n&process=p` removes
//! (seed L910-937); both stream and end when tsuru says the units are ready.

use super::client::{Client, enc};
use crate::providers::ApiError;
use crate::http::Idempotent;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Units per process in a spec (`{web: 2}`).
pub fn counts(spec: Option<&Value>) -> Map<String, Value> {
    spec.and_then(|s| s.get("units")).and_then(Value::as_object).cloned().unwrap_or_default()
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

/// Remove the units `want` has fewer of than `live` (a process it does not list keeps its units
/// only when `want` lists no process at all, i.e. units are not declared).
pub async fn remove(
    client: &Client,
    app: &str,
    want: &Map<String, Value>,
    live: &Map<String, Value>,
) -> Result<(), ApiError> {
    for (process, have) in live {
        let extra = n(Some(have)) - n(want.get(process));
        if extra > 0 {
            let path = format!("/1.0/apps/{}/units?units={extra}&process={}&noRestart=true", enc(app), enc(process));
            client.streamed(Method::DELETE, &path, None, Idempotent::No).await?;
        }
    }
    Ok(())
}

/// Add the units `want` has more of than `live`.
pub async fn add(
    client: &Client,
    app: &str,
    want: &Map<String, Value>,
    live: &Map<String, Value>,
) -> Result<(), ApiError> {
    for (process, count) in want {
        let missing = n(Some(count)) - n(live.get(process));
        if missing > 0 {
            let path = format!("/1.0/apps/{}/units", enc(app));
            let body = json!({"units": missing.to_string(), "process": process});
            client.streamed(Method::PUT, &path, Some(&body), Idempotent::No).await?;
        }
    }
    Ok(())
}
