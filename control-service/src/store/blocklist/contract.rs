//! [`BlocklistStore`] on both backends.

use std::time::Instant;

use ipnet::IpNet;

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

fn nets(items: &[&str]) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = items
        .iter()
        .map(|s| s.parse().unwrap_or_else(|_| IpNet::from(s.parse::<std::net::IpAddr>().unwrap())))
        .collect();
    nets.sort();
    nets
}

fn net(item: &str) -> IpNet {
    nets(&[item])[0]
}

const HOLDER: &str = "replica-a#1";

/// Ends an import of `source` that lists `listed` (`None`: unchanged).
async fn import(store: &impl BlocklistStore, source: &Source, listed: Option<&[&str]>) -> i64 {
    let run = run(source, 100, ImportStatus::Ok);
    let listed = listed.map(nets);
    let commit = ImportCommit { run: &run, listed: listed.as_deref(), seen: None, holder: HOLDER };
    store.finish_import(&commit, 10).await.unwrap()
}

/// Every entry of the source, through the pages.
async fn all_listed(store: &impl BlocklistStore, id: i64, page: u32) -> Vec<IpNet> {
    let mut all: Vec<IpNet> = Vec::new();
    loop {
        let got = store.listed_page(id, all.last(), page).await.unwrap();
        let done = got.len() < page as usize;
        all.extend(got);
        if done {
            return all;
        }
    }
}

/// Every ban imports made in `jail`, through the pages.
async fn all_owned(store: &impl BlocklistStore, jail: &str, page: u32) -> Vec<IpNet> {
    let mut all: Vec<IpNet> = Vec::new();
    loop {
        let got = store.owned_page(jail, all.last(), page).await.unwrap();
        let done = got.len() < page as usize;
        all.extend(got);
        if done {
            return all;
        }
    }
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
    let commit = ImportCommit { run: &seen_run, listed: None, seen: Some(seen("v1")), holder: HOLDER };
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

    // The jail may change until an import takes the source, not after,
    // and not while it is held.
    let mut other_jail = moved.clone();
    other_jail.jail = "elsewhere".into();
    let b2 = store.update_source(b.id, &SourceSpec { jail: "elsewhere".into(), ..b.spec.clone() }, 34).await.unwrap();
    assert_eq!(b2.spec.jail, "elsewhere");
    assert!(!b2.jail_fixed);
    assert!(store.hold_source(b.id, HOLDER, 35, 0).await.unwrap());
    let err = store.update_source(b.id, &b.spec, 36).await.unwrap_err();
    assert!(matches!(&err, SourceWriteError::JailFixed(j) if j == "elsewhere"), "{err:?}");
    store.release_source(b.id, HOLDER).await.unwrap();
    let err = store.update_source(b.id, &b.spec, 37).await.unwrap_err();
    assert!(matches!(&err, SourceWriteError::JailFixed(_)), "fixed after the hold: {err:?}");
    // Other fields still change.
    let renamed_b = SourceSpec { name: "b-renamed".into(), jail: "elsewhere".into(), ..b.spec.clone() };
    assert_eq!(store.update_source(b.id, &renamed_b, 38).await.unwrap().spec.name, "b-renamed");
    let _ = other_jail;
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
    assert!(store.hold_source(s.id, HOLDER, 100, 40).await.unwrap());
    let held = store.source(s.id).await.unwrap().unwrap();
    assert_eq!(held.hold, Some(Hold { by: HOLDER.into(), since: 100 }));
    assert!(held.jail_fixed);
    assert!(!store.hold_source(s.id, "replica-b#2", 101, 41).await.unwrap(), "held by the first");
    assert!(!store.hold_source(s.id, HOLDER, 102, 41).await.unwrap(), "one thing at a time, also for its holder");
    assert!(!store.refresh_hold(s.id, "replica-b#2", 103).await.unwrap(), "not b's to refresh");
    assert!(store.refresh_hold(s.id, HOLDER, 110).await.unwrap());
    store.release_source(s.id, "replica-b#2").await.unwrap();
    assert!(store.source(s.id).await.unwrap().unwrap().hold.is_some(), "only the holder releases");
    store.release_source(s.id, HOLDER).await.unwrap();
    assert_eq!(store.source(s.id).await.unwrap().unwrap().hold, None);
    assert!(store.hold_source(s.id, HOLDER, 200, 140).await.unwrap(), "released");
    // Refreshed at 200; a hold older than 201 is a gone holder's.
    assert!(!store.hold_source(s.id, "replica-b#2", 300, 200).await.unwrap());
    assert!(store.hold_source(s.id, "replica-b#2", 300, 201).await.unwrap(), "stale hold taken over");
    assert!(!store.hold_source(s.id + 1, HOLDER, 300, 301).await.unwrap(), "no such source");
    // finish_import releases the holder's hold.
    let run = run(&s, 100, ImportStatus::Ok);
    store
        .finish_import(&ImportCommit { run: &run, listed: None, seen: None, holder: "replica-b#2" }, 10)
        .await
        .unwrap();
    assert_eq!(store.source(s.id).await.unwrap().unwrap().hold, None);

    // A new process of a replica releases the holds of the one before.
    assert!(store.hold_source(s.id, "replica-a#old", 400, 0).await.unwrap());
    assert_eq!(store.release_holds_of("replica-b#", "replica-b#3").await.unwrap(), 0, "another replica's");
    assert_eq!(store.release_holds_of("replica-a#", "replica-a#old").await.unwrap(), 0, "its own");
    assert_eq!(store.release_holds_of("replica-a#", "replica-a#new").await.unwrap(), 1);
    assert_eq!(store.source(s.id).await.unwrap().unwrap().hold, None);

    // Replicas racing for a free source: one takes it (each call on a
    // connection of its own).
    let (a, b, c, d) = tokio::join!(
        store.hold_source(s.id, "r1#1", 500, 0),
        store.hold_source(s.id, "r2#1", 500, 0),
        store.hold_source(s.id, "r3#1", 500, 0),
        store.hold_source(s.id, "r4#1", 500, 0),
    );
    let taken = [a, b, c, d].into_iter().filter(|held| *held.as_ref().unwrap()).count();
    assert_eq!(taken, 1);
}

async fn finish_import_applies_and_records(store: &impl BlocklistStore) {
    let s = store.create_source(&spec("imp", "blocklist"), 1).await.unwrap();
    assert!(store.hold_source(s.id, HOLDER, 50, 0).await.unwrap());
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
        rebanned: 12,
        excepted: 13,
    };
    first.bad_lines = vec![
        BadLine { line: 3, text: "not an address".into() },
        BadLine { line: 9, text: "quote \" and ünïcode".into() },
    ];
    first.error = Some("2 bans failed".into());
    let listed = nets(&["192.0.2.1", "198.51.100.0/24", "2001:db8::1"]);
    let commit = ImportCommit { run: &first, listed: Some(&listed), seen: Some(seen("one")), holder: HOLDER };
    let id1 = store.finish_import(&commit, 3).await.unwrap();
    assert_eq!(all_listed(store, s.id, 100).await, listed);
    assert_eq!(store.run(id1).await.unwrap(), Some(ImportRun { id: id1, ..first.clone() }));
    let got = store.source(s.id).await.unwrap().unwrap();
    assert_eq!(
        (got.etag, got.last_modified, got.sha256),
        (seen("one").etag, seen("one").last_modified, seen("one").sha256)
    );
    assert!(store.hold_source(s.id, "replica-b#2", 60, 0).await.unwrap(), "the hold was released");

    // Removes and adds (an entry added again is kept once); no seen body keeps the old one.
    let mut second = run(&s, 200, ImportStatus::Ok);
    second.http_status = None;
    second.sha256 = None;
    let listed = nets(&["192.0.2.1", "2001:db8::1", "203.0.113.7"]);
    let id2 = store
        .finish_import(&ImportCommit { run: &second, listed: Some(&listed), seen: None, holder: HOLDER }, 3)
        .await
        .unwrap();
    assert!(id2 > id1);
    assert_eq!(all_listed(store, s.id, 2).await, listed, "paged by 2");
    assert_eq!(store.source(s.id).await.unwrap().unwrap().sha256.as_deref(), Some("sha-one"));
    assert_eq!(store.run(id2).await.unwrap(), Some(ImportRun { id: id2, ..second.clone() }));

    // A failed run leaves the entries; an empty seen body clears the old one.
    let failed = ImportRun { error: Some("HTTP 500".into()), ..run(&s, 300, ImportStatus::Failed) };
    let commit = ImportCommit { run: &failed, listed: None, seen: Some(SeenBody::default()), holder: HOLDER };
    let id3 = store.finish_import(&commit, 3).await.unwrap();
    assert_eq!(all_listed(store, s.id, 100).await.len(), 3);
    let got = store.source(s.id).await.unwrap().unwrap();
    assert_eq!((got.etag, got.last_modified, got.sha256), (None, None, None));

    // Retention: only the newest 3 (then 1) runs of this source stay.
    let other = store.create_source(&spec("other", "blocklist"), 1).await.unwrap();
    let other_run = import(store, &other, Some(&[])).await;
    let fourth = run(&s, 400, ImportStatus::Unchanged);
    let id4 =
        store.finish_import(&ImportCommit { run: &fourth, listed: None, seen: None, holder: HOLDER }, 3).await.unwrap();
    let ids: Vec<i64> = store.runs(s.id, None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id4, id3, id2]);
    assert_eq!(store.run(id1).await.unwrap(), None);
    let id5 = store
        .finish_import(
            &ImportCommit { run: &run(&s, 500, ImportStatus::Unchanged), listed: None, seen: None, holder: HOLDER },
            1,
        )
        .await
        .unwrap();
    let ids: Vec<i64> = store.runs(s.id, None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id5]);
    assert!(store.run(other_run).await.unwrap().is_some(), "other sources' runs are kept");
}

async fn own_owned_disown(store: &impl BlocklistStore) {
    store.own("blocklist", &nets(&["192.0.2.1", "192.0.2.2"])).await.unwrap();
    // Owning again keeps the one row.
    store.own("blocklist", &nets(&["192.0.2.2", "192.0.2.3"])).await.unwrap();
    store.own("other", &nets(&["192.0.2.9"])).await.unwrap();
    let owned =
        store.owned_of("blocklist", &nets(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.9"])).await.unwrap();
    assert_eq!(owned, nets(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
    store.disown("blocklist", &nets(&["192.0.2.2", "192.0.2.9"])).await.unwrap();
    assert_eq!(all_owned(store, "blocklist", 1).await, nets(&["192.0.2.1", "192.0.2.3"]), "paged by 1");
    assert_eq!(all_owned(store, "other", 10).await, nets(&["192.0.2.9"]));
    // Chunked writes and reads; both families, in order.
    let many: Vec<IpNet> = (0..1_300u32)
        .map(|i| IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a01_0000 + i))))
        .chain(
            (0..300u128)
                .map(|i| IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) + i)))),
        )
        .collect();
    store.own("big", &many).await.unwrap();
    assert_eq!(store.owned_of("big", &many).await.unwrap(), many);
    assert_eq!(all_owned(store, "big", 500).await, many);
    store.disown("big", &many).await.unwrap();
    assert!(store.owned_of("big", &many).await.unwrap().is_empty());
}

async fn operator_bans_and_exceptions(store: &impl BlocklistStore) {
    store.own("blocklist", &nets(&["192.0.2.1", "192.0.2.2", "2001:db8::1"])).await.unwrap();
    // Unbanning an import's ban: an exception, no longer the imports'.
    assert!(store.operator_unbanned("blocklist", &net("192.0.2.1"), 20).await.unwrap());
    // Unbanning what imports did not ban records nothing.
    assert!(!store.operator_unbanned("blocklist", &net("192.0.2.9"), 21).await.unwrap());
    assert!(!store.operator_unbanned("other", &net("192.0.2.2"), 21).await.unwrap());
    // Banning by hand: no longer the imports'; no exception.
    assert!(store.operator_banned("blocklist", &net("192.0.2.2")).await.unwrap());
    assert!(!store.operator_banned("blocklist", &net("192.0.2.2")).await.unwrap());
    assert_eq!(all_owned(store, "blocklist", 10).await, nets(&["2001:db8::1"]));
    let exceptions = store.exceptions(Some("blocklist")).await.unwrap();
    assert_eq!(exceptions, vec![BanException { jail: "blocklist".into(), net: net("192.0.2.1"), created_at: 20 }]);
    assert!(store.exceptions(Some("other")).await.unwrap().is_empty());
    assert_eq!(store.exceptions(None).await.unwrap().len(), 1);
    assert!(!store.delete_exception("blocklist", &net("192.0.2.2")).await.unwrap());
    assert!(store.delete_exception("blocklist", &net("192.0.2.1")).await.unwrap());
    assert!(store.exceptions(None).await.unwrap().is_empty());
}

async fn delete_source_removes_everything_of_it(store: &impl BlocklistStore) {
    let a = store.create_source(&spec("a", "blocklist"), 1).await.unwrap();
    let b = store.create_source(&spec("b", "blocklist"), 1).await.unwrap();
    let run_a = import(store, &a, Some(&["192.0.2.1", "192.0.2.2"])).await;
    let run_b = import(store, &b, Some(&["192.0.2.2"])).await;
    store.delete_source(a.id).await.unwrap();
    assert_eq!(store.source(a.id).await.unwrap(), None);
    assert!(all_listed(store, a.id, 10).await.is_empty());
    assert_eq!(store.run(run_a).await.unwrap(), None);
    assert!(store.runs(a.id, None, 10).await.unwrap().is_empty());
    // The other source is untouched.
    assert_eq!(all_listed(store, b.id, 10).await, nets(&["192.0.2.2"]));
    assert!(store.run(run_b).await.unwrap().is_some());
    assert_eq!(store.sources().await.unwrap().len(), 1);
    let err = store.delete_source(a.id).await.unwrap_err();
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
                    &ImportCommit { run: &run(&s, at, ImportStatus::Ok), listed: None, seen: None, holder: HOLDER },
                    100,
                )
                .await
                .unwrap(),
        );
        import(store, &other, None).await;
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

/// 1 000 000 entries listed by one import and read back by pages; prints
/// the time (no assertion: machines differ).
async fn large_import(store: &impl BlocklistStore, backend: &str) {
    let s = store.create_source(&spec("large", "blocklist"), 1).await.unwrap();
    let listed: Vec<IpNet> = (0..1_000_000u32)
        .map(|i| IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i))))
        .collect();
    let run = run(&s, 1, ImportStatus::Ok);
    let started = Instant::now();
    store
        .finish_import(&ImportCommit { run: &run, listed: Some(&listed), seen: None, holder: HOLDER }, 10)
        .await
        .unwrap();
    let written = started.elapsed();
    let read = all_listed(store, s.id, 10_000).await;
    let read_back = started.elapsed() - written;
    assert_eq!(read, listed);
    let replaced = Instant::now();
    store.finish_import(&ImportCommit { run: &run, listed: Some(&[]), seen: None, holder: HOLDER }, 10).await.unwrap();
    let replaced = replaced.elapsed();
    assert!(all_listed(store, s.id, 10).await.is_empty());
    println!(
        "{backend}: 1 000 000 entries: finish_import {written:?}, paged read {read_back:?}, replaced {replaced:?}"
    );
}

async fn legacy_rows_move_to_the_byte_tables<DB: crate::store::Dialect>(store: &crate::store::Store<DB>)
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    let exec = async |sql: &str| {
        let mut conn = store.pool.acquire().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *conn).await.unwrap();
    };
    let a = store.create_source(&spec("legacy", "blocklist"), 1).await.unwrap();
    exec(&format!(
        "INSERT INTO blocklist_entries_v1 (source_id, entry) VALUES ({0}, '192.0.2.1'), ({0}, '198.51.100.0/24'), \
         ({0}, '2001:db8::7'), ({0}, 'garbage')",
        a.id
    ))
    .await;
    exec(
        "INSERT INTO blocklist_bans_v1 (jail, entry, source_id, banned_at) VALUES ('blocklist', '192.0.2.1', 1, 5), \
         ('blocklist', '2001:db8::7', 1, 6)",
    )
    .await;
    assert_eq!(store.upgrade_legacy().await.unwrap(), 6);
    assert_eq!(all_listed(store, a.id, 10).await, nets(&["192.0.2.1", "198.51.100.0/24", "2001:db8::7"]));
    assert_eq!(all_owned(store, "blocklist", 10).await, nets(&["192.0.2.1", "2001:db8::7"]));
    assert_eq!(store.upgrade_legacy().await.unwrap(), 0, "once");
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
    own_owned_disown => own_owned_disown_on_sqlite, own_owned_disown_on_postgres;
    operator_bans_and_exceptions => operator_bans_and_exceptions_on_sqlite, operator_bans_and_exceptions_on_postgres;
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

#[tokio::test]
async fn legacy_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    legacy_rows_move_to_the_byte_tables(&store).await;
    store.close().await;
}

#[tokio::test]
async fn legacy_rows_on_postgres() {
    let (store, _schema) = testing::postgres("blocklist_contract").await;
    legacy_rows_move_to_the_byte_tables(&store).await;
    store.close().await;
}
