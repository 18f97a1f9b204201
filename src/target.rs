//! Where changes go: the target capstan.yaml (or `--target`) names, or else the embedded
//! sandbox of the manifests' platform, started from the sandbox registry and kept running for
//! as long as the target is used.

use crate::config::{Config, Target};
use crate::providers::{self, Connection, Provider};
use crate::sandbox::{Platform, Sandbox, SandboxOptions};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;

/// Where changes go: a configured target, or the embedded sandbox.
pub struct Connected {
    pub provider: Box<dyn Provider>,
    /// What to call the target in messages.
    pub description: String,
    /// What identifies the target for locking and journalling: its normalised URL and
    /// addresses, or the embedded sandbox's state file.
    pub key: crate::lock::TargetKey,
    /// The embedded sandbox, kept running for as long as the target is used.
    pub embedded: Option<Sandbox>,
}

impl Connected {
    /// Stop the embedded sandbox (writing its state) if there is one.
    pub async fn close(self) -> anyhow::Result<()> {
        let Connected { provider, embedded, .. } = self;
        // The provider's own connections (an event stream) end first, so the sandbox does not
        // wait for them to finish.
        drop(provider);
        if let Some(s) = embedded {
            tokio::task::yield_now().await;
            s.shutdown().await?;
        }
        Ok(())
    }
}

/// The platform the manifests are written for.
pub fn platform_of(config: &Config, target: Option<&str>) -> anyhow::Result<String> {
    Ok(match resolve_target(config, target)? {
        Some((_, t)) => t.platform.clone(),
        None => config.platform.clone().unwrap_or_else(|| providers::default_platform().to_string()),
    })
}

fn resolve_target<'a>(config: &'a Config, name: Option<&str>) -> anyhow::Result<Option<(String, &'a Target)>> {
    let name = name.map(str::to_string).or_else(|| config.default_target.clone());
    let Some(name) = name else { return Ok(None) };
    let t = config.targets.get(&name).with_context(|| {
        let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
        format!(
            "no target named {name:?} in capstan.yaml (known: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )
    })?;
    Ok(Some((name, t)))
}

/// What identifies the target `config` (or `--target`) names, without connecting: the
/// normalised URL its lock and journal are keyed by, and the addresses it resolves to (two
/// spellings of one server overlap, `TargetKey::overlaps`); None for the embedded sandbox.
pub async fn key_of(config: &Config, target: Option<&str>) -> anyhow::Result<Option<crate::lock::TargetKey>> {
    match resolve_target(config, target)? {
        Some((_, t)) => Ok(Some(crate::lock::TargetKey::for_url(&t.url).await?)),
        None => Ok(None),
    }
}

/// What a unit applies to and as whom, by its capstan.yaml (and `--target`): the target's
/// normalised URL (or the embedded sandbox), its platform and the owner that marks what it
/// makes. A daemon's unit is connected once, for the identity of the commit it started at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub target: String,
    pub platform: String,
    pub owner: String,
}

/// `Identity::target` of the embedded sandbox.
const EMBEDDED: &str = "the embedded sandbox";

impl Identity {
    /// Whether the target is the embedded sandbox (the unit's own, in its state directory).
    pub fn embedded(&self) -> bool {
        self.target == EMBEDDED
    }

    pub fn of(config: &Config, target: Option<&str>) -> anyhow::Result<Identity> {
        let platform = platform_of(config, target)?;
        let target = match resolve_target(config, target)? {
            Some((_, t)) => crate::lock::TargetKey::name_of(&t.url)?,
            None => EMBEDDED.to_string(),
        };
        Ok(Identity { target, platform, owner: config.owner().to_string() })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) with owner {:?}", crate::redact::url(&self.target), self.platform, self.owner)
    }
}

/// Connect to the named target, the default target, or else the embedded sandbox, whose state
/// lives in `state_dir`. `force` overrides the platform's locks instead of waiting for them.
pub async fn connect(
    config: &Config,
    target: Option<&str>,
    state_dir: &Path,
    force: bool,
) -> anyhow::Result<Connected> {
    let owner = config.owner();
    if let Some((name, t)) = resolve_target(config, target)? {
        let token = match &t.token_env {
            Some(var) => Some(std::env::var(var).map_err(|e| {
                let why = match e {
                    std::env::VarError::NotPresent => "which is not set",
                    std::env::VarError::NotUnicode(_) => "which is not valid Unicode",
                };
                anyhow::anyhow!("target {name:?} reads its token from ${var}, {why}")
            })?),
            None => None,
        };
        let connection = Connection {
            token,
            ca_cert: t.ca_cert.clone(),
            ca_pem: t.ca_pem.clone(),
            auth_url: t.auth_url.clone(),
            timeout: Duration::from_secs(t.timeout.unwrap_or(30)),
            ..connection(config, &t.url, state_dir, force)
        };
        check_timeouts(config, &t.platform)?;
        let provider = providers::provider_for(&t.platform, Some(connection), owner)?;
        return Ok(Connected {
            provider,
            description: format!("target {name} ({})", crate::redact::url(&t.url)),
            key: crate::lock::TargetKey::for_url(&t.url).await?,
            embedded: None,
        });
    }
    let platform_name = platform_of(config, None)?;
    let platform: Platform = platform_name.parse()?;
    check_timeouts(config, &platform_name)?;
    let dir = state_dir;
    crate::state::create_dir(dir)?;
    let mut opts = SandboxOptions::new(platform);
    let state_file = dir.join(format!("sandbox-{platform_name}.json"));
    // One sandbox, one key, however the state directory was named (a symlink, `..`).
    let real = std::fs::canonicalize(dir).map(|d| d.join(state_file.file_name().unwrap_or_default()));
    let key = crate::lock::TargetKey::named(format!(
        "sandbox:{}",
        real.unwrap_or_else(|_| std::path::absolute(&state_file).unwrap_or(state_file.clone())).display()
    ));
    opts.state_file = Some(state_file);
    let sandbox = Sandbox::start(opts).await.context("cannot start the embedded sandbox")?;
    let provider = providers::provider_for(&platform_name, Some(connection(config, sandbox.url(), dir, force)), owner)?;
    Ok(Connected {
        provider,
        description: format!("the embedded {platform_name} sandbox ({})", sandbox.url()),
        key,
        embedded: Some(sandbox),
    })
}

/// A connection to `url` with capstan.yaml's retries and readiness timeouts.
fn connection(config: &Config, url: &str, state_dir: &Path, force: bool) -> Connection {
    Connection {
        force,
        state_dir: Some(state_dir.to_path_buf()),
        retry: config.retry.policy(),
        ready_timeouts: config.timeouts.iter().map(|(k, v)| (k.clone(), Duration::from_secs(*v))).collect(),
        ..Connection::new(url)
    }
}

/// `timeouts` may only name kinds the platform's provider waits for, so a typo (or a kind
/// nothing waits for) is not silently ignored.
fn check_timeouts(config: &Config, platform: &str) -> anyhow::Result<()> {
    let provider = providers::provider_for(platform, None, config.owner())?;
    let kinds = provider.timed_kinds();
    for kind in config.timeouts.keys() {
        if !kinds.contains(&kind.as_str()) {
            anyhow::bail!(
                "capstan.yaml: timeouts names {kind:?}, which is not a kind the {platform} provider waits for ({})",
                if kinds.is_empty() {
                    "it has no readiness timeouts".to_string()
                } else {
                    format!("expected {}", kinds.join(", "))
                }
            );
        }
    }
    Ok(())
}
