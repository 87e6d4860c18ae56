//! [`BlocklistStore`] on both backends.

use std::time::Instant;

use super::*;
use crate::store::{Pool, testing};

fn spec(name: &str, jail: &str) -> SourceSpec {
    SourceSpec {
        name: name.into(),
        url: format!("https://lists.example/{name}.txt"),
        enabled: true,
        jail: jail.into(),
        schedule: String::new(),
        cidr_policy: CidrPolicy::Skip,
        max_bytes: 16 << 20,
        max_entries: 500_000,
        ban_min_prefix_v4: 12,
        ban_min_prefix_v6: 32,
    }
}

fn seen(tag: &str) -> SeenBody {
    SeenBody {
        etag: Some(format!("\"{tag}\"")),
        last_modified: Some("Wed, 02 Dec 2026 09:00:00 GMT".into()),
        sha256: Some(format!("sha-{tag}")),
    }
}

fn run(source: &Source, at: i64, status: ImportStatus) -> ImportRun {
    ImportRun {
        id: 0,
        source_id: source.id,
        source_name: source.spec.name.clone(),
        trigger: RunTrigger::Schedule,
        started_at: at,
        finished_at: at + 3,
        status,
        http_status: Some(200),
        bytes: 1234,
        sha256: Some("abc".into()),
        counts: ImportCounts::default(),
        bad_lines: Vec::new(),
        error: None,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Ends an import of `source` that added `added` and removed `removed`.
async fn import(store: &impl BlocklistStore, source: &Source, added: &[&str], removed: &[&str]) -> i64 {
    let run = run(source, 100, ImportStatus::Ok);
    let (added, removed) = (strings(added), strings(removed));
    let commit = ImportCommit { run: &run, added: &added, removed: &removed, seen: None };
    store.finish_import(&commit, 10).await.unwrap()
}

async fn sources_round_trip(store: &impl BlocklistStore) {
    assert!(store.sources().await.unwrap().is_empty());
    let b = store.create_source(&spec("b-list", "blocklist"), 10).await.unwrap();
    let mut a_spec = spec("a-list", "blocklist");
    a_spec.cidr_policy = CidrPolicy::Expand;
    a_spec.enabled = false;
    a_spec.schedule = "0 0 */6 * * *".into();
    let a = store.create_source(&a_spec, 11).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!((a.spec.clone(), a.created_at, a.updated_at, a.etag.clone()), (a_spec.clone(), 11, 11, None));
    assert_eq!(store.source(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.source_by_name("a-list").await.unwrap(), Some(a.clone()));
    assert_eq!(store.source(a.id + b.id + 1).await.unwrap(), None);
    assert_eq!(store.source_by_name("nope").await.unwrap(), None);
    // By name, not by id.
    assert_eq!(store.sources().await.unwrap(), vec![a.clone(), b.clone()]);

    // A seen body is kept while the URL stays.
    let seen_run = run(&a, 20, ImportStatus::Ok);
    let commit = ImportCommit { run: &seen_run, added: &[], removed: &[], seen: Some(seen("v1")) };
    store.finish_import(&commit, 10).await.unwrap();
    let mut renamed = a_spec.clone();
    renamed.name = "a-renamed".into();
    renamed.max_entries = 7;
    renamed.ban_min_prefix_v4 = 8;
    renamed.ban_min_prefix_v6 = 128;
    let a2 = store.update_source(a.id, &renamed, 30).await.unwrap();
    assert_eq!((a2.spec.clone(), a2.created_at, a2.updated_at), (renamed.clone(), 11, 30));
    assert_eq!((a2.etag.as_deref(), a2.sha256.as_deref()), (Some("\"v1\""), Some("sha-v1")));
    // A new URL is downloaded in full.
    let mut moved = renamed.clone();
    moved.url = "https://elsewhere.example/list".into();
    let a3 = store.update_source(a.id, &moved, 31).await.unwrap();
    assert_eq!((a3.etag, a3.last_modified, a3.sha256), (None, None, None));
    assert_eq!(store.source(a.id).await.unwrap().unwrap().spec, moved);

    // Taking another source's name changes nothing.
    let mut clash = moved.clone();
    clash.name = "b-list".into();
    let err = store.update_source(a.id, &clash, 32).await.unwrap_err();
    assert!(matches!(&err, SourceWriteError::NameTaken(n) if n == "b-list"), "{err:?}");
    assert_eq!(store.source(a.id).await.unwrap().unwrap().spec.name, "a-renamed");
    let err = store.update_source(a.id + b.id + 1, &spec("x", "y"), 33).await.unwrap_err();
    assert!(matches!(err, SourceWriteError::NotFound(_)), "{err:?}");
}

async fn duplicate_name_is_refused(store: &impl BlocklistStore) {
    store.create_source(&spec("dup", "blocklist"), 1).await.unwrap();
    let mut other = spec("dup", "other-jail");
    other.url = "https://other.example/".into();
    let err = store.create_source(&other, 2).await.unwrap_err();
    assert!(matches!(&err, SourceWriteError::NameTaken(n) if n == "dup"), "{err:?}");
    assert_eq!(err.to_string(), "a source named \"dup\" exists");
    let all = store.sources().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].spec.jail, "blocklist");
}

async fn hold_and_release(store: &impl BlocklistStore) {
    let s = store.create_source(&spec("held", "blocklist"), 1).await.unwrap();
    assert!(store.hold_source(s.id, 100, 40).await.unwrap());
    assert!(!store.hold_source(s.id, 101, 41).await.unwrap(), "held by the first");
    store.release_source(s.id).await.unwrap();
    assert!(store.hold_source(s.id, 200, 140).await.unwrap(), "released");
    // The holder took it at 200; a hold older than 201 is a crashed replica's.
    assert!(!store.hold_source(s.id, 300, 200).await.unwrap());
    assert!(store.hold_source(s.id, 300, 201).await.unwrap(), "stale hold taken over");
    assert!(!store.hold_source(s.id + 1, 300, 301).await.unwrap(), "no such source");
    // finish_import releases the hold.
    import(store, &s, &[], &[]).await;
    assert!(store.hold_source(s.id, 400, 0).await.unwrap());

    // Replicas racing for a free source: one takes it (each call on a
    // connection of its own).
    store.release_source(s.id).await.unwrap();
    let (a, b, c, d) = tokio::join!(
        store.hold_source(s.id, 500, 0),
        store.hold_source(s.id, 500, 0),
        store.hold_source(s.id, 500, 0),
        store.hold_source(s.id, 500, 0),
    );
    let taken = [a, b, c, d].into_iter().filter(|held| *held.as_ref().unwrap()).count();
    assert_eq!(taken, 1);
}

async fn finish_import_applies_and_records(store: &impl BlocklistStore) {
    let s = store.create_source(&spec("imp", "blocklist"), 1).await.unwrap();
    assert!(store.hold_source(s.id, 50, 0).await.unwrap());
    let mut first = run(&s, 100, ImportStatus::Partial);
    first.trigger = RunTrigger::Manual;
    first.http_status = Some(206);
    first.bytes = 5_000_000_000;
    first.counts = ImportCounts {
        valid: 1,
        invalid: 2,
        duplicate: 3,
        reserved: 4,
        ignored: 5,
        never_ban: 6,
        cidr_skipped: 7,
        already_banned: 8,
        newly_banned: 9,
        unbanned: 10,
        failed: 11,
    };
    first.bad_lines = vec![
        BadLine { line: 3, text: "not an address".into() },
        BadLine { line: 9, text: "quote \" and ünïcode".into() },
    ];
    first.error = Some("2 bans failed".into());
    let added = strings(&["192.0.2.1", "198.51.100.0/24", "2001:db8::1"]);
    let commit = ImportCommit { run: &first, added: &added, removed: &[], seen: Some(seen("one")) };
    let id1 = store.finish_import(&commit, 3).await.unwrap();
    assert_eq!(store.entries(s.id).await.unwrap(), added);
    assert_eq!(store.run(id1).await.unwrap(), Some(ImportRun { id: id1, ..first.clone() }));
    let got = store.source(s.id).await.unwrap().unwrap();
    assert_eq!(
        (got.etag, got.last_modified, got.sha256),
        (seen("one").etag, seen("one").last_modified, seen("one").sha256)
    );
    assert!(store.hold_source(s.id, 60, 0).await.unwrap(), "the hold was released");

    // Removes and adds (an entry added again is kept once); no seen body keeps the old one.
    let mut second = run(&s, 200, ImportStatus::Ok);
    second.http_status = None;
    second.sha256 = None;
    let (added, removed) = (strings(&["203.0.113.7", "192.0.2.1"]), strings(&["198.51.100.0/24"]));
    let id2 = store
        .finish_import(&ImportCommit { run: &second, added: &added, removed: &removed, seen: None }, 3)
        .await
        .unwrap();
    assert!(id2 > id1);
    assert_eq!(store.entries(s.id).await.unwrap(), strings(&["192.0.2.1", "2001:db8::1", "203.0.113.7"]));
    assert_eq!(store.source(s.id).await.unwrap().unwrap().sha256.as_deref(), Some("sha-one"));
    assert_eq!(store.run(id2).await.unwrap(), Some(ImportRun { id: id2, ..second.clone() }));

    // A failed run leaves the entries; an empty seen body clears the old one.
    let failed = ImportRun { error: Some("HTTP 500".into()), ..run(&s, 300, ImportStatus::Failed) };
    let commit = ImportCommit { run: &failed, added: &[], removed: &[], seen: Some(SeenBody::default()) };
    let id3 = store.finish_import(&commit, 3).await.unwrap();
    assert_eq!(store.entries(s.id).await.unwrap().len(), 3);
    let got = store.source(s.id).await.unwrap().unwrap();
    assert_eq!((got.etag, got.last_modified, got.sha256), (None, None, None));

    // Retention: only the newest 3 (then 1) runs of this source stay.
    let other = store.create_source(&spec("other", "blocklist"), 1).await.unwrap();
    let other_run = import(store, &other, &[], &[]).await;
    let fourth = run(&s, 400, ImportStatus::Unchanged);
    let id4 =
        store.finish_import(&ImportCommit { run: &fourth, added: &[], removed: &[], seen: None }, 3).await.unwrap();
    let ids: Vec<i64> = store.runs(s.id, None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id4, id3, id2]);
    assert_eq!(store.run(id1).await.unwrap(), None);
    let id5 = store
        .finish_import(
            &ImportCommit { run: &run(&s, 500, ImportStatus::Unchanged), added: &[], removed: &[], seen: None },
            1,
        )
        .await
        .unwrap();
    let ids: Vec<i64> = store.runs(s.id, None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id5]);
    assert!(store.run(other_run).await.unwrap().is_some(), "other sources' runs are kept");
}

async fn listed_elsewhere_counts_the_same_jail(store: &impl BlocklistStore) {
    let a = store.create_source(&spec("a", "blocklist"), 1).await.unwrap();
    let b = store.create_source(&spec("b", "blocklist"), 1).await.unwrap();
    let c = store.create_source(&spec("c", "other"), 1).await.unwrap();
    import(store, &a, &["192.0.2.1", "192.0.2.2", "192.0.2.3"], &[]).await;
    import(store, &b, &["192.0.2.2"], &[]).await;
    import(store, &c, &["192.0.2.3"], &[]).await;
    let mut got =
        store.listed_elsewhere(a.id, "blocklist", &strings(&["192.0.2.1", "192.0.2.2", "192.0.2.3"])).await.unwrap();
    got.sort();
    assert_eq!(got, strings(&["192.0.2.2"]));
    assert_eq!(
        store.listed_elsewhere(c.id, "other", &strings(&["192.0.2.2", "192.0.2.3"])).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(store.listed_elsewhere(a.id, "blocklist", &[]).await.unwrap().is_empty());
    // Chunked: more candidates than one statement binds.
    let many: Vec<String> =
        (0..1_200).map(|i| format!("10.0.{}.{}", i / 256, i % 256)).chain(["192.0.2.2".to_owned()]).collect();
    assert_eq!(store.listed_elsewhere(a.id, "blocklist", &many).await.unwrap(), strings(&["192.0.2.2"]));
}

async fn own_owned_disown(store: &impl BlocklistStore) {
    let entries = strings(&["192.0.2.1", "192.0.2.2"]);
    store.own("blocklist", 1, &entries, 10).await.unwrap();
    // Owning again (another source) keeps the one row.
    store.own("blocklist", 2, &strings(&["192.0.2.2", "192.0.2.3"]), 20).await.unwrap();
    store.own("other", 1, &strings(&["192.0.2.9"]), 10).await.unwrap();
    let mut owned =
        store.owned("blocklist", &strings(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.9"])).await.unwrap();
    owned.sort();
    assert_eq!(owned, strings(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
    store.disown("blocklist", &strings(&["192.0.2.2", "192.0.2.9"])).await.unwrap();
    let mut owned = store.owned("blocklist", &strings(&["192.0.2.1", "192.0.2.2", "192.0.2.3"])).await.unwrap();
    owned.sort();
    assert_eq!(owned, strings(&["192.0.2.1", "192.0.2.3"]));
    assert_eq!(store.owned("other", &strings(&["192.0.2.9"])).await.unwrap(), strings(&["192.0.2.9"]));
    // Chunked writes and reads.
    let many: Vec<String> = (0..1_300).map(|i| format!("10.1.{}.{}", i / 256, i % 256)).collect();
    store.own("big", 3, &many, 30).await.unwrap();
    assert_eq!(store.owned("big", &many).await.unwrap().len(), many.len());
    store.disown("big", &many).await.unwrap();
    assert!(store.owned("big", &many).await.unwrap().is_empty());
}

async fn exclusively_owned_leaves_out_shared_and_unowned(store: &impl BlocklistStore) {
    let a = store.create_source(&spec("a", "blocklist"), 1).await.unwrap();
    let b = store.create_source(&spec("b", "blocklist"), 1).await.unwrap();
    let c = store.create_source(&spec("c", "other"), 1).await.unwrap();
    import(store, &a, &["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"], &[]).await;
    import(store, &b, &["192.0.2.2"], &[]).await;
    import(store, &c, &["192.0.2.3"], &[]).await;
    // .4 is listed but was banned otherwise (not owned).
    store.own("blocklist", a.id, &strings(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]), 5).await.unwrap();
    // A source of another jail listing .3 does not keep it banned here.
    assert_eq!(store.exclusively_owned(a.id).await.unwrap(), strings(&["192.0.2.1", "192.0.2.3"]));
    assert!(store.exclusively_owned(b.id).await.unwrap().is_empty());
}

async fn delete_source_removes_everything_of_it(store: &impl BlocklistStore) {
    let a = store.create_source(&spec("a", "blocklist"), 1).await.unwrap();
    let b = store.create_source(&spec("b", "blocklist"), 1).await.unwrap();
    let run_a = import(store, &a, &["192.0.2.1", "192.0.2.2"], &[]).await;
    let run_b = import(store, &b, &["192.0.2.2"], &[]).await;
    store.own("blocklist", a.id, &strings(&["192.0.2.1", "192.0.2.2"]), 5).await.unwrap();
    let unbanned = store.exclusively_owned(a.id).await.unwrap();
    assert_eq!(unbanned, strings(&["192.0.2.1"]));
    store.delete_source(a.id, &unbanned).await.unwrap();
    assert_eq!(store.source(a.id).await.unwrap(), None);
    assert!(store.entries(a.id).await.unwrap().is_empty());
    assert_eq!(store.run(run_a).await.unwrap(), None);
    assert!(store.runs(a.id, None, 10).await.unwrap().is_empty());
    assert_eq!(store.owned("blocklist", &strings(&["192.0.2.1", "192.0.2.2"])).await.unwrap(), strings(&["192.0.2.2"]));
    // The other source is untouched.
    assert_eq!(store.entries(b.id).await.unwrap(), strings(&["192.0.2.2"]));
    assert!(store.run(run_b).await.unwrap().is_some());
    assert_eq!(store.sources().await.unwrap().len(), 1);
    let err = store.delete_source(a.id, &[]).await.unwrap_err();
    assert!(matches!(err, SourceWriteError::NotFound(id) if id == a.id), "{err:?}");
    // The name is free again.
    store.create_source(&spec("a", "blocklist"), 2).await.unwrap();
}

async fn runs_page_newest_first(store: &impl BlocklistStore) {
    let s = store.create_source(&spec("paged", "blocklist"), 1).await.unwrap();
    let other = store.create_source(&spec("other", "blocklist"), 1).await.unwrap();
    let mut ids = Vec::new();
    for at in 0..7 {
        ids.push(
            store
                .finish_import(
                    &ImportCommit { run: &run(&s, at, ImportStatus::Ok), added: &[], removed: &[], seen: None },
                    100,
                )
                .await
                .unwrap(),
        );
        import(store, &other, &[], &[]).await;
    }
    ids.reverse();
    let page1 = store.runs(s.id, None, 3).await.unwrap();
    assert_eq!(page1.iter().map(|r| r.id).collect::<Vec<_>>(), ids[..3]);
    assert!(page1.iter().all(|r| r.source_id == s.id));
    let page2 = store.runs(s.id, Some(page1[2].id), 3).await.unwrap();
    assert_eq!(page2.iter().map(|r| r.id).collect::<Vec<_>>(), ids[3..6]);
    let page3 = store.runs(s.id, Some(page2[2].id), 3).await.unwrap();
    assert_eq!(page3.iter().map(|r| r.id).collect::<Vec<_>>(), ids[6..]);
    assert!(store.runs(s.id, Some(page3[0].id), 3).await.unwrap().is_empty());
    assert_eq!(store.run(ids[0]).await.unwrap().map(|r| r.started_at), Some(6));
    assert_eq!(store.run(-1).await.unwrap(), None);
}

/// 100 000 entries added by one import and read back; prints the time
/// (no assertion: machines differ).
async fn large_import(store: &impl BlocklistStore, backend: &str) {
    let s = store.create_source(&spec("large", "blocklist"), 1).await.unwrap();
    let added: Vec<String> = (0..100_000u32).map(|i| std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string()).collect();
    let run = run(&s, 1, ImportStatus::Ok);
    let started = Instant::now();
    store.finish_import(&ImportCommit { run: &run, added: &added, removed: &[], seen: None }, 10).await.unwrap();
    let written = started.elapsed();
    let read = store.entries(s.id).await.unwrap();
    let read_back = started.elapsed() - written;
    let elsewhere = Instant::now();
    assert!(store.listed_elsewhere(s.id + 1, "blocklist", &added).await.unwrap().len() == added.len());
    let elsewhere = elsewhere.elapsed();
    assert_eq!(read.len(), added.len());
    let removed = Instant::now();
    store.finish_import(&ImportCommit { run: &run, added: &[], removed: &added, seen: None }, 10).await.unwrap();
    let removed = removed.elapsed();
    assert!(store.entries(s.id).await.unwrap().is_empty());
    println!(
        "{backend}: 100 000 entries: finish_import {written:?}, entries {read_back:?}, \
         listed_elsewhere {elsewhere:?}, removed {removed:?}"
    );
}

macro_rules! on_both {
    ($($scenario:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            let store = testing::sqlite_in(&dir, "control.db").await;
            $scenario(&store).await;
            store.close().await;
        }

        #[tokio::test]
        async fn $postgres() {
            let (store, _schema) = testing::postgres("blocklist_contract").await;
            $scenario(&store).await;
            store.close().await;
        }
    )*};
}

on_both! {
    sources_round_trip => sources_round_trip_on_sqlite, sources_round_trip_on_postgres;
    duplicate_name_is_refused => duplicate_name_is_refused_on_sqlite, duplicate_name_is_refused_on_postgres;
    hold_and_release => hold_and_release_on_sqlite, hold_and_release_on_postgres;
    finish_import_applies_and_records => finish_import_on_sqlite, finish_import_on_postgres;
    listed_elsewhere_counts_the_same_jail => listed_elsewhere_on_sqlite, listed_elsewhere_on_postgres;
    own_owned_disown => own_owned_disown_on_sqlite, own_owned_disown_on_postgres;
    exclusively_owned_leaves_out_shared_and_unowned => exclusively_owned_on_sqlite, exclusively_owned_on_postgres;
    delete_source_removes_everything_of_it => delete_source_on_sqlite, delete_source_on_postgres;
    runs_page_newest_first => runs_paging_on_sqlite, runs_paging_on_postgres;
}

#[tokio::test]
async fn large_import_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    large_import(&store, "sqlite").await;
    store.close().await;
}

#[tokio::test]
async fn large_import_on_postgres() {
    let (store, _schema) = testing::postgres("blocklist_contract").await;
    large_import(&store, "postgres").await;
    store.close().await;
}
