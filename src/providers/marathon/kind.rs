//! Marathon's kinds as a closed type. `Kind::name` is the one place that maps a kind to the
//! name carried in `ResourceId.kind` (opaque to the core) and in the `KindInfo` table;
//! `Kind::parse` is its inverse, used where a resource id enters the provider (an unknown name
//! is `None`, which the caller reports as an error). Dispatch matches on `Kind`, so the
//! compiler checks that every kind is handled.

use crate::model::KindInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Group,
    App,
    /// What a dependency names when no declaration lies at or under its path: an app or a
    /// group that must be live. Observed only to check such dependencies; never changed.
    Dependency,
}

impl Kind {
    /// Every kind, in the order of the `KindInfo` table.
    pub const ALL: [Kind; 3] = [Kind::Group, Kind::App, Kind::Dependency];

    /// The name in `ResourceId.kind`, plans, messages and capstan.yaml's `timeouts`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Group => "group",
            Kind::App => "app",
            Kind::Dependency => "app or group",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    const fn info(self) -> KindInfo {
        match self {
            Kind::Group | Kind::App => KindInfo { managed: true, updatable: true },
            Kind::Dependency => KindInfo { managed: false, updatable: false },
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
        assert_eq!(KINDS.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["group", "app", "app or group"]);
        assert_eq!(KINDS.iter().map(|(_, i)| (i.managed, i.updatable)).collect::<Vec<_>>(), [
            (true, true),
            (true, true),
            (false, false)
        ]);
        assert_eq!(Kind::parse("apps"), None);
        assert_eq!(Kind::parse(""), None);
    }
}
