//! The outbox on a fail2ban database file with fail2ban's schema: every
//! row once with consecutive sequences (a reused rowid too), batches
//! bounded in events and bytes, acknowledgements and a Welcome that does
//! not follow the outbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bangui_fail2ban::{
    db::Fail2banDb,
    history::{self, SyncParams},
};
use prost::Message as _;

use super::*;

const T0: i64 = 1_800_000_000;

/// fail2ban 1.0's `bans` table and indexes (server/database.py).
const F2B_SCHEMA: &str = "CREATE TABLE bans(jail TEXT NOT NULL, ip TEXT, timeofban INTEGER NOT NULL, \
     bantime INTEGER NOT NULL, bancount INTEGER NOT NULL default 1, data JSON); \
     CREATE INDEX bans_jail_timeofban_ip ON bans(jail, timeofban); \
     CREATE INDEX bans_jail_ip ON bans(jail, ip); CREATE INDEX bans_ip ON bans(ip);";

struct Setup {
    outbox: Outbox,
    f2b: SqlitePool,
    f2b_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let f2b_path = dir.path().join("fail2ban.sqlite3");
    let f2b = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", f2b_path.display())).await.unwrap();
    sqlx::raw_sql(F2B_SCHEMA).execute(&f2b).await.unwrap();
    let outbox = Outbox::open(dir.path(), Metrics::new()).await.unwrap();
    Setup { outbox, f2b, f2b_path, _dir: dir }
}

impl Setup {
    async fn ban(&self, ip: &str, at: i64, data: &str) -> i64 {
        sqlx::query(
            "INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES ('sshd', ?1, ?2, 600, 1, ?3)",
        )
        .bind(ip)
        .bind(at)
        .bind(data)
        .execute(&self.f2b)
        .await
        .unwrap()
        .last_insert_rowid()
    }

    async fn sync(&self, now: i64) -> u64 {
        let db = Fail2banDb::open(&self.f2b_path).await.unwrap();
        let report = history::sync(&db, &self.outbox.sink(now), SyncParams::new(now, now - 86_400)).await.unwrap();
        db.close().await;
        report.taken
    }

    /// Every pending event, through batches.
    async fn pending(&self, from: u64) -> Vec<pb::Event> {
        let mut all: Vec<pb::Event> = Vec::new();
        let mut next = from;
        loop {
            let batch = self.outbox.batch(next).await.unwrap();
            let Some(last) = batch.last() else { return all };
            next = last.sequence + 1;
            all.extend(batch);
        }
    }
}

#[tokio::test]
async fn every_row_becomes_one_event_with_the_next_sequence() {
    let s = setup().await;
    for i in 0..10 {
        s.ban(&format!("192.0.2.{i}"), T0 - 100 + i, r#"{"matches": ["a line"], "failures": 3}"#).await;
    }
    assert_eq!(s.sync(T0).await, 10);
    assert_eq!(s.sync(T0 + 5).await, 0, "a second sync adds nothing");
    let events = s.pending(1).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(events[0].matches, ["a line"]);
    assert_eq!((events[0].failures, events[0].jail.as_str()), (3, "sshd"));
    assert_eq!(s.outbox.backlog().await.unwrap(), 10);

    // The two newest rows go (unbans); the next bans take their rowids again.
    sqlx::query("DELETE FROM bans WHERE ip IN ('192.0.2.8', '192.0.2.9')").execute(&s.f2b).await.unwrap();
    let reused = s.ban("198.51.100.1", T0 + 6, "not json").await;
    assert_eq!(reused, 9, "fail2ban gives the rowid again");
    assert_eq!(s.sync(T0 + 10).await, 1, "a table that shrank is read from its new end");
    let events = s.pending(11).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].sequence, events[0].ip.as_str()), (11, "198.51.100.1"));
    assert_eq!(events[0].unreadable, "not_json", "an unreadable row is sent with what can be read");
    assert_eq!(s.sync(T0 + 15).await, 0);

    // Acknowledged events are dropped; the backlog follows.
    s.outbox.acknowledge(4).await.unwrap();
    assert_eq!(s.outbox.backlog().await.unwrap(), 7);
    assert_eq!(s.pending(1).await.first().map(|e| e.sequence), Some(5));
    s.outbox.acknowledge(2).await.unwrap();
    assert_eq!(s.outbox.backlog().await.unwrap(), 7, "an older Ack changes nothing");
}

#[tokio::test]
async fn batches_are_bounded_in_events_and_bytes() {
    let s = setup().await;
    // 1 200 small rows: 500 + 500 + 200.
    let mut tx = s.f2b.begin().await.unwrap();
    for i in 0..1200 {
        sqlx::query(
            "INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES ('sshd', ?1, ?2, 600, 1, NULL)",
        )
        .bind(format!("10.0.{}.{}", i / 256, i % 256))
        .bind(T0 - 1000 + i)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(s.sync(T0).await, 1200);
    let sizes: Vec<usize> = {
        let mut sizes = Vec::new();
        let mut next = 1;
        loop {
            let batch = s.outbox.batch(next).await.unwrap();
            let Some(last) = batch.last() else { break };
            next = last.sequence + 1;
            sizes.push(batch.len());
        }
        sizes
    };
    assert_eq!(sizes, [500, 500, 200]);

    // Large rows: 20 lines of 500 four-byte characters each (the most a
    // row keeps), a jail and an address cut to 255 bytes.
    let s = setup().await;
    let line = "€".repeat(600);
    let data = serde_json::json!({"matches": vec![line; 30], "failures": 30}).to_string();
    for i in 0..40 {
        sqlx::query("INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES (?1, ?2, ?3, 600, 1, ?4)")
            .bind("j".repeat(1000))
            .bind(format!("192.0.2.{i}{}", "x".repeat(1000)))
            .bind(T0 - 100 + i)
            .bind(&data)
            .execute(&s.f2b)
            .await
            .unwrap();
    }
    assert_eq!(s.sync(T0).await, 40);
    let mut next = 1;
    let mut largest = 0;
    let mut seen = 0;
    loop {
        let batch = s.outbox.batch(next).await.unwrap();
        let Some(last) = batch.last() else { break };
        next = last.sequence + 1;
        seen += batch.len();
        let encoded = pb::Events { events: batch.clone() }.encoded_len();
        largest = largest.max(encoded);
        assert!(encoded <= MAX_BATCH_BYTES, "{encoded} bytes");
        for event in &batch {
            assert!(event.encoded_len() <= MAX_EVENT_BYTES);
            assert_eq!((event.jail.len(), event.matches.len()), (255, 20));
            assert!(event.ip.len() <= 255);
        }
    }
    assert_eq!(seen, 40);
    println!("largest batch of large events: {largest} bytes (bound {MAX_BATCH_BYTES})");
}

#[tokio::test]
async fn a_welcome_that_does_not_follow_the_outbox_renumbers_what_is_pending() {
    let s = setup().await;
    for i in 0..5 {
        s.ban(&format!("192.0.2.{i}"), T0 - 100 + i, "{}").await;
    }
    s.sync(T0).await;
    // The control plane stored 1..=2: they go.
    s.outbox.resume(2).await.unwrap();
    assert_eq!(s.pending(1).await.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3, 4, 5]);
    // A control plane that stored through 100 (this outbox is new to it,
    // or it was restored): what is pending follows it, nothing is dropped.
    s.outbox.resume(100).await.unwrap();
    let events = s.pending(1).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [101, 102, 103]);
    assert_eq!(events[0].ip, "192.0.2.2");
    // One that lost what it acknowledged (through 1 now): pending follows it.
    s.outbox.resume(1).await.unwrap();
    assert_eq!(s.pending(1).await.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2, 3, 4]);
    // New events continue the sequence.
    s.ban("203.0.113.1", T0 + 1, "{}").await;
    s.sync(T0 + 5).await;
    assert_eq!(s.pending(1).await.last().map(|e| e.sequence), Some(5));
    assert_eq!(s.outbox.backlog().await.unwrap(), 4);
    // Reopened (a restart): the same state.
    let dir = s._dir.path().to_owned();
    let again = Outbox::open(&dir, Metrics::new()).await.unwrap();
    assert_eq!(again.backlog().await.unwrap(), 4);
    assert_eq!(*again.written().borrow(), 5);
}

#[tokio::test]
async fn delivery_keeps_a_bounded_window() {
    use super::delivery::{Delivery, WINDOW};
    let s = setup().await;
    let mut tx = s.f2b.begin().await.unwrap();
    for i in 0..3000 {
        sqlx::query(
            "INSERT INTO bans (jail, ip, timeofban, bantime, bancount, data) VALUES ('sshd', ?1, ?2, 600, 1, NULL)",
        )
        .bind(format!("10.1.{}.{}", i / 256, i % 256))
        .bind(T0 - 5000 + i)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    s.sync(T0).await;
    let mut delivery = Delivery::start(&s.outbox, 0).await.unwrap();
    let mut sent = Vec::new();
    for _ in 0..WINDOW {
        tokio::time::timeout(std::time::Duration::from_secs(1), delivery.ready()).await.unwrap();
        sent.push(delivery.next_batch().await.unwrap().unwrap());
    }
    assert_eq!(delivery.in_flight(), WINDOW);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), delivery.ready()).await.is_err(),
        "a full window waits for an Ack"
    );
    let through = sent[0].events.last().unwrap().sequence;
    delivery.acknowledged(through).await.unwrap();
    assert_eq!(delivery.in_flight(), WINDOW - 1);
    tokio::time::timeout(std::time::Duration::from_secs(1), delivery.ready()).await.unwrap();
    assert_eq!(s.outbox.backlog().await.unwrap(), 3000 - through);
}
