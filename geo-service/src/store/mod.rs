//! The persistent cache: what the local databases could not answer.
//!
//! One repository trait, [`CacheStore`], in the control-service's shape:
//! one implementation generic over the backend (`sql.rs`,
//! `impl<DB: GeoDialect> CacheStore for Store<DB>`), binding and running the
//! statements below (the same text on both backends: numbered `$n`
//! parameters, which SQLite takes too) through the statement runner both
//! services share ([`bangui_runtime::sql`]). `GeoDialect` (in `dialect.rs`)
//! carries what that generic code needs of a backend and what differs
//! between the two: the name of the larger-of-two function in the upsert
//! and the `last_seen` refresh. Each backend's side of it is in [`sqlite`]
//! ([`SqliteStore`], the default) and [`postgres`] ([`PgStore`], for
//! several replicas), next to its migrations (under `migrations/geo/`) and
//! pool. Rows are the online fallback's answers: a place, or a
//! negative (no country: the fallback was asked and could not place the
//! address). The service writes them behind the lookups (see
//! `crate::cache`), never while a caller waits.
//!
//! Every row is written with `source = 'http'`. Rows of an older version
//! (`source = 'none'`) recorded a database miss as a negative without asking
//! the fallback; migration 0002 deletes them, and reads skip any that an
//! older replica on the same PostgreSQL still writes during a rollout.

mod dialect;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use bangui_runtime::db::Backend;
use sqlx::Database;

pub(crate) use self::dialect::GeoDialect;
pub use self::{postgres::PgStore, sqlite::SqliteStore};

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

/// The cache on backend `DB`: one pool; [`CacheStore`] is implemented for
/// it once, generic over `GeoDialect`.
#[derive(Debug)]
pub struct Store<DB: Database> {
    pub(in crate::store) pool: sqlx::Pool<DB>,
}

impl<DB: Database> Clone for Store<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

/// Opens the store named by `url` and applies its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn CacheStore>, StoreError> {
    Ok(match Backend::of(url)? {
        Backend::Sqlite => Arc::new(SqliteStore::connect(url).await?),
        Backend::Postgres => Arc::new(PgStore::connect(url).await?),
    })
}

/// The most addresses one statement binds: both backends take far more
/// parameters, this keeps statements small.
const CHUNK: usize = 500;

/// Every column of the rows this version reads, for the addresses in the
/// list appended to it (`IN ($1, …)`).
const SELECT_ROWS: &str = "SELECT ip, country_code, country_name, continent_code, asn, as_org, resolved_at, last_seen \
                           FROM geo_cache WHERE source = 'http' AND ip ";

/// Inserts or replaces one answer; `last_seen` never goes back. `{greatest}`
/// is the dialect's larger-of-two function ([`GeoDialect::GREATEST`]).
const UPSERT: &str = "INSERT INTO geo_cache (ip, country_code, country_name, continent_code, asn, as_org, source, resolved_at, last_seen) \
                      VALUES ($1, $2, $3, $4, $5, $6, 'http', $7, $8) \
                      ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code, country_name = excluded.country_name, \
                      continent_code = excluded.continent_code, asn = excluded.asn, as_org = excluded.as_org, \
                      source = excluded.source, resolved_at = excluded.resolved_at, \
                      last_seen = {greatest}(geo_cache.last_seen, excluded.last_seen)";

/// Moves `last_seen` forward for the cached ones of the `(ip, at)` pairs in
/// `{rows}` (`($1, $2), …`), in one statement. An address named twice is
/// grouped first: a row joined to several source rows is updated with one
/// of them, not with each in turn.
const TOUCH: &str = "WITH v (ip, at) AS (VALUES {rows}), s AS (SELECT ip, max(at) AS at FROM v GROUP BY ip) \
                     UPDATE geo_cache SET last_seen = {greatest}(geo_cache.last_seen, s.at) \
                     FROM s WHERE geo_cache.ip = s.ip";

/// Deletes the rows of the addresses in the list appended to it.
const DELETE_ROWS: &str = "DELETE FROM geo_cache WHERE ip ";

const PURGE_OLDER_THAN: &str = "DELETE FROM geo_cache WHERE last_seen < $1";

const SELECT_NEGATIVES: &str =
    "SELECT ip FROM geo_cache WHERE country_code IS NULL AND source = 'http' ORDER BY resolved_at, ip LIMIT $1";

const SELECT_STATS: &str = "SELECT count(*), count(*) - count(country_code) FROM geo_cache";

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
pub(crate) struct DbRow {
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
