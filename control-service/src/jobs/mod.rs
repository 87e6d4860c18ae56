//! The scheduled jobs: exactly one replica runs them, each slot at most once.
//!
//! tokio-cron-scheduler (UTC, six-field cron, async jobs) fires the jobs
//! (the fixed ones and one `blocklist_import:<id>` per enabled blocklist
//! source, [`planned`]), which are registered only while this replica
//! leads and removed when it stops, or when their source goes (followers
//! schedule nothing). A firing runs only if:
//! * this replica still leads (inside its renew deadline),
//! * the job is not still running (no overlap: the firing is skipped),
//! * its ledger row `(job, scheduled_for)` can be inserted under this
//!   replica's current term (the database checks the term in the same
//!   statement): no row, no run.
//!
//! The slot of a firing is the cron time at or before the injected
//! [`Clock`]'s now (tokio-cron-scheduler itself reads the system clock to
//! decide when to fire); durations and retries run on tokio's clock.
//!
//! Misfire policy: a slot missed while nobody led (or while the job was
//! still running) is skipped; the job runs at its next slot. Each run is a
//! task of its own, so a panic is caught and recorded as a failed run. A
//! run that has nothing it can do ([`RunOutcome::Skipped`], e.g.
//! history_sync while fail2ban keeps no database) is recorded as `skipped`.
//! "Run now" requests from any replica are taken by the leader every retry
//! period and run as `manual` runs. A request is taken in the same
//! transaction that records its run, so it is never taken without a run:
//! one made while the job runs stays open and is run once as soon as that
//! run ends (all the requests that waited answered by one run).

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    auth::Auth,
    blocklist::{Blocklists, IMPORT_JOB, import_job},
    clock::Clock,
    geo_client::{GeoClient, GeoError},
    history::{History, SyncOutcome},
    kinds::{ImportStatus, RunTrigger},
    leader::{Leadership, SCHEDULER_LEASE},
    metrics::Metrics,
    settings::{RuntimeSettings, Schedules, parse_cron},
    store::{
        RunLedger, StoreError,
        lease::{NewRun, RequestedRun},
    },
};

/// Negatives the re-resolve job retries per run.
const RE_RESOLVE_LIMIT: u32 = 500;
/// Archived bans the country back-fill places per run.
const HISTORY_GEO_BACKFILL_LIMIT: u32 = 10_000;

/// The jobs: the fixed ones, and one import per blocklist source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    SessionCleanup,
    GeoCachePurge,
    GeoReResolve,
    HistorySync,
    HistoryGeoBackfill,
    HistoryRetention,
    /// The import of blocklist source `id` (`blocklist_import:<id>`).
    BlocklistImport(i64),
}

impl JobKind {
    /// The jobs every replica has (blocklist imports come and go with
    /// their sources).
    pub const ALL: [JobKind; 6] = [
        JobKind::SessionCleanup,
        JobKind::GeoCachePurge,
        JobKind::GeoReResolve,
        JobKind::HistorySync,
        JobKind::HistoryGeoBackfill,
        JobKind::HistoryRetention,
    ];

    /// The job's family: its name, or `blocklist_import` for every import
    /// (the metrics' label: one series per family, whatever the sources).
    pub fn family(self) -> &'static str {
        match self {
            JobKind::SessionCleanup => "session_cleanup",
            JobKind::GeoCachePurge => "geo_cache_purge",
            JobKind::GeoReResolve => "geo_re_resolve",
            JobKind::HistorySync => "history_sync",
            JobKind::HistoryGeoBackfill => "history_geo_backfill",
            JobKind::HistoryRetention => "history_retention",
            JobKind::BlocklistImport(_) => IMPORT_JOB,
        }
    }

    /// The job's name in the run ledger and on the API.
    pub fn name(self) -> String {
        match self {
            JobKind::BlocklistImport(id) => import_job(id),
            fixed => fixed.family().to_owned(),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        if let Some(id) = name.strip_prefix(IMPORT_JOB).and_then(|rest| rest.strip_prefix(':')) {
            // Digits only: "+7" or "07" would name the same source twice.
            return (!id.starts_with(['0', '+']) && id.bytes().all(|b| b.is_ascii_digit()))
                .then(|| id.parse().ok())
                .flatten()
                .map(JobKind::BlocklistImport);
        }
        Self::ALL.into_iter().find(|k| k.family() == name)
    }

    /// The schedule of a fixed job (`None` for an import: its source has it).
    pub fn schedule(self, schedules: &Schedules) -> Option<&str> {
        Some(match self {
            JobKind::SessionCleanup => &schedules.session_cleanup,
            JobKind::GeoCachePurge => &schedules.geo_cache_purge,
            JobKind::GeoReResolve => &schedules.geo_re_resolve,
            JobKind::HistorySync => &schedules.history_sync,
            JobKind::HistoryGeoBackfill => &schedules.history_geo_backfill,
            JobKind::HistoryRetention => &schedules.history_retention,
            JobKind::BlocklistImport(_) => return None,
        })
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobKind::BlocklistImport(id) => f.write_str(&import_job(*id)),
            fixed => f.write_str(fixed.family()),
        }
    }
}

/// The fixed jobs with their schedules.
fn fixed_jobs(schedules: &Schedules) -> Vec<(JobKind, String)> {
    JobKind::ALL.into_iter().filter_map(|kind| kind.schedule(schedules).map(|s| (kind, s.to_owned()))).collect()
}

/// Every job with its schedule now: the fixed ones (from the settings),
/// then one import per enabled blocklist source.
pub async fn planned(
    settings: &RuntimeSettings,
    blocklists: &Blocklists,
) -> Result<Vec<(JobKind, String)>, StoreError> {
    let schedules = settings.get().await?.schedules;
    let mut jobs = fixed_jobs(&schedules);
    for (id, schedule) in blocklists.scheduled(&schedules).await? {
        jobs.push((JobKind::BlocklistImport(id), schedule));
    }
    Ok(jobs)
}

/// What the job bodies use.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub auth: Auth,
    pub blocklists: Blocklists,
    pub history: History,
    pub geo: GeoClient,
    pub settings: RuntimeSettings,
}

/// How a run that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// It did its work: a summary for the log.
    Done(String),
    /// It had nothing it could do (e.g. fail2ban keeps no database): why,
    /// for the ledger. Recorded as `skipped`, logged at debug level only
    /// (the job says it once itself).
    Skipped(String),
}

impl From<String> for RunOutcome {
    fn from(summary: String) -> Self {
        RunOutcome::Done(summary)
    }
}

impl From<&str> for RunOutcome {
    fn from(summary: &str) -> Self {
        RunOutcome::Done(summary.to_owned())
    }
}

/// One run of `kind` (`trigger`: schedule or manual): its outcome, or the
/// error for the ledger.
async fn body(kind: JobKind, trigger: &'static str, ctx: JobContext) -> Result<RunOutcome, String> {
    let geo_error = |e: GeoError| e.to_string();
    let summary = match kind {
        JobKind::SessionCleanup => {
            ctx.auth.cleanup().await.map(|n| format!("{n} expired sessions deleted")).map_err(|e| e.to_string())
        }
        JobKind::GeoCachePurge => {
            if !ctx.geo.is_configured() {
                return Ok("no geo-service configured: nothing to purge".into());
            }
            let retention = ctx.settings.get().await.map_err(|e| e.to_string())?.geo_cache_retention;
            ctx.geo.purge_stale(retention).await.map(|n| format!("{n} stale geo cache rows purged")).map_err(geo_error)
        }
        JobKind::GeoReResolve => {
            if !ctx.geo.is_configured() {
                return Ok("no geo-service configured: nothing to re-resolve".into());
            }
            ctx.geo
                .re_resolve(RE_RESOLVE_LIMIT)
                .await
                .map(|(tried, found)| format!("{found} of {tried} negatives resolved"))
                .map_err(geo_error)
        }
        JobKind::HistorySync => match ctx.history.sync().await.map_err(|e| e.to_string())? {
            SyncOutcome::Synced(r) => Ok(format!(
                "{} read, {} archived, {} without a country, {} with unreadable data, {} recent rows re-checked",
                r.read, r.archived, r.without_country, r.unreadable, r.rechecked
            )),
            SyncOutcome::Skipped(why) => return Ok(RunOutcome::Skipped(why)),
        },
        JobKind::HistoryGeoBackfill => ctx
            .history
            .backfill_geo(HISTORY_GEO_BACKFILL_LIMIT)
            .await
            .map(|n| format!("{n} archived bans placed"))
            .map_err(|e| e.to_string()),
        JobKind::HistoryRetention => {
            ctx.history.apply_retention().await.map(|n| format!("{n} old bans deleted")).map_err(|e| e.to_string())
        }
        JobKind::BlocklistImport(id) => return import(&ctx.blocklists, id, trigger).await,
    };
    summary.map(RunOutcome::Done)
}

/// One import of blocklist source `id`: a partial or failed import fails
/// the job's run too (the import's own run row has the details).
async fn import(blocklists: &Blocklists, id: i64, trigger: &str) -> Result<RunOutcome, String> {
    let trigger = trigger.parse::<RunTrigger>().unwrap_or(RunTrigger::Manual);
    let run = blocklists.import_source(id, trigger).await.map_err(|e| e.to_string())?;
    let c = &run.counts;
    let summary = format!(
        "{}: {} valid, {} newly banned, {} already banned, {} unbanned, {} failed, {} invalid lines",
        run.status, c.valid, c.newly_banned, c.already_banned, c.unbanned, c.failed, c.invalid
    );
    match run.status {
        ImportStatus::Ok | ImportStatus::Unchanged => Ok(RunOutcome::Done(summary)),
        ImportStatus::Partial | ImportStatus::Failed => Err(match run.error {
            Some(error) => format!("{summary}: {error}"),
            None => summary,
        }),
    }
}

/// What a run executes (the real [`body`], or a test's).
type Runner =
    dyn Fn(JobKind, &'static str) -> Pin<Box<dyn Future<Output = Result<RunOutcome, String>> + Send>> + Send + Sync;

struct Inner {
    runner: Arc<Runner>,
    ledger: Arc<dyn RunLedger>,
    leadership: Leadership,
    /// Where the schedules come from.
    settings: RuntimeSettings,
    /// Where the blocklist sources' schedules come from (`None` in tests
    /// of the fixed jobs).
    blocklists: Option<Blocklists>,
    /// What time a cron firing is for.
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    running: Mutex<HashSet<JobKind>>,
    /// Jobs with "run now" requests waiting for their run to end.
    waiting: Mutex<HashSet<JobKind>>,
    /// Wakes the run loop when a run with waiting requests ends.
    ended: tokio::sync::Notify,
    tasks: TaskTracker,
    /// Cancels running jobs at the end of the drain.
    cancel: CancellationToken,
    /// Set at shutdown: no new runs.
    draining: CancellationToken,
}

/// The scheduler wrapper.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("replica", &self.inner.leadership.replica()).finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(
        ledger: Arc<dyn RunLedger>,
        leadership: Leadership,
        clock: Arc<dyn Clock>,
        ctx: JobContext,
        metrics: Metrics,
    ) -> Self {
        let settings = ctx.settings.clone();
        let blocklists = ctx.blocklists.clone();
        let runner: Arc<Runner> = Arc::new(move |kind, trigger| Box::pin(body(kind, trigger, ctx.clone())));
        Self::assemble(ledger, leadership, settings, Some(blocklists), clock, metrics, runner)
    }

    /// The scheduler with its parts (`blocklists: None` and a test's
    /// `runner` in the tests of the fixed jobs).
    fn assemble(
        ledger: Arc<dyn RunLedger>,
        leadership: Leadership,
        settings: RuntimeSettings,
        blocklists: Option<Blocklists>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        runner: Arc<Runner>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runner,
                ledger,
                leadership,
                settings,
                blocklists,
                clock,
                metrics,
                running: Mutex::default(),
                waiting: Mutex::default(),
                ended: tokio::sync::Notify::new(),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                draining: CancellationToken::new(),
            }),
        }
    }

    /// Keeps the cron jobs registered while this replica leads (and their
    /// schedules in step with the settings), and takes "run now" requests
    /// every `retry`, until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken, retry: Duration) -> anyhow::Result<()> {
        let cron = JobScheduler::new().await?;
        cron.start().await?;
        let mut registered: HashMap<JobKind, (Uuid, String)> = HashMap::new();
        let mut leadership = self.inner.leadership.clone();
        loop {
            if self.inner.leadership.is_leading() {
                if let Err(error) = self.sync_jobs(&cron, &mut registered).await {
                    tracing::warn!(%error, "cannot update the job schedules; retrying");
                }
                self.take_requests().await;
            } else if !registered.is_empty() {
                Self::unregister_all(&cron, &mut registered).await;
            }
            tokio::select! {
                () = stop.cancelled() => break,
                _ = leadership.changed() => {}
                () = self.inner.ended.notified() => {}
                () = tokio::time::sleep(retry) => {}
            }
        }
        self.inner.draining.cancel();
        Self::unregister_all(&cron, &mut registered).await;
        let mut cron = cron;
        if let Err(error) = cron.shutdown().await {
            tracing::warn!(%error, "cron scheduler shutdown");
        }
        Ok(())
    }

    async fn unregister_all(cron: &JobScheduler, registered: &mut HashMap<JobKind, (Uuid, String)>) {
        for (kind, (id, _)) in registered.drain() {
            if let Err(error) = cron.remove(&id).await {
                tracing::warn!(%error, job = %kind, "cannot unschedule");
            }
        }
        tracing::debug!("jobs unscheduled");
    }

    async fn sync_jobs(
        &self,
        cron: &JobScheduler,
        registered: &mut HashMap<JobKind, (Uuid, String)>,
    ) -> anyhow::Result<()> {
        let jobs = match &self.inner.blocklists {
            Some(blocklists) => planned(&self.inner.settings, blocklists).await?,
            None => fixed_jobs(&self.inner.settings.get().await?.schedules),
        };
        // Imports of deleted or disabled sources leave the schedule.
        let gone: Vec<JobKind> =
            registered.keys().filter(|kind| !jobs.iter().any(|(k, _)| k == *kind)).copied().collect();
        for kind in gone {
            if let Some((old, _)) = registered.remove(&kind) {
                cron.remove(&old).await?;
                tracing::info!(job = %kind, "unscheduled");
            }
        }
        for (kind, schedule) in jobs {
            if registered.get(&kind).is_some_and(|(_, s)| *s == schedule) {
                continue;
            }
            if let Some((old, _)) = registered.remove(&kind) {
                cron.remove(&old).await?;
            }
            let this = self.clone();
            let slot_schedule = schedule.clone();
            let job = Job::new_async(schedule.as_str(), move |_id, _cron| {
                let this = this.clone();
                let schedule = slot_schedule.clone();
                Box::pin(async move { this.fire_scheduled(kind, &schedule).await })
            })?;
            let id = cron.add(job).await?;
            tracing::info!(job = %kind, %schedule, "scheduled");
            registered.insert(kind, (id, schedule));
        }
        Ok(())
    }

    /// A cron firing of `kind`: runs it for the slot it is for, the cron
    /// time at or before now (not when the firing woke).
    async fn fire_scheduled(&self, kind: JobKind, schedule: &str) {
        let now = self.inner.clock.now();
        let slot = slot_of(schedule, now).unwrap_or(now) * 1000;
        self.fire(kind, slot, "schedule").await;
    }

    /// Starts one run for each job with open "run now" requests. The
    /// requests of a job that is still running stay open, and are taken
    /// when its run ends.
    async fn take_requests(&self) {
        let jobs = match self.inner.ledger.requested_jobs().await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "cannot read run-now requests");
                return;
            }
        };
        for job in jobs {
            match JobKind::parse(&job) {
                Some(kind) => self.fire_requested(kind).await,
                // Left open: a replica of another version may know it.
                None => tracing::debug!(%job, "run-now request for a job this replica does not know"),
            }
        }
    }

    fn release(&self, kind: JobKind) {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&kind);
    }

    /// Runs `kind` for its open "run now" requests if this replica leads
    /// and the job is not running (else they wait), taking the requests
    /// with the ledger row.
    async fn fire_requested(&self, kind: JobKind) {
        let inner = &self.inner;
        if inner.draining.is_cancelled() {
            return;
        }
        let Some(term) = inner.leadership.term() else { return };
        {
            // Under the `running` lock, so the run's end cannot slip between.
            let mut running = inner.running.lock().unwrap_or_else(PoisonError::into_inner);
            if !running.insert(kind) {
                tracing::debug!(job = %kind, "still running: the run-now request waits for the run to end");
                inner.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(kind);
                return;
            }
        }
        let job = kind.name();
        let run = RequestedRun { job: &job, term, replica: inner.leadership.replica(), lease: SCHEDULER_LEASE };
        match inner.ledger.start_requested_run(&run).await {
            Ok(Some(started)) => {
                let this = self.clone();
                let (id, slot) = (started.id, started.scheduled_for);
                inner.tasks.spawn(async move { this.execute(kind, "manual", id, slot, term).await });
            }
            Ok(None) => {
                tracing::debug!(job = %kind, term, "no open request, or the term is no longer current");
                self.release(kind);
            }
            Err(error) => {
                tracing::warn!(%error, job = %kind, "cannot record the requested run; it stays requested");
                self.release(kind);
            }
        }
    }

    /// Runs `kind` for `slot` if this replica leads, the job is not running
    /// and the ledger takes the row.
    async fn fire(&self, kind: JobKind, slot: i64, trigger: &'static str) {
        let inner = &self.inner;
        if inner.draining.is_cancelled() {
            return;
        }
        let Some(term) = inner.leadership.term() else { return };
        if !inner.running.lock().unwrap_or_else(PoisonError::into_inner).insert(kind) {
            tracing::warn!(job = %kind, slot, "still running: this slot is skipped");
            inner.metrics.job_run(kind.family(), "skipped", None);
            return;
        }
        let job = kind.name();
        let run = NewRun {
            job: &job,
            scheduled_for: slot,
            term,
            replica: inner.leadership.replica(),
            trigger,
            lease: SCHEDULER_LEASE,
        };
        let id = match inner.ledger.start_run(&run).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::debug!(job = %kind, slot, term, "slot already run, or the term is no longer current");
                inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&kind);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, job = %kind, "cannot record the run; not running it");
                inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&kind);
                return;
            }
        };
        let this = self.clone();
        inner.tasks.spawn(async move { this.execute(kind, trigger, id, slot, term).await });
    }

    async fn execute(&self, kind: JobKind, trigger: &'static str, id: i64, slot: i64, term: i64) {
        let inner = &self.inner;
        let started = Instant::now();
        tracing::info!(job = %kind, slot, term, "job started");
        let mut handle = tokio::spawn((inner.runner)(kind, trigger));
        let (status, error) = tokio::select! {
            joined = &mut handle => match joined {
                Ok(Ok(RunOutcome::Done(summary))) => {
                    tracing::info!(job = %kind, %summary, "job finished");
                    ("ok", None)
                }
                Ok(Ok(RunOutcome::Skipped(why))) => {
                    tracing::debug!(job = %kind, %why, "job skipped");
                    ("skipped", Some(why))
                }
                Ok(Err(error)) => {
                    tracing::warn!(job = %kind, %error, "job failed");
                    ("failed", Some(error))
                }
                Err(join) => {
                    let error = if join.is_panic() { "the job panicked".to_owned() } else { join.to_string() };
                    tracing::error!(job = %kind, %error, "job failed");
                    ("failed", Some(error))
                }
            },
            () = inner.cancel.cancelled() => {
                handle.abort();
                tracing::warn!(job = %kind, "job cancelled at shutdown");
                ("cancelled", Some("cancelled at shutdown".to_owned()))
            }
        };
        record_end(inner, kind, id, status, error.as_deref()).await;
        inner.metrics.job_run(kind.family(), status, Some(started.elapsed()));
        let waited = {
            let mut running = inner.running.lock().unwrap_or_else(PoisonError::into_inner);
            running.remove(&kind);
            inner.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&kind)
        };
        if waited {
            inner.ended.notify_one();
        }
    }

    /// Shutdown: no new runs; running jobs get `grace` to finish, then are
    /// cancelled (and recorded so).
    pub async fn drain(&self, grace: Duration) {
        self.inner.draining.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_err() {
            self.inner.cancel.cancel();
            self.inner.tasks.wait().await;
        }
    }
}

/// `now` (Unix seconds) as cron reads it.
fn utc(now: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(now, 0)
}

/// The time `schedule` fires next after `now` (Unix seconds, for ListJobs).
pub fn next_run(schedule: &str, now: i64) -> Option<i64> {
    parse_cron(schedule).ok()?.find_next_occurrence(&utc(now)?, false).ok().map(|t| t.timestamp())
}

/// The latest time `schedule` fires at or before `now` (Unix seconds): the
/// slot of a firing.
fn slot_of(schedule: &str, now: i64) -> Option<i64> {
    parse_cron(schedule).ok()?.find_previous_occurrence(&utc(now)?, true).ok().map(|t| t.timestamp())
}

#[cfg(test)]
mod tests;

/// How long the end of a run is retried while the database is away.
const FINISH_RETRY_FOR: Duration = Duration::from_secs(15);

/// Records the end of run `id`. The database may be briefly away (a
/// restart, a failover): the write is retried with backoff for
/// [`FINISH_RETRY_FOR`], so the run does not stay `running` in the ledger.
async fn record_end(inner: &Inner, kind: JobKind, id: i64, status: &str, error: Option<&str>) {
    let deadline = tokio::time::Instant::now() + FINISH_RETRY_FOR;
    let mut pause = Duration::from_millis(250);
    loop {
        match inner.ledger.finish_run(id, status, error).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, job = %kind, "cannot record the end of the run yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::warn!(error = %e, job = %kind, "cannot record the end of the run");
                return;
            }
        }
    }
}
