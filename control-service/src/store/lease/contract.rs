//! [`LeaseStore`] and [`RunLedger`] on both backends: terms, the database's
//! clock, one run per slot, run-now requests.

use super::*;
use crate::store::{Pool, testing};

async fn lease_terms_grow_with_each_new_holder(store: &(impl LeaseStore + RunLedger)) {
    let a = store.acquire_lease("scheduler", "a", 60_000).await.unwrap().expect("free lease");
    assert_eq!(a.term, 1);
    assert!(a.expires_at - a.db_now >= 59_000 && a.expires_at - a.db_now <= 60_000);
    assert!(store.acquire_lease("scheduler", "b", 60_000).await.unwrap().is_none(), "a holds it");
    let renewed = store.acquire_lease("scheduler", "a", 60_000).await.unwrap().unwrap();
    assert_eq!((renewed.term, renewed.acquired_at), (1, a.acquired_at), "a renewal keeps the term");
    assert!(!store.release_lease("scheduler", "a", 7).await.unwrap(), "a stale term releases nothing");
    assert!(store.release_lease("scheduler", "a", 1).await.unwrap());
    let b = store.acquire_lease("scheduler", "b", 100).await.unwrap().expect("released");
    assert_eq!(b.term, 2);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let a_again = store.acquire_lease("scheduler", "a", 60_000).await.unwrap().expect("b's lease expired");
    assert_eq!(a_again.term, 3);
    let lease = store.lease("scheduler").await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("a", 3));
    assert!(store.lease("other").await.unwrap().is_none());
}

async fn a_slot_runs_once_and_only_under_the_current_term(store: &(impl LeaseStore + RunLedger)) {
    let grant = store.acquire_lease("jobs", "r1", 60_000).await.unwrap().unwrap();
    let run = |term: i64, slot: i64| NewRun {
        job: "history_sync",
        scheduled_for: slot,
        term,
        replica: "r1",
        trigger: "schedule",
        lease: "jobs",
    };
    let id = store.start_run(&run(grant.term, 1_000)).await.unwrap().expect("a run");
    assert!(store.start_run(&run(grant.term, 1_000)).await.unwrap().is_none(), "the slot ran already");
    assert!(store.start_run(&run(grant.term + 1, 2_000)).await.unwrap().is_none(), "not the current term");
    let other = NewRun { replica: "r2", ..run(grant.term, 3_000) };
    assert!(store.start_run(&other).await.unwrap().is_none(), "not the holder");
    store.finish_run(id, "ok", None).await.unwrap();
    let second = store.start_run(&run(grant.term, 2_000)).await.unwrap().unwrap();
    store.finish_run(second, "failed", Some("boom")).await.unwrap();
    let last = store.last_runs().await.unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].scheduled_for, last[0].status.as_str(), last[0].error.as_deref()),
        (2_000, "failed", Some("boom"))
    );
    // A run with nothing it could do (migration 0005 allows the status).
    let third = store.start_run(&run(grant.term, 2_500)).await.unwrap().unwrap();
    store.finish_run(third, "skipped", Some("fail2ban keeps no database")).await.unwrap();
    let last = store.last_runs().await.unwrap();
    assert_eq!((last[0].status.as_str(), last[0].error.as_deref()), ("skipped", Some("fail2ban keeps no database")));
    // Once the lease is gone, the term can no longer start anything.
    assert!(store.release_lease("jobs", "r1", grant.term).await.unwrap());
    assert!(store.start_run(&run(grant.term, 4_000)).await.unwrap().is_none(), "released");
}

async fn run_now_requests_are_taken_with_the_run_that_answers_them(store: &(impl LeaseStore + RunLedger)) {
    let grant = store.acquire_lease("requests", "r1", 60_000).await.unwrap().unwrap();
    let run = |term: i64| RequestedRun { job: "geo_re_resolve", term, replica: "r1", lease: "requests" };
    assert!(store.requested_jobs().await.unwrap().is_empty());
    assert!(store.start_requested_run(&run(grant.term)).await.unwrap().is_none(), "nothing asked");
    let first = store.request_run("geo_re_resolve", "r2").await.unwrap();
    let second = store.request_run("geo_re_resolve", "r3").await.unwrap();
    assert!(second > first);
    assert_eq!(store.requested_jobs().await.unwrap(), ["geo_re_resolve"]);
    // A stale term records no run and takes nothing.
    assert!(store.start_requested_run(&run(grant.term + 1)).await.unwrap().is_none());
    assert_eq!(store.requested_jobs().await.unwrap(), ["geo_re_resolve"], "still open");
    // One run answers both requests.
    let started = store.start_requested_run(&run(grant.term)).await.unwrap().expect("a run");
    assert!(store.requested_jobs().await.unwrap().is_empty(), "taken");
    assert!(store.start_requested_run(&run(grant.term)).await.unwrap().is_none(), "taken once");
    let last = store.last_runs().await.unwrap();
    let manual = last.iter().find(|r| r.job == "geo_re_resolve").expect("the run");
    assert_eq!(
        (manual.id, manual.scheduled_for, manual.trigger.as_str(), manual.term),
        (started.id, started.scheduled_for, "manual", grant.term)
    );
}

async fn run_all(store: &(impl LeaseStore + RunLedger)) {
    lease_terms_grow_with_each_new_holder(store).await;
    a_slot_runs_once_and_only_under_the_current_term(store).await;
    run_now_requests_are_taken_with_the_run_that_answers_them(store).await;
}

#[tokio::test]
async fn lease_and_ledger_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn lease_and_ledger_on_postgres() {
    let (store, _schema) = testing::postgres("control_lease").await;
    run_all(&store).await;
    store.close().await;
}
