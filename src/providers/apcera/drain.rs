//! Log drains, declared as part of a job (`log_drains: [{url, max_size, conf}]`; seed 003
//! L1887-1990: `GET/POST /v1/jobs/{uuid}/logs/drains`, `DELETE .../drains/{drain_uuid}`).
//!
//! A declared list is the job's whole set of drains, compared as a set (by URL, with Go's zero
//! values for what is not written); a job that declares no `log_drains` leaves its drains alone.
//! Drains have no labels: they belong to their job, so a job capstan owns owns them, and they go
//! when it does. A drain cannot be changed in place: a changed one is removed, then added again
//! (the platform refuses the same URL twice on one job).

use super::client::Client;
use crate::providers::ApiError;
use serde_json::{Value, json};

/// The job field that declares them.
pub const FIELD: &str = "log_drains";

/// One drain in the form both sides are compared in.
fn drain(d: &Value) -> Value {
    let conf = d.get("conf");
    json!({
        "url": d.get("url").cloned().unwrap_or(json!("")),
        "max_size": d.get("max_size").and_then(Value::as_u64).unwrap_or(0),
        "conf": {
            "priority": conf.and_then(|c| c.get("priority")).and_then(Value::as_i64).unwrap_or(0),
            "protocol": conf.and_then(|c| c.get("protocol")).cloned().unwrap_or(json!("")),
        },
    })
}

/// A list of drains (declared, or the job's `drains` as read) as a comparable set: sorted.
pub fn normalize(list: Option<&Value>) -> Value {
    let mut all: Vec<Value> = list.and_then(Value::as_array).into_iter().flatten().map(drain).collect();
    all.sort_by_key(|d| d.to_string());
    all.dedup();
    Value::Array(all)
}

/// Make the job's drains the declared set: remove those not declared (and changed ones), then
/// add what is missing. Reads the drains first, so a step done before a lost answer is not
/// done twice.
pub async fn sync(client: &Client, job_uuid: &str, declared: &Value) -> Result<(), ApiError> {
    let want = normalize(Some(declared));
    let want = want.as_array().map(Vec::as_slice).unwrap_or_default();
    let live = client.list_drains(job_uuid).await?;
    let mut have = Vec::new();
    for d in &live {
        let form = drain(d);
        if want.contains(&form) && !have.contains(&form) {
            have.push(form);
        } else if let Some(uuid) = d.get("uuid").and_then(Value::as_str) {
            client.delete(&format!("/v1/jobs/{job_uuid}/logs/drains/{uuid}")).await?;
        }
    }
    for d in want.iter().filter(|d| !have.contains(d)) {
        client.create_drain(job_uuid, d).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_compare_as_a_set_with_zero_values() {
        let declared = json!([{ "url": "syslog://b:2" }, { "url": "syslog://a:1", "max_size": 4096, "conf": { "protocol": "udp" } }]);
        let live = json!([
            { "uuid": "x", "url": "syslog://a:1", "max_size": 4096, "conf": { "priority": 0, "protocol": "udp" } },
            { "uuid": "y", "url": "syslog://b:2", "max_size": 0, "conf": { "priority": 0, "protocol": "" } },
        ]);
        assert_eq!(normalize(Some(&declared)), normalize(Some(&live)));
        assert_ne!(normalize(Some(&json!([{ "url": "syslog://b:2", "max_size": 1 }]))), normalize(Some(&live)));
        assert_eq!(normalize(None), json!([]));
    }
}
