//! The reconcile loop: wake-ups coalesce into one reconcile at a time; each fetches, picks
//! the commit to converge to, and plans and guards it through a `converge::Session` under the
//! target's lock (applying is in `apply.rs`).

use super::*;

/// How soon a reconcile that found the target locked, or could not fetch, is tried again:
/// doubling from the first to the last (and never later than the resync interval).
const LOCK_RETRY_FIRST: Duration = Duration::from_millis(500);
const LOCK_RETRY_MAX: Duration = Duration::from_secs(8);

/// At most this many commits skipped in one burst are recorded as superseded.
const SUPERSEDED_LIMIT: usize = 100;

impl Unit {
    pub(super) fn set_phase(&self, phase: Phase) {
        self.status.lock().unwrap().phase = phase;
    }

    /// The reconcile loop; returns when shutdown has been asked for and the running step ended.
    pub async fn run(self: Arc<Self>) {
        let mut next_resync = Instant::now() + self.opts.resync;
        // A reconcile the target's lock kept from running: when to try again, and for what.
        let mut retry: Option<(Instant, Reason)> = None;
        let mut retry_delay = LOCK_RETRY_FIRST;
        let mut waiting = Phase::WaitingForLock;
        loop {
            if self.ending() {
                break;
            }
            let pending: Vec<Reason> = std::mem::take(&mut *self.reasons.lock().unwrap());
            let reason = match Reason::strongest(pending) {
                Some(r) => r,
                None => {
                    self.set_phase(if retry.is_some() { waiting } else { Phase::Idle });
                    // The holder keeps what the API shows in the shared store for the others.
                    self.share_shown();
                    let resync_in = next_resync.saturating_duration_since(Instant::now());
                    let retry_in = retry.map(|(at, _)| at.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = self.wake.notified() => continue,
                        _ = tokio::time::sleep(resync_in) => Reason::Resync,
                        _ = tokio::time::sleep(retry_in.unwrap_or(Duration::MAX)), if retry_in.is_some() => {
                            retry.expect("a retry is due").1
                        }
                    }
                }
            };
            // Whatever runs now also does what the retry was for.
            let reason = Reason::strongest(retry.take().map(|(_, r)| r).into_iter().chain([reason])).unwrap_or(reason);
            if reason == Reason::Resync || reason == Reason::Sync {
                next_resync = Instant::now() + self.opts.resync;
            }
            // At most `--unit-parallelism` units reconcile at once; the others wait their turn.
            let Ok(permit) = self.permits.clone().acquire_owned().await else { break };
            if self.ending() {
                break;
            }
            let started = Instant::now();
            let result = self.reconcile(reason).await;
            drop(permit);
            let reconciled_in = started.elapsed();
            // A reconcile of ten thousand resources builds a few hundred MB it has now dropped:
            // hand it back, so an idle daemon is as small as what it keeps.
            let t = Instant::now();
            crate::release_free_memory();
            tracing::info!(
                result = result.as_str(),
                reconcile_ms = reconciled_in.as_secs_f64() * 1e3,
                release_ms = t.elapsed().as_secs_f64() * 1e3,
                "reconciled"
            );
            // A failed apply is planned again once, from what is live now.
            if result == Reconciled::ApplyFailed && reason != Reason::Retry {
                self.reasons.lock().unwrap().push(Reason::Retry);
            }
            // Locked by an apply, or the repository could not be read (a network, a server, or
            // this process short of file descriptors): try again soon rather than at the next
            // commit, which a local repository's watcher has already reported.
            if result == Reconciled::TargetLocked || result == Reconciled::FetchFailed {
                waiting = if result == Reconciled::FetchFailed { Phase::WaitingToFetch } else { Phase::WaitingForLock };
                retry = Some((Instant::now() + retry_delay, reason));
                retry_delay = (retry_delay * 2).min(LOCK_RETRY_MAX).min(self.opts.resync.max(LOCK_RETRY_FIRST));
            } else {
                retry_delay = LOCK_RETRY_FIRST;
            }
            self.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
            self.metrics.reconcile_in(self.label.as_deref(), result.as_str());
            let mut st = self.status.lock().unwrap();
            st.last_result = Some(result);
            st.last_reconcile = Some(now_rfc3339());
            st.ready = true;
        }
        self.set_phase(Phase::Stopped);
    }

    /// One reconcile. Returns a word for the result, for metrics and status.
    pub(super) async fn reconcile(&self, reason: Reason) -> Reconciled {
        // Only while this daemon holds the unit's lease (always, with SQLite).
        let Some(claim) = self.fleet.claim(self.unit()) else {
            // Another daemon may change the platform meanwhile.
            self.baseline.lock().unwrap().take();
            return Reconciled::Standby;
        };
        self.set_phase(Phase::Fetching);
        let source = self.source.clone();
        let fetched = tokio::task::spawn_blocking(move || source.fetch_and_resolve())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let sha = match fetched {
            Ok(head) => {
                self.status.lock().unwrap().branch_head = Some(head.clone());
                self.converge_to(head)
            }
            Err(e) => {
                self.events.publish(Event::FetchFailed { message: format!("{e:#}") });
                return Reconciled::FetchFailed;
            }
        };
        let previous = {
            let st = self.status.lock().unwrap();
            st.target.clone().or_else(|| st.last_applied.clone())
        };
        let new_commit = self.status.lock().unwrap().target.as_deref() != Some(sha.as_str());
        if new_commit {
            let superseded = match previous.filter(|p| *p != sha) {
                Some(p) => self.supersede_between(&p, &sha).await,
                None => Vec::new(),
            };
            if let Err(e) = self.store.seen(&sha) {
                tracing::error!("cannot record commit {sha}: {e:#}");
            }
            self.status.lock().unwrap().target = Some(sha.clone());
            let deferred = self.paused_commit().is_some() && self.is_interrupted();
            self.events.publish(Event::CommitSeen { sha: sha.clone(), superseded, deferred });
        }
        // Interrupted part way: commits are recorded, nothing is planned until `continue`.
        if self.is_interrupted() && self.paused_commit().is_some() {
            return Reconciled::Interrupted;
        }
        let known = self.store.status(&sha).ok().flatten();
        // What the platform was last made equal to: an applied commit is applied again when
        // the branch (or a rollback) comes back to it after another.
        let live = self.store.get_value("live").ok().flatten().filter(|l| !l.is_empty());
        let live = live.or_else(|| self.status.lock().unwrap().last_applied.clone());
        let is_live = live.as_deref() == Some(sha.as_str());
        let drift_check = match (reason, known) {
            // An invalid commit stays invalid until the next commit, unless asked again (a sync,
            // or a restart: perhaps with --take-ownership, or other --var values).
            (_, Some(CommitStatus::Invalid)) if !matches!(reason, Reason::Sync | Reason::Startup) => {
                return Reconciled::Invalid;
            }
            // A refused plan stays refused, unless asked again (a sync, or a restart, perhaps
            // with --allow-mass-delete).
            (_, Some(CommitStatus::Refused)) if !matches!(reason, Reason::Sync | Reason::Startup) => {
                return Reconciled::Refused;
            }
            // A rollback applies a commit that was applied before, on purpose; a continue
            // carries on with what was interrupted; a retry tries again what failed.
            (Reason::Rollback | Reason::Continue | Reason::Retry, _) => false,
            // Applied and live: only a resync or an explicit sync looks again, for drift.
            (Reason::Resync | Reason::Sync, Some(CommitStatus::Applied)) if is_live => true,
            (_, Some(CommitStatus::Applied)) if is_live => return Reconciled::Unchanged,
            _ => false,
        };

        // Plan and apply under the target's lock, so that no `capstan apply` changes the target
        // between the two; held by an apply, it is tried again shortly (see `run`).
        // An interrupted plan kept it.
        let held = self.paused.lock().unwrap().take().map(|(_, lock)| lock);
        let session = match Session::open_leased(&self.connected, &self.state_dir, held, claim.leased) {
            Ok((session, settled)) => {
                self.status.lock().unwrap().locked_by = None;
                // A run that a killed daemon left is settled by this plan, made from live state.
                match settled {
                    Ok(runs) => runs.iter().for_each(|r| tracing::warn!("resuming: {}", r.describe())),
                    Err(e) => tracing::error!("cannot read the journal: {e:#}"),
                }
                session
            }
            Err(e) => return self.locked(&sha, format!("{e:#}")),
        };

        self.set_phase(Phase::Planning);
        let source = self.source.clone();
        let commit = sha.clone();
        let snapshot = match tokio::task::spawn_blocking(move || source.snapshot(&commit)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.invalid(&sha, reason, vec![json!({ "message": format!("{e:#}") })]),
            Err(e) => return self.invalid(&sha, reason, vec![json!({ "message": e.to_string() })]),
        };
        // A unit of a fleet is a directory with its own capstan.yaml: without one it is not a
        // unit at this commit (it is being retired), and nothing is applied with defaults.
        if self.label.is_some() && snapshot.config.is_none() {
            let message = format!("{} has no capstan.yaml at this commit: not a unit, nothing applied", self.name);
            return self.invalid(&sha, reason, vec![json!({ "message": message, "text": message })]);
        }
        let config = match &snapshot.config {
            Some(f) => match Config::parse(&f.path, &f.text) {
                Ok(c) => c,
                Err(d) => return self.invalid(&sha, reason, diagnostics_json(&d)),
            },
            None => Config::default(),
        };
        // Connected for another target or owner than this commit's capstan.yaml names: nothing
        // is sent (see `Unit::moved`).
        if let Some(why) = self.moved(&config) {
            tracing::warn!("not applying {}: {why}", short(&sha));
            return self.invalid(&sha, reason, vec![json!({ "message": why, "text": why })]);
        }
        let provider = self.connected.provider.as_ref();
        let flags = engine::PlanFlags { prune: config.prune, take_ownership: self.opts.take_ownership };
        // A commit followed from the one the platform was last made equal to is planned
        // incrementally (`engine::plan_since`); a drift check, sync, retry, rollback or continue,
        // and the first commit past a resync interval without a full plan, in full.
        let baseline = self.baseline.lock().unwrap().take().filter(|(base, _)| {
            let recent = self.last_full.lock().unwrap().is_some_and(|t| t.elapsed() < self.opts.resync);
            let followed = matches!(reason, Reason::Change | Reason::Poll | Reason::Webhook);
            followed && !drift_check && recent && live.as_deref() == Some(base.as_str())
        });
        let cache = Some(&self.render_cache);
        let baseline = baseline.map(|b| b.1);
        let since = session.plan_since(&snapshot, &config, &self.opts.render, flags, cache, baseline.as_ref());
        let (planned, next) = match since.await {
            Ok(engine::Since { planned, baseline, scope }) => {
                if scope.is_none() {
                    *self.last_full.lock().unwrap() = Some(Instant::now());
                }
                (planned, baseline)
            }
            Err(PlanError::Invalid(i)) => return self.invalid(&sha, reason, diagnostics_json(&i.0)),
            Err(PlanError::Observe(e)) => {
                self.events.publish(Event::ObserveFailed { sha: sha.clone(), message: e });
                return Reconciled::ObserveFailed;
            }
        };
        // The rendered manifest is kept once the plan is judged and applied: off the path from
        // a commit to its apply (its cost at 10,000 resources is a second of a debug build).
        let mut planned = planned;
        let documents = std::mem::take(&mut planned.rendered.documents);
        let redactor = planned.rendered.redactor.clone();
        let t = Instant::now();
        // The same bytes `capstan plan --repo ... --ref <sha> --output json` prints.
        let plan_json = PlanView::new(
            self.platform(),
            &planned.changes,
            &planned.plan,
            &planned.rendered.warnings,
            &planned.rendered.redactor,
            planned.preview.as_ref(),
        );
        if let Ok(text) = serde_json::to_string_pretty(&plan_json) {
            self.stored(self.store.set_plan(&sha, &format!("{text}\n")));
        }
        drop(plan_json);
        let plan_stored_in = t.elapsed();
        let result = self.judge(&sha, reason, drift_check, planned, next, session, &config).await;
        let t = Instant::now();
        let merged = redactor.value(&provider.merge_documents(&documents));
        drop(documents);
        self.stored(self.store.set_rendered(&sha, &merged));
        tracing::info!(
            plan_ms = plan_stored_in.as_secs_f64() * 1e3,
            rendered_ms = t.elapsed().as_secs_f64() * 1e3,
            "stored the plan and the rendered manifest"
        );
        result
    }

    /// A plan made: a drift check's report, the guards, and the apply.
    #[allow(clippy::too_many_arguments)]
    async fn judge(
        &self,
        sha: &str,
        reason: Reason,
        drift_check: bool,
        planned: Planned,
        next: engine::Baseline,
        session: Session<'_>,
        config: &Config,
    ) -> Reconciled {
        let sha = sha.to_string();
        if drift_check {
            let drifted: Vec<String> = planned
                .changes
                .changes
                .iter()
                .filter(|c| c.action != crate::diff::Action::NoOp)
                .map(|c| c.id.to_string())
                .collect();
            self.metrics.drifted_in(self.label.as_deref(), drifted.len() as i64);
            let changed = std::mem::replace(&mut self.status.lock().unwrap().drifted, drifted.clone()) != drifted;
            if drifted.is_empty() {
                *self.baseline.lock().unwrap() = Some((sha, next));
                return Reconciled::InSync;
            }
            if changed {
                let detail = json!({ "resources": drifted, "repairing": self.opts.self_heal });
                self.stored(self.store.record(&sha, reason.trigger(), "drift_found", (0, 0), &detail));
            }
            self.events.publish(Event::DriftFound {
                sha: sha.clone(),
                resources: drifted,
                repairing: self.opts.self_heal,
            });
            if !self.opts.self_heal {
                return Reconciled::DriftReported;
            }
        }
        let guards = Guards {
            mass_delete: &config.mass_delete,
            allow_mass_delete: self.opts.allow_mass_delete,
            allow_check_failures: self.opts.allow_check_failures,
        };
        // An applied commit whose drift repair would be refused stays applied.
        match session.guard(planned, guards) {
            Ok(cleared) => {
                let result = self.apply(&sha, reason, cleared, session).await;
                if result == Reconciled::Converged {
                    *self.baseline.lock().unwrap() = Some((sha, next));
                }
                result
            }
            Err(Refusal::MassDelete { deletes, why }) => self.refuse(&sha, reason, deletes, why, !drift_check),
            Err(Refusal::Check { guard, why }) => self.refuse_as(&sha, reason, &guard, 0, why, !drift_check),
        }
    }

    /// Record commits skipped over between `from` and `to` as superseded by `to`.
    pub(super) async fn supersede_between(&self, from: &str, to: &str) -> Vec<String> {
        let source = self.source.clone();
        let (from, to_) = (from.to_string(), to.to_string());
        let skipped = tokio::task::spawn_blocking(move || source.commits_between(&from, &to_, SUPERSEDED_LIMIT)).await;
        let skipped = match skipped {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("cannot list the commits before {}: {e:#}", short(to));
                return Vec::new();
            }
            Err(_) => return Vec::new(),
        };
        let mut superseded = Vec::new();
        for c in skipped {
            let known = self.store.status(&c).ok().flatten();
            if matches!(known, None | Some(CommitStatus::Pending | CommitStatus::Applying)) {
                self.stored(self.store.supersede(&c, to));
                superseded.push(c);
            }
        }
        superseded
    }
}

fn diagnostics_json(d: &Diagnostics) -> Vec<Value> {
    d.0.iter()
        .map(|x| {
            let mut v = serde_json::to_value(x).unwrap_or(Value::Null);
            v["text"] = json!(x.to_string());
            v
        })
        .collect()
}
