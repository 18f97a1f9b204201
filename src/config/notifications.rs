//! capstan.yaml's `notifications`: the receivers as declared, plain data. What the daemon makes
//! of them (checking each has one form and known events, reading the environment variables
//! they name, sending) is `daemon::notify`'s.

use serde::{Deserialize, Serialize};

/// One receiver as capstan.yaml declares it (the schema allows exactly one form).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// How `/v1/status` and `/metrics` name it (default: its form and position).
    #[serde(default)]
    pub name: Option<String>,
    /// The events it is sent (default: all of them).
    #[serde(default)]
    pub on: Vec<String>,
    /// Sends after the first one fails (default 4), with doubling delays from one second.
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub slack: Option<Slack>,
    #[serde(default)]
    pub github: Option<GitHub>,
    #[serde(default)]
    pub gitlab: Option<GitLab>,
    #[serde(default)]
    pub gitea: Option<Gitea>,
}

/// A generic JSON webhook, optionally HMAC-signed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The URL, or `url_env`: the environment variable that holds it.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    /// The environment variable holding the signing key.
    #[serde(default)]
    pub secret_env: Option<String>,
}

/// A Slack-compatible incoming webhook.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    /// The environment variable holding the webhook's URL (which is its secret), or the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// Commit statuses on GitHub.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHub {
    /// `owner/name`.
    pub repo: String,
    /// The environment variable holding the API's base URL (unset: `https://api.github.com`).
    #[serde(default)]
    pub base_url_env: Option<String>,
    /// The environment variable holding the token.
    pub token_env: String,
    /// The status's context (default `capstan`).
    #[serde(default)]
    pub context: Option<String>,
}

/// Commit statuses on GitLab.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitLab {
    /// The project's numeric id or its path (`group/name`, sent URL-encoded).
    pub project: String,
    /// The environment variable holding the API's base URL (GitLab CI sets `CI_API_V4_URL`).
    pub base_url_env: String,
    pub token_env: String,
    /// The status's name (default `capstan`).
    #[serde(default)]
    pub name: Option<String>,
}

/// Commit statuses on Gitea (and Forgejo).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gitea {
    /// `owner/name`.
    pub repo: String,
    /// The environment variable holding the server's URL (`https://gitea.example.com`).
    pub base_url_env: String,
    pub token_env: String,
    #[serde(default)]
    pub context: Option<String>,
}
