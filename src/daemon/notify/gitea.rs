//! A commit status on Gitea (and Forgejo): `POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}`,
//! the body GitHub's, authorised by `Authorization: token <token>`.

use super::github::status_body;
use super::{Form, Notification, Outgoing, env};
use crate::config::notifications::Gitea;

pub struct Ready {
    url: String,
    token: String,
    context: String,
}

impl Gitea {
    pub fn setup(&self) -> anyhow::Result<Ready> {
        let base = env(&self.base_url_env, "gitea base_url_env")?;
        let url = format!("{}/api/v1/repos/{}", base.trim_end_matches('/'), self.repo);
        let context = self.context.clone().unwrap_or_else(|| "capstan".into());
        Ok(Ready { url, token: env(&self.token_env, "gitea token_env")?, context })
    }
}

impl Form for Ready {
    fn kind(&self) -> &'static str {
        "gitea"
    }

    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>> {
        let Some(state) = n.state else { return Ok(None) };
        Ok(Some(Outgoing {
            url: format!("{}/statuses/{}", self.url, n.sha),
            headers: vec![
                ("Authorization".into(), format!("token {}", self.token)),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: status_body(n, state, page, &self.context),
        }))
    }
}
