//! The SQLite cache store: one file, WAL mode, the default backend.

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{CHUNK, CacheStore, CachedAnswer, DbRow, SELECT_ROWS, StoreError, StoreStats, asn, columns};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/geo/sqlite");

/// The cache in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the file in `url` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // The cache is one small table read in batches and written once a
        // flush: two connections and SQLite's default 2 MiB page cache each
        // keep its memory small (every connection holds its own cache).
        let pool = bangui_runtime::db::sqlite_pool_sized(url, 2, 2 * 1024).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl CacheStore for SqliteStore {
    async fn get(&self, ips: &[String]) -> Result<Vec<CachedAnswer>, StoreError> {
        let mut out = Vec::new();
        for chunk in ips.chunks(CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(SELECT_ROWS);
            query.push("IN (");
            let mut list = query.separated(", ");
            for ip in chunk {
                list.push_bind(ip);
            }
            query.push(")");
            for row in query.build_query_as::<DbRow>().fetch_all(&self.pool).await? {
                out.push(row.try_into()?);
            }
        }
        Ok(out)
    }

    async fn write(&self, answers: &[CachedAnswer], seen: &[(String, i64)]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        for a in answers {
            let [country_code, country_name, continent_code, as_org] = columns(a);
            sqlx::query(
                "INSERT INTO geo_cache (ip, country_code, country_name, continent_code, asn, as_org, source, resolved_at, last_seen) \
                 VALUES (?, ?, ?, ?, ?, ?, 'http', ?, ?) \
                 ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code, country_name = excluded.country_name, \
                 continent_code = excluded.continent_code, asn = excluded.asn, as_org = excluded.as_org, \
                 source = excluded.source, resolved_at = excluded.resolved_at, \
                 last_seen = max(geo_cache.last_seen, excluded.last_seen)",
            )
            .bind(&a.ip)
            .bind(country_code)
            .bind(country_name)
            .bind(continent_code)
            .bind(asn(a))
            .bind(as_org)
            .bind(a.resolved_at)
            .bind(a.last_seen)
            .execute(&mut *tx)
            .await?;
        }
        let mut touched = 0;
        for (ip, at) in seen {
            touched += sqlx::query("UPDATE geo_cache SET last_seen = max(last_seen, ?) WHERE ip = ?")
                .bind(at)
                .bind(ip)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(touched)
    }

    async fn purge_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM geo_cache WHERE last_seen < ?").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn negatives(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query_scalar(
            "SELECT ip FROM geo_cache WHERE country_code IS NULL AND source = 'http' ORDER BY resolved_at, ip LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn delete(&self, ips: &[String]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for chunk in ips.chunks(CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new("DELETE FROM geo_cache WHERE ip IN (");
            let mut list = query.separated(", ");
            for ip in chunk {
                list.push_bind(ip);
            }
            query.push(")");
            deleted += query.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (rows, negatives): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(*) - count(country_code) FROM geo_cache")
                .fetch_one(&self.pool)
                .await?;
        Ok(StoreStats { rows: rows.try_into().unwrap_or(0), negatives: negatives.try_into().unwrap_or(0) })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
