//! tsuru's kinds as a closed type (`closed_kinds!`: the enum, `name`, `parse` and the
//! `KindInfo` table from this one list).

use crate::model::KindInfo;

closed_kinds! {
    ServiceInstance = "service instance", KindInfo { managed: true, updatable: true };
    App = "app", KindInfo { managed: true, updatable: true };
    Job = "job", KindInfo { managed: true, updatable: true };
}

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
