//! The ban history archive's repository: one trait, the same SQL on both
//! backends (generated per backend by `impl_history_store!`), filters built
//! here as numbered parameters.

use super::StoreError;

/// One archived event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ArchivedBan {
    #[sqlx(default)]
    pub id: i64,
    pub jail: String,
    pub ip: String,
    /// Unix seconds.
    pub banned_at: i64,
    /// -1: permanent.
    pub ban_seconds: i64,
    pub ban_count: i32,
    /// `fail2ban`, `manual` or `blocklist`.
    pub origin: String,
    /// `ban` or `unban`.
    pub event: String,
    pub failures: i32,
    /// JSON array of log lines.
    pub matches: String,
    /// `None`: not looked up yet; `Some("")`: looked up, unknown.
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
    pub archived_at: i64,
}

/// Which rows a query looks at. `from` is inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub jail: Option<String>,
    pub origin: Option<String>,
    pub country: Option<String>,
    pub ip_prefix: Option<String>,
}

/// A bound value of a built query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Text(String),
    /// A text NULL.
    Null,
    /// An integer NULL (PostgreSQL types NULLs).
    NullInt,
}

/// Appends `$n` for `value` to `params` and returns the placeholder.
pub fn param(params: &mut Vec<Param>, value: Param) -> String {
    params.push(value);
    format!("${}", params.len())
}

impl HistoryFilter {
    /// ` WHERE …` (or nothing), numbering parameters after those in `params`.
    /// Every condition is a range or an equality on an indexed column.
    pub fn where_sql(&self, params: &mut Vec<Param>) -> String {
        let mut conditions = Vec::new();
        if let Some(from) = self.from {
            conditions.push(format!("banned_at >= {}", param(params, Param::Int(from))));
        }
        if let Some(to) = self.to {
            conditions.push(format!("banned_at < {}", param(params, Param::Int(to))));
        }
        if let Some(jail) = &self.jail {
            conditions.push(format!("jail = {}", param(params, Param::Text(jail.clone()))));
        }
        if let Some(origin) = &self.origin {
            conditions.push(format!("origin = {}", param(params, Param::Text(origin.clone()))));
        }
        if let Some(country) = &self.country {
            conditions.push(format!("country_code = {}", param(params, Param::Text(country.clone()))));
        }
        if let Some(prefix) = &self.ip_prefix {
            // A byte range instead of LIKE: both backends use the ip index.
            let low = param(params, Param::Text(prefix.clone()));
            let high = param(params, Param::Text(format!("{prefix}\u{10FFFF}")));
            conditions.push(format!("ip >= {low} AND ip < {high}"));
        }
        if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) }
    }
}

/// Bans per country.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CountryCount {
    /// `None` or empty: unknown.
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub bans: i64,
    pub distinct_ips: i64,
}

/// Bans per jail.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JailCount {
    pub jail: String,
    pub bans: i64,
    pub distinct_ips: i64,
}

/// The most banned addresses.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpCount {
    pub ip: String,
    pub bans: i64,
    pub last_banned_at: i64,
    pub country_code: Option<String>,
}

/// What the archive knows about one address, over all its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSummary {
    pub bans: i64,
    pub unbans: i64,
    pub first_banned_at: Option<i64>,
    pub last_banned_at: Option<i64>,
    /// Every jail the address has events in, sorted.
    pub jails: Vec<String>,
    /// The country (and AS) of its latest event that has one.
    pub placed: Option<IpPlace>,
}

/// A looked-up place of an address.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IpPlace {
    pub country_code: String,
    pub country_name: Option<String>,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
}

/// A country lookup to store on archived rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoFill {
    pub id: i64,
    /// Empty: looked up, unknown.
    pub country_code: String,
    pub country_name: String,
    pub asn: Option<i64>,
    pub as_org: Option<String>,
}

/// The archive's operations.
#[async_trait::async_trait]
pub trait HistoryStore: Send + Sync + std::fmt::Debug {
    /// One transaction; rows already archived are left alone. Returns how
    /// many were new.
    async fn archive(&self, rows: &[ArchivedBan]) -> Result<u64, StoreError>;
    /// Newest first (banned_at, then id, descending), after the keyset
    /// `after` = (banned_at, id) of the previous page's last row.
    async fn page(
        &self,
        filter: &HistoryFilter,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError>;
    async fn by_country(&self, filter: &HistoryFilter) -> Result<Vec<CountryCount>, StoreError>;
    /// The earliest `banned_at` the filter selects (no arithmetic: BanTrend
    /// checks its bucket count with it before grouping).
    async fn earliest(&self, filter: &HistoryFilter) -> Result<Option<i64>, StoreError>;
    /// (bucket index from `origin`, count) of non-empty buckets of `bucket` seconds.
    async fn trend(&self, filter: &HistoryFilter, origin: i64, bucket: i64) -> Result<Vec<(i64, i64)>, StoreError>;
    async fn by_jail(&self, filter: &HistoryFilter) -> Result<Vec<JailCount>, StoreError>;
    async fn top_ips(&self, filter: &HistoryFilter, limit: u32) -> Result<Vec<IpCount>, StoreError>;
    /// Every event of `ip`, oldest first.
    async fn ip_events(&self, ip: &str) -> Result<Vec<ArchivedBan>, StoreError>;
    /// At most `limit` events of `ip`, oldest first (banned_at, then id),
    /// after the keyset `after` = (banned_at, id) of the previous page's last row.
    async fn ip_events_page(
        &self,
        ip: &str,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError>;
    /// Totals, jails and place of `ip`, computed in SQL (no event is loaded).
    async fn ip_summary(&self, ip: &str) -> Result<IpSummary, StoreError>;
    /// Rows whose country was never looked up, oldest first: (id, ip).
    async fn missing_geo(&self, limit: u32) -> Result<Vec<(i64, String)>, StoreError>;
    /// One transaction.
    async fn fill_geo(&self, fills: &[GeoFill]) -> Result<(), StoreError>;
    /// Manual bans banned between `from` and `to` (inclusive): (jail, ip, banned_at).
    async fn manual_bans(&self, from: i64, to: i64) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// `jail`'s archived bans (any origin) banned between `from` and `to`
    /// (inclusive): (ip, banned_at, origin). A range of the (jail,
    /// banned_at) index.
    async fn jail_bans(&self, jail: &str, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, StoreError>;
    /// Deletes events before `before`; returns how many.
    async fn purge_history(&self, before: i64) -> Result<u64, StoreError>;
    async fn cursor(&self, source: &str) -> Result<Option<i64>, StoreError>;
    async fn set_cursor(&self, source: &str, position: i64, at: i64) -> Result<(), StoreError>;
}

/// The columns of an archived row, in [`ArchivedBan`]'s order.
pub const COLUMNS: &str = "id, jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, matches, \
                           country_code, country_name, asn, as_org, archived_at";

/// `impl HistoryStore for $store` over `self.pool` (same SQL on both
/// backends); `$rows_per_insert` sizes the archive's multi-row inserts.
macro_rules! impl_history_store {
    ($store:ty, $rows_per_insert:literal) => {
        impl $store {
            fn bind_all<'q, O>(
                mut query: sqlx::query::QueryAs<'q, <$store as $crate::store::history::HasDb>::Db, O, <<$store as $crate::store::history::HasDb>::Db as sqlx::Database>::Arguments>,
                params: Vec<$crate::store::history::Param>,
            ) -> sqlx::query::QueryAs<'q, <$store as $crate::store::history::HasDb>::Db, O, <<$store as $crate::store::history::HasDb>::Db as sqlx::Database>::Arguments> {
                for p in params {
                    query = match p {
                        $crate::store::history::Param::Int(v) => query.bind(v),
                        $crate::store::history::Param::Text(v) => query.bind(v),
                        $crate::store::history::Param::Null => query.bind(None::<String>),
                        $crate::store::history::Param::NullInt => query.bind(None::<i64>),
                    };
                }
                query
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::history::HistoryStore for $store {
            async fn archive(&self, rows: &[$crate::store::history::ArchivedBan]) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::history::{param, Param};
                let mut tx = self.pool.begin().await?;
                let mut added = 0;
                // Multi-row statements, 14 parameters a row. Binding gets
                // slower with the square of a statement's parameters on
                // SQLite (measured: 500-row inserts 6 600 rows/s, 50-row
                // inserts 28 000), so SQLite takes small ones.
                for chunk in rows.chunks($rows_per_insert) {
                    let mut params = Vec::with_capacity(chunk.len() * 14);
                    let mut values = Vec::with_capacity(chunk.len());
                    for r in chunk {
                        let text = |v: &Option<String>| v.clone().map_or(Param::Null, Param::Text);
                        let cells = [
                            Param::Text(r.jail.clone()),
                            Param::Text(r.ip.clone()),
                            Param::Int(r.banned_at),
                            Param::Int(r.ban_seconds),
                            Param::Int(i64::from(r.ban_count)),
                            Param::Text(r.origin.clone()),
                            Param::Text(r.event.clone()),
                            Param::Int(i64::from(r.failures)),
                            Param::Text(r.matches.clone()),
                            text(&r.country_code),
                            text(&r.country_name),
                            r.asn.map_or(Param::NullInt, Param::Int),
                            text(&r.as_org),
                            Param::Int(r.archived_at),
                        ];
                        let placeholders: Vec<String> = cells.into_iter().map(|c| param(&mut params, c)).collect();
                        values.push(format!("({})", placeholders.join(", ")));
                    }
                    let sql = format!(
                        "INSERT INTO ban_history (jail, ip, banned_at, ban_seconds, ban_count, origin, event, failures, \
                         matches, country_code, country_name, asn, as_org, archived_at) VALUES {} \
                         ON CONFLICT (jail, ip, banned_at, event) DO NOTHING",
                        values.join(", ")
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for p in params {
                        query = match p {
                            Param::Int(v) => query.bind(v),
                            Param::Text(v) => query.bind(v),
                            Param::Null => query.bind(None::<String>),
                            Param::NullInt => query.bind(None::<i64>),
                        };
                    }
                    added += query.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(added)
            }

            async fn page(
                &self,
                filter: &$crate::store::history::HistoryFilter,
                after: Option<(i64, i64)>,
                limit: u32,
            ) -> Result<Vec<$crate::store::history::ArchivedBan>, $crate::store::StoreError> {
                use $crate::store::history::{param, Param};
                let mut params = Vec::new();
                let mut sql = format!("SELECT {} FROM ban_history{}", $crate::store::history::COLUMNS, filter.where_sql(&mut params));
                if let Some((at, id)) = after {
                    let joiner = if params.is_empty() { " WHERE" } else { " AND" };
                    let (a, b) = (param(&mut params, Param::Int(at)), param(&mut params, Param::Int(id)));
                    // A row value: an index range on (banned_at, id) on both backends
                    // (the OR form made PostgreSQL walk the index from the top).
                    sql.push_str(&format!("{joiner} (banned_at, id) < ({a}, {b})"));
                }
                let l = param(&mut params, Param::Int(i64::from(limit)));
                sql.push_str(&format!(" ORDER BY banned_at DESC, id DESC LIMIT {l}"));
                Ok(Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(&self.pool).await?)
            }

            async fn by_country(
                &self,
                filter: &$crate::store::history::HistoryFilter,
            ) -> Result<Vec<$crate::store::history::CountryCount>, $crate::store::StoreError> {
                let mut params = Vec::new();
                let sql = format!(
                    "SELECT country_code, max(country_name) AS country_name, count(*) AS bans, count(DISTINCT ip) AS distinct_ips \
                     FROM ban_history{} GROUP BY country_code ORDER BY bans DESC, country_code",
                    filter.where_sql(&mut params)
                );
                Ok(Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(&self.pool).await?)
            }

            async fn trend(
                &self,
                filter: &$crate::store::history::HistoryFilter,
                origin: i64,
                bucket: i64,
            ) -> Result<Vec<(i64, i64)>, $crate::store::StoreError> {
                use $crate::store::history::{param, Param};
                let mut params = Vec::new();
                let o = param(&mut params, Param::Int(origin));
                let b = param(&mut params, Param::Int(bucket));
                let sql = format!(
                    "SELECT (banned_at - {o}) / {b} AS bucket, count(*) AS bans FROM ban_history{} GROUP BY bucket ORDER BY bucket",
                    filter.where_sql(&mut params)
                );
                Ok(Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(&self.pool).await?)
            }

            async fn by_jail(
                &self,
                filter: &$crate::store::history::HistoryFilter,
            ) -> Result<Vec<$crate::store::history::JailCount>, $crate::store::StoreError> {
                let mut params = Vec::new();
                let sql = format!(
                    "SELECT jail, count(*) AS bans, count(DISTINCT ip) AS distinct_ips FROM ban_history{} \
                     GROUP BY jail ORDER BY bans DESC, jail",
                    filter.where_sql(&mut params)
                );
                Ok(Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(&self.pool).await?)
            }

            async fn top_ips(
                &self,
                filter: &$crate::store::history::HistoryFilter,
                limit: u32,
            ) -> Result<Vec<$crate::store::history::IpCount>, $crate::store::StoreError> {
                use $crate::store::history::{param, Param};
                let mut params = Vec::new();
                let filter_sql = filter.where_sql(&mut params);
                let l = param(&mut params, Param::Int(i64::from(limit)));
                let sql = format!(
                    "SELECT ip, count(*) AS bans, max(banned_at) AS last_banned_at, max(country_code) AS country_code \
                     FROM ban_history{filter_sql} GROUP BY ip ORDER BY bans DESC, ip LIMIT {l}"
                );
                Ok(Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_all(&self.pool).await?)
            }

            async fn ip_events(&self, ip: &str) -> Result<Vec<$crate::store::history::ArchivedBan>, $crate::store::StoreError> {
                let sql = format!(
                    "SELECT {} FROM ban_history WHERE ip = $1 ORDER BY banned_at, id",
                    $crate::store::history::COLUMNS
                );
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ip).fetch_all(&self.pool).await?)
            }

            async fn ip_events_page(
                &self,
                ip: &str,
                after: Option<(i64, i64)>,
                limit: u32,
            ) -> Result<Vec<$crate::store::history::ArchivedBan>, $crate::store::StoreError> {
                let columns = $crate::store::history::COLUMNS;
                let query = match after {
                    // A row value: an index range on (ip, banned_at).
                    Some((at, id)) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {columns} FROM ban_history WHERE ip = $1 AND (banned_at, id) > ($2, $3) \
                         ORDER BY banned_at, id LIMIT $4"
                    )))
                    .bind(ip)
                    .bind(at)
                    .bind(id),
                    None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {columns} FROM ban_history WHERE ip = $1 ORDER BY banned_at, id LIMIT $2"
                    )))
                    .bind(ip),
                };
                Ok(query.bind(i64::from(limit)).fetch_all(&self.pool).await?)
            }

            async fn ip_summary(&self, ip: &str) -> Result<$crate::store::history::IpSummary, $crate::store::StoreError> {
                let (bans, events, first_banned_at, last_banned_at): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT COALESCE(SUM(CASE WHEN event = 'ban' THEN 1 ELSE 0 END), 0) AS bans, COUNT(*) AS events, \
                     MIN(CASE WHEN event = 'ban' THEN banned_at END) AS first_banned_at, \
                     MAX(CASE WHEN event = 'ban' THEN banned_at END) AS last_banned_at \
                     FROM ban_history WHERE ip = $1",
                )
                .bind(ip)
                .fetch_one(&self.pool)
                .await?;
                let jails: Vec<String> = sqlx::query_scalar("SELECT DISTINCT jail FROM ban_history WHERE ip = $1 ORDER BY jail")
                    .bind(ip)
                    .fetch_all(&self.pool)
                    .await?;
                let placed = sqlx::query_as(
                    "SELECT country_code, country_name, asn, as_org FROM ban_history \
                     WHERE ip = $1 AND country_code IS NOT NULL AND country_code <> '' \
                     ORDER BY banned_at DESC, id DESC LIMIT 1",
                )
                .bind(ip)
                .fetch_optional(&self.pool)
                .await?;
                Ok($crate::store::history::IpSummary {
                    bans,
                    unbans: events - bans,
                    first_banned_at,
                    last_banned_at,
                    jails,
                    placed,
                })
            }

            async fn earliest(&self, filter: &$crate::store::history::HistoryFilter) -> Result<Option<i64>, $crate::store::StoreError> {
                let mut params = Vec::new();
                let sql = format!("SELECT MIN(banned_at) FROM ban_history{}", filter.where_sql(&mut params));
                let row: (Option<i64>,) =
                    Self::bind_all(sqlx::query_as(sqlx::AssertSqlSafe(sql)), params).fetch_one(&self.pool).await?;
                Ok(row.0)
            }

            async fn missing_geo(&self, limit: u32) -> Result<Vec<(i64, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT id, ip FROM ban_history WHERE country_code IS NULL ORDER BY id LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn fill_geo(&self, fills: &[$crate::store::history::GeoFill]) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                for f in fills {
                    sqlx::query(
                        "UPDATE ban_history SET country_code = $1, country_name = $2, asn = $3, as_org = $4 WHERE id = $5",
                    )
                    .bind(&f.country_code)
                    .bind(&f.country_name)
                    .bind(f.asn)
                    .bind(&f.as_org)
                    .bind(f.id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn manual_bans(&self, from: i64, to: i64) -> Result<Vec<(String, String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT jail, ip, banned_at FROM ban_history \
                     WHERE banned_at >= $1 AND banned_at <= $2 AND origin = 'manual' AND event = 'ban'",
                )
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn jail_bans(&self, jail: &str, from: i64, to: i64) -> Result<Vec<(String, i64, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT ip, banned_at, origin FROM ban_history \
                     WHERE jail = $1 AND banned_at >= $2 AND banned_at <= $3 AND event = 'ban'",
                )
                .bind(jail)
                .bind(from)
                .bind(to)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn purge_history(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query("DELETE FROM ban_history WHERE banned_at < $1").bind(before).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn cursor(&self, source: &str) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT position FROM history_cursors WHERE source = $1")
                    .bind(source)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_cursor(&self, source: &str, position: i64, at: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO history_cursors (source, position, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                )
                .bind(source)
                .bind(position)
                .bind(at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_history_store;

/// Names a store's sqlx database type (for the macro's bind helper).
pub trait HasDb {
    type Db: sqlx::Database;
}
