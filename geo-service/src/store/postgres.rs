//! The PostgreSQL cache store, for several geo-service replicas sharing one
//! cache.

use sqlx::{PgPool, Postgres, QueryBuilder, postgres::PgConnectOptions};

use super::{CHUNK, CacheStore, CachedAnswer, DbRow, SELECT_ROWS, StoreError, StoreStats, asn, columns};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/geo/postgres");

/// The cache in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` and migrates.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = bangui_runtime::db::pg_pool_from_url(url).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Connects with explicit options (tests set a `search_path`).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = bangui_runtime::db::pg_pool(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl CacheStore for PgStore {
    async fn get(&self, ips: &[String]) -> Result<Vec<CachedAnswer>, StoreError> {
        let mut out = Vec::new();
        for chunk in ips.chunks(CHUNK) {
            let mut query = QueryBuilder::<Postgres>::new(SELECT_ROWS);
            query.push("= ANY(").push_bind(chunk).push(")");
            let rows = query.build_query_as::<DbRow>().fetch_all(&self.pool).await?;
            for row in rows {
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
                 VALUES ($1, $2, $3, $4, $5, $6, 'http', $7, $8) \
                 ON CONFLICT (ip) DO UPDATE SET country_code = excluded.country_code, country_name = excluded.country_name, \
                 continent_code = excluded.continent_code, asn = excluded.asn, as_org = excluded.as_org, \
                 source = excluded.source, resolved_at = excluded.resolved_at, \
                 last_seen = GREATEST(geo_cache.last_seen, excluded.last_seen)",
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
        for chunk in seen.chunks(CHUNK) {
            let ips: Vec<&str> = chunk.iter().map(|(ip, _)| ip.as_str()).collect();
            let ats: Vec<i64> = chunk.iter().map(|(_, at)| *at).collect();
            touched += sqlx::query(
                "UPDATE geo_cache AS c SET last_seen = GREATEST(c.last_seen, s.at) \
                 FROM unnest($1::text[], $2::bigint[]) AS s(ip, at) WHERE c.ip = s.ip",
            )
            .bind(&ips)
            .bind(&ats)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(touched)
    }

    async fn purge_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM geo_cache WHERE last_seen < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    async fn negatives(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query_scalar(
            "SELECT ip FROM geo_cache WHERE country_code IS NULL AND source = 'http' ORDER BY resolved_at, ip LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn delete(&self, ips: &[String]) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM geo_cache WHERE ip = ANY($1)").bind(ips).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    fn backend(&self) -> &'static str {
        "postgres"
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
