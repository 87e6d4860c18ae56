//! [`HostStore`] on both backends: tokens used once (also when two use one
//! at the same moment), expiry, names, revocation and the stream lease.

use std::{sync::Arc, time::Duration};

use super::*;
use crate::store::{Pool, testing};

const HOUR_MS: i64 = 3_600_000;
const HASH_A: [u8; 32] = [1; 32];

fn names(name: &str) -> Vec<String> {
    vec![name.to_owned(), format!("{name}-2")]
}

fn presence(jails: &str) -> Presence<'_> {
    Presence {
        agent_version: "0.1.0",
        fail2ban_version: "1.1.0",
        jails,
        jail_states: r#"[{"name":"sshd","currently_failed":1,"total_failed":2,"currently_banned":3,"total_banned":4}]"#,
        states_age_ms: Some(2_000),
        outbox_backlog: 7,
    }
}

fn claim<'a>(host: &'a str, stream_id: &'a str, instance: &'a str) -> StreamClaim<'a> {
    StreamClaim { host, stream_id, replica: "replica-1", instance }
}

async fn enroll(store: &impl HostStore, token: [u8; 32], id: &str, name: &str) -> Enrollment {
    let names = names(name);
    store.enroll(&token, &NewHost { id, names: &names, credential_hash: &HASH_A }).await.unwrap()
}

async fn a_token_enrolls_once(store: &impl HostStore) {
    let expires = store.insert_enrollment_token(&[10; 32], HOUR_MS).await.unwrap();
    assert!(expires > 0);
    let Enrollment::Enrolled(host) = enroll(store, [10; 32], "host-a", "web").await else { panic!("enrolled") };
    assert_eq!((host.id.as_str(), host.name.as_str(), host.revoked_at), ("host-a", "web", None));
    assert_eq!(host.jails, "[]");
    assert_eq!(enroll(store, [10; 32], "host-b", "db").await, Enrollment::TokenRefused, "used");
    assert_eq!(enroll(store, [11; 32], "host-b", "db").await, Enrollment::TokenRefused, "unknown");
    assert!(store.host("host-b").await.unwrap().is_none(), "nothing written");
    // An id already enrolled leaves the token unused.
    store.insert_enrollment_token(&[12; 32], HOUR_MS).await.unwrap();
    assert_eq!(enroll(store, [12; 32], "host-a", "other").await, Enrollment::IdTaken);
    // A taken name gets the next one.
    let Enrollment::Enrolled(second) = enroll(store, [12; 32], "host-b", "web").await else { panic!("token unused") };
    assert_eq!(second.name, "web-2");
    store.insert_enrollment_token(&[13; 32], HOUR_MS).await.unwrap();
    assert_eq!(enroll(store, [13; 32], "host-c", "web").await, Enrollment::NameTaken);
    let (hash, revoked) = store.credential("host-a").await.unwrap().unwrap();
    assert_eq!((hash.as_slice(), revoked), (&HASH_A[..], None));
    assert!(store.credential("nobody").await.unwrap().is_none());
}

async fn concurrent_uses_enroll_once<S: HostStore + 'static>(store: Arc<S>) {
    store.insert_enrollment_token(&[20; 32], HOUR_MS).await.unwrap();
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let id = format!("race-{i}");
            let names = vec![id.clone()];
            store.enroll(&[20; 32], &NewHost { id: &id, names: &names, credential_hash: &HASH_A }).await.unwrap()
        })
    });
    let mut enrolled = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        match attempt.await.unwrap() {
            Enrollment::Enrolled(_) => enrolled += 1,
            Enrollment::TokenRefused => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(enrolled, 1, "one token, one host");
    let races = store.hosts().await.unwrap().into_iter().filter(|h| h.id.starts_with("race-")).count();
    assert_eq!(races, 1);
}

async fn an_expired_token_is_refused(store: &impl HostStore) {
    store.insert_enrollment_token(&[30; 32], 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(enroll(store, [30; 32], "late", "late").await, Enrollment::TokenRefused);
    assert!(store.host("late").await.unwrap().is_none());
}

async fn rename_and_revoke(store: &impl HostStore) {
    store.insert_enrollment_token(&[40; 32], HOUR_MS).await.unwrap();
    enroll(store, [40; 32], "host-r", "renamed-from").await;
    let Rename::Renamed(row) = store.rename_host("host-r", "mail").await.unwrap() else { panic!("renamed") };
    assert_eq!(row.name, "mail");
    assert_eq!(store.rename_host("host-r", "web").await.unwrap(), Rename::NameTaken, "web is host-a's");
    assert_eq!(store.host("host-r").await.unwrap().unwrap().name, "mail", "unchanged");
    assert_eq!(store.rename_host("nobody", "x").await.unwrap(), Rename::NotFound);
    assert!(store.take_stream(&claim("host-r", "s1", "i1"), &presence("[]"), 15_000).await.unwrap());
    let revoked = store.revoke_host("host-r").await.unwrap().expect("known");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.stream_holder, None, "the lease goes with the host");
    let again = store.revoke_host("host-r").await.unwrap().unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at, "revoked once");
    assert!(store.revoke_host("nobody").await.unwrap().is_none());
    assert!(!store.refresh_stream("host-r", "s1", &presence("[]")).await.unwrap(), "revoked: no refresh");
    assert!(!store.take_stream(&claim("host-r", "s2", "i1"), &presence("[]"), 15_000).await.unwrap());
    assert!(store.credential("host-r").await.unwrap().unwrap().1.is_some());
}

async fn one_stream_per_host(store: &impl HostStore) {
    store.insert_enrollment_token(&[50; 32], HOUR_MS).await.unwrap();
    enroll(store, [50; 32], "host-s", "stream").await;
    let jails = r#"["sshd"]"#;
    assert!(store.take_stream(&claim("host-s", "s1", "i1"), &presence(jails), 15_000).await.unwrap(), "free");
    let row = store.host("host-s").await.unwrap().unwrap();
    assert_eq!((row.stream_holder.as_deref(), row.jails.as_str()), (Some("replica-1"), jails));
    assert_eq!(row.agent_version, "0.1.0");
    assert!(row.last_seen.is_some() && row.stream_seen_at.is_some());
    // Another process with the same credential is refused while s1 is fresh.
    assert!(!store.take_stream(&claim("host-s", "s2", "i2"), &presence("[]"), 15_000).await.unwrap());
    assert!(store.refresh_stream("host-s", "s1", &presence(r#"["sshd","nginx"]"#)).await.unwrap());
    assert_eq!(store.host("host-s").await.unwrap().unwrap().jails, r#"["sshd","nginx"]"#);
    assert!(!store.refresh_stream("host-s", "s2", &presence("[]")).await.unwrap(), "not the holder");
    // The same agent process reconnecting takes over at once.
    assert!(store.take_stream(&claim("host-s", "s3", "i1"), &presence(jails), 15_000).await.unwrap());
    assert!(!store.refresh_stream("host-s", "s1", &presence("[]")).await.unwrap(), "taken over");
    assert!(!store.release_stream("host-s", "s1").await.unwrap(), "the old stream releases nothing");
    // Stale: no refresh within the window.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.take_stream(&claim("host-s", "s4", "i4"), &presence("[]"), 100).await.unwrap(), "stale");
    assert!(store.release_stream("host-s", "s4").await.unwrap());
    let row = store.host("host-s").await.unwrap().unwrap();
    assert_eq!((row.stream_holder, row.stream_seen_at), (None, None));
    assert!(store.take_stream(&claim("host-s", "s5", "i5"), &presence("[]"), 15_000).await.unwrap(), "released");
    assert!(!store.take_stream(&claim("nobody", "s6", "i6"), &presence("[]"), 15_000).await.unwrap());
}

fn command<'a>(id: &'a str, host: &'a str, ttl_ms: i64) -> NewCommand<'a> {
    NewCommand { id, host, operation: r#"{"op":"server_status"}"#, ttl_ms }
}

async fn commands_are_taken_once_and_never_late<S: HostStore + 'static>(store: Arc<S>) {
    store.insert_command(&command("c1", "cmd-a", 60_000)).await.unwrap();
    store.insert_command(&command("c2", "cmd-a", 1)).await.unwrap();
    store.insert_command(&command("c3", "cmd-b", 60_000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut waiting = store.hosts_with_commands().await.unwrap();
    waiting.sort();
    assert_eq!(waiting, ["cmd-a", "cmd-b"]);
    let taken = store.take_commands("cmd-a", "replica-1").await.unwrap();
    assert_eq!(taken.len(), 1, "c2's deadline passed: never taken: {taken:?}");
    assert_eq!((taken[0].id.as_str(), taken[0].host_id.as_str()), ("c1", "cmd-a"));
    assert!(taken[0].left_ms > 50_000 && taken[0].left_ms <= 60_000, "{taken:?}");
    assert!(store.take_commands("cmd-a", "replica-2").await.unwrap().is_empty(), "taken once");
    assert_eq!(store.hosts_with_commands().await.unwrap(), ["cmd-b"]);

    // Two replicas at once: one takes it.
    store.insert_command(&command("c4", "cmd-c", 60_000)).await.unwrap();
    let racers = ["r1", "r2", "r3", "r4"].map(|replica| {
        let store = store.clone();
        tokio::spawn(async move { store.take_commands("cmd-c", replica).await.unwrap().len() })
    });
    let mut takes = 0;
    for racer in racers {
        takes += racer.await.unwrap();
    }
    assert_eq!(takes, 1);
    // Given back unsent: taken again, once.
    assert!(store.return_command("c4", "cmd-c").await.unwrap());
    assert_eq!(store.take_commands("cmd-c", "r2").await.unwrap().len(), 1);
    assert!(store.take_commands("cmd-c", "r3").await.unwrap().is_empty());

    assert_eq!(store.command_outcome("c1").await.unwrap(), None);
    assert!(store.finish_command("c1", r#"{"reply":"x"}"#).await.unwrap());
    assert!(!store.finish_command("c1", r#"{"reply":"y"}"#).await.unwrap(), "one outcome");
    assert_eq!(store.command_outcome("c1").await.unwrap().as_deref(), Some(r#"{"reply":"x"}"#));
    store.delete_command("c1").await.unwrap();
    assert_eq!(store.command_outcome("c1").await.unwrap(), None);
    assert!(!store.finish_command("c1", "late").await.unwrap(), "its caller gave up");
    assert!(!store.return_command("c1", "cmd-a").await.unwrap(), "gone: nothing to give back");
    assert!(store.finish_command("c4", r#"{"reply":"x"}"#).await.unwrap());
    assert!(!store.return_command("c4", "cmd-c").await.unwrap(), "done: not given back");
    // c2's deadline passed; the others' did not.
    assert_eq!(store.purge_commands(0).await.unwrap(), 1);
    assert!(store.take_commands("cmd-b", "replica-1").await.unwrap().len() == 1, "c3 kept");
}

async fn run_all<S: HostStore + 'static>(store: Arc<S>) {
    commands_are_taken_once_and_never_late(store.clone()).await;
    a_token_enrolls_once(&*store).await;
    concurrent_uses_enroll_once(store.clone()).await;
    an_expired_token_is_refused(&*store).await;
    rename_and_revoke(&*store).await;
    one_stream_per_host(&*store).await;
    let listed: Vec<String> = store.hosts().await.unwrap().into_iter().map(|h| h.name).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "by name");
}

#[tokio::test]
async fn hosts_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(testing::sqlite_in(&dir, "control.db").await);
    run_all(store.clone()).await;
    store.close().await;
}

#[tokio::test]
async fn hosts_on_postgres() {
    let (store, _schema) = testing::postgres("control_hosts").await;
    let store = Arc::new(store);
    run_all(store.clone()).await;
    store.close().await;
}
