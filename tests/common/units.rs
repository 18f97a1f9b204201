//! What the tests of units and fleets share: a unit's name in a URL, and a unit's status of a
//! commit as a daemon answers it.

use super::git::DaemonProc;

/// A unit's name in a URL: percent-encoded in one segment (`clusters%2Fa`).
pub fn enc(unit: &str) -> String {
    unit.replace('%', "%25").replace('/', "%2F")
}

/// The status a daemon gives `unit`'s commit `sha`, once it has one.
pub fn unit_status(d: &DaemonProc, unit: &str, sha: &str) -> Option<String> {
    let (code, v) = d.get(&format!("/v1/units/{}/configurations/{sha}", enc(unit)));
    (code == 200).then(|| v["status"].as_str().unwrap_or_default().to_string())
}
