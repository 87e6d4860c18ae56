//! The gates of a run, on a real SQLite ledger: leadership, no overlap,
//! one row per slot, a caught panic, cancellation at shutdown, run-now
//! requests made during a run.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    clock::SystemClock,
    settings::RuntimeSettings,
    store::{Stores, lease::JobRun, testing},
};

async fn setup(runner: Arc<Runner>, leads: bool) -> (Scheduler, Arc<dyn RunLedger>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::of(testing::sqlite_in(&dir, "jobs.db").await);
    let grant = stores.lease.acquire_lease(SCHEDULER_LEASE, "r1", 60_000).await.unwrap().unwrap();
    let leadership = if leads { Leadership::fixed("r1", grant.term) } else { Leadership::follower("r1") };
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
    let settings = RuntimeSettings::new(stores.settings.clone(), clock.clone());
    let policy = crate::auth::ThrottlePolicy { per_client: 5, global: 50, window: Duration::from_secs(60) };
    let auth = Auth::new(stores.auth.clone(), settings.clone(), clock, policy, false);
    let geo = GeoClient::new(None, Duration::from_secs(1), None, None).unwrap();
    let socket = crate::fail2ban::SocketClient::new(
        crate::fail2ban::SocketSettings {
            path: dir.path().join("none.sock"),
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(1),
            max_in_flight: 1,
        },
        Metrics::new(),
    );
    let start = crate::fail2ban::StartSettings {
        client_binary: "fail2ban-client".into(),
        config_dir: None,
        timeout: Duration::from_secs(1),
    };
    let fail2ban = crate::fail2ban::Fail2ban::new(socket, start);
    let history =
        History::new(stores.history.clone(), fail2ban, geo.clone(), settings.clone(), Arc::new(SystemClock), None);
    let ctx = JobContext { auth, history, geo, settings };
    (Scheduler::with_runner(stores.ledger.clone(), leadership, ctx, Metrics::new(), runner), stores.ledger, dir)
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
