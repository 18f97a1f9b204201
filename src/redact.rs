//! Keeping secrets out of everything capstan writes.
//!
//! A value is secret when the field or variable that holds it has a name that says so
//! (secret, password, passwd, token, key, credential), or is listed under `sensitive` in
//! capstan.yaml. Secret fields are shown as `(sensitive)`; and because a secret variable can be
//! substituted anywhere (inside a URL, a command line), every occurrence of a secret value in
//! any string is replaced too. A changed secret shows as changed — `(sensitive, changed)` —
//! without a byte of either value.

use serde_json::{Map, Value};
use std::collections::HashSet;

pub const MASK: &str = "(sensitive)";
pub const MASK_CHANGED: &str = "(sensitive, changed)";

/// Secret values shorter than this are not searched for inside strings (a one-letter password
/// would mask every such letter everywhere); their fields are still masked.
const MIN_SECRET_LEN: usize = 3;

#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Names listed under `sensitive`, lowercased.
    listed: HashSet<String>,
    /// Secret values, longest first so a longer secret is masked before a part of it.
    values: Vec<String>,
}

/// Whether a field or variable name says it holds a secret.
pub fn name_says_secret(name: &str) -> bool {
    // Most names contain none of the words at all: say so without allocating.
    const HINTS: [&[u8]; 5] = [b"secret", b"passw", b"token", b"credential", b"key"];
    let lower_has = |hint: &[u8]| name.as_bytes().windows(hint.len()).any(|w| w.eq_ignore_ascii_case(hint));
    if !HINTS.iter().any(|h| lower_has(h)) {
        return false;
    }
    words(name).iter().any(|w| {
        w.contains("secret")
            || w.contains("password")
            || w.contains("passwd")
            || w.contains("token")
            || w.contains("credential")
            || w == "key"
            || w == "keys"
            || (w.ends_with("key") && w.len() > 3 && !matches!(w.as_str(), "monkey" | "turkey" | "hockey" | "jockey"))
    })
}

/// Split `DB_PASSWORD`, `apiToken`, `tls.key`, `private-key` into lowercase words.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Redactor {
    pub fn new(listed: &[String]) -> Self {
        Redactor { listed: listed.iter().map(|s| s.to_lowercase()).collect(), values: Vec::new() }
    }

    pub fn is_sensitive(&self, name: &str) -> bool {
        (!self.listed.is_empty() && self.listed.contains(&name.to_lowercase())) || name_says_secret(name)
    }

    /// Remember a secret value, to mask wherever it appears.
    pub fn add_value(&mut self, v: &str) {
        if v.len() >= MIN_SECRET_LEN && !self.values.iter().any(|x| x == v) {
            self.values.push(v.to_string());
            self.values.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Learn the secret values held by sensitive fields of a value tree.
    pub fn learn(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if self.is_sensitive(k) {
                        self.learn_all(x);
                    } else {
                        self.learn(x);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.learn(x)),
            _ => {}
        }
    }

    fn learn_all(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.add_value(s),
            Value::Object(m) => m.values().for_each(|x| self.learn_all(x)),
            Value::Array(a) => a.iter().for_each(|x| self.learn_all(x)),
            _ => {}
        }
    }

    pub fn merge(&mut self, other: &Redactor) {
        self.listed.extend(other.listed.iter().cloned());
        for v in &other.values {
            self.add_value(v);
        }
    }

    /// Mask secret values inside free text.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }

    /// A value tree with every secret masked.
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), if self.is_sensitive(k) { mask(x) } else { self.value(x) }))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::String(s) => Value::String(self.text(s)),
            other => other.clone(),
        }
    }

    /// Both sides of a change, masked; a secret that differs shows as changed on the new side.
    pub fn pair(&self, before: Option<&Value>, after: Option<&Value>) -> (Option<Value>, Option<Value>) {
        match (before, after) {
            (Some(b), Some(a)) => {
                let (b, a) = self.pair_values(b, a);
                (Some(b), Some(a))
            }
            (b, a) => (b.map(|b| self.value(b)), a.map(|a| self.value(a))),
        }
    }

    fn pair_values(&self, b: &Value, a: &Value) -> (Value, Value) {
        match (b, a) {
            (Value::Object(bm), Value::Object(am)) => {
                let mut bo = Map::new();
                let mut ao = Map::new();
                for (k, bv) in bm {
                    match am.get(k) {
                        Some(av) if self.is_sensitive(k) => {
                            bo.insert(k.clone(), mask(bv));
                            let changed = fingerprint(bv) != fingerprint(av);
                            ao.insert(k.clone(), if changed { Value::String(MASK_CHANGED.into()) } else { mask(av) });
                        }
                        Some(av) => {
                            let (x, y) = self.pair_values(bv, av);
                            bo.insert(k.clone(), x);
                            ao.insert(k.clone(), y);
                        }
                        None => {
                            bo.insert(k.clone(), if self.is_sensitive(k) { mask(bv) } else { self.value(bv) });
                        }
                    }
                }
                for (k, av) in am.iter().filter(|(k, _)| !bm.contains_key(*k)) {
                    ao.insert(k.clone(), if self.is_sensitive(k) { mask(av) } else { self.value(av) });
                }
                (Value::Object(bo), Value::Object(ao))
            }
            (Value::Array(ba), Value::Array(aa)) if ba.len() == aa.len() => {
                let (x, y): (Vec<Value>, Vec<Value>) = ba.iter().zip(aa).map(|(b, a)| self.pair_values(b, a)).unzip();
                (Value::Array(x), Value::Array(y))
            }
            (Value::String(bs), Value::String(as_)) => {
                let (bt, at) = (self.text(bs), self.text(as_));
                // Both masked to the same text but different underneath: say so.
                if bt == at && bs != as_ {
                    (Value::String(bt), Value::String(MASK_CHANGED.into()))
                } else {
                    (Value::String(bt), Value::String(at))
                }
            }
            (b, a) => (self.value(b), self.value(a)),
        }
    }
}

/// A keyed hash of a secret value: what is compared to tell that a secret changed, so the
/// comparison never needs the values side by side. The key is random per process, so a
/// fingerprint means nothing outside it.
fn fingerprint(v: &Value) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    use std::sync::OnceLock;
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(v.to_string().as_bytes());
    mac.finalize().into_bytes().into()
}

/// A secret field's value: masked whatever its type (null stays null: nothing to hide).
fn mask(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        _ => Value::String(MASK.into()),
    }
}

/// `text` with the credentials of every URL in it taken out (`https://u:p@host/x` becomes
/// `https://host/x`), so that a URL can be shown wherever it came from.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '<' | '>' | '`' | '\\') || c.is_whitespace());
        let authority = &tail[..end.unwrap_or(tail.len())];
        out.push_str(authority.rfind('@').map_or(authority, |at| &authority[at + 1..]));
        rest = &tail[authority.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_that_say_secret() {
        for n in [
            "DB_PASSWORD",
            "apiToken",
            "api_key",
            "tls.key",
            "private-key",
            "AWS_SECRET_ACCESS_KEY",
            "accessKey",
            "credentials",
        ] {
            assert!(name_says_secret(n), "{n}");
        }
        for n in ["keyboard", "monkey", "LOG_LEVEL", "memory", "keystone", "tokenizer_lang"] {
            // "tokenizer" contains token: masking it is the safe side; the others are not secrets.
            if n == "tokenizer_lang" {
                assert!(name_says_secret(n));
            } else {
                assert!(!name_says_secret(n), "{n}");
            }
        }
    }

    #[test]
    fn secret_fields_and_values_everywhere_are_masked() {
        let mut r = Redactor::new(&["DATABASE_URL".into()]);
        r.add_value("hunter2");
        let v =
            json!({"environment": {"DB_PASSWORD": "hunter2", "DATABASE_URL": "pg://u:x@h", "CMD": "run --pw hunter2"}});
        let masked = r.value(&v);
        assert_eq!(
            masked,
            json!({"environment": {"DB_PASSWORD": "(sensitive)", "DATABASE_URL": "(sensitive)", "CMD": "run --pw (sensitive)"}})
        );
        assert!(!masked.to_string().contains("hunter2"));
    }

    #[test]
    fn a_changed_secret_shows_as_changed_without_its_values() {
        let r = Redactor::new(&[]);
        let (b, a) =
            r.pair(Some(&json!({"api_token": "old-one", "n": 1})), Some(&json!({"api_token": "new-one", "n": 2})));
        assert_eq!(b.unwrap(), json!({"api_token": "(sensitive)", "n": 1}));
        assert_eq!(a.unwrap(), json!({"api_token": "(sensitive, changed)", "n": 2}));
        let (b, a) = r.pair(Some(&json!({"api_token": "same"})), Some(&json!({"api_token": "same"})));
        assert_eq!(b, a);
    }

    #[test]
    fn credentials_in_urls_are_taken_out_of_any_text() {
        assert_eq!(
            url("cannot clone https://bot:s3cr%40t@git.example.com/a.git: 401"),
            "cannot clone https://git.example.com/a.git: 401"
        );
        assert_eq!(url("a http://t@h:1 and http://u:p@h2?x=y@z"), "a http://h:1 and http://h2?x=y@z");
        assert_eq!(url("no url, mail@example.com"), "no url, mail@example.com");
        assert_eq!(url("file:///srv/a@b"), "file:///srv/a@b");
    }
}
