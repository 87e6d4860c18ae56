//! The sync's reading order on a fail2ban database file with fail2ban's
//! schema, with a clock the test moves: rowids reused after the newest rows
//! were deleted, many bans in one second across batches, a late ban at a
//! fresh rowid, a table that shrank below the cursor, a sync with nothing
//! new. (The same cases with a real fail2ban-server: tests/tests/control_history.rs.)

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    clock::ManualClock,
    store::{
        Stores,
        history::{HistoryFilter, LOCAL_HOST},
        testing,
    },
};
use bangui_fail2ban::{SocketClient, SocketSettings, StartSettings, Unobserved};

const T0: i64 = 1_800_000_000;

/// fail2ban 1.0's `bans` table and indexes (server/database.py).
const SCHEMA: &str = "CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, \
     bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON); \
     CREATE INDEX bans_jail_timeofban_ip ON bans(jail, timeofban); \
     CREATE INDEX bans_jail_ip ON bans(jail, ip); CREATE INDEX bans_ip ON bans(ip);";

struct Setup {
    history: History,
    store: Arc<dyn HistoryStore>,
    f2b: sqlx::SqlitePool,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let f2b_path = dir.path().join("fail2ban.sqlite3");
    let f2b = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", f2b_path.display())).await.unwrap();
    sqlx::raw_sql(SCHEMA).execute(&f2b).await.unwrap();
    let stores = Stores::of(testing::sqlite_in(&dir, "control.db").await);
    let clock = ManualClock::at(T0);
    let settings = RuntimeSettings::new(stores.settings.clone(), Arc::new(clock.clone()));
    let socket = SocketClient::new(
        SocketSettings {
            path: dir.path().join("none.sock"),
            connect_timeout: Duration::from_secs(1),
            reply_timeout: Duration::from_secs(1),
            max_in_flight: 1,
        },
        Arc::new(Unobserved),
    );
    let start =
        StartSettings { client_binary: "fail2ban-client".into(), config_dir: None, timeout: Duration::from_secs(1) };
    let geo = GeoClient::new(None, Duration::from_secs(1), Duration::from_secs(5), None, None).unwrap();
    let history_store = stores.history;
    let history = History::new(
        history_store.clone(),
        Fail2ban::new(socket, start).with_database(Some(f2b_path)),
        geo,
        settings,
        Arc::new(clock.clone()),
    );
    Setup { history, store: history_store, f2b, clock, _dir: dir }
}

impl Setup {
    async fn ban(&self, jail: &str, ip: &str, at: i64) -> i64 {
        sqlx::query("INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES (?1, ?2, ?3, 600, 1, ?4)")
            .bind(jail)
            .bind(ip)
            .bind(at)
            .bind(r#"{"matches": ["auth failure"], "failures": 3}"#.as_bytes())
            .execute(&self.f2b)
            .await
            .unwrap()
            .last_insert_rowid()
    }

    /// What fail2ban does on unban.
    async fn unban(&self, ip: &str) {
        sqlx::query("DELETE FROM bans WHERE ip = ?1").bind(ip).execute(&self.f2b).await.unwrap();
    }

    async fn sync(&self) -> SyncReport {
        match self.history.sync().await.unwrap() {
            SyncOutcome::Synced(report) => report,
            SyncOutcome::Skipped(why) => panic!("skipped: {why}"),
        }
    }

    async fn archived(&self) -> i64 {
        self.store.by_jail(&HistoryFilter::default()).await.unwrap().iter().map(|j| j.bans).sum()
    }

    async fn has(&self, ip: &str) -> bool {
        !self.store.ip_events(ip, None).await.unwrap().is_empty()
    }
}

#[tokio::test]
async fn the_sync_reads_every_ban_whatever_its_rowid_and_time() {
    let s = setup().await;
    // 12 001 bans in the same second: the (timeofban, rowid) pages cross it.
    let mut tx = s.f2b.begin().await.unwrap();
    for i in 0..12_001 {
        sqlx::query(
            "INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES ('alpha', ?1, ?2, 600, 1, NULL)",
        )
        .bind(format!("10.0.{}.{}", i / 256, i % 256))
        .bind(T0 - 100)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(s.ban("beta", "192.0.2.1", T0 - 50).await, 12_002);
    let first = s.sync().await;
    assert_eq!((first.read, first.archived), (12_002, 12_002));
    assert_eq!(s.archived().await, 12_002);

    // The two newest rows go (unbans); the next bans take their rowids again.
    s.clock.advance(60);
    s.unban("192.0.2.1").await;
    s.unban("10.0.46.224").await; // rowid 12 001
    assert_eq!(s.ban("beta", "192.0.2.2", T0 + 30).await, 12_001);
    assert_eq!(s.ban("alpha", "192.0.2.3", T0 + 31).await, 12_002);
    assert_eq!(s.ban("alpha", "192.0.2.4", T0 + 32).await, 12_003);
    let reused = s.sync().await;
    assert_eq!((reused.read, reused.archived), (3, 3), "{reused:?}");
    assert!(s.has("192.0.2.2").await && s.has("192.0.2.3").await && s.has("192.0.2.4").await);

    // A ban stamped long ago at a fresh rowid (a late log line, a clock step).
    s.clock.advance(60);
    assert_eq!(s.ban("alpha", "192.0.2.5", T0 - 30 * 86_400).await, 12_004);
    assert_eq!(s.sync().await.archived, 1);
    assert!(s.has("192.0.2.5").await);

    // The table shrinks below the cursor (12 004): the next rows come from its new end.
    s.clock.advance(60);
    s.unban("192.0.2.4").await;
    s.unban("192.0.2.5").await;
    assert_eq!(s.sync().await.archived, 0);
    s.clock.advance(60);
    assert_eq!(s.ban("alpha", "192.0.2.6", T0 + 200).await, 12_003);
    assert_eq!(s.sync().await.archived, 1);
    assert!(s.has("192.0.2.6").await);

    // Nothing new: the recent rows are compared with the archive, none read.
    s.clock.advance(60);
    let idle = s.sync().await;
    assert_eq!((idle.read, idle.archived), (0, 0), "{idle:?}");
    assert!(idle.rechecked > 0, "{idle:?}");
    assert_eq!(s.archived().await, 12_002 + 3 + 1 + 1);
}

#[tokio::test]
async fn a_ban_already_archived_by_jail_service_is_not_archived_again() {
    let s = setup().await;
    s.sync().await;
    // Archived at once as manual, with --with-time's floored second; fail2ban's row rounds up.
    s.history.record_manual(LOCAL_HOST, "alpha", "192.0.2.9", T0, 600, Event::Ban).await;
    s.clock.advance(60);
    s.ban("alpha", "192.0.2.9", T0 + 1).await;
    assert_eq!(s.sync().await.archived, 0);
    let events = s.store.ip_events("192.0.2.9", None).await.unwrap();
    assert_eq!(events.iter().map(|e| e.origin.as_str()).collect::<Vec<_>>(), ["manual"]);
}
