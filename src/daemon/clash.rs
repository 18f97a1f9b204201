//! What each unit of a commit applies to, read before any unit is started or reconciled: its
//! capstan.yaml's target, platform and owner (`target::Identity`) and the target's key. From
//! it, `Daemon::discover` starts afresh a unit whose capstan.yaml names another target or owner
//! than it was started for, and refuses every unit that shares a target and an owner with
//! another (each would prune what the other declares): all of them, so what is refused depends
//! on the commit alone, never on which units a daemon had started before — two daemons started
//! at different commits refuse the same units, and no unit applies what another declares.

use super::unit_name;
use crate::config::Config;
use crate::lock::TargetKey;
use crate::source::git::GitSource;
use crate::target::Identity;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// What a unit's capstan.yaml names at a commit.
pub(super) struct Named {
    pub identity: Identity,
    /// The target's key with the addresses it resolves to (none: the embedded sandbox, which
    /// is the unit's own).
    pub key: Option<TargetKey>,
}

/// What the capstan.yaml of each of `paths` names at `head`, by unit name. A unit whose
/// capstan.yaml cannot be read or names no known target is left out: starting it, or its
/// reconcile, says why.
pub(super) async fn named(
    source: Arc<GitSource>,
    head: &str,
    paths: &[String],
    target: Option<String>,
) -> BTreeMap<String, Named> {
    let (head, paths) = (head.to_string(), paths.to_vec());
    let identities = tokio::task::spawn_blocking(move || {
        paths
            .iter()
            .filter_map(|path| {
                let file = Path::new(path).join("capstan.yaml");
                let text = String::from_utf8(source.read_file(&head, &file).ok()?).ok()?;
                let config = Config::parse(&file, &text).ok()?;
                Some((unit_name(path), Identity::of(&config, target.as_deref()).ok()?))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut named = BTreeMap::new();
    for (name, identity) in identities {
        let key = match identity.embedded() {
            true => None,
            false => match TargetKey::for_url(&identity.target).await {
                Ok(k) => Some(k),
                Err(_) => continue,
            },
        };
        named.insert(name, Named { identity, key });
    }
    named
}

/// The units that share a target (a name or an address: `TargetKey::overlaps`) and an owner
/// with another, each with why it is refused.
pub(super) fn clashes(named: &BTreeMap<String, Named>) -> BTreeMap<String, String> {
    let mut first: HashMap<(&str, &str), &str> = HashMap::new();
    let mut refused = BTreeMap::new();
    for (name, n) in named {
        let Some(key) = &n.key else { continue };
        for lock in std::iter::once(&key.name).chain(&key.addresses) {
            let owner = n.identity.owner.as_str();
            match first.get(&(lock.as_str(), owner)) {
                Some(other) if *other != name.as_str() => {
                    let why = |a: &str, b: &str| {
                        format!(
                            "units {a} and {b} both apply to {} with owner {owner:?}: each would prune what the other declares, so neither is reconciled; give one of them its own `owner:` in capstan.yaml",
                            crate::redact::url(lock)
                        )
                    };
                    refused.entry(other.to_string()).or_insert_with(|| why(other, name));
                    refused.entry(name.clone()).or_insert_with(|| why(other, name));
                }
                Some(_) => {}
                None => {
                    first.insert((lock.as_str(), owner), name.as_str());
                }
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(target: &str, owner: &str, addresses: &[&str]) -> Named {
        let identity = Identity { target: target.into(), platform: "p".into(), owner: owner.into() };
        let key = TargetKey {
            name: target.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            written: target.into(),
        };
        Named { identity, key: Some(key) }
    }

    #[test]
    fn every_unit_sharing_a_target_and_an_owner_is_refused_and_no_other() {
        let mut units = BTreeMap::new();
        units.insert("a".to_string(), named("http://127.0.0.1:7", "o", &[]));
        units.insert("b".to_string(), named("http://localhost:7", "o", &["http://127.0.0.1:7"]));
        units.insert("c".to_string(), named("http://127.0.0.1:7", "other", &[]));
        units.insert("d".to_string(), named("http://127.0.0.1:8", "o", &[]));
        units.insert("e".to_string(), named("http://127.0.0.1:7", "o", &[]));
        let refused = clashes(&units);
        assert_eq!(refused.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "e"]);
        assert!(
            refused["b"].contains("units a and b both apply to http://127.0.0.1:7 with owner \"o\""),
            "{refused:?}"
        );
    }
}
