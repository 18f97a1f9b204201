//! `capstan daemon`, and the commands that drive a running daemon (`plan interrupt|continue|status`).

use super::*;

pub(super) async fn daemon(args: DaemonArgs) -> anyhow::Result<u8> {
    let read_env = |name: &Option<String>, what: &str| -> anyhow::Result<Option<String>> {
        match name {
            Some(var) => match std::env::var(var) {
                Ok(v) if v.trim().is_empty() => anyhow::bail!("{what} is read from ${var}, which is empty"),
                Ok(v) => Ok(Some(v)),
                Err(_) => anyhow::bail!("{what} is read from ${var}, which is not set"),
            },
            None => Ok(None),
        }
    };
    let token = read_env(&args.token_env, "the API token")?;
    if token.is_none() && !args.listen.ip().is_loopback() && !args.insecure_listen {
        anyhow::bail!(
            "refusing to listen on {} with no token: anyone who can reach it could read the daemon's history and trigger syncs and rollbacks; set --token-env (and put TLS in front), or pass --insecure-listen",
            args.listen
        );
    }
    let first = args.path.first().cloned().unwrap_or_default();
    let repo = RepoSpec::new(&args.repo, args.git_ref, first);
    if repo.credentials.is_some() {
        note(Level::WARN, CREDENTIALS_IN_URL);
    }
    let opts = crate::daemon::DaemonOptions {
        repo,
        paths: args.path,
        unit_parallelism: args.unit_parallelism,
        target: args.target,
        listen: args.listen,
        state_dir: args.state_dir,
        store: args.store,
        interval: args.interval,
        resync: args.resync,
        self_heal: args.self_heal,
        token,
        metrics_need_token: args.metrics_need_token,
        webhook_secret: read_env(&args.webhook_secret_env, "the webhook secret")?,
        render: args.variables.render_options(true),
        parallelism: args.parallelism,
        force: args.force,
        allow_mass_delete: args.allow_mass_delete,
        allow_check_failures: args.allow_check_failures,
        take_ownership: args.take_ownership,
        lease_ttl: args.lease_ttl,
        store_connections: args.store_connections,
    };
    crate::daemon::serve(opts).await?;
    Ok(EXIT_OK)
}

/// One call to a daemon's API, with the token from `token_env`; Err with the daemon's own
/// message unless it answers 2xx.
pub(super) async fn ask_daemon(
    daemon: &str,
    method: reqwest::Method,
    path: &str,
    token_env: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", daemon.trim_end_matches('/'));
    let mut req = reqwest::Client::new().request(method, &url);
    if let Some(var) = token_env {
        let token =
            std::env::var(var).map_err(|_| anyhow::anyhow!("the token is read from ${var}, which is not set"))?;
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| anyhow::anyhow!("cannot reach the daemon at {daemon}: {e}"))?;
    let status = resp.status();
    // Bounded like every answer capstan reads: a plan of ten thousand steps is a few MiB.
    let body = crate::http::body_up_to(resp, crate::http::MAX_ANSWER_BYTES)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the answer of {url}: {e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{url} answered more than {} MiB, the most capstan reads",
                crate::http::MAX_ANSWER_BYTES >> 20
            )
        })?;
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {}", answer.get("message").and_then(|m| m.as_str()).unwrap_or(""));
    }
    Ok(answer)
}

/// `plan interrupt|continue|status --daemon URL`.
pub(super) async fn drive_daemon(action: PlanAction, color: crate::cli::ColorChoice) -> anyhow::Result<u8> {
    let (r, method, path) = match &action {
        PlanAction::Interrupt(r) => (r, reqwest::Method::POST, "/v1/plans/deploy/interrupt"),
        PlanAction::Continue(r) => (r, reqwest::Method::POST, "/v1/plans/deploy/continue"),
        PlanAction::Status(r) => (r, reqwest::Method::GET, "/v1/plans/deploy"),
    };
    // A unit's plan is under its name, percent-encoded into one segment.
    let path = match &r.unit {
        Some(unit) => format!("/v1/units/{}{}", unit_segment(unit), path.trim_start_matches("/v1")),
        None => path.to_string(),
    };
    let body = ask_daemon(&r.daemon, method, &path, r.token_env.as_deref(), None).await?;
    match (&action, r.output) {
        (_, PlanFormat::Json) => outln(&serde_json::to_string_pretty(&body)?)?,
        (PlanAction::Status(_), _) => {
            let plan: output::PhasesView = serde_json::from_value(body).map_err(|e| {
                anyhow::anyhow!("the daemon at {} answered something that is not a plan: {e}", r.daemon)
            })?;
            out(&output::daemon_plan_text(&plan, Style::stdout(color)))?
        }
        (_, _) => outln(body.get("message").and_then(|m| m.as_str()).unwrap_or("ok"))?,
    }
    Ok(EXIT_OK)
}

/// A unit's name as one path segment: every byte but ASCII letters, digits, `-`, `_` and `.`
/// percent-encoded (`clusters/eu` is `clusters%2Feu`; the root's `.` is `%2E`).
fn unit_segment(unit: &str) -> String {
    let name = crate::daemon::unit_name(unit);
    if name == "." {
        return "%2E".to_string();
    }
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::unit_segment;

    #[test]
    fn a_unit_is_one_percent_encoded_segment() {
        assert_eq!(unit_segment("clusters/eu"), "clusters%2Feu");
        assert_eq!(unit_segment("./clusters//eu/"), "clusters%2Feu");
        assert_eq!(unit_segment("."), "%2E");
        assert_eq!(unit_segment("a b?"), "a%20b%3F");
    }
}
