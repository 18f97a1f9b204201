//! Apcera's kinds as a closed type (`closed_kinds!`: the enum, `name`, `parse` and the
//! `KindInfo` table from this one list).

use crate::model::KindInfo;

closed_kinds! {
    Provider = "provider", KindInfo { managed: true, updatable: false };
    Service = "service", KindInfo { managed: true, updatable: false };
    Network = "network", KindInfo { managed: true, updatable: false };
    Job = "job", KindInfo { managed: true, updatable: true };
    Membership = "membership", KindInfo { managed: true, updatable: false };
    Binding = "binding", KindInfo { managed: true, updatable: false };
    Link = "link", KindInfo { managed: true, updatable: false };
    /// A package a job names; observed to check the reference, never changed.
    Package = "package", KindInfo { managed: false, updatable: false };
    Policy = "policy", KindInfo { managed: true, updatable: true };
    /// No place for a mark: what capstan created is recorded by uuid (created.rs).
    Rule = "sempiperule", KindInfo { managed: true, updatable: false };
    Pipeline = "stagpipe", KindInfo { managed: true, updatable: true };
    /// Declared expectations of the policy, simulated in previews; nothing on the platform.
    PolicyCheck = "policy_check", KindInfo { managed: false, updatable: false };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        let table: Vec<(&str, bool, bool)> = KINDS.iter().map(|(n, i)| (*n, i.managed, i.updatable)).collect();
        assert_eq!(table, [
            ("provider", true, false),
            ("service", true, false),
            ("network", true, false),
            ("job", true, true),
            ("membership", true, false),
            ("binding", true, false),
            ("link", true, false),
            ("package", false, false),
            ("policy", true, true),
            ("sempiperule", true, false),
            ("stagpipe", true, true),
            ("policy_check", false, false),
        ]);
        assert_eq!(Kind::parse("jobs"), None);
        assert_eq!(Kind::parse(""), None);
    }
}
