//! A generic webhook: the notification as JSON, signed with HMAC-SHA256 when a key is given
//! (`X-Capstan-Signature-256: sha256=<hex>`, as GitHub signs its own webhooks).

use super::{Form, Notification, Outgoing, env, payload};
use crate::config::notifications::Webhook;
use hmac::{Hmac, Mac};

pub struct Ready {
    url: String,
    key: Option<String>,
}

impl Webhook {
    pub fn setup(&self) -> anyhow::Result<Ready> {
        let url = match (&self.url, &self.url_env) {
            (Some(u), _) => u.clone(),
            (None, Some(e)) => env(e, "webhook url_env")?,
            (None, None) => anyhow::bail!("a webhook receiver needs url or url_env"),
        };
        let key = self.secret_env.as_deref().map(|e| env(e, "webhook secret_env")).transpose()?;
        Ok(Ready { url, key })
    }
}

pub fn signature(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Form for Ready {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn request(&self, n: &Notification, page: &str) -> anyhow::Result<Option<Outgoing>> {
        let body = payload(n, page).to_string();
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(k) = &self.key {
            headers.push(("X-Capstan-Signature-256".to_string(), signature(k, body.as_bytes())));
        }
        Ok(Some(Outgoing { url: self.url.clone(), headers, body }))
    }
}
