//! tsuru's kinds as a closed type. `Kind::name` is the one place that maps a kind to the name
//! carried in `ResourceId.kind` (opaque to the core) and in the `KindInfo` table; `Kind::parse`
//! is its inverse, used where a resource id enters the provider (an unknown name is `None`,
//! which the caller reports as an error). Dispatch matches on `Kind`, so the compiler checks
//! that every kind is handled.

use crate::model::KindInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ServiceInstance,
    App,
    Job,
}

impl Kind {
    /// Every kind, in the order of the `KindInfo` table.
    pub const ALL: [Kind; 3] = [Kind::ServiceInstance, Kind::App, Kind::Job];

    /// The name in `ResourceId.kind`, plans and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::ServiceInstance => "service instance",
            Kind::App => "app",
            Kind::Job => "job",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    const fn info(self) -> KindInfo {
        match self {
            Kind::ServiceInstance | Kind::App | Kind::Job => KindInfo { managed: true, updatable: true },
        }
    }
}

/// The `KindInfo` table, derived from `Kind`.
pub const KINDS: &[(&str, KindInfo)] = &[
    (Kind::ALL[0].name(), Kind::ALL[0].info()),
    (Kind::ALL[1].name(), Kind::ALL[1].info()),
    (Kind::ALL[2].name(), Kind::ALL[2].info()),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        assert_eq!(KINDS.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["service instance", "app", "job"]);
        assert_eq!(Kind::parse("apps"), None);
        assert_eq!(Kind::parse(""), None);
    }
}
