//! Keeping secrets out of everything capstan writes.
//!
//! A value is secret when the field or variable that holds it has a name that says so
//! (secret, password, passwd, token, key, credential), or is listed under `sensitive` in
//! capstan.yaml. Secret fields are shown as `(sensitive)`; and because a secret variable can be
//! substituted anywhere (inside a URL, a command line), every occurrence of a secret value in
//! any string is replaced too. A changed secret shows as changed — `(sensitive, changed)` —
//! without a byte of either value.

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

pub const MASK: &str = "(sensitive)";
pub const MASK_CHANGED: &str = "(sensitive, changed)";

/// Secret values shorter than this are not searched for inside strings (a one-letter password
/// would mask every such letter everywhere); their fields are still masked, and so are the
/// strings they were substituted into.
const MIN_SECRET_LEN: usize = 3;

/// Keys of one mapping that a secret was substituted into, compared with the live keys beside
/// them (more would make a mapping of many such keys quadratic; they are masked all the same).
const SECRET_KEYS_CHECKED: usize = 64;

/// Text that has been through a [`Redactor`] ([`Redactor::redact`]): only a redactor makes one,
/// so what takes it (a step's outcome, the journal, the daemon's events) cannot be handed text
/// that came from an API or a manifest raw.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Text another capstan process redacted before it shared it (an event relayed through the
/// shared store, `daemon::relay`): what a [`Redacted`] serialized, read back. Only
/// `#[serde(deserialize_with)]` of a relayed event uses it.
pub(crate) fn relayed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Redacted, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Redacted)
}

/// As [`relayed`], for an optional one.
pub(crate) fn relayed_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Redacted>, D::Error> {
    <Option<String> as serde::Deserialize>::deserialize(d).map(|s| s.map(Redacted))
}

impl std::ops::Deref for Redacted {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Default)]
pub struct Redactor {
    /// Names listed under `sensitive`, lowercased.
    listed: HashSet<String>,
    /// Secret values.
    values: HashSet<String>,
    /// Strings secret variables were substituted into, with the literal parts around the
    /// secrets: the same field on the live side holds the old secret in the same place.
    templates: HashMap<String, Arc<[String]>>,
    /// Finds every value in one pass, longest first (a longer secret is masked before a part of
    /// it); built when first needed after the values change.
    matcher: OnceLock<Option<AhoCorasick>>,
    /// What [`Redactor::is_sensitive`] said of each distinct key [`Redactor::learn`] met (ten
    /// thousand resources repeat a few dozen keys): a key's verdict is learnt once, not per
    /// occurrence. At most [`VERDICTS_KEPT`] keys.
    verdicts: HashMap<Box<str>, bool, foldhash::fast::RandomState>,
}

/// Distinct keys whose verdict a redactor keeps; keys beyond are judged every time.
const VERDICTS_KEPT: usize = 4096;

/// Names only: a redactor's values are what it keeps out of every output.
impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut listed: Vec<&String> = self.listed.iter().collect();
        listed.sort();
        f.debug_struct("Redactor")
            .field("listed", &listed)
            .field("values", &self.values.len())
            .field("templates", &self.templates.len())
            .finish()
    }
}
/// The name of a variable or label written as a pair (`{"name": N, "value": V}`, Mesos' and
/// Kubernetes' environments; `{"key": K, "value": V}`, Mesos' labels and Docker parameters): the
/// name says whether the value is secret, and the field `key` there is no key.
fn pair_name(m: &Map<String, Value>) -> Option<&str> {
    m.get("value")?;
    m.get("name").or_else(|| m.get("key")).and_then(Value::as_str)
}

/// Whether a field or variable name says it holds a secret.
pub fn name_says_secret(name: &str) -> bool {
    // Most names contain none of the words at all: say so without allocating, in one pass
    // that compares only where a word's first letter is (every key of every resource is asked).
    let b = name.as_bytes();
    let at = |i: usize, hint: &[u8]| b.len() - i >= hint.len() && b[i..i + hint.len()].eq_ignore_ascii_case(hint);
    let hinted = (0..b.len()).any(|i| match b[i].to_ascii_lowercase() {
        b's' => at(i, b"secret"),
        b'p' => at(i, b"passw"),
        b't' => at(i, b"token"),
        b'c' => at(i, b"credential"),
        b'k' => at(i, b"key"),
        _ => false,
    });
    if !hinted {
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
        Redactor { listed: listed.iter().map(|s| s.to_lowercase()).collect(), ..Redactor::default() }
    }

    pub fn is_sensitive(&self, name: &str) -> bool {
        (!self.listed.is_empty() && self.listed.contains(&name.to_lowercase())) || name_says_secret(name)
    }

    /// [`Redactor::is_sensitive`], remembered per distinct key.
    fn key_is_sensitive(&mut self, key: &str) -> bool {
        if let Some(&verdict) = self.verdicts.get(key) {
            return verdict;
        }
        let verdict = self.is_sensitive(key);
        if self.verdicts.len() < VERDICTS_KEPT {
            self.verdicts.insert(key.into(), verdict);
        }
        verdict
    }

    /// Remember a secret value, to mask wherever it appears.
    pub fn add_value(&mut self, v: &str) {
        if v.len() >= MIN_SECRET_LEN && !self.values.contains(v) {
            self.values.insert(v.to_string());
            self.matcher = OnceLock::new();
        }
    }

    /// Remember a string that secrets were substituted into, with the literal parts around them
    /// (`run --key ${SECRET}`: `["run --key ", ""]`): it is shown with each secret masked, and
    /// so is the same field on the other side of a change.
    pub fn add_template(&mut self, text: &str, parts: Vec<String>) {
        if !self.templates.contains_key(text) {
            self.templates.insert(text.to_string(), parts.into());
        }
    }

    /// Learn the secret values held by sensitive fields of a value tree.
    pub fn learn(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                let pair = pair_name(m);
                if let (Some(name), Some(value)) = (pair, m.get("value"))
                    && self.is_sensitive(name)
                {
                    self.learn_all(value);
                }
                for (k, x) in m {
                    if pair.is_some() && (k == "name" || k == "key") {
                        continue;
                    }
                    if self.key_is_sensitive(k) {
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

    /// Learn the old secrets a change's live side holds: where the declaration has a string a
    /// secret was substituted into, the live string in the same place (or a live key beside
    /// such a key) holds the secret it had then, between the same literal parts.
    pub fn learn_change(&mut self, before: &Value, after: &Value) {
        if self.templates.is_empty() {
            return;
        }
        match (before, after) {
            (Value::Object(bm), Value::Object(am)) => {
                // A key that is nothing but a secret would match every live key: not learnt from.
                let keys: Vec<Arc<[String]>> = am
                    .keys()
                    .filter_map(|k| self.templates.get(k).cloned())
                    .filter(|parts| parts.iter().any(|p| !p.is_empty()))
                    .take(SECRET_KEYS_CHECKED)
                    .collect();
                for (k, bv) in bm {
                    match am.get(k) {
                        Some(av) => self.learn_change(bv, av),
                        None => {
                            if let Some(gaps) = keys.iter().find_map(|parts| secrets_between(parts, k)) {
                                gaps.iter().for_each(|g| self.add_value(g));
                            }
                        }
                    }
                }
            }
            (Value::Array(ba), Value::Array(aa)) if ba.len() == aa.len() => {
                ba.iter().zip(aa).for_each(|(b, a)| self.learn_change(b, a));
            }
            (Value::String(bs), Value::String(as_)) if bs != as_ => {
                if let Some(parts) = self.templates.get(as_).cloned()
                    && let Some(gaps) = secrets_between(&parts, bs)
                {
                    gaps.iter().for_each(|g| self.add_value(g));
                }
            }
            _ => {}
        }
    }

    /// [`Redactor::learn_change`] for every change of a set that has both sides.
    pub fn learn_changes(&mut self, changes: &crate::diff::ChangeSet) {
        for c in &changes.changes {
            if let (Some(before), Some(after)) = (&c.before, &c.after) {
                self.learn_change(before, after);
            }
        }
    }

    pub fn merge(&mut self, other: &Redactor) {
        self.listed.extend(other.listed.iter().cloned());
        // A name listed now may have been judged not secret before.
        self.verdicts.clear();
        for v in &other.values {
            self.add_value(v);
        }
        for (t, parts) in &other.templates {
            self.templates.entry(t.clone()).or_insert_with(|| parts.clone());
        }
    }

    fn matcher(&self) -> Option<&AhoCorasick> {
        self.matcher
            .get_or_init(|| {
                if self.values.is_empty() {
                    return None;
                }
                AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&self.values).ok()
            })
            .as_ref()
    }

    /// Text from outside (an API's answer, a manifest) as it may enter capstan's outcomes,
    /// journal and events: with every secret value masked.
    pub fn redact(&self, s: &str) -> Redacted {
        Redacted(self.text(s))
    }

    /// Mask secret values inside free text.
    pub fn text(&self, s: &str) -> String {
        match self.templates.get(s) {
            Some(parts) => self.join_masked(parts),
            None => self.values_masked(s),
        }
    }

    fn values_masked(&self, s: &str) -> String {
        match self.matcher() {
            Some(m) if m.is_match(s) => {
                let mut out = String::with_capacity(s.len());
                m.replace_all_with(s, &mut out, |_, _, out| {
                    out.push_str(MASK);
                    true
                });
                out
            }
            _ => s.to_string(),
        }
    }

    /// A template's literal parts with every secret masked.
    fn join_masked(&self, parts: &[String]) -> String {
        parts.iter().map(|p| self.values_masked(p)).collect::<Vec<_>>().join(MASK)
    }

    /// A diagnostic's message and note, masked.
    pub fn diagnostic(&self, d: &mut crate::base::diagnostic::Diagnostic) {
        d.message = self.text(&d.message);
        if let Some(related) = d.related.as_mut() {
            related.1 = self.text(&related.1);
        }
    }

    /// A value tree with every secret masked, in keys too.
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let pair = pair_name(m);
                let mut out = Map::with_capacity(m.len());
                for (k, x) in m {
                    let secret = match pair {
                        Some(_) if k == "name" || k == "key" => false,
                        Some(name) if k == "value" => self.is_sensitive(name),
                        _ => self.is_sensitive(k),
                    };
                    insert_unique(&mut out, self.text(k), if secret { mask(x) } else { self.value(x) });
                }
                Value::Object(out)
            }
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
                // Keys a secret was substituted into: a live key beside them may hold an old one.
                let secret_keys: Vec<&Arc<[String]>> =
                    am.keys().filter_map(|k| self.templates.get(k)).take(SECRET_KEYS_CHECKED).collect();
                for (k, bv) in bm {
                    match am.get(k) {
                        Some(av) if self.is_sensitive(k) => {
                            insert_unique(&mut bo, self.text(k), mask(bv));
                            let changed = fingerprint(bv) != fingerprint(av);
                            let av = if changed { Value::String(MASK_CHANGED.into()) } else { mask(av) };
                            insert_unique(&mut ao, self.text(k), av);
                        }
                        Some(av) => {
                            let (x, y) = self.pair_values(bv, av);
                            insert_unique(&mut bo, self.text(k), x);
                            insert_unique(&mut ao, self.text(k), y);
                        }
                        None => {
                            let key = match secret_keys.iter().find(|parts| secrets_between(parts, k).is_some()) {
                                Some(parts) => self.join_masked(parts),
                                None => self.text(k),
                            };
                            insert_unique(&mut bo, key, if self.is_sensitive(k) { mask(bv) } else { self.value(bv) });
                        }
                    }
                }
                for (k, av) in am.iter().filter(|(k, _)| !bm.contains_key(*k)) {
                    insert_unique(&mut ao, self.text(k), if self.is_sensitive(k) { mask(av) } else { self.value(av) });
                }
                (Value::Object(bo), Value::Object(ao))
            }
            (Value::Array(ba), Value::Array(aa)) if ba.len() == aa.len() => {
                let (x, y): (Vec<Value>, Vec<Value>) = ba.iter().zip(aa).map(|(b, a)| self.pair_values(b, a)).unzip();
                (Value::Array(x), Value::Array(y))
            }
            (Value::String(bs), Value::String(as_)) => {
                let at = self.text(as_);
                let bt = match self.templates.get(as_) {
                    // The declared string carries a secret: the live one in its place carries the
                    // old one, between the same parts (or, when those changed too, anywhere).
                    Some(parts) if secrets_between(parts, bs).is_some() => self.join_masked(parts),
                    Some(_) => MASK.to_string(),
                    None => self.text(bs),
                };
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

/// The secrets in `s` if it is made of `parts` with something between each two of them: what
/// lies between (`["run --key ", ""]` and `run --key abc` give `["abc"]`).
fn secrets_between<'s>(parts: &[String], s: &'s str) -> Option<Vec<&'s str>> {
    let (first, last) = (parts.first()?, parts.last()?);
    if parts.len() < 2
        || s.len() < first.len() + last.len()
        || !s.starts_with(first.as_str())
        || !s.ends_with(last.as_str())
    {
        return None;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    let mut gaps = Vec::with_capacity(parts.len() - 1);
    for part in &parts[1..parts.len() - 1] {
        let at = rest.find(part.as_str())?;
        gaps.push(&rest[..at]);
        rest = &rest[at + part.len()..];
    }
    gaps.push(rest);
    Some(gaps)
}

/// Insert under `key`, or under `key #2`, `#3`... when masking made two keys the same.
fn insert_unique(map: &mut Map<String, Value>, key: String, v: Value) {
    if !map.contains_key(&key) {
        map.insert(key, v);
        return;
    }
    let free = (2..).map(|n| format!("{key} #{n}")).find(|k| !map.contains_key(k)).expect("a free name");
    map.insert(free, v);
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

    /// A key's verdict is remembered, and forgotten when a merge lists more names: a value met
    /// under a key judged not secret is learnt once the key is listed.
    #[test]
    fn a_remembered_verdict_follows_the_listed_names() {
        let mut r = Redactor::new(&[]);
        r.learn(&json!({"shard": "alpha-value", "db_password": "hunter22"}));
        r.learn(&json!({"shard": "alpha-value", "db_password": "other-pass"}));
        assert_eq!(r.redact("hunter22 other-pass alpha-value").as_str(), "(sensitive) (sensitive) alpha-value");
        r.merge(&Redactor::new(&["SHARD".to_string()]));
        r.learn(&json!({"shard": "alpha-value"}));
        assert_eq!(r.redact("alpha-value").as_str(), "(sensitive)");
    }

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
    fn a_secret_variable_as_a_name_value_pair_is_learnt_and_masked() {
        let mut r = Redactor::new(&[]);
        let v =
            json!({"variables": [{"name": "ADMIN_PASSWORD", "value": "pw-77a1"}, {"name": "LOG", "value": "info"}]});
        r.learn(&v);
        let masked = r.value(&v);
        assert_eq!(
            masked,
            json!({"variables": [{"name": "ADMIN_PASSWORD", "value": "(sensitive)"}, {"name": "LOG", "value": "info"}]})
        );
        let labels = json!([{"key": "task_type", "value": "node"}, {"key": "api_token", "value": "t-9q"}]);
        r.learn(&labels);
        assert_eq!(
            r.value(&labels),
            json!([{"key": "task_type", "value": "node"}, {"key": "api_token", "value": "(sensitive)"}])
        );
        assert_eq!(r.text("node and t-9q"), "node and (sensitive)", "a pair's name is no secret; its secret value is");
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
    fn a_field_a_secret_was_substituted_into_is_masked_on_both_sides() {
        let mut r = Redactor::new(&[]);
        r.add_template("run --key k2 --fast", vec!["run --key ".into(), " --fast".into()]);
        let (b, a) = r.pair(Some(&json!({"CMD": "run --key k1 --fast"})), Some(&json!({"CMD": "run --key k2 --fast"})));
        assert_eq!(b.unwrap(), json!({"CMD": "run --key (sensitive) --fast"}));
        assert_eq!(a.unwrap(), json!({"CMD": "(sensitive, changed)"}));
        // Other parts changed too: the old string is hidden whole.
        let (b, _) = r.pair(Some(&json!({"CMD": "go k1"})), Some(&json!({"CMD": "run --key k2 --fast"})));
        assert_eq!(b.unwrap(), json!({"CMD": "(sensitive)"}));
    }

    #[test]
    fn old_secrets_are_learnt_from_the_live_side_and_masked_everywhere() {
        let mut r = Redactor::new(&[]);
        r.add_template("run --key new-1", vec!["run --key ".into(), String::new()]);
        r.add_template("t-new-1", vec!["t-".into(), String::new()]);
        r.learn_change(
            &json!({"CMD": "run --key old-1", "tags": {"t-old-1": "v"}}),
            &json!({"CMD": "run --key new-1", "tags": {"t-new-1": "v"}}),
        );
        assert_eq!(r.text("a message about old-1"), "a message about (sensitive)");
        let masked = r.value(&json!({"tags": {"t-old-1": "v", "t-new-1": "w"}}));
        assert_eq!(masked, json!({"tags": {"t-(sensitive)": "v", "t-(sensitive) #2": "w"}}));
    }

    #[test]
    fn many_secrets_are_added_and_searched_in_one_pass() {
        let mut r = Redactor::new(&[]);
        for i in 0..20_000 {
            r.add_value(&format!("secret-{i:05}"));
        }
        r.add_value("secret-00001-longer");
        assert_eq!(r.text("a secret-00001-longer b secret-19999"), "a (sensitive) b (sensitive)");
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
