//! Marathon's kinds as a closed type (`closed_kinds!`: the enum, `name`, `parse` and the
//! `KindInfo` table from this one list). A kind's name is also what capstan.yaml's `timeouts`
//! use.

use crate::model::KindInfo;

closed_kinds! {
    Group = "group", KindInfo { managed: true, updatable: true };
    App = "app", KindInfo { managed: true, updatable: true };
    /// What a dependency names when no declaration lies at or under its path: an app or a
    /// group that must be live. Observed only to check such dependencies; never changed.
    Dependency = "app or group", KindInfo { managed: false, updatable: false };
}

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
