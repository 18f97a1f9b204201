//! Observing: every kind asked for listed with one call each (`Drive::observe`), or jobs read
//! by FQN, one request each, when a few are wanted among many (`Drive::observe_only`).

use super::*;
use crate::model::Scoped;
use futures::StreamExt;
use std::collections::HashSet;

/// Jobs read by FQN at once.
const JOB_READS: usize = 16;

/// The jobs whose reading tells what is live of these resources: a job, or the job a binding or
/// link belongs to.
fn job_fqns(ids: &[ResourceId], desired: &DesiredState) -> BTreeSet<String> {
    ids.iter().filter_map(|id| job_of(id, desired)).map(str::to_string).collect()
}

/// The job whose reading tells what is live of `id`, if it is a job, binding or link.
fn job_of<'a>(id: &'a ResourceId, desired: &'a DesiredState) -> Option<&'a str> {
    match Kind::parse(&id.kind)? {
        Kind::Job => Some(&id.name),
        Kind::Binding | Kind::Link => {
            let declared = desired.resources.get(id).and_then(|d| d.spec.get("job_fqn")).and_then(Value::as_str);
            declared.or_else(|| id.name.split(" -> ").next())
        }
        _ => None,
    }
}

impl Apcera {
    /// What `observe` reads (`only` None), or that with jobs read by FQN: those `only` names,
    /// and those of the bindings and links it names (`Drive::observe_only`).
    pub(super) async fn read(
        &self,
        kinds: &BTreeSet<String>,
        desired: &DesiredState,
        only: Option<&[ResourceId]>,
    ) -> Result<Scoped, ApiError> {
        let client = self.client()?;
        let fqns: Option<BTreeSet<String>> = only.map(|ids| job_fqns(ids, desired));
        let want = |ks: &[&str]| ks.iter().any(|k| kinds.contains(*k));
        let owner = self.owner.as_str();
        // Another process with this state directory may have recorded rules or pipelines since.
        if want(&[Kind::Rule.name(), Kind::Pipeline.name()]) {
            self.created.reload().map_err(|e| ApiError::other("GET", "/v1/rules", format!("{e:#}")))?;
        }
        // Jobs are converted as they are parsed: the raw list is never held whole.
        let jobs = async {
            if !want(&[Kind::Job.name(), Kind::Binding.name(), Kind::Link.name()]) {
                return Ok(None);
            }
            // Decoded from the bytes with only the fields a declaration may manage, each parsed
            // compact; a declared job is then kept only as far as its declaration goes (its
            // values moved, never copied).
            let keep = |j, out: &mut Vec<_>| {
                if let Some((mut live, uuid, attachments)) = job::from_listed(j, owner) {
                    if let Some(d) = desired.resources.get(&live.id) {
                        live.spec = job::project_onto_owned(&d.spec, std::mem::take(&mut live.spec));
                    }
                    out.push((live, uuid, attachments));
                }
            };
            let mut out = Vec::new();
            match &fqns {
                None => client.each_job(|j| keep(j, &mut out)).await?,
                Some(fqns) => {
                    // A few at a time: one request each, the answer holding one job.
                    let reads = futures::stream::iter(fqns.iter().cloned().map(|f: String| async move {
                        let mut found = Vec::new();
                        client.each_job_named(&f, |j| keep(j, &mut found)).await?;
                        found.retain(|(live, _, _): &(LiveResource, _, _)| live.id.name == f);
                        Ok::<_, ApiError>(found)
                    }))
                    .buffer_unordered(JOB_READS);
                    for found in reads.collect::<Vec<_>>().await {
                        out.extend(found?);
                    }
                }
            }
            Ok(Some(out))
        };
        let (jobs, networks, services, providers, packages, policies, rules, pipelines) = tokio::try_join!(
            jobs,
            maybe(want(&[Kind::Network.name(), Kind::Membership.name()]), client.list_networks()),
            maybe(want(&[Kind::Service.name()]), client.list_services()),
            maybe(want(&[Kind::Provider.name()]), client.list_providers()),
            maybe(want(&[Kind::Package.name()]), client.list_packages()),
            maybe(want(&[Kind::Policy.name()]), policy::observe(client, owner)),
            maybe(want(&[Kind::Rule.name()]), client.list_rules()),
            maybe(want(&[Kind::Pipeline.name()]), client.list_pipelines()),
        )?;
        let mut state = LiveState::default();
        let mut uuids = self.uuids.lock().unwrap();
        let jobs_listed = jobs.is_some();
        // What was known of the kinds listed now is replaced by what the lists say.
        uuids.retain(|key, _| match Kind::parse(key.0) {
            Some(Kind::Job) => !jobs_listed || fqns.as_ref().is_some_and(|f| !f.contains(&key.1)),
            Some(Kind::Network) => networks.is_none(),
            Some(Kind::Service) => services.is_none(),
            Some(Kind::Provider) => providers.is_none(),
            Some(Kind::Rule) => rules.is_none(),
            Some(Kind::Pipeline) => pipelines.is_none(),
            _ => true,
        });
        for (live, uuid, attachments) in jobs.into_iter().flatten() {
            uuids.insert((Kind::Job.name(), live.id.name.clone()), uuid);
            attachments.into_iter().for_each(|a| state.insert(a));
            state.insert(live);
        }
        for n in networks.iter().flatten() {
            if let Some((resources, uuid)) = network::from_live(n, &self.owner) {
                uuids.insert((Kind::Network.name(), resources[0].id.name.clone()), uuid);
                resources.into_iter().for_each(|r| state.insert(r));
            }
        }
        for s in services.iter().flatten() {
            if let Some((live, uuid)) = service::from_live(s, &self.owner) {
                uuids.insert((Kind::Service.name(), live.id.name.clone()), uuid);
                state.insert(live);
            }
        }
        for p in providers.iter().flatten() {
            if let Some((live, uuid)) = service_provider::from_live(p, &self.owner) {
                uuids.insert((Kind::Provider.name(), live.id.name.clone()), uuid);
                state.insert(live);
            }
        }
        if let Some(packages) = &packages {
            let mut pk = self.packages.lock().unwrap();
            *pk = Packages::default();
            for p in packages {
                let (Some(f), Some(u)) = (p.get("fqn").and_then(Value::as_str), p.get("uuid").and_then(Value::as_str))
                else {
                    continue;
                };
                pk.fqn_by_uuid.insert(u.to_string(), f.to_string());
                pk.uuid_by_fqn.insert(f.to_string(), u.to_string());
                state.insert(LiveResource {
                    id: ResourceId::new(Kind::Package.name(), f),
                    spec: json!({ "uuid": u }),
                    owned: false,
                    owner: None,
                    parent: None,
                    depends_on: pipeline::staged_by(f, p, desired).into_iter().collect(),
                    exclusive: None,
                    removes: Vec::new(),
                    keep: None,
                });
            }
        }
        for r in rules.iter().flatten() {
            if let Some((live, uuid)) = rule::from_live(r, &self.created, &self.owner) {
                uuids.insert((Kind::Rule.name(), live.id.name.clone()), uuid);
                state.insert(live);
            }
        }
        if let Some(pipelines) = &pipelines {
            let job_fqns: HashMap<String, String> =
                uuids.iter().filter(|((k, _), _)| *k == Kind::Job.name()).map(|((_, f), u)| (u.clone(), f.clone())).collect();
            for p in pipelines {
                if let Some((live, uuid)) = pipeline::from_live(p, &job_fqns, &self.created, &self.owner) {
                    uuids.insert((Kind::Pipeline.name(), live.id.name.clone()), uuid);
                    state.insert(live);
                }
            }
        }
        let policies_listed = policies.is_some();
        policies.into_iter().flatten().for_each(|p| state.insert(p));
        let mut observed: Vec<String> = Vec::new();
        for (on, ks) in [
            (jobs_listed, &[Kind::Job.name(), Kind::Binding.name(), Kind::Link.name()][..]),
            (networks.is_some(), &[Kind::Network.name(), Kind::Membership.name()][..]),
            (services.is_some(), &[Kind::Service.name()][..]),
            (providers.is_some(), &[Kind::Provider.name()][..]),
            (packages.is_some(), &[Kind::Package.name()][..]),
            (policies_listed, &[Kind::Policy.name()][..]),
            (rules.is_some(), &[Kind::Rule.name()][..]),
            (pipelines.is_some(), &[Kind::Pipeline.name()][..]),
        ] {
            if on {
                observed.extend(ks.iter().map(|k| k.to_string()));
            }
        }
        state.observed_kinds = observed;
        let (mut partial, mut covered) = (Vec::new(), HashSet::new());
        if let Some(fqns) = fqns.filter(|_| jobs_listed) {
            partial = [Kind::Job, Kind::Binding, Kind::Link].iter().map(|k| k.name().to_string()).collect();
            covered.extend(fqns.iter().map(|f| ResourceId::new(Kind::Job.name(), f.as_str())));
            let attached = |id: &ResourceId| job_of(id, desired).is_some_and(|j| fqns.contains(j));
            covered.extend(state.resources.keys().filter(|id| attached(id)).cloned());
            covered.extend(desired.resources.keys().filter(|id| attached(id)).cloned());
            covered.extend(only.into_iter().flatten().filter(|id| attached(id)).cloned());
        }
        Ok(Scoped { live: state, partial, covered })
    }
}
