//! Apcera's kinds as a closed type. `Kind::name` is the one place that maps a kind to the name
//! carried in `ResourceId.kind` (opaque to the core) and in the `KindInfo` table; `Kind::parse`
//! is its inverse, used where a resource id enters the provider (an unknown name is `None`,
//! which the caller reports as an error). Dispatch matches on `Kind`, so the compiler checks
//! that every kind is handled.

use crate::model::KindInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Provider,
    Service,
    Network,
    Job,
    Membership,
    Binding,
    Link,
    /// A package a job names; observed to check the reference, never changed.
    Package,
    Policy,
    /// No place for a mark: what capstan created is recorded by uuid (created.rs).
    Rule,
    Pipeline,
    /// Declared expectations of the policy, simulated in previews; nothing on the platform.
    PolicyCheck,
}

impl Kind {
    /// Every kind, in the order of the `KindInfo` table.
    pub const ALL: [Kind; 12] = [
        Kind::Provider,
        Kind::Service,
        Kind::Network,
        Kind::Job,
        Kind::Membership,
        Kind::Binding,
        Kind::Link,
        Kind::Package,
        Kind::Policy,
        Kind::Rule,
        Kind::Pipeline,
        Kind::PolicyCheck,
    ];

    /// The name in `ResourceId.kind`, plans and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Provider => "provider",
            Kind::Service => "service",
            Kind::Network => "network",
            Kind::Job => "job",
            Kind::Membership => "membership",
            Kind::Binding => "binding",
            Kind::Link => "link",
            Kind::Package => "package",
            Kind::Policy => "policy",
            Kind::Rule => "sempiperule",
            Kind::Pipeline => "stagpipe",
            Kind::PolicyCheck => "policy_check",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    const fn info(self) -> KindInfo {
        match self {
            Kind::Job | Kind::Policy | Kind::Pipeline => KindInfo { managed: true, updatable: true },
            Kind::Provider | Kind::Service | Kind::Network | Kind::Membership | Kind::Binding | Kind::Link | Kind::Rule => {
                KindInfo { managed: true, updatable: false }
            }
            Kind::Package | Kind::PolicyCheck => KindInfo { managed: false, updatable: false },
        }
    }
}

/// The `KindInfo` table, derived from `Kind`.
pub const KINDS: &[(&str, KindInfo)] = &[
    (Kind::ALL[0].name(), Kind::ALL[0].info()),
    (Kind::ALL[1].name(), Kind::ALL[1].info()),
    (Kind::ALL[2].name(), Kind::ALL[2].info()),
    (Kind::ALL[3].name(), Kind::ALL[3].info()),
    (Kind::ALL[4].name(), Kind::ALL[4].info()),
    (Kind::ALL[5].name(), Kind::ALL[5].info()),
    (Kind::ALL[6].name(), Kind::ALL[6].info()),
    (Kind::ALL[7].name(), Kind::ALL[7].info()),
    (Kind::ALL[8].name(), Kind::ALL[8].info()),
    (Kind::ALL[9].name(), Kind::ALL[9].info()),
    (Kind::ALL[10].name(), Kind::ALL[10].info()),
    (Kind::ALL[11].name(), Kind::ALL[11].info()),
];

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
