//! `capstan.yaml`: targets, defaults and ownership for one manifest directory.
//!
//! It sits at the manifest directory's root (or is named with `--config`). Unknown keys are
//! errors with their file:line:column, checked against `schemas/capstan.schema.json`.

use crate::base::diagnostic::{Diagnostic, Diagnostics, InvalidInput, Location};
use crate::base::schema;
use crate::base::yaml::parse_documents;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod notifications;

pub use crate::source::CONFIG_FILE;

/// The owner capstan marks its resources with when capstan.yaml names none.
pub const DEFAULT_OWNER: &str = "capstan";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The platform of the manifests when no target is named (the embedded sandbox's).
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub targets: IndexMap<String, Target>,
    #[serde(default)]
    pub default_target: Option<String>,
    #[serde(default)]
    pub default_namespace: Option<String>,
    #[serde(default)]
    pub variables: IndexMap<String, VarValue>,
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub owner: Option<String>,
    /// Names of fields and variables whose values are secret, beyond those whose names say so.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// The mass-delete guard's limits.
    #[serde(default)]
    pub mass_delete: MassDelete,
    /// How transient API failures are retried.
    #[serde(default)]
    pub retry: Retry,
    /// Seconds a change of each kind may take to become ready (`job: 600`).
    #[serde(default)]
    pub timeouts: IndexMap<String, u64>,
    /// Where the daemon tells what became of each commit (see `daemon::notify`).
    #[serde(default)]
    pub notifications: Vec<notifications::Receiver>,
}

/// Retries of transient failures (5xx answers the platform marks as retryable, 429, 502-504,
/// lost connections): at most `max_attempts` sends of one request, none started after
/// `max_elapsed` seconds. Unset fields keep the defaults (8 attempts, 60 s).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub max_elapsed: Option<u64>,
}

impl Retry {
    pub fn policy(&self) -> crate::http::RetryPolicy {
        let mut p = crate::http::RetryPolicy::default();
        if let Some(n) = self.max_attempts {
            p.max_attempts = n.max(1);
        }
        if let Some(s) = self.max_elapsed {
            p.max_elapsed = std::time::Duration::from_secs(s);
        }
        p
    }
}

/// A plan that deletes more than `max_deletes` resources, or more than `max_percent` of those
/// this owner manages, is refused unless explicitly allowed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MassDelete {
    #[serde(default = "default_max_deletes")]
    pub max_deletes: usize,
    #[serde(default = "default_max_percent")]
    pub max_percent: f64,
}

fn default_max_deletes() -> usize {
    10
}

fn default_max_percent() -> f64 {
    30.0
}

impl Default for MassDelete {
    fn default() -> Self {
        MassDelete { max_deletes: default_max_deletes(), max_percent: default_max_percent() }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub platform: String,
    pub url: String,
    /// A second host of the platform's API where it has one (an auth host; default: `url`).
    #[serde(default)]
    pub auth_url: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    /// A CA certificate (PEM) to trust besides the system's: a path relative to capstan.yaml's
    /// directory, or absolute.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// What `ca_cert` holds, once `Config::read_ca_certs` has read it.
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
    /// Seconds one API request may take.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A variable's value as written: strings, numbers and booleans all become strings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VarValue {
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
}

impl VarValue {
    pub fn as_string(&self) -> String {
        match self {
            VarValue::Str(s) => s.clone(),
            VarValue::Num(n) => n.to_string(),
            VarValue::Bool(b) => b.to_string(),
        }
    }
}

impl Config {
    pub fn owner(&self) -> &str {
        self.owner.as_deref().unwrap_or(DEFAULT_OWNER)
    }

    pub fn variables(&self) -> IndexMap<String, String> {
        self.variables.iter().map(|(k, v)| (k.clone(), v.as_string())).collect()
    }

    /// Read `capstan.yaml` from `path`, or the defaults when `path` does not exist and was not
    /// named explicitly.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<(Config, Option<PathBuf>)> {
        let text = match crate::source::Budget::default().read(path, path) {
            Ok(Some(t)) => t,
            Ok(None) => anyhow::bail!("{}: not UTF-8 text", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok((Config::default(), None));
            }
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let config = Self::parse(path, &text).map_err(InvalidInput)?;
        Ok((config, Some(path.to_path_buf())))
    }

    /// Read and check each target's `ca_cert` (a relative path is relative to `dir`,
    /// capstan.yaml's directory) through `read`: the file system, or the commit capstan.yaml
    /// came from. A file that cannot be read or holds no certificate is an error naming it.
    pub fn read_ca_certs(&mut self, dir: &Path, read: impl Fn(&Path) -> anyhow::Result<Vec<u8>>) -> anyhow::Result<()> {
        for (name, t) in &mut self.targets {
            let Some(p) = &t.ca_cert else { continue };
            let path = if p.is_absolute() { p.clone() } else { dir.join(p) };
            let pem = read(&path)
                .map_err(|e| anyhow::anyhow!("target {name}: cannot read ca_cert {}: {e:#}", path.display()))?;
            crate::http::ca_certificates(&path, &pem).map_err(|e| anyhow::anyhow!("target {name}: {e:#}"))?;
            t.ca_cert = Some(path);
            t.ca_pem = Some(pem);
        }
        Ok(())
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let file: Arc<Path> = Arc::from(path);
        let mut diags = Diagnostics::default();
        let docs = parse_documents(&file, text).map_err(|d| Diagnostics(vec![d]))?;
        let Some(doc) = docs.first() else {
            return Ok(Config::default());
        };
        if docs.len() > 1 {
            diags.push(Diagnostic::error_at(Location::file_start(path), "capstan.yaml must be one YAML document"));
            return Err(diags);
        }
        let value = doc.root.to_json();
        schema::validate(schema::CONFIG_SCHEMA, doc, "", &value, &mut diags);
        if diags.has_errors() {
            diags.sort();
            return Err(diags);
        }
        let config: Config = serde_json::from_value(value).map_err(|e| {
            Diagnostics(vec![Diagnostic::error_at(Location::file_start(path), format!("invalid capstan.yaml: {e}"))])
        })?;
        if let Some(dt) = &config.default_target
            && !config.targets.contains_key(dt)
        {
            diags.push(Diagnostic::error_at(
                doc.locate("/default_target"),
                format!("default_target {dt:?} is not one of the targets declared here"),
            ));
        }
        if diags.has_errors() {
            return Err(diags);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        Config::parse(Path::new("capstan.yaml"), text)
    }

    #[test]
    fn retry_and_timeouts_are_read_with_defaults_for_what_is_not_written() {
        let c = parse("retry: {max_attempts: 2}\ntimeouts: {job: 9}\n").unwrap();
        let p = c.retry.policy();
        assert_eq!((p.max_attempts, p.max_elapsed), (2, Duration::from_secs(60)));
        assert_eq!(c.timeouts.get("job"), Some(&9));
        let p = parse("retry: {max_elapsed: 5}\n").unwrap().retry.policy();
        assert_eq!((p.max_attempts, p.max_elapsed), (8, Duration::from_secs(5)));
        assert_eq!(Config::default().retry.policy(), crate::http::RetryPolicy::default());
    }

    #[test]
    fn unknown_or_wrong_retry_and_timeout_keys_are_errors_at_their_place() {
        let e = parse("retry:\n  attempts: 2\n").unwrap_err();
        let d = &e.0[0];
        assert_eq!(d.location, Some(Location::new("capstan.yaml", 2, 3)), "{d:?}");
        assert!(d.message.contains("attempts"), "{}", d.message);
        let e = parse("timeouts:\n  job: soon\n").unwrap_err();
        assert_eq!(e.0[0].location, Some(Location::new("capstan.yaml", 2, 8)), "{:?}", e.0[0]);
        let e = parse("retry: {max_attempts: 0}\n").unwrap_err();
        assert_eq!(e.0[0].location.as_ref().map(|l| l.line), Some(1), "{:?}", e.0[0]);
    }
}
