//! Policy checks: `policy_checks:` in a manifest, a list of `{fqn, input, claim, expect}` (the
//! parameters of `/v1/sim`). They are nothing on the platform: each is simulated by every plan,
//! once against the live policy (`GET /v1/sim`) and once against the policy as the plan would
//! leave it (`PUT /v1/sim` with the changed documents; a deleted one as an empty document).
//! An answer other than `expect` after the plan (`unknown` included: the simulation cannot
//! tell) fails the check. Changed policy without checks still gets the simulation's lines for
//! every realm its documents name (`why=true`), before and after.

use super::kind::Kind;
use super::Apcera;
use super::client::Client;
use super::policy;
use crate::base::diagnostic::{Diagnostic, Diagnostics};
use crate::diff::{Action, ChangeSet};
use crate::model::{DesiredResource, DesiredState, ResourceId};
use crate::providers::{Check, CheckReport, ScopeSummary};
use crate::base::yaml::Document;
use serde_json::{Value, json};

pub fn decode(doc: &Document, checks: &[Value], diags: &mut Diagnostics) -> Vec<DesiredResource> {
    let mut out = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        let pointer = format!("/policy_checks/{i}");
        let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let (fqn, claim, expect) = (text("fqn"), text("claim"), text("expect"));
        let input: Vec<String> = match c.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        if !fqn.contains("::") {
            diags.push(Diagnostic::error_at(doc.locate(&format!("{pointer}/fqn")), "expected a realm FQN (job::/dev)"));
            continue;
        }
        if expect != "permit" && expect != "deny" {
            diags.push(Diagnostic::error_at(doc.locate(&format!("{pointer}/expect")), "expected permit or deny"));
            continue;
        }
        let name = format!("{claim} {fqn} {}", input.join(" "));
        out.push(DesiredResource {
            id: ResourceId::new(Kind::PolicyCheck.name(), name.trim_end()),
            spec: json!({ "fqn": fqn, "input": input, "claim": claim, "expect": expect }),
            origin: doc.locate(&pointer),
            references: Vec::new(),
            exclusive: None,
        });
    }
    out
}

/// The answer of a simulation: the sandbox says it (`result`); otherwise a level-0 `permit`
/// claim line is a permit, and no such line a deny.
fn answer(sim: &Value) -> String {
    if let Some(r) = sim.get("result").and_then(Value::as_str) {
        return r.to_string();
    }
    let permits = sim["lines"].as_array().is_some_and(|ls| {
        ls.iter()
            .any(|l| l["level"] == 0 && l["type"] == 0 && l["value"].as_str().is_some_and(|v| v.starts_with("permit")))
    });
    if permits { "permit" } else { "deny" }.to_string()
}

fn claim_lines(sim: &Value) -> Vec<String> {
    sim["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{}{}: {}",
                "  ".repeat(l["level"].as_u64().unwrap_or(0) as usize),
                l["context"].as_str().unwrap_or(""),
                l["value"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Realms a document names (`on job::/dev {`), for the summary of changed policy.
fn realms(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("on "))
        .filter_map(|r| r.split_whitespace().next())
        .map(|r| r.trim_end_matches('{').to_string())
        .filter(|r| r.contains("::"))
        .collect()
}

/// An empty report of policy checks, or one that says why they could not be run.
fn report(error: Option<String>) -> CheckReport {
    CheckReport { name: "policy check", error, ..Default::default() }
}

pub async fn run(provider: &Apcera, changes: &ChangeSet, desired: &DesiredState) -> Option<CheckReport> {
    let checks: Vec<&DesiredResource> = desired.resources.values().filter(|d| d.id.kind == Kind::PolicyCheck.name()).collect();
    // Each changed document as the plan would write it (with the mark, so the simulation's line
    // numbers are the stored document's), a deleted one as an empty document; and the realms
    // both versions name.
    let text_of = |v: &Option<Value>| v.as_ref().and_then(|v| v["text"].as_str()).unwrap_or_default().to_string();
    let mut touched = std::collections::BTreeSet::new();
    let changed: Vec<(&str, String)> = changes
        .changes
        .iter()
        .filter(|c| c.id.kind == Kind::Policy.name() && c.action != Action::NoOp)
        .map(|c| {
            touched.extend(realms(&text_of(&c.before)));
            touched.extend(realms(&text_of(&c.after)));
            let text = match c.action {
                Action::Delete => String::new(),
                _ => policy::marked(&provider.owner, &text_of(&c.after)),
            };
            (c.id.name.as_str(), text)
        })
        .collect();
    if checks.is_empty() && changed.is_empty() {
        return None;
    }
    let client = match provider.client() {
        Ok(c) => c,
        Err(e) => return Some(report(Some(e.to_string()))),
    };
    match simulate(client, &checks, &changed, touched).await {
        Ok(r) => Some(r),
        Err(e) => Some(report(Some(e.to_string()))),
    }
}

async fn simulate(
    client: &Client,
    checks: &[&DesiredResource],
    changed: &[(&str, String)],
    touched: std::collections::BTreeSet<String>,
) -> Result<CheckReport, crate::providers::ApiError> {
    let docs: Vec<Value> = changed.iter().map(|(n, t)| json!({ "name": n, "text": t })).collect();
    let mut report = report(None);
    for c in checks {
        let s = &c.spec;
        let fqn = s["fqn"].as_str().unwrap_or_default();
        let claim = s["claim"].as_str().unwrap_or_default();
        let input: Vec<&str> = s["input"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut query = vec![("fqn", fqn)];
        query.extend(input.iter().map(|i| ("input", *i)));
        if !claim.is_empty() {
            query.push(("claim", claim));
        }
        let before = answer(&client.simulate(&query, None).await?);
        let after = if docs.is_empty() { before.clone() } else { answer(&client.simulate(&query, Some(&docs)).await?) };
        let expect = s["expect"].as_str().unwrap_or_default().to_string();
        report.checks.push(Check {
            at: c.origin.to_string(),
            subject: fqn.to_string(),
            input: input.iter().map(|i| i.to_string()).collect(),
            claim: claim.to_string(),
            changed: before != after,
            failed: after != expect,
            expect,
            before,
            after,
        });
    }
    if checks.is_empty() {
        for realm in touched.into_iter().take(20) {
            let query = [("fqn", realm.as_str()), ("claim", "permit"), ("why", "true")];
            let before = claim_lines(&client.simulate(&query, None).await?);
            let after = claim_lines(&client.simulate(&query, Some(&docs)).await?);
            report.scopes.push(ScopeSummary { scope: realm, before, after });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_without_a_result_field_read_the_claim_lines() {
        assert_eq!(answer(&json!({ "lines": [{ "level": 0, "type": 0, "value": "permit create" }] })), "permit");
        assert_eq!(answer(&json!({ "lines": [] })), "deny");
        assert_eq!(answer(&json!({ "result": "unknown", "lines": [] })), "unknown");
    }

    #[test]
    fn realms_are_read_from_on_lines() {
        assert_eq!(realms("on job::/dev {\n { permit all }\n}\n  on service::/ {}"), ["job::/dev", "service::/"]);
    }
}
