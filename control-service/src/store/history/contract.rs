//! The archive's queries on both backends: filters, window edges,
//! pagination that neither skips nor repeats rows while new rows arrive,
//! aggregates, empty results.

use std::collections::HashSet;

use super::*;
use crate::store::{HostStore, testing};

fn ban(jail: &str, ip: &str, at: i64, origin: &str, country: Option<&str>) -> ArchivedBan {
    ArchivedBan {
        id: 0,
        host: LOCAL_HOST.into(),
        jail: jail.into(),
        ip: ip.into(),
        banned_at: at,
        ban_seconds: 600,
        ban_count: 1,
        origin: origin.parse().unwrap(),
        event: Event::Ban,
        failures: 3,
        matches: r#"["line"]"#.into(),
        country_code: country.map(Into::into),
        country_name: country.map(|c| format!("Name of {c}")),
        asn: None,
        as_org: None,
        archived_at: at + 60,
        source: None,
    }
}

/// 10 rows at t = 1000..=1009: jails alternate, two origins, three countries.
fn fixture() -> Vec<ArchivedBan> {
    (0..10)
        .map(|i| {
            let jail = if i % 2 == 0 { "sshd" } else { "nginx" };
            let origin = if i < 8 { "fail2ban" } else { "manual" };
            let country = ["DE", "US", "FR"][i % 3];
            let ip = if i < 5 { format!("192.0.2.{i}") } else { format!("2001:db8::{i}") };
            ban(jail, &ip, 1000 + i as i64, origin, Some(country))
        })
        .collect()
}

async fn scenarios(store: &dyn HistoryStore) {
    let all = HistoryFilter::default();
    assert!(store.page(&all, None, 10).await.unwrap().is_empty(), "empty archive");
    assert!(store.by_country(&all).await.unwrap().is_empty());
    assert_eq!(store.archive(&fixture()).await.unwrap(), 10);
    assert_eq!(store.archive(&fixture()).await.unwrap(), 0, "archiving again adds nothing");
    // One jail's bans in a time range (both ends inclusive), any origin.
    let mut sshd = store.jail_bans(LOCAL_HOST, "sshd", 1002, 1008).await.unwrap();
    sshd.sort();
    let expected: Vec<(String, i64, Origin)> = [
        ("192.0.2.2", 1002, "fail2ban"),
        ("192.0.2.4", 1004, "fail2ban"),
        ("2001:db8::6", 1006, "fail2ban"),
        ("2001:db8::8", 1008, "manual"),
    ]
    .into_iter()
    .map(|(ip, at, origin)| (ip.to_owned(), at, origin.parse().unwrap()))
    .collect();
    assert_eq!(sshd, expected);
    assert!(store.jail_bans(LOCAL_HOST, "sshd", 1010, 2000).await.unwrap().is_empty());

    // Window edges: from inclusive, to exclusive.
    let window = HistoryFilter { from: Some(1002), to: Some(1005), ..Default::default() };
    let rows = store.page(&window, None, 100).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.banned_at).collect::<Vec<_>>(), [1004, 1003, 1002]);
    // Filters.
    let f = |jail: Option<&str>, origin: Option<&str>, country: Option<&str>, prefix: Option<&str>| HistoryFilter {
        jail: jail.map(Into::into),
        origin: origin.map(|o| o.parse().unwrap()),
        country: country.map(Into::into),
        ip_prefix: prefix.map(Into::into),
        ..Default::default()
    };
    assert_eq!(store.page(&f(Some("sshd"), None, None, None), None, 100).await.unwrap().len(), 5);
    assert_eq!(store.page(&f(None, Some("manual"), None, None), None, 100).await.unwrap().len(), 2);
    assert_eq!(store.page(&f(None, None, Some("DE"), None), None, 100).await.unwrap().len(), 4);
    let v6 = store.page(&f(None, None, None, Some("2001:db8::")), None, 100).await.unwrap();
    assert_eq!(v6.len(), 5);
    assert!(v6.iter().all(|r| r.ip.starts_with("2001:db8::")));
    assert_eq!(store.page(&f(None, None, None, Some("192.0.2.3")), None, 100).await.unwrap().len(), 1);
    assert!(store.page(&f(Some("nope"), None, None, None), None, 100).await.unwrap().is_empty());

    // Pages of 3 while new rows arrive, newer and in the middle of the
    // window: nothing already paged past is repeated or skipped.
    let mut seen = Vec::new();
    let mut after = None;
    let mut round = 0;
    loop {
        let page = store.page(&all, after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|r| (r.banned_at, r.id)));
        after = page.last().map(|r| (r.banned_at, r.id));
        round += 1;
        if round == 1 {
            // Newer than everything: belongs before page one, never shows up later.
            store.archive(&[ban("sshd", "198.51.100.1", 2000, "fail2ban", Some("DE"))]).await.unwrap();
            // Same second as a row already seen: ordered by id, so it sorts before the cursor too.
            store.archive(&[ban("recidive", "198.51.100.2", 1009, "fail2ban", Some("SE"))]).await.unwrap();
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was repeated");
    assert_eq!(seen.len(), 10, "a row was skipped or a newer one slipped in: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");

    // Aggregates over the first ten.
    let first_ten = HistoryFilter { to: Some(1010), ..Default::default() };
    let countries = store.by_country(&first_ten).await.unwrap();
    let get =
        |c: &str| countries.iter().find(|x| x.country_code.as_deref() == Some(c)).map(|x| (x.bans, x.distinct_ips));
    assert_eq!((get("DE"), get("US"), get("FR"), get("SE")), (Some((4, 4)), Some((3, 3)), Some((3, 3)), Some((1, 1))));
    assert_eq!(countries[0].country_code.as_deref(), Some("DE"), "most banned first");
    assert_eq!(countries[0].country_name.as_deref(), Some("Name of DE"));
    let jails = store.by_jail(&first_ten).await.unwrap();
    assert_eq!(
        jails.iter().map(|j| (j.jail.as_str(), j.bans)).collect::<Vec<_>>(),
        [("nginx", 5), ("sshd", 5), ("recidive", 1)]
    );
    let trend = store.trend(&first_ten, 1000, 4).await.unwrap();
    assert_eq!(trend, [(0, 4), (1, 4), (2, 3)]);
    store.archive(&[ban("sshd", "192.0.2.1", 1500, "fail2ban", Some("US"))]).await.unwrap();
    let top = store.top_ips(&HistoryFilter::default(), 2).await.unwrap();
    assert_eq!((top[0].ip.as_str(), top[0].bans, top[0].last_banned_at), ("192.0.2.1", 2, 1500));
    let events = store.ip_events("192.0.2.1", None).await.unwrap();
    assert_eq!(events.iter().map(|e| e.banned_at).collect::<Vec<_>>(), [1001, 1500]);
    // One address paged, and its summary in SQL.
    let page = store.ip_events_page("192.0.2.1", None, None, 1).await.unwrap();
    assert_eq!(page.iter().map(|e| e.banned_at).collect::<Vec<_>>(), [1001]);
    let rest = store.ip_events_page("192.0.2.1", None, Some((page[0].banned_at, page[0].id)), 10).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.banned_at).collect::<Vec<_>>(), [1500]);
    let summary = store.ip_summary("192.0.2.1", None).await.unwrap();
    assert_eq!((summary.bans, summary.unbans), (2, 0));
    assert_eq!((summary.first_banned_at, summary.last_banned_at), (Some(1001), Some(1500)));
    assert_eq!(summary.jails, ["nginx", "sshd"]);
    assert_eq!(summary.hosts, [LOCAL_HOST]);
    assert_eq!(summary.placed.map(|p| p.country_code), Some("US".to_owned()));
    let nobody = store.ip_summary("198.51.100.200", None).await.unwrap();
    assert_eq!((nobody.bans, nobody.unbans, nobody.first_banned_at, nobody.placed), (0, 0, None, None));
    assert_eq!(store.earliest(&HistoryFilter::default()).await.unwrap(), Some(1000));
    assert_eq!(store.earliest(&HistoryFilter { from: Some(5000), ..Default::default() }).await.unwrap(), None);

    // Country back-fill.
    store.archive(&[ban("sshd", "203.0.113.9", 3000, "fail2ban", None)]).await.unwrap();
    let missing = store.missing_geo(10).await.unwrap();
    assert_eq!(missing.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(), ["203.0.113.9"]);
    let fill = GeoFill {
        id: missing[0].0,
        country_code: "NL".into(),
        country_name: "Netherlands".into(),
        asn: Some(64500),
        as_org: None,
    };
    store.fill_geo(&[fill]).await.unwrap();
    assert!(store.missing_geo(10).await.unwrap().is_empty());
    assert_eq!(store.ip_events("203.0.113.9", None).await.unwrap()[0].country_code.as_deref(), Some("NL"));

    // Retention and cursors.
    assert_eq!(store.purge_history(1005).await.unwrap(), 5);
    assert_eq!(store.page(&HistoryFilter { to: Some(1005), ..Default::default() }, None, 100).await.unwrap().len(), 0);
    assert_eq!(store.cursor("fail2ban").await.unwrap(), None);
    store.set_cursor("fail2ban", 42, 1).await.unwrap();
    store.set_cursor("fail2ban", 43, 2).await.unwrap();
    assert_eq!(store.cursor("fail2ban").await.unwrap(), Some(43));
}

#[tokio::test]
async fn history_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenarios(&testing::sqlite_in(&dir, "history.db").await).await;
}

#[tokio::test]
async fn history_on_postgres() {
    let (store, _schema) = testing::postgres("control_history").await;
    scenarios(&store).await;
}

/// A host enrolled in `store` whose stream `stream` holds its lease.
async fn attached_host(store: &(impl HostStore + ?Sized), id: &str, stream: &str) {
    use crate::store::hosts::{NewHost, Presence, StreamClaim};
    let token = [id.as_bytes()[1]; 32];
    store.insert_enrollment_token(&token, 60_000).await.unwrap();
    let names = [format!("host-{id}")];
    let new = NewHost { id, names: &names, credential_hash: &[7; 32] };
    store.enroll(&token, &new).await.unwrap();
    let claim = StreamClaim { host: id, stream_id: stream, replica: "r1", instance: "i1" };
    let presence = Presence {
        agent_version: "0.1.0",
        fail2ban_version: "1.1.0",
        jails: "[]",
        jail_states: "[]",
        states_age_ms: None,
        outbox_backlog: 0,
    };
    assert!(store.take_stream(&claim, &presence, 15_000).await.unwrap());
}

/// A batch of `count` events of `host` from sequence `first`: ban of
/// 198.51.100.`seq % 250` in sshd at 5000 + seq.
fn events(host: &str, stream: &str, first: i64, count: i64) -> EventBatch {
    let rows = (first..first + count)
        .map(|seq| {
            Some(ArchivedBan {
                host: host.into(),
                ..ban("sshd", &format!("198.51.100.{}", seq % 250), 5000 + seq, "fail2ban", None)
            })
        })
        .collect();
    EventBatch { host: host.into(), stream_id: stream.into(), first, rows, at: 1 }
}

/// Storing outbox batches: each sequence once, a gap refused, only the
/// lease holder, the host in every row and query.
async fn event_scenarios(store: &(impl HistoryStore + HostStore)) {
    const A: &str = "0a000000-0000-4000-8000-00000000000a";
    const B: &str = "0b000000-0000-4000-8000-00000000000b";
    attached_host(store, A, "stream-a").await;
    attached_host(store, B, "stream-b").await;
    assert_eq!(store.event_cursor(A).await.unwrap(), 0, "no cursor yet");

    // A gap before anything was stored: refused, nothing written.
    assert_eq!(store.store_events(&events(A, "stream-a", 2, 3)).await.unwrap(), EventsStored::Gap { cursor: 0 });
    assert_eq!(store.event_cursor(A).await.unwrap(), 0);
    // 1..=3, then 4..=5.
    assert_eq!(
        store.store_events(&events(A, "stream-a", 1, 3)).await.unwrap(),
        EventsStored::Stored { through: 3, added: 3 }
    );
    assert_eq!(
        store.store_events(&events(A, "stream-a", 4, 2)).await.unwrap(),
        EventsStored::Stored { through: 5, added: 2 }
    );
    // Replayed: the same batch, and one overlapping the cursor.
    assert_eq!(
        store.store_events(&events(A, "stream-a", 4, 2)).await.unwrap(),
        EventsStored::Stored { through: 5, added: 0 }
    );
    assert_eq!(
        store.store_events(&events(A, "stream-a", 3, 4)).await.unwrap(),
        EventsStored::Stored { through: 6, added: 1 },
        "only sequence 6 is new"
    );
    // A gap after the cursor: refused.
    assert_eq!(store.store_events(&events(A, "stream-a", 8, 1)).await.unwrap(), EventsStored::Gap { cursor: 6 });
    // A stream that does not hold the lease stores nothing.
    assert_eq!(store.store_events(&events(A, "stream-old", 7, 1)).await.unwrap(), EventsStored::NotHolder);
    assert_eq!(store.store_events(&events(A, "stream-b", 7, 1)).await.unwrap(), EventsStored::NotHolder);
    assert_eq!(store.event_cursor(A).await.unwrap(), 6);
    // An event not archived (None) still advances the cursor.
    let mut skipped = events(A, "stream-a", 7, 2);
    skipped.rows[0] = None;
    assert_eq!(store.store_events(&skipped).await.unwrap(), EventsStored::Stored { through: 8, added: 1 });

    // Host B: the same addresses and times are other rows (the key has the host).
    assert_eq!(
        store.store_events(&events(B, "stream-b", 1, 6)).await.unwrap(),
        EventsStored::Stored { through: 6, added: 6 }
    );
    assert_eq!(store.event_cursor(B).await.unwrap(), 6);
    let of = |host: &str| HistoryFilter { host: Some(host.into()), ..Default::default() };
    let a_rows = store.page(&of(A), None, 100).await.unwrap();
    assert_eq!(a_rows.len(), 7, "sequences 1..=6 and 8");
    assert!(a_rows.iter().all(|r| r.host == A));
    assert_eq!(store.page(&of(B), None, 100).await.unwrap().len(), 6);
    assert_eq!(store.page(&of(LOCAL_HOST), None, 100).await.unwrap().len(), 0);
    assert_eq!(store.by_jail(&of(B)).await.unwrap()[0].bans, 6);
    // Which hosts banned an address; one host's view of it.
    let summary = store.ip_summary("198.51.100.1", None).await.unwrap();
    assert_eq!(summary.hosts, [A, B]);
    assert_eq!(summary.bans, 2);
    let only_b = store.ip_summary("198.51.100.1", Some(B)).await.unwrap();
    assert_eq!((only_b.bans, only_b.hosts.as_slice()), (1, [B.to_owned()].as_slice()));
    assert_eq!(store.ip_events("198.51.100.1", Some(A)).await.unwrap().len(), 1);
    assert_eq!(store.ip_events_page("198.51.100.1", Some(B), None, 10).await.unwrap()[0].host, B);
    // The local sync's re-check and manual-ban checks see one host.
    assert!(store.jail_bans(LOCAL_HOST, "sshd", 5000, 6000).await.unwrap().is_empty());
    assert_eq!(store.jail_bans(B, "sshd", 5000, 6000).await.unwrap().len(), 6);

    // The local sync's batch and its cursor in one transaction.
    let local = [ban("sshd", "192.0.2.77", 7000, "fail2ban", None)];
    assert_eq!(store.archive_with_cursors(&local, &[("fail2ban:rowid", 9)], 1).await.unwrap(), 1);
    assert_eq!(store.cursor("fail2ban:rowid").await.unwrap(), Some(9));
    assert_eq!(store.page(&of(LOCAL_HOST), None, 100).await.unwrap().len(), 1);
}

/// Two writers storing the same host's batches at once (two replicas
/// after a takeover): every sequence stored once.
async fn concurrent_event_scenario(store: &(impl HistoryStore + HostStore + Clone + 'static)) {
    const C: &str = "0c000000-0000-4000-8000-00000000000c";
    attached_host(store, C, "stream-c").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut first = 1;
            while first <= 200 {
                match store.store_events(&events(C, "stream-c", first, 10)).await.unwrap() {
                    EventsStored::Stored { through, .. } => first = through + 1,
                    other => panic!("{other:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let of = HistoryFilter { host: Some(C.into()), ..Default::default() };
    assert_eq!(store.page(&of, None, 1000).await.unwrap().len(), 200);
    assert_eq!(store.event_cursor(C).await.unwrap(), 200);
}

#[tokio::test]
async fn host_events_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "events.db").await;
    event_scenarios(&store).await;
    concurrent_event_scenario(&store).await;
}

#[tokio::test]
async fn host_events_on_postgres() {
    let (store, _schema) = testing::postgres("control_host_events").await;
    event_scenarios(&store).await;
    concurrent_event_scenario(&store).await;
}
