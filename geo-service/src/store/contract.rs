//! One contract, both backends: every scenario runs against SQLite (a
//! temporary file) and PostgreSQL (a schema of its own in the `test`
//! database, dropped afterwards). PostgreSQL comes from
//! `BANGUI_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.

use std::sync::Arc;

use bangui_testkit::postgres::PgSchema;

use super::{CacheStore, CachedAnswer, postgres::PgStore, sqlite::SqliteStore};
use crate::resolve::Placed;

fn answer(ip: &str, country: Option<&str>, resolved_at: i64, last_seen: i64) -> CachedAnswer {
    let placed = country.map(|c| {
        Arc::new(Placed {
            country_code: c.into(),
            country_name: Some(format!("Name of {c}")),
            continent_code: Some("EU".into()),
            asn: Some(64_512),
            as_org: Some("Example AS".into()),
        })
    });
    CachedAnswer { ip: ip.into(), placed, resolved_at, last_seen }
}

async fn sorted(store: &dyn CacheStore, ips: &[&str]) -> Vec<CachedAnswer> {
    let ips: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
    let mut rows = store.get(&ips).await.unwrap();
    rows.sort_by(|a, b| a.ip.cmp(&b.ip));
    rows
}

async fn put_then_get_round_trips_every_field(store: &dyn CacheStore) {
    let rows = vec![answer("203.0.113.7", Some("DE"), 100, 150), answer("2001:db8::1", None, 200, 200)];
    store.put(&rows).await.unwrap();
    let got = sorted(store, &["203.0.113.7", "2001:db8::1", "192.0.2.99"]).await;
    assert_eq!(got, vec![rows[1].clone(), rows[0].clone()], "unknown addresses are simply absent");
    assert!(got[0].is_negative() && !got[1].is_negative());
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.rows, stats.negatives), (2, 1));
}

async fn put_replaces_the_answer_but_last_seen_never_goes_back(store: &dyn CacheStore) {
    store.put(&[answer("198.51.100.1", None, 100, 500)]).await.unwrap();
    // ReResolve found it later: the answer changes, last_seen stays at 500.
    store.put(&[answer("198.51.100.1", Some("FR"), 600, 300)]).await.unwrap();
    let got = sorted(store, &["198.51.100.1"]).await;
    assert_eq!(got[0].placed.as_ref().map(|p| p.country_code.as_str()), Some("FR"));
    assert_eq!((got[0].resolved_at, got[0].last_seen), (600, 500));
    assert_eq!(store.stats().await.unwrap().negatives, 0);
}

async fn touch_moves_last_seen_forward_only(store: &dyn CacheStore) {
    store.put(&[answer("192.0.2.1", Some("NL"), 10, 100), answer("192.0.2.2", None, 10, 100)]).await.unwrap();
    let touched =
        store.touch(&[("192.0.2.1".into(), 250), ("192.0.2.2".into(), 50), ("192.0.2.3".into(), 999)]).await.unwrap();
    assert_eq!(touched, 2, "the unknown address is ignored");
    let got = sorted(store, &["192.0.2.1", "192.0.2.2", "192.0.2.3"]).await;
    assert_eq!(got.iter().map(|r| r.last_seen).collect::<Vec<_>>(), vec![250, 100]);
}

async fn touch_of_an_address_named_twice_takes_the_later_time(store: &dyn CacheStore) {
    store.put(&[answer("192.0.2.5", None, 10, 100)]).await.unwrap();
    let touched = store.touch(&[("192.0.2.5".into(), 300), ("192.0.2.5".into(), 200)]).await.unwrap();
    assert_eq!(touched, 1, "one row");
    assert_eq!(sorted(store, &["192.0.2.5"]).await[0].last_seen, 300);
}

async fn purge_deletes_only_rows_older_than_the_cutoff(store: &dyn CacheStore) {
    let rows: Vec<CachedAnswer> = (0..1_200)
        .map(|i| answer(&format!("10.0.{}.{}", i / 250, i % 250), (i % 3 == 0).then_some("US"), 1, 1_000 + i))
        .collect();
    store.put(&rows).await.unwrap();
    // Rows seen at 1000..=1499 go; 1500..=2199 stay.
    assert_eq!(store.purge_older_than(1_500).await.unwrap(), 500);
    assert_eq!(store.stats().await.unwrap().rows, 700);
    let remaining = store.get(&rows.iter().map(|r| r.ip.clone()).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(remaining.len(), 700, "get over more addresses than one statement binds");
    assert!(remaining.iter().all(|r| r.last_seen >= 1_500));
    assert_eq!(store.purge_older_than(1_500).await.unwrap(), 0, "purging again deletes nothing");
}

async fn negatives_come_oldest_first_and_limited(store: &dyn CacheStore) {
    store
        .put(&[
            answer("192.0.2.10", None, 300, 300),
            answer("192.0.2.11", Some("SE"), 100, 100),
            answer("192.0.2.12", None, 100, 100),
            answer("192.0.2.13", None, 200, 200),
        ])
        .await
        .unwrap();
    assert_eq!(store.negatives(2).await.unwrap(), vec!["192.0.2.12".to_string(), "192.0.2.13".to_string()]);
    assert_eq!(store.negatives(100).await.unwrap().len(), 3);
}

async fn a_failed_batch_writes_nothing(store: &dyn CacheStore) {
    // The same address twice in one batch is fine: the last one wins.
    store.put(&[answer("192.0.2.21", None, 1, 1), answer("192.0.2.21", Some("IT"), 2, 2)]).await.unwrap();
    assert_eq!(sorted(store, &["192.0.2.21"]).await[0].placed.as_ref().map(|p| p.country_code.as_str()), Some("IT"));
    // A row the schema refuses (an over-long address) fails the whole
    // batch: the valid row before it does not land either.
    let before = store.stats().await.unwrap();
    let refused = store.put(&[answer("192.0.2.23", None, 1, 1), answer(&"9".repeat(100), Some("IT"), 1, 1)]).await;
    assert!(refused.is_err());
    assert_eq!(store.stats().await.unwrap(), before);
    assert!(sorted(store, &["192.0.2.23"]).await.is_empty());
}

async fn delete_removes_only_the_named_rows(store: &dyn CacheStore) {
    store.put(&[answer("192.0.2.30", None, 1, 1), answer("192.0.2.31", None, 1, 1)]).await.unwrap();
    let ips = vec!["192.0.2.30".to_string(), "192.0.2.99".to_string()];
    assert_eq!(store.delete(&ips).await.unwrap(), 1);
    assert_eq!(store.stats().await.unwrap().rows, 1);
    assert!(matches!(store.backend(), "sqlite" | "postgres"));
}

async fn write_is_one_transaction_for_rows_and_refreshes(store: &dyn CacheStore) {
    store.put(&[answer("192.0.2.40", None, 1, 100)]).await.unwrap();
    // A refused row fails the refresh beside it too.
    let bad = answer(&"9".repeat(100), None, 1, 1);
    assert!(store.write(&[bad], &[("192.0.2.40".into(), 500)]).await.is_err());
    assert_eq!(sorted(store, &["192.0.2.40"]).await[0].last_seen, 100);
    let touched = store.write(&[answer("192.0.2.41", None, 1, 1)], &[("192.0.2.40".into(), 500)]).await.unwrap();
    assert_eq!(touched, 1);
    let rows = sorted(store, &["192.0.2.40", "192.0.2.41"]).await;
    assert_eq!(rows.iter().map(|r| r.last_seen).collect::<Vec<_>>(), vec![500, 1]);
}

macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("geo.db").display());
                    let store: Arc<dyn CacheStore> = Arc::new(SqliteStore::connect(&url).await.unwrap());
                    super::$scenario(store.as_ref()).await;
                    store.close().await;
                }
            )*
        }
        mod on_postgres {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let schema = PgSchema::create("geo_test").await;
                    let store: Arc<dyn CacheStore> = Arc::new(PgStore::connect_with(schema.options()).await.unwrap());
                    super::$scenario(store.as_ref()).await;
                    store.close().await;
                }
            )*
        }
    };
}

contract!(
    put_then_get_round_trips_every_field,
    put_replaces_the_answer_but_last_seen_never_goes_back,
    touch_moves_last_seen_forward_only,
    touch_of_an_address_named_twice_takes_the_later_time,
    purge_deletes_only_rows_older_than_the_cutoff,
    negatives_come_oldest_first_and_limited,
    a_failed_batch_writes_nothing,
    delete_removes_only_the_named_rows,
    write_is_one_transaction_for_rows_and_refreshes,
);
