//! The persistent cache: what the local databases could not answer.
//!
//! One repository trait, [`CacheStore`], with a SQLite ([`sqlite`]) and a
//! PostgreSQL ([`postgres`]) implementation and migrations per backend under
//! `migrations/geo/`. Rows are the online fallback's answers: a place, or a
//! negative (no country: the fallback was asked and could not place the
//! address). The service writes them behind the lookups (see
//! `crate::cache`), never while a caller waits.
//!
//! Every row is written with `source = 'http'`. Rows of an older version
//! (`source = 'none'`) recorded a database miss as a negative without asking
//! the fallback; migration 0002 deletes them, and reads skip any that an
//! older replica on the same PostgreSQL still writes during a rollout.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use bangui_runtime::db::Backend;

use crate::resolve::Placed;

/// One row of the cache: what the fallback said of one address. Times are
/// Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    /// The normalized address, as `IpAddr` formats it.
    pub ip: String,
    /// `None` for a negative.
    pub placed: Option<Arc<Placed>>,
    pub resolved_at: i64,
    pub last_seen: i64,
}

impl CachedAnswer {
    /// A negative for `ip`, resolved and seen at `now`.
    pub fn negative(ip: String, now: i64) -> Self {
        Self { ip, placed: None, resolved_at: now, last_seen: now }
    }

    /// A place for `ip`, resolved and seen at `now`.
    pub fn placed(ip: String, placed: Placed, now: i64) -> Self {
        Self { ip, placed: Some(Arc::new(placed)), resolved_at: now, last_seen: now }
    }

    pub fn is_negative(&self) -> bool {
        self.placed.is_none()
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
    /// Up to `limit` negatives (of this version), the longest-unresolved first.
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

/// Every column of the rows this version reads; each backend appends its
/// own list of addresses.
const SELECT_ROWS: &str = "SELECT ip, country_code, country_name, continent_code, asn, as_org, resolved_at, last_seen \
                           FROM geo_cache WHERE source = 'http' AND ip ";

/// The columns of a place, for binding: all `None` for a negative.
fn columns(answer: &CachedAnswer) -> [Option<&str>; 4] {
    match answer.placed.as_deref() {
        Some(p) => [Some(&p.country_code), p.country_name.as_deref(), p.continent_code.as_deref(), p.as_org.as_deref()],
        None => [None; 4],
    }
}

fn asn(answer: &CachedAnswer) -> Option<i64> {
    answer.placed.as_ref().and_then(|p| p.asn).map(i64::from)
}

/// A `geo_cache` row as both backends return it.
#[derive(Debug, sqlx::FromRow)]
struct DbRow {
    ip: String,
    country_code: Option<String>,
    country_name: Option<String>,
    continent_code: Option<String>,
    asn: Option<i64>,
    as_org: Option<String>,
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
        let placed = row.country_code.map(|country_code| {
            Arc::new(Placed {
                country_code,
                country_name: row.country_name,
                continent_code: row.continent_code,
                asn,
                as_org: row.as_org,
            })
        });
        Ok(CachedAnswer { ip: row.ip, placed, resolved_at: row.resolved_at, last_seen: row.last_seen })
    }
}

#[cfg(test)]
mod contract;
