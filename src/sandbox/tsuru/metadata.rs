//! Labels and annotations (`metadata` of apps and jobs): read from a request, checked as tsuru
//! does, merged, shown.

use super::Fail;
use super::input::Node;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Labels and annotations: `{name, value}` lists.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Metadata {
    pub labels: Vec<Item>,
    pub annotations: Vec<Item>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Item {
    pub name: String,
    pub value: String,
    #[serde(skip)]
    pub delete: bool,
}

impl Metadata {
    /// `metadata` of a request.
    pub fn parse(n: Node) -> Result<Metadata, Fail> {
        let items = |n: Node| -> Result<Vec<Item>, Fail> {
            n.items()?
                .into_iter()
                .map(|i| {
                    Ok(Item {
                        name: i.get("name").string()?,
                        value: i.get("value").string()?,
                        delete: i.get("delete").bool()?.unwrap_or(false),
                    })
                })
                .collect()
        };
        Ok(Metadata { labels: items(n.get("labels"))?, annotations: items(n.get("annotations"))? })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// tsuru's `Metadata.Validate`: Kubernetes qualified names, label values, no `tsuru.io/`.
    pub fn validate(&self) -> Result<(), Fail> {
        let mut errors = Vec::new();
        for (field, items, labels) in
            [("metadata.labels", &self.labels, true), ("metadata.annotations", &self.annotations, false)]
        {
            for i in items.iter().filter(|i| !i.delete) {
                if i.name.starts_with("tsuru.io/") {
                    errors.push("prefix tsuru.io/ is private".to_string());
                }
                let name = if labels { i.name.clone() } else { i.name.to_lowercase() };
                if let Err(e) = qualified_name(&name) {
                    errors.push(format!("{field}: Invalid value: {:?}: {e}", i.name));
                }
                if labels && !i.value.is_empty() && !label_part(&i.value) {
                    errors.push(format!(
                        "{field}: Invalid value: {:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)",
                        i.value
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(Fail::bad(errors.join("\n"))) }
    }

    /// tsuru's `Metadata.Update`: each item replaces the one of its name, `delete` removes it.
    pub fn merge(&mut self, new: &Metadata) {
        for (list, items) in [(&mut self.labels, &new.labels), (&mut self.annotations, &new.annotations)] {
            for item in items {
                list.retain(|i| i.name != item.name);
                if !item.delete {
                    list.push(item.clone());
                }
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let items = |l: &[Item]| -> Vec<Value> {
            l.iter().map(|i| json!({"name": i.name, "value": i.value, "delete": false})).collect()
        };
        json!({"labels": items(&self.labels), "annotations": items(&self.annotations)})
    }
}

/// A label value, or a qualified name's name part: at most 63 characters of alphanumerics,
/// `-`, `_`, `.`, starting and ending with an alphanumeric.
fn label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A Kubernetes qualified name: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(s: &str) -> Result<(), &'static str> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                    && b[0] != b'-'
                    && b[b.len() - 1] != b'-'
            });
        if !ok {
            return Err("prefix part must be a lowercase RFC 1123 subdomain");
        }
    }
    if label_part(name) {
        Ok(())
    } else {
        Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)",
        )
    }
}
