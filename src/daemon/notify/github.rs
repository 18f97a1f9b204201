//! A commit status on GitHub: `POST {base}/repos/{owner}/{repo}/statuses/{sha}` with
//! `state` pending, success or failure, a link to the status page, context `capstan`.

use super::{Form, Notification, Outgoing, env};
use crate::config::notifications::GitHub;
use serde_json::json;

pub struct Ready {
    url: String,
    token: String,
    context: String,
}

impl GitHub {
    pub fn setup(&self) -> anyhow::Result<Ready> {
        let base = match &self.base_url_env {
            Some(e) => env(e, "github base_url_env")?,
            None => "https://api.github.com".into(),
        };
        let url = format!("{}/repos/{}", base.trim_end_matches('/'), self.repo);
        let context = self.context.clone().unwrap_or_else(|| "capstan".into());
        Ok(Ready { url, token: env(&self.token_env, "github token_env")?, context })
    }
}

/// The JSON GitHub and Gitea both take, `state` in their words.
pub fn status_body(n: &Notification, state: &str, page: &str, context: &str) -> String {
    let description: String = n.summary.chars().take(140).collect();
    json!({ "state": state, "target_url": page, "description": description, "context": context }).to_string()
}

impl Form for Ready {
    fn kind(&self) -> &'static str {
        "github"
    }

    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>> {
        let Some(state) = n.state else { return Ok(None) };
        Ok(Some(Outgoing {
            url: format!("{}/statuses/{}", self.url, n.sha),
            headers: vec![
                ("Authorization".into(), format!("Bearer {}", self.token)),
                ("Accept".into(), "application/vnd.github+json".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: status_body(n, state, page, &self.context),
        }))
    }
}
