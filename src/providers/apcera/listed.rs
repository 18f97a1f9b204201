//! The jobs list as `GET /v1/jobs` answers it, decoded by serde straight from the answer's
//! bytes: what the client reads and `job::from_listed` turns into live jobs. Below both.

use crate::model::Compact;
use serde::Deserialize;
use serde_json::Value;

/// A job of the list `GET /v1/jobs` answers, decoded by serde straight from the answer's bytes
/// (never a `Value` tree of the job first): the fields a declaration may manage
/// (`job::JOB_FIELDS`), each parsed compact ([`Compact`]), and what its identity, bindings and
/// drains are read from. Every other field (times, versions, names, `network_ref`, ...) is
/// skipped by the parser and never built. A field present as `null` is kept as `null`, as the
/// job object has it; a field given twice is an error of the answer (serde's "duplicate field").
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct ListedJob {
    #[serde(deserialize_with = "present")]
    pub(super) fqn: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) uuid: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) bindings: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) drains: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) state: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) num_instances: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) weight: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) ports: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) processes: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) resources: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) rollout: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) restart: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) logs: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) tags: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) labels: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) hard_scheduling_tags: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) soft_scheduling_tags: Option<Value>,
    #[serde(deserialize_with = "present")]
    pub(super) packages: Option<Value>,
}

/// A field that is there, `null` included (serde's `Option` would make `null` absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Compact::deserialize(d).map(|c| Some(c.0))
}

impl ListedJob {
    /// The declarable fields, in `job::JOB_FIELDS`' order (the order of the live spec's keys).
    pub(super) fn declarable(&mut self) -> [(&'static str, Option<Value>); 14] {
        [
            ("state", self.state.take()),
            ("num_instances", self.num_instances.take()),
            ("weight", self.weight.take()),
            ("ports", self.ports.take()),
            ("processes", self.processes.take()),
            ("resources", self.resources.take()),
            ("rollout", self.rollout.take()),
            ("restart", self.restart.take()),
            ("logs", self.logs.take()),
            ("tags", self.tags.take()),
            ("labels", self.labels.take()),
            ("hard_scheduling_tags", self.hard_scheduling_tags.take()),
            ("soft_scheduling_tags", self.soft_scheduling_tags.take()),
            ("packages", self.packages.take()),
        ]
    }
}

/// One element of the jobs list: a job object, or anything else, which is skipped (as a job
/// without an FQN is).
pub struct ListEntry(pub Option<ListedJob>);

impl<'de> Deserialize<'de> for ListEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListEntryVisitor)
    }
}

struct ListEntryVisitor;

impl<'de> serde::de::Visitor<'de> for ListEntryVisitor {
    type Value = ListEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a job object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ListEntry, A::Error> {
        ListedJob::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|j| ListEntry(Some(j)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ListEntry, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(ListEntry(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_unit<E>(self) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }

    fn visit_none<E>(self) -> Result<ListEntry, E> {
        Ok(ListEntry(None))
    }
}
