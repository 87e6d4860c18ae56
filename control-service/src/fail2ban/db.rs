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

    /// Up to `limit` bans after `after_rowid`, in rowid (insertion) order,
    /// banned at `since` or later. The rowid is the table's key: each batch
    /// reads only its own rows.
    pub async fn bans_after(&self, after_rowid: i64, since: i64, limit: u32) -> Result<Vec<Fail2banBan>, sqlx::Error> {
        sqlx::query_as(
            "SELECT rowid, jail, ip, timeofban, bantime, bancount, CAST(data AS TEXT) AS data FROM bans \
             WHERE rowid > ?1 AND ip IS NOT NULL AND timeofban >= ?2 ORDER BY rowid LIMIT ?3",
        )
        .bind(after_rowid)
        .bind(since)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
    }

    /// The first row banned at `since` or later (one scan, for a first sync).
    pub async fn first_rowid_since(&self, since: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT min(rowid) FROM bans WHERE timeofban >= ?1").bind(since).fetch_one(&self.pool).await
    }

    /// The largest rowid (0 for an empty table).
    pub async fn max_rowid(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT coalesce(max(rowid), 0) FROM bans").fetch_one(&self.pool).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
