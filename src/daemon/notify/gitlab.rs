//! A commit status on GitLab: `POST {base}/projects/{id}/statuses/{sha}` (`base` is the API's,
//! `https://gitlab.example.com/api/v4`), `state` pending, success or failed, authorised by
//! `PRIVATE-TOKEN`.

use super::{Form, Notification, Outgoing, env};
use crate::config::notifications::GitLab;
use serde_json::json;

pub struct Ready {
    url: String,
    token: String,
    name: String,
}

impl GitLab {
    pub fn setup(&self) -> anyhow::Result<Ready> {
        let base = env(&self.base_url_env, "gitlab base_url_env")?;
        let project = self.project.replace('/', "%2F");
        let url = format!("{}/projects/{project}", base.trim_end_matches('/'));
        let name = self.name.clone().unwrap_or_else(|| "capstan".into());
        Ok(Ready { url, token: env(&self.token_env, "gitlab token_env")?, name })
    }
}

impl Form for Ready {
    fn kind(&self) -> &'static str {
        "gitlab"
    }

    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>> {
        let state = match n.state {
            Some("failure") => "failed",
            Some(s) => s,
            None => return Ok(None),
        };
        let description: String = n.summary.chars().take(140).collect();
        let body = json!({ "state": state, "target_url": page, "description": description, "name": self.name });
        Ok(Some(Outgoing {
            url: format!("{}/statuses/{}", self.url, n.sha),
            headers: vec![
                ("PRIVATE-TOKEN".into(), self.token.clone()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: body.to_string(),
        }))
    }
}
