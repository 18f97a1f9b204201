//! A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): one line of text with
//! the commit, what became of it and a link to the status page, then its errors.

use super::{Form, Notification, Outgoing, env};
use crate::config::notifications::Slack;
use serde_json::json;

pub struct Ready {
    url: String,
}

impl Slack {
    pub fn setup(&self) -> anyhow::Result<Ready> {
        let url = match (&self.url, &self.url_env) {
            (Some(u), _) => u.clone(),
            (None, Some(e)) => env(e, "slack url_env")?,
            (None, None) => anyhow::bail!("a slack receiver needs url_env or url"),
        };
        Ok(Ready { url })
    }
}

impl Form for Ready {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>> {
        let short: String = n.sha.chars().take(10).collect();
        let mut text = format!("capstan: commit `{short}` {}: {} (<{page}|status page>)", n.event, n.summary);
        for e in n.errors.iter().take(20) {
            text.push_str(&format!("\n• {e}"));
        }
        let body = json!({ "text": text }).to_string();
        Ok(Some(Outgoing {
            url: self.url.clone(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        }))
    }
}
