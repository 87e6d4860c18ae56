//! The gates of a run, on a real SQLite ledger: leadership, no overlap,
//! one row per slot, a caught panic, cancellation at shutdown, run-now
//! requests made during a run.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::*;
use crate::{
    clock::{ManualClock, SystemClock},
    leader::{Elector, ElectorSettings},
    settings::{RuntimeSettings, SettingsUpdate},
    store::{
        Stores,
        lease::JobRun,
        testing::{self, MemoryLease, MemoryLedger, MemorySettings},
    },
};

async fn setup(runner: Arc<Runner>, leads: bool) -> (Scheduler, Arc<dyn RunLedger>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::of(testing::sqlite_in(&dir, "jobs.db").await);
    let grant = stores.lease.acquire_lease(SCHEDULER_LEASE, "r1", 60_000).await.unwrap().unwrap();
    let leadership = if leads { Leadership::fixed("r1", grant.term) } else { Leadership::follower("r1") };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let settings = RuntimeSettings::new(stores.settings.clone(), clock.clone());
    let scheduler =
        Scheduler::assemble(stores.ledger.clone(), leadership, settings, None, clock, Metrics::new(), runner);
    (scheduler, stores.ledger, dir)
}

async fn runs(store: &Arc<dyn RunLedger>) -> Vec<JobRun> {
    store.last_runs().await.unwrap()
}

#[tokio::test]
async fn a_panicking_job_is_recorded_as_failed_and_the_scheduler_lives_on() {
    let runner: Arc<Runner> = Arc::new(|kind, _| {
        Box::pin(async move {
            assert!(kind != JobKind::HistorySync, "boom");
            Ok("fine".into())
        })
    });
    let (scheduler, store, _dir) = setup(runner, true).await;
    scheduler.fire(JobKind::HistorySync, 1_000, "schedule").await;
    scheduler.fire(JobKind::SessionCleanup, 1_000, "schedule").await;
    scheduler.drain(Duration::from_secs(5)).await;
    let runs = runs(&store).await;
    let status = |job: &str| runs.iter().find(|r| r.job == job).map(|r| (r.status.clone(), r.error.clone()));
    assert_eq!(status("history_sync"), Some(("failed".into(), Some("the job panicked".into()))));
    assert_eq!(status("session_cleanup"), Some(("ok".into(), None)));
}

#[tokio::test]
async fn a_job_never_overlaps_itself_and_a_slot_runs_once() {
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = started.clone();
    let runner: Arc<Runner> = Arc::new(move |_, _| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok("slow".into())
        })
    });
    let (scheduler, store, _dir) = setup(runner, true).await;
    scheduler.fire(JobKind::GeoReResolve, 1_000, "schedule").await;
    // Still running: the next slot is skipped (misfire policy), not queued.
    scheduler.fire(JobKind::GeoReResolve, 2_000, "schedule").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Done: a slot that already ran does not run again; a new one does.
    scheduler.fire(JobKind::GeoReResolve, 1_000, "schedule").await;
    scheduler.fire(JobKind::GeoReResolve, 3_000, "schedule").await;
    scheduler.drain(Duration::from_secs(5)).await;
    let last = runs(&store).await;
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].scheduled_for, last[0].status.as_str()), (3_000, "ok"));
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2, "two runs in all: slots 1000 and 3000");
}

#[tokio::test]
async fn a_follower_runs_nothing() {
    let runner: Arc<Runner> = Arc::new(|_, _| Box::pin(async { Ok("ran".into()) }));
    let (scheduler, store, _dir) = setup(runner, false).await;
    scheduler.fire(JobKind::SessionCleanup, 1_000, "schedule").await;
    scheduler.drain(Duration::from_secs(1)).await;
    assert!(runs(&store).await.is_empty());
}

#[tokio::test]
async fn shutdown_cancels_what_does_not_finish_in_time() {
    let runner: Arc<Runner> = Arc::new(|_, _| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok("never".into())
        })
    });
    let (scheduler, store, _dir) = setup(runner, true).await;
    scheduler.fire(JobKind::GeoCachePurge, 1_000, "schedule").await;
    scheduler.drain(Duration::from_millis(200)).await;
    let last = runs(&store).await;
    assert_eq!((last[0].status.as_str(), last[0].finished_at.is_some()), ("cancelled", true));
    // Draining: no new runs.
    scheduler.fire(JobKind::GeoCachePurge, 2_000, "schedule").await;
    assert_eq!(runs(&store).await[0].scheduled_for, 1_000);
}

/// Every ledger row of `job`: (slot, trigger, status), oldest first.
async fn ledger(dir: &tempfile::TempDir, job: &str) -> Vec<(i64, String, String)> {
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query_as("SELECT scheduled_for, trigger, status FROM job_runs WHERE job = $1 ORDER BY id")
        .bind(job)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

// No timers here (so no paused clock): the job body blocks on a semaphore
// until the test releases it, and every step waits on an event.
#[tokio::test]
async fn run_now_asked_while_the_job_runs_runs_once_afterwards() {
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let runner_gate = gate.clone();
    let runner: Arc<Runner> = Arc::new(move |kind, _| {
        started_tx.send(kind).unwrap();
        let gate = runner_gate.clone();
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            Ok("released".into())
        })
    });
    let (scheduler, store, dir) = setup(runner, true).await;
    scheduler.fire(JobKind::GeoReResolve, 1_000, "schedule").await;
    assert_eq!(started.recv().await, Some(JobKind::GeoReResolve));

    // Two requests while it runs: neither starts a run now, neither is lost.
    store.request_run("geo_re_resolve", "r2").await.unwrap();
    scheduler.take_requests().await;
    store.request_run("geo_re_resolve", "r3").await.unwrap();
    scheduler.take_requests().await;
    assert!(started.try_recv().is_err(), "a second run while the first one runs");
    assert_eq!(store.requested_jobs().await.unwrap(), ["geo_re_resolve"], "the requests wait");

    // The run ends: the scheduler's loop is woken, and one run answers both.
    gate.add_permits(1);
    scheduler.inner.ended.notified().await;
    scheduler.take_requests().await;
    assert_eq!(started.recv().await, Some(JobKind::GeoReResolve));
    assert!(store.requested_jobs().await.unwrap().is_empty(), "taken with the run");
    // Taking again while that run goes on, and after it, starts nothing.
    scheduler.take_requests().await;
    gate.add_permits(1);
    scheduler.drain(Duration::from_secs(5)).await;
    scheduler.take_requests().await;
    assert!(started.try_recv().is_err(), "the requests ran twice");

    let rows = ledger(&dir, "geo_re_resolve").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1.as_str(), rows[0].2.as_str()), (1_000, "schedule", "ok"));
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("manual", "ok"));
    assert!(rows[1].0 > 1_000, "the manual slot is the request's time: {rows:?}");
}

#[tokio::test]
async fn a_follower_leaves_run_now_requests_for_the_leader() {
    let runner: Arc<Runner> = Arc::new(|_, _| Box::pin(async { Ok("ran".into()) }));
    let (scheduler, store, _dir) = setup(runner, false).await;
    store.request_run("session_cleanup", "r2").await.unwrap();
    scheduler.take_requests().await;
    scheduler.drain(Duration::from_secs(1)).await;
    assert!(runs(&store).await.is_empty());
    assert_eq!(store.requested_jobs().await.unwrap(), ["session_cleanup"], "still open for a leader");
}

#[tokio::test]
async fn a_run_with_nothing_to_do_is_recorded_as_skipped_with_its_reason() {
    let runner: Arc<Runner> =
        Arc::new(|_, _| Box::pin(async { Ok(RunOutcome::Skipped("fail2ban keeps no database".into())) }));
    let (scheduler, store, _dir) = setup(runner, true).await;
    scheduler.fire(JobKind::HistorySync, 1_000, "schedule").await;
    scheduler.drain(Duration::from_secs(5)).await;
    let last = runs(&store).await;
    assert_eq!(
        (last[0].status.as_str(), last[0].error.as_deref(), last[0].finished_at.is_some()),
        ("skipped", Some("fail2ban keeps no database"), true)
    );
}

// Below, tokio's clock is paused (no real sleeps, exact times), so the
// stores are in memory: a real pool's timeouts would fire as time jumps.

const T0: i64 = 1_800_000_000;

/// Settings whose cron schedules do not come round during a test
/// (January 1st, midnight).
async fn quiet_settings(clock: Arc<dyn Clock>) -> RuntimeSettings {
    let settings = RuntimeSettings::new(Arc::new(MemorySettings::default()), clock);
    let never = || Some("0 0 0 1 1 *".to_owned());
    let update = SettingsUpdate {
        session_cleanup_schedule: never(),
        geo_cache_purge_schedule: never(),
        geo_re_resolve_schedule: never(),
        history_sync_schedule: never(),
        history_geo_backfill_schedule: never(),
        history_retention_schedule: never(),
        ..Default::default()
    };
    settings.update(&update).await.unwrap();
    settings
}

/// A runner that reports each run's job and start time.
fn reporting_runner() -> (Arc<Runner>, mpsc::UnboundedReceiver<(JobKind, Instant)>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let runner: Arc<Runner> = Arc::new(move |kind, _| {
        started_tx.send((kind, Instant::now())).unwrap();
        Box::pin(async { Ok("ran".into()) })
    });
    (runner, started)
}

#[tokio::test(start_paused = true)]
async fn run_now_requests_are_taken_at_the_run_loops_next_turn() {
    // A real elector over a lease in memory; it renews every 100 s, after this test.
    let elector_settings = ElectorSettings {
        replica: "r1".into(),
        ttl: Duration::from_secs(300),
        renew_deadline: Duration::from_secs(200),
        retry: Duration::from_secs(5),
    };
    let (elector, mut leadership) = Elector::new(Arc::new(MemoryLease::default()), elector_settings, Metrics::new());
    let stop = CancellationToken::new();
    let elector = tokio::spawn({
        let stop = stop.clone();
        async move { elector.run(stop).await }
    });
    assert!(leadership.changed().await && leadership.is_leading());

    let (runner, mut started) = reporting_runner();
    let ledger = Arc::new(MemoryLedger::default());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(T0));
    let settings = quiet_settings(clock.clone()).await;
    let scheduler = Scheduler::assemble(ledger.clone(), leadership, settings, None, clock, Metrics::new(), runner);
    let retry = Duration::from_secs(30);
    let began = Instant::now();
    let run_loop = tokio::spawn(scheduler.clone().run(stop.clone(), retry));

    tokio::time::sleep(Duration::from_secs(1)).await;
    ledger.request_run("geo_re_resolve", "r2").await.unwrap();
    let (kind, at) = started.recv().await.unwrap();
    assert_eq!(kind, JobKind::GeoReResolve);
    assert!(at - began >= retry && at - began < retry + Duration::from_secs(1), "{:?}", at - began);
    ledger.request_run("session_cleanup", "r3").await.unwrap();
    let (kind, at) = started.recv().await.unwrap();
    assert_eq!(kind, JobKind::SessionCleanup);
    assert!(at - began >= 2 * retry && at - began < 2 * retry + Duration::from_secs(1), "{:?}", at - began);

    stop.cancel();
    run_loop.await.unwrap().unwrap();
    scheduler.drain(Duration::from_secs(5)).await;
    elector.await.unwrap();
    let runs: Vec<_> = ledger.runs().into_iter().map(|r| (r.job, r.trigger, r.status)).collect();
    let run = |job: &str| (job.to_owned(), "manual".to_owned(), "ok".to_owned());
    assert_eq!(runs, [run("geo_re_resolve"), run("session_cleanup")]);
}

#[tokio::test(start_paused = true)]
async fn a_cron_firing_runs_for_the_slot_the_clock_is_in() {
    let (runner, mut started) = reporting_runner();
    let ledger = Arc::new(MemoryLedger::default());
    // 08:01:35 UTC.
    let clock = ManualClock::at(T0 + 95);
    let settings = quiet_settings(Arc::new(clock.clone())).await;
    let scheduler = Scheduler::assemble(
        ledger.clone(),
        Leadership::fixed("r1", 1),
        settings,
        None,
        Arc::new(clock.clone()),
        Metrics::new(),
        runner,
    );
    scheduler.fire_scheduled(JobKind::HistorySync, "0 * * * * *").await;
    assert_eq!(started.recv().await.map(|s| s.0), Some(JobKind::HistorySync));
    // A late second firing in the same minute is the same slot: no run.
    clock.advance(20);
    // (The first run has ended: the next firing is not skipped for overlap.)
    tokio::time::sleep(Duration::from_millis(1)).await;
    scheduler.fire_scheduled(JobKind::HistorySync, "0 * * * * *").await;
    clock.advance(10);
    scheduler.fire_scheduled(JobKind::HistorySync, "0 * * * * *").await;
    scheduler.drain(Duration::from_secs(5)).await;
    let slots: Vec<i64> = ledger.runs().iter().map(|r| r.scheduled_for).collect();
    assert_eq!(slots, [(T0 + 60) * 1000, (T0 + 120) * 1000], "08:01:00 and 08:02:00, in ms");
}

#[tokio::test(start_paused = true)]
async fn the_end_of_a_run_is_retried_with_backoff_while_the_ledger_is_away() {
    let (runner, _started) = reporting_runner();
    let ledger = Arc::new(MemoryLedger::default());
    ledger.finish_failures.store(3, std::sync::atomic::Ordering::SeqCst);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(T0));
    let settings = quiet_settings(clock.clone()).await;
    let scheduler =
        Scheduler::assemble(ledger.clone(), Leadership::fixed("r1", 1), settings, None, clock, Metrics::new(), runner);
    let began = Instant::now();
    scheduler.fire(JobKind::SessionCleanup, 1_000, "schedule").await;
    scheduler.drain(Duration::from_secs(60)).await;
    // 250 ms, 500 ms, 1 s between the four tries.
    assert_eq!(began.elapsed(), Duration::from_millis(1_750));
    assert_eq!(ledger.finish_calls.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(ledger.runs()[0].status, "ok");
}

#[test]
fn job_names_read_back_and_imports_are_named_by_source() {
    for kind in JobKind::ALL.into_iter().chain([JobKind::BlocklistImport(7)]) {
        assert_eq!(JobKind::parse(&kind.name()), Some(kind), "{kind}");
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(JobKind::BlocklistImport(7).name(), "blocklist_import:7");
    assert_eq!(JobKind::BlocklistImport(7).family(), "blocklist_import");
    assert_eq!(JobKind::BlocklistImport(7).schedule(&crate::settings::Settings::default().schedules), None);
    // One spelling per source: no sign, no leading zero, digits only.
    for bad in
        ["blocklist_import", "blocklist_import:", "blocklist_import:+7", "blocklist_import:07", "blocklist_import:x"]
    {
        assert_eq!(JobKind::parse(bad), None, "{bad}");
    }
    assert_eq!(JobKind::parse("blocklist_import:99999999999999999999"), None, "out of range");
}
