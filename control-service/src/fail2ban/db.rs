//! fail2ban's own SQLite database (`get dbfile`), read-only: the `bans`
//! table, read in short statements (each its own transaction) so fail2ban's
//! writer is never held up for long.

use std::{path::Path, time::Duration};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};

/// A row of fail2ban's `bans` table.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Fail2banBan {
    pub rowid: i64,
    pub jail: String,
    pub ip: String,
    /// Unix seconds.
    pub timeofban: i64,
    /// -1: permanent.
    pub bantime: i64,
    pub bancount: i64,
    /// JSON: `{"matches": [...], "failures": n}` (may be NULL).
    pub data: Option<String>,
}

/// fail2ban's database, opened read-only.
#[derive(Debug, Clone)]
pub struct Fail2banDb {
    pool: SqlitePool,
}

impl Fail2banDb {
    pub async fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Ok(Self { pool })
    }

    /// Up to `limit` bans from `since` on (Unix seconds, inclusive), in
    /// (timeofban, rowid) order after the keyset `after`.
    pub async fn bans(
        &self,
        since: i64,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<Fail2banBan>, sqlx::Error> {
        let (at, rowid) = after.unwrap_or((i64::MIN, i64::MIN));
        sqlx::query_as(
            "SELECT rowid, jail, ip, timeofban, bantime, bancount, CAST(data AS TEXT) AS data FROM bans \
             WHERE ip IS NOT NULL AND timeofban >= ?1 AND (timeofban > ?2 OR (timeofban = ?2 AND rowid > ?3)) \
             ORDER BY timeofban, rowid LIMIT ?4",
        )
        .bind(since)
        .bind(at)
        .bind(rowid)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
