//! Request input as tsuru's handlers read it (api/middleware.go): `ParseInput` decodes a JSON
//! body, or else the form (url-encoded body and query string), into a struct with keys matched
//! case-insensitively; `InputValue(s)` reads one parameter by its exact name from the form and
//! the JSON body's top level.

use super::{Fail, Req};
use axum::http::header;
use serde_json::{Map, Value};

pub struct Input {
    /// The JSON body, or the form as a tree (`Envs.0.Name` → `{"Envs": {"0": {"Name": ..}}}`).
    root: Value,
    form: bool,
    /// The query string, and a url-encoded body's pairs: what `r.Form` holds.
    pairs: Vec<(String, String)>,
    raw: String,
}

impl Input {
    pub fn parse(req: &Req) -> Result<Input, Fail> {
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("")
            .to_string();
        let mut pairs = req.query.clone();
        let raw = String::from_utf8_lossy(&req.body).into_owned();
        if content_type == "application/x-www-form-urlencoded" {
            pairs.extend(super::super::query_pairs(Some(&raw)));
        }
        if content_type == "application/json" {
            let root = if req.body.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(&req.body)
                    .map_err(|e| Fail::bad(format!("unable to parse as json: {raw:?} - {e}")))?
            };
            return Ok(Input { root, form: false, pairs, raw });
        }
        Ok(Input { root: form_tree(&pairs), form: true, pairs, raw })
    }

    /// `InputValues(r, key)`: the form's values of `key`, then the JSON body's (a list's
    /// elements, or the one value), as Go's `fmt.Sprint` prints them.
    pub fn values(&self, key: &str) -> Vec<String> {
        let mut out: Vec<String> = self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect();
        if !self.form
            && let Some(v) = self.root.get(key)
        {
            match v {
                Value::Array(items) => out.extend(items.iter().map(sprint)),
                other => out.push(sprint(other)),
            }
        }
        out
    }

    /// `InputValue(r, key)`: the first value, or `""`.
    pub fn value(&self, key: &str) -> String {
        self.values(key).into_iter().next().unwrap_or_default()
    }

    /// A boolean read by name in any case (the sandbox's reading of `noRestart`, `force`).
    pub fn flag(&self, key: &str) -> bool {
        let from_pairs = self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone());
        let from_json = if self.form { None } else { self.root.as_object().and_then(|m| get_ci(m, key)).map(sprint) };
        from_pairs.or(from_json).and_then(|v| parse_bool(&v)).unwrap_or(false)
    }

    /// The decoded body, for struct-like reading.
    pub fn node(&self) -> Node<'_> {
        Node { v: Some(&self.root), form: self.form, path: "", raw: &self.raw }
    }
}

/// A value in the decoded input, read as one field of a Go struct would be.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    v: Option<&'a Value>,
    form: bool,
    raw: &'a str,
    path: &'a str,
}

impl<'a> Node<'a> {
    /// The field `name`, matched as Go matches keys: exactly, else in any case.
    pub fn get(&self, name: &'static str) -> Node<'a> {
        let v = self.v.and_then(|v| v.as_object()).and_then(|m| get_ci(m, name));
        Node { v, form: self.form, raw: self.raw, path: name }
    }

    /// The first of several spellings that is present.
    pub fn any(&self, names: &[&'static str]) -> Node<'a> {
        names.iter().map(|n| self.get(n)).find(|n| n.present()).unwrap_or(Node { v: None, ..*self })
    }

    /// Present and not `null`.
    pub fn present(&self) -> bool {
        !matches!(self.v, None | Some(Value::Null))
    }

    fn wrong(&self, want: &str) -> Fail {
        if self.form {
            Fail::bad(format!("unable to decode form: {} is not a valid {want}", self.path))
        } else {
            let got = match self.v {
                Some(Value::Bool(_)) => "bool",
                Some(Value::Number(_)) => "number",
                Some(Value::String(_)) => "string",
                Some(Value::Array(_)) => "array",
                Some(Value::Object(_)) => "object",
                _ => "null",
            };
            Fail::bad(format!(
                "unable to parse as json: {:?} - json: cannot unmarshal {got} into Go struct field .{} of type {want}",
                self.raw, self.path
            ))
        }
    }

    /// A string field: `None` when absent.
    pub fn str(&self) -> Result<Option<String>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) if self.form => Ok(a.first().and_then(|v| v.as_str()).map(String::from)),
            _ => Err(self.wrong("string")),
        }
    }

    /// A string field, `""` when absent.
    pub fn string(&self) -> Result<String, Fail> {
        Ok(self.str()?.unwrap_or_default())
    }

    pub fn bool(&self) -> Result<Option<bool>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if self.form => parse_bool(s).map(Some).ok_or_else(|| self.wrong("bool")),
            _ => Err(self.wrong("bool")),
        }
    }

    pub fn int(&self) -> Result<Option<i64>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) if self.form => s.trim().parse().map(Some).map_err(|_| self.wrong("int")),
            _ => Err(self.wrong("int")),
        }
    }

    pub fn float(&self) -> Result<Option<f64>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) if self.form => s.trim().parse().map(Some).map_err(|_| self.wrong("float64")),
            _ => Err(self.wrong("float64")),
        }
    }

    /// A list of strings: `None` when absent (a present empty list is `Some(vec![])`).
    pub fn strings(&self) -> Result<Option<Vec<String>>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(|| self.wrong("[]string")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) if self.form => Ok(Some(vec![s.clone()])),
            Some(Value::Object(m)) if self.form => {
                Ok(Some(indexed(m).filter_map(|v| v.as_str()).map(String::from).collect()))
            }
            _ => Err(self.wrong("[]string")),
        }
    }

    /// A list of objects (`envs`, `metadata.labels`).
    pub fn items(&self) -> Result<Vec<Node<'a>>, Fail> {
        let item = |v: &'a Value| Node { v: Some(v), form: self.form, raw: self.raw, path: self.path };
        match self.v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.iter().map(item).collect()),
            Some(Value::Object(m)) if self.form => Ok(indexed(m).map(item).collect()),
            _ => Err(self.wrong("array")),
        }
    }

    /// A free-form object (`parameters`, `routeropts`), as given.
    pub fn object(&self) -> Result<Option<Map<String, Value>>, Fail> {
        match self.v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            _ => Err(self.wrong("map")),
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A key exactly, else the first key equal to it in any case.
fn get_ci<'v>(m: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    m.get(name).or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// An object whose keys are list indices, in index order.
fn indexed(m: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    let mut entries: Vec<(u64, &Value)> = m.iter().filter_map(|(k, v)| k.parse().ok().map(|i| (i, v))).collect();
    entries.sort_by_key(|(i, _)| *i);
    entries.into_iter().map(|(_, v)| v)
}

/// The form's pairs as a tree: dotted keys nest, a repeated key becomes a list.
fn form_tree(pairs: &[(String, String)]) -> Value {
    let mut root = Map::new();
    for (k, v) in pairs {
        let parts: Vec<&str> = k.split('.').collect();
        let mut at = &mut root;
        for (i, part) in parts.iter().enumerate() {
            // Keys match in any case (`Envs.0.Name` and `envs.0.private` are one item).
            let existing = at.keys().find(|k| k.eq_ignore_ascii_case(part)).cloned();
            let part = &existing.as_deref().unwrap_or(part);
            if i + 1 == parts.len() {
                match at.get_mut(*part) {
                    Some(Value::String(first)) => {
                        let first = std::mem::take(first);
                        at.insert(part.to_string(), Value::Array(vec![Value::String(first), Value::String(v.clone())]));
                    }
                    Some(Value::Array(list)) => list.push(Value::String(v.clone())),
                    Some(_) => {}
                    None => {
                        at.insert(part.to_string(), Value::String(v.clone()));
                    }
                }
            } else {
                let next = at.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
                if !next.is_object() {
                    *next = Value::Object(Map::new());
                }
                let Value::Object(m) = next else { unreachable!() };
                at = m;
            }
        }
    }
    Value::Object(root)
}

/// A JSON value as Go's `fmt.Sprint` prints what `encoding/json` decoded.
fn sprint(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// tsuru's `processTags`: trimmed, blanks dropped, first occurrence kept.
pub fn process_tags(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_string();
        if !t.is_empty() && !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Method};

    fn req(content_type: &str, query: &str, body: &str) -> Req {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        Req {
            method: Method::POST,
            path: "/".into(),
            params: vec![],
            query: super::super::super::query_pairs(Some(query)),
            headers,
            body: body.to_string().into(),
        }
    }

    #[test]
    fn forms_nest_by_dots_and_match_keys_in_any_case() {
        let body = "Envs.0.Name=A&Envs.0.Value=x%3Ay&Envs.1.Name=B&envs.1.private=true&ManagedBy=me&PruneUnused=1";
        let input = Input::parse(&req("application/x-www-form-urlencoded", "noRestart=true", body)).unwrap();
        let n = input.node();
        let envs = n.get("envs").items().unwrap();
        assert_eq!(envs.len(), 2);
        assert_eq!(envs[0].get("value").string().unwrap(), "x:y");
        assert_eq!(envs[1].get("Private").bool().unwrap(), Some(true));
        assert_eq!(n.get("managedBy").string().unwrap(), "me");
        assert_eq!(n.get("pruneUnused").bool().unwrap(), Some(true));
        assert!(input.flag("norestart"), "the query string is part of the form");
    }

    #[test]
    fn json_is_typed_and_values_read_the_top_level() {
        let input =
            Input::parse(&req("application/json; charset=utf-8", "", r#"{"cname": ["a", "b"], "units": 2}"#)).unwrap();
        assert_eq!(input.values("cname"), ["a", "b"]);
        assert_eq!(input.value("units"), "2");
        let wrong = Input::parse(&req("application/json", "", r#"{"tags": "x"}"#)).unwrap();
        assert!(wrong.node().get("tags").strings().is_err());
        assert!(Input::parse(&req("application/json", "", "{")).is_err());
        let repeated = Input::parse(&req("application/x-www-form-urlencoded", "", "tags=a&tags=b")).unwrap();
        assert_eq!(repeated.node().get("Tags").strings().unwrap(), Some(vec!["a".into(), "b".into()]));
    }
}
