//! The persistent cache: what the local databases could not answer.
//!
//! One repository trait, [`CacheStore`], with a SQLite ([`sqlite`]) and a
//! PostgreSQL ([`postgres`]) implementation and migrations per backend under
//! `migrations/geo/`. Rows are fallback answers and negatives (no country:
//! nobody could place the address). The service writes them behind the
//! lookups (see `crate::cache`), never while a caller waits.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use bangui_runtime::db::Backend;

/// Where a cached answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerSource {
    /// The online fallback placed it.
    Http,
    /// No source could place it: a negative.
    Nobody,
}

impl AnswerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerSource::Http => "http",
            AnswerSource::Nobody => "none",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "http" => Ok(AnswerSource::Http),
            "none" => Ok(AnswerSource::Nobody),
            other => Err(StoreError::Corrupt(format!("unknown source {other:?}"))),
        }
    }
}

/// One row of the cache. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    /// The normalized address.
    pub ip: String,
    /// `None` for a negative.
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub continent_code: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    pub source: AnswerSource,
    pub resolved_at: i64,
    pub last_seen: i64,
}

impl CachedAnswer {
    /// A negative for `ip`, resolved and seen at `now`.
    pub fn negative(ip: String, now: i64) -> Self {
        Self {
            ip,
            country_code: None,
            country_name: None,
            continent_code: None,
            asn: None,
            as_org: None,
            source: AnswerSource::Nobody,
            resolved_at: now,
            last_seen: now,
        }
    }

    pub fn is_negative(&self) -> bool {
        self.country_code.is_none()
    }
}

/// Row counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub rows: u64,
    pub negatives: u64,
}

/// Errors of the store (shared with the other service).
pub use bangui_runtime::db::StoreError;

/// The persistent cache's operations. Every write is one transaction: a
/// batch lands whole or not at all.
#[async_trait::async_trait]
pub trait CacheStore: Send + Sync + std::fmt::Debug {
    /// The rows for those of `ips` that are cached.
    async fn get(&self, ips: &[String]) -> Result<Vec<CachedAnswer>, StoreError>;
    /// One transaction: inserts or replaces `answers`, then moves
    /// `last_seen` forward for the `seen` addresses that are cached (unknown
    /// ones are ignored). `last_seen` never moves backwards. Returns the rows
    /// `seen` touched.
    async fn write(&self, answers: &[CachedAnswer], seen: &[(String, i64)]) -> Result<u64, StoreError>;
    /// [`CacheStore::write`] of answers only.
    async fn put(&self, answers: &[CachedAnswer]) -> Result<(), StoreError> {
        self.write(answers, &[]).await.map(drop)
    }
    /// [`CacheStore::write`] of `last_seen` refreshes only.
    async fn touch(&self, seen: &[(String, i64)]) -> Result<u64, StoreError> {
        self.write(&[], seen).await
    }
    /// Deletes rows whose `last_seen` is before `cutoff`; returns how many.
    async fn purge_older_than(&self, cutoff: i64) -> Result<u64, StoreError>;
    /// Up to `limit` negatives, the longest-unresolved first.
    async fn negatives(&self, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Deletes the rows of `ips` (a negative a newer database now places).
    async fn delete(&self, ips: &[String]) -> Result<u64, StoreError>;
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;
    /// Closes the pool.
    async fn close(&self);
}

/// Opens the store named by `url` and applies its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn CacheStore>, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Arc::new(sqlite::SqliteStore::connect(url).await?),
        Backend::Postgres => Arc::new(postgres::PgStore::connect(url).await?),
    })
}

/// The most bound parameters one statement uses: both backends take far
/// more, this keeps statements small.
const CHUNK: usize = 500;

/// `SELECT <every column> FROM geo_cache`, as a literal so each backend can
/// append its own `WHERE` with `concat!`.
macro_rules! select_rows {
    () => {
        "SELECT ip, country_code, country_name, continent_code, asn, as_org, source, resolved_at, last_seen FROM geo_cache"
    };
}
pub(crate) use select_rows;

/// A `geo_cache` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
struct DbRow {
    ip: String,
    country_code: Option<String>,
    country_name: Option<String>,
    continent_code: Option<String>,
    asn: Option<i64>,
    as_org: Option<String>,
    source: String,
    resolved_at: i64,
    last_seen: i64,
}

impl TryFrom<DbRow> for CachedAnswer {
    type Error = StoreError;

    fn try_from(row: DbRow) -> Result<Self, StoreError> {
        let asn = row
            .asn
            .map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("asn {n} out of range"))))
            .transpose()?;
        Ok(CachedAnswer {
            ip: row.ip,
            country_code: row.country_code,
            country_name: row.country_name,
            continent_code: row.continent_code,
            asn,
            as_org: row.as_org,
            source: AnswerSource::parse(&row.source)?,
            resolved_at: row.resolved_at,
            last_seen: row.last_seen,
        })
    }
}

#[cfg(test)]
mod contract;
