//! An app's environment. capstan sets variables with `managedBy: <owner>` and `pruneUnused`, so
//! tsuru removes only the variables capstan set before and the request no longer holds;
//! variables set by hand or by another manager are never touched (digest §3.2).
//!
//! Private values. A variable declared `private: true`, or whose name says it is secret (the
//! names `redact` masks), is sent private; tsuru reads it back as `*** (private variable)`. To
//! see whether it changed, capstan writes beside it, in the same request, the public variable
//! `CAPSTAN_ENV_HMAC` holding `NAME=<HMAC-SHA256 of the value>` for each private variable
//! (keyed with `$CAPSTAN_TSURU_HMAC_KEY`, else the owner): the plan reads it with the env, in
//! CI and in the daemon alike, and the value itself is never read, shown or stored. In the
//! comparable form a private variable is `{"secret": "hmac:<hex>"}`, so outputs mask it as
//! `(sensitive)` / `(sensitive, changed)`.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The public variable that holds the keyed hashes of capstan's private values.
pub const HMAC_VAR: &str = "CAPSTAN_ENV_HMAC";

/// The key for the hashes: `$CAPSTAN_TSURU_HMAC_KEY`, else the owner.
fn key(owner: &str) -> Vec<u8> {
    std::env::var("CAPSTAN_TSURU_HMAC_KEY").map(String::into_bytes).unwrap_or_else(|_| owner.as_bytes().to_vec())
}

pub fn hmac(owner: &str, name: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(owner)).expect("any key length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    format!("hmac:{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}

/// A declared value as text (numbers and booleans as YAML wrote them).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The declared env in spec form: `NAME: "value"`, or `NAME: {"secret": "value"}` when private.
pub fn decode(env: &Map<String, Value>) -> Value {
    let redactor = crate::redact::Redactor::new(&[]);
    let mut out = Map::new();
    for (name, v) in env {
        let (value, private) = match v {
            Value::Object(o) => (
                o.get("value").map(text).unwrap_or_default(),
                o.get("private").and_then(Value::as_bool).unwrap_or(false),
            ),
            other => (text(other), false),
        };
        let private = private || redactor.is_sensitive(name);
        out.insert(name.clone(), if private { json!({ "secret": value }) } else { json!(value) });
    }
    Value::Object(out)
}

/// The declared env as compared: private values replaced by their keyed hash.
pub fn comparable(owner: &str, spec: &Value) -> Value {
    let Some(m) = spec.as_object() else { return spec.clone() };
    Value::Object(
        m.iter()
            .map(|(k, v)| match v.get("secret").and_then(Value::as_str) {
                Some(s) => (k.clone(), json!({ "secret": hmac(owner, k, s) })),
                None => (k.clone(), v.clone()),
            })
            .collect(),
    )
}

/// capstan's variables in an env read (`GET /1.0/apps/{app}/env`), in comparable form.
pub fn from_live(owner: &str, vars: &[Value]) -> Value {
    let mine: Vec<&Value> = vars.iter().filter(|v| v["managedBy"] == owner).collect();
    let hashes: BTreeMap<String, String> = mine
        .iter()
        .find(|v| v["name"] == HMAC_VAR)
        .and_then(|v| v["value"].as_str())
        .map(|s| s.split(';').filter_map(|p| p.split_once('=')).map(|(n, h)| (n.to_string(), h.to_string())).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    for v in mine {
        let Some(name) = v["name"].as_str().filter(|n| *n != HMAC_VAR) else { continue };
        let value = if v["public"] == false {
            json!({"secret": hashes.get(name).cloned().unwrap_or_else(|| "unknown".into())})
        } else {
            v["value"].clone()
        };
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}

/// The body of `POST /1.0/apps/{app}/env` that makes capstan's variables exactly `spec`.
pub fn set_body(owner: &str, spec: &Value) -> Value {
    let mut envs = Vec::new();
    let mut hashes = Vec::new();
    for (name, v) in spec.as_object().into_iter().flatten() {
        match v.get("secret").and_then(Value::as_str) {
            Some(s) => {
                hashes.push(format!("{name}={}", hmac(owner, name, s)));
                envs.push(json!({"name": name, "value": s, "alias": "", "private": true}));
            }
            None => envs.push(json!({"name": name, "value": text(v), "alias": "", "private": false})),
        }
    }
    if !hashes.is_empty() {
        envs.push(json!({"name": HMAC_VAR, "value": hashes.join(";"), "alias": "", "private": false}));
    }
    json!({"envs": envs, "managedBy": owner, "pruneUnused": true, "noRestart": true, "private": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_values_compare_by_hash_and_never_leave_in_the_comparable_form() {
        let declared =
            serde_json::from_value(json!({"LOG": "info", "DB": {"value": "pw-1", "private": true}, "API_TOKEN": "t"}))
                .unwrap();
        let spec = decode(&declared);
        assert_eq!(spec["DB"], json!({"secret": "pw-1"}));
        assert_eq!(spec["API_TOKEN"], json!({"secret": "t"}), "a name that says secret is private");
        let c = comparable("me", &spec);
        assert!(!c.to_string().contains("pw-1"));
        let body = set_body("me", &spec);
        let hash_var = body["envs"].as_array().unwrap().iter().find(|e| e["name"] == HMAC_VAR).unwrap().clone();
        assert!(!hash_var["value"].as_str().unwrap().contains("pw-1"));
        // Read back as tsuru shows it: capstan's, masked, with the hash variable.
        let live: Vec<Value> = body["envs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let private = e["private"] == true;
                json!({"name": e["name"], "value": if private { json!("*** (private variable)") } else { e["value"].clone() },
                       "public": !private, "managedBy": "me"})
            })
            .chain([json!({"name": "HAND", "value": "x", "public": true, "managedBy": ""})])
            .collect();
        assert_eq!(from_live("me", &live), c, "what was set reads back equal");
        let changed = decode(
            &serde_json::from_value(json!({"LOG": "info", "DB": {"value": "pw-2", "private": true}, "API_TOKEN": "t"}))
                .unwrap(),
        );
        assert_ne!(comparable("me", &changed), c);
    }
}
