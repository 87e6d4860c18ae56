//! The host's durable outbox: its history events, each with the host's next
//! sequence number, kept in SQLite (`outbox.db` in `--state-dir`) until the
//! control plane acknowledges them.
//!
//! * Filled by the host's history sync ([`sync`]): fail2ban's `bans` table
//!   read with the shared no-loss rules ([`bangui_fail2ban::history`]);
//!   each batch's events, their sequences, the keys the re-check compares
//!   with (`seen`) and the rowid cursor are written in one transaction, so
//!   a crash at any point neither loses nor repeats an event.
//! * Emptied by delivery ([`delivery`]): from the sequence the control
//!   plane says it stored (Welcome), in bounded batches with a bounded
//!   window of unacknowledged ones; an Ack deletes what it covers.
//! * The pending events are always consecutive from the oldest; after a
//!   Welcome they start right after what the control plane stored (when it
//!   says otherwise, e.g. a new outbox or a restored control database, they
//!   are renumbered to follow it, so delivery never stalls on a gap).
//!
//! Memory is bounded whatever the backlog: reads stream and stop at
//! [`MAX_BATCH_EVENTS`] / [`MAX_BATCH_BYTES`]; nothing is counted by
//! loading rows.

pub mod delivery;
pub mod sync;

use std::{path::Path, time::Duration};

use bangui_fail2ban::history::{BanRow, Cursors, HistorySink, KnownBan, RECHECK_OVERLAP};
use bangui_proto::agent::v1 as pb;
use prost::Message as _;
use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::metrics::Metrics;

/// Events in one delivered batch, at most.
pub const MAX_BATCH_EVENTS: usize = 500;
/// Encoded bytes of one delivered batch, at most (one event is always
/// sent, and one event is at most [`MAX_EVENT_BYTES`]).
pub const MAX_BATCH_BYTES: usize = 96 * 1024;
/// Bytes of an event's jail or address, at most (cut at a character).
pub const MAX_FIELD_BYTES: usize = 255;
/// An event's encoded size, at most: 20 lines of 500 characters (4 bytes
/// each at worst) and two fields.
pub const MAX_EVENT_BYTES: usize = 20 * (500 * 4 + 3) + 2 * (MAX_FIELD_BYTES + 3) + 64;

const SCHEMA: &str = "\
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY, jail TEXT NOT NULL, ip TEXT NOT NULL, banned_at INTEGER NOT NULL,
        ban_seconds INTEGER NOT NULL, ban_count INTEGER NOT NULL, failures INTEGER NOT NULL,
        matches TEXT NOT NULL, unreadable TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS seen (
        jail TEXT NOT NULL, banned_at INTEGER NOT NULL, ip TEXT NOT NULL,
        PRIMARY KEY (jail, banned_at, ip)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS seen_time ON seen (banned_at);";

/// `meta` keys.
const NEXT_SEQ: &str = "next_seq";
const ACKED: &str = "acked";
const ROWID: &str = "fail2ban:rowid";
const CHECKED: &str = "fail2ban:checked";
const NEWEST: &str = "fail2ban:newest";

/// What went wrong with the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The outbox (cheap to clone: one pool).
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: SqlitePool,
    /// The last sequence written (0: none yet).
    written: watch::Sender<u64>,
    metrics: Metrics,
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    seq: i64,
    jail: String,
    ip: String,
    banned_at: i64,
    ban_seconds: i64,
    ban_count: i64,
    failures: i64,
    matches: String,
    unreadable: String,
}

impl From<EventRow> for pb::Event {
    fn from(row: EventRow) -> Self {
        pb::Event {
            sequence: u64::try_from(row.seq).unwrap_or(0),
            jail: row.jail,
            ip: row.ip,
            banned_at: row.banned_at,
            ban_seconds: row.ban_seconds,
            ban_count: i32::try_from(row.ban_count).unwrap_or(i32::MAX),
            failures: i32::try_from(row.failures).unwrap_or(i32::MAX),
            // Written by `take` from a Vec<String>.
            matches: serde_json::from_str(&row.matches).unwrap_or_default(),
            unreadable: row.unreadable,
        }
    }
}

async fn meta(conn: &mut sqlx::SqliteConnection, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1").bind(key).fetch_optional(conn).await
}

async fn set_meta(conn: &mut sqlx::SqliteConnection, key: &str, value: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}

impl Outbox {
    /// Opens (or creates) `outbox.db` in `dir`.
    pub async fn open(dir: &Path, metrics: Metrics) -> Result<Self, OutboxError> {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("outbox.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Durable at commit: an acknowledged sequence was on disk.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .row_buffer_size(16);
        // One connection: the sync's writes and delivery's reads take turns.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let outbox = Self { pool, written: watch::Sender::new(0), metrics };
        let (next, acked) = outbox.positions().await?;
        outbox.written.send_replace(u64::try_from(next - 1).unwrap_or(0));
        outbox.metrics.set_outbox_backlog(next - 1 - acked);
        Ok(outbox)
    }

    /// (next sequence to give out, last acknowledged).
    async fn positions(&self) -> Result<(i64, i64), OutboxError> {
        let mut conn = self.pool.acquire().await?;
        let next = meta(&mut conn, NEXT_SEQ).await?.unwrap_or(1);
        let acked = meta(&mut conn, ACKED).await?.unwrap_or(0);
        Ok((next, acked))
    }

    /// The last sequence written, as it changes.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Events written and not acknowledged.
    pub async fn backlog(&self) -> Result<u64, OutboxError> {
        let (next, acked) = self.positions().await?;
        Ok(u64::try_from(next - 1 - acked).unwrap_or(0))
    }

    /// The control plane stored everything through `stored` (Welcome):
    /// drops those events and makes the pending ones follow it.
    pub async fn resume(&self, stored: u64) -> Result<(), OutboxError> {
        let stored = i64::try_from(stored).unwrap_or(i64::MAX / 2);
        let mut tx = self.pool.begin().await?;
        let next = meta(&mut tx, NEXT_SEQ).await?.unwrap_or(1);
        // A cursor at or past every sequence this outbox gave out is not
        // about its events (a new or restored outbox): nothing is dropped.
        if stored < next {
            sqlx::query("DELETE FROM events WHERE seq <= ?1").bind(stored).execute(&mut *tx).await?;
        }
        let (oldest, count): (Option<i64>, i64) =
            sqlx::query_as("SELECT min(seq), count(*) FROM events").fetch_one(&mut *tx).await?;
        let shift = oldest.map_or(0, |oldest| stored + 1 - oldest);
        if shift != 0 || (count == 0 && next != stored + 1) {
            tracing::warn!(
                stored,
                next,
                pending = count,
                "the control plane's delivery cursor does not follow this outbox (a new or restored outbox, \
                 or a restored control database): pending events renumbered to follow it"
            );
        }
        if shift != 0 {
            // Two steps: no sequence is ever taken twice on the way.
            sqlx::query("UPDATE events SET seq = -seq").execute(&mut *tx).await?;
            sqlx::query("UPDATE events SET seq = -seq + ?1").bind(shift).execute(&mut *tx).await?;
        }
        set_meta(&mut tx, NEXT_SEQ, stored + 1 + count).await?;
        set_meta(&mut tx, ACKED, stored).await?;
        tx.commit().await?;
        self.written.send_replace(u64::try_from(stored + count).unwrap_or(0));
        self.metrics.set_outbox_backlog(count);
        Ok(())
    }

    /// The pending events from sequence `from` on, at most
    /// [`MAX_BATCH_EVENTS`] and [`MAX_BATCH_BYTES`] encoded (at least one).
    pub async fn batch(&self, from: u64) -> Result<Vec<pb::Event>, OutboxError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let mut conn = self.pool.acquire().await?;
        let mut rows = sqlx::query_as::<_, EventRow>(
            "SELECT seq, jail, ip, banned_at, ban_seconds, ban_count, failures, matches, unreadable \
             FROM events WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(from)
        .bind(MAX_BATCH_EVENTS as i64)
        .fetch(&mut *conn);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.next().await {
            let event = pb::Event::from(row?);
            let size = event.encoded_len() + 3;
            if !batch.is_empty() && bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            batch.push(event);
        }
        Ok(batch)
    }

    /// The control plane stored everything through `through`: drops it.
    pub async fn acknowledge(&self, through: u64) -> Result<(), OutboxError> {
        let through = i64::try_from(through).unwrap_or(i64::MAX / 2);
        let mut tx = self.pool.begin().await?;
        let acked = meta(&mut tx, ACKED).await?.unwrap_or(0);
        if through <= acked {
            return Ok(());
        }
        sqlx::query("DELETE FROM events WHERE seq <= ?1").bind(through).execute(&mut *tx).await?;
        set_meta(&mut tx, ACKED, through).await?;
        let next = meta(&mut tx, NEXT_SEQ).await?.unwrap_or(1);
        tx.commit().await?;
        self.metrics.set_outbox_backlog(next - 1 - through);
        Ok(())
    }

    /// The sink the history sync writes into, for a sync begun at `now`.
    pub fn sink(&self, now: i64) -> OutboxSink<'_> {
        OutboxSink { outbox: self, now }
    }
}

/// The history sync's sink: rows become outbox events.
#[derive(Debug)]
pub struct OutboxSink<'a> {
    outbox: &'a Outbox,
    now: i64,
}

#[async_trait::async_trait]
impl HistorySink for OutboxSink<'_> {
    type Error = OutboxError;

    async fn cursors(&self) -> Result<Cursors, OutboxError> {
        let mut conn = self.outbox.pool.acquire().await?;
        Ok(Cursors {
            rowid: meta(&mut conn, ROWID).await?,
            checked: meta(&mut conn, CHECKED).await?,
            newest: meta(&mut conn, NEWEST).await?,
        })
    }

    async fn known(&self, jail: &str, from: i64, to: i64) -> Result<Vec<KnownBan>, OutboxError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT ip, banned_at FROM seen WHERE jail = ?1 AND banned_at BETWEEN ?2 AND ?3")
                .bind(jail)
                .bind(from)
                .bind(to)
                .fetch_all(&self.outbox.pool)
                .await?;
        Ok(rows.into_iter().map(|(ip, banned_at)| KnownBan { ip, banned_at, own: false }).collect())
    }

    async fn take(&self, rows: Vec<BanRow>, rowid: Option<i64>) -> Result<u64, OutboxError> {
        let mut tx = self.outbox.pool.begin().await?;
        let mut next = meta(&mut tx, NEXT_SEQ).await?.unwrap_or(1);
        let first = next;
        for row in rows {
            let (jail, ip) = (cut(row.jail, MAX_FIELD_BYTES), cut(row.ip, MAX_FIELD_BYTES));
            // A key already taken (the re-check and a reused rowid) is not
            // an event again.
            let new = sqlx::query("INSERT OR IGNORE INTO seen (jail, banned_at, ip) VALUES (?1, ?2, ?3)")
                .bind(&jail)
                .bind(row.banned_at)
                .bind(&ip)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if new == 0 {
                continue;
            }
            if let Some(reason) = row.unreadable {
                self.outbox.metrics.history_unreadable_row(reason.label());
            }
            sqlx::query(
                "INSERT INTO events (seq, jail, ip, banned_at, ban_seconds, ban_count, failures, matches, unreadable) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(next)
            .bind(&jail)
            .bind(&ip)
            .bind(row.banned_at)
            .bind(row.ban_seconds)
            .bind(i64::from(row.ban_count))
            .bind(i64::from(row.failures))
            .bind(serde_json::to_string(&row.matches).unwrap_or_else(|_| "[]".into()))
            .bind(row.unreadable.map_or("", |u| u.label()))
            .execute(&mut *tx)
            .await?;
            next += 1;
        }
        set_meta(&mut tx, NEXT_SEQ, next).await?;
        if let Some(rowid) = rowid {
            set_meta(&mut tx, ROWID, rowid).await?;
        }
        let acked = meta(&mut tx, ACKED).await?.unwrap_or(0);
        tx.commit().await?;
        let added = next - first;
        if added > 0 {
            self.outbox.written.send_replace(u64::try_from(next - 1).unwrap_or(0));
            self.outbox.metrics.outbox_written(u64::try_from(added).unwrap_or(0));
        }
        self.outbox.metrics.set_outbox_backlog(next - 1 - acked);
        Ok(u64::try_from(added).unwrap_or(0))
    }

    async fn finish(&self, done: Cursors) -> Result<(), OutboxError> {
        let mut tx = self.outbox.pool.begin().await?;
        if let Some(rowid) = done.rowid {
            set_meta(&mut tx, ROWID, rowid).await?;
        }
        if let Some(newest) = done.newest {
            set_meta(&mut tx, NEWEST, newest).await?;
        }
        set_meta(&mut tx, CHECKED, self.now).await?;
        // The next re-check starts RECHECK_OVERLAP before now: older keys
        // are never asked for again (twice the overlap: a margin).
        sqlx::query("DELETE FROM seen WHERE banned_at < ?1")
            .bind(self.now - 2 * RECHECK_OVERLAP)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
