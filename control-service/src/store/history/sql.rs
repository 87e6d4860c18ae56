//! [`HistoryStore`], once for both backends.

use sqlx::AssertSqlSafe;

use super::*;
use crate::store::{Dialect, Stmt, Store, conn, dialect::Decode};

/// `built` with its parameters bound.
fn statement<DB: Dialect>(built: Built) -> Stmt<DB> {
    built.params.into_iter().fold(Stmt::new(AssertSqlSafe(built.sql)), |stmt, p| match p {
        Param::Int(v) => stmt.bind(v),
        Param::Text(v) => stmt.bind(v.as_str()),
        Param::Null => stmt.bind(None::<String>),
        Param::NullInt => stmt.bind(None::<i64>),
    })
}

/// Every row of `built`, decoded.
async fn fetch_built<DB: Dialect, O>(pool: &sqlx::Pool<DB>, built: Built) -> Result<Vec<O>, StoreError>
where
    DB::Row: Decode<O>,
{
    statement::<DB>(built).fetch_all(&mut *conn(pool).await?).await
}

#[async_trait::async_trait]
impl<DB: Dialect> HistoryStore for Store<DB> {
    async fn archive(&self, rows: &[ArchivedBan]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in rows.chunks(DB::ROWS_PER_INSERT) {
            added += statement::<DB>(archive_insert::<DB>(chunk)).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn page(
        &self,
        filter: &HistoryFilter,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError> {
        fetch_built(&self.pool, page_query(filter, after, limit)).await
    }

    async fn by_country(&self, filter: &HistoryFilter) -> Result<Vec<CountryCount>, StoreError> {
        fetch_built(&self.pool, by_country_query(filter)).await
    }

    async fn earliest(&self, filter: &HistoryFilter) -> Result<Option<i64>, StoreError> {
        let rows: Vec<(Option<i64>,)> = fetch_built(&self.pool, earliest_query(filter)).await?;
        Ok(rows.into_iter().next().and_then(|row| row.0))
    }

    async fn trend(&self, filter: &HistoryFilter, origin: i64, bucket: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        fetch_built(&self.pool, trend_query(filter, origin, bucket)).await
    }

    async fn by_jail(&self, filter: &HistoryFilter) -> Result<Vec<JailCount>, StoreError> {
        fetch_built(&self.pool, by_jail_query(filter)).await
    }

    async fn top_ips(&self, filter: &HistoryFilter, limit: u32) -> Result<Vec<IpCount>, StoreError> {
        fetch_built(&self.pool, top_ips_query(filter, limit)).await
    }

    async fn ip_events(&self, ip: &str) -> Result<Vec<ArchivedBan>, StoreError> {
        Stmt::<DB>::new(IP_EVENTS).bind(ip).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn ip_events_page(
        &self,
        ip: &str,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError> {
        let stmt = match after {
            Some((at, id)) => Stmt::<DB>::new(IP_EVENTS_AFTER).bind(ip).bind(at).bind(id),
            None => Stmt::new(IP_EVENTS_FIRST).bind(ip),
        };
        stmt.bind(i64::from(limit)).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn ip_summary(&self, ip: &str) -> Result<IpSummary, StoreError> {
        let mut conn = conn(&self.pool).await?;
        let totals: IpTotals =
            Stmt::<DB>::new(IP_TOTALS).bind(ip).bind(Event::Ban.as_str()).fetch_one(&mut conn).await?;
        let jails = Stmt::<DB>::new(IP_JAILS).bind(ip).scalars(&mut conn).await?;
        let placed = Stmt::<DB>::new(IP_PLACE).bind(ip).fetch_optional(&mut conn).await?;
        Ok(summary(totals, jails, placed))
    }

    async fn missing_geo(&self, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
        Stmt::<DB>::new(MISSING_GEO).bind(i64::from(limit)).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn fill_geo(&self, fills: &[GeoFill]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for f in fills {
            Stmt::<DB>::new(FILL_GEO)
                .bind(f.country_code.as_str())
                .bind(f.country_name.as_str())
                .bind(f.asn)
                .bind(f.as_org.as_deref())
                .bind(f.id)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn manual_bans(&self, from: i64, to: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        Stmt::<DB>::new(MANUAL_BANS)
            .bind(from)
            .bind(to)
            .bind(Origin::Fail2ban.as_str())
            .bind(Event::Ban.as_str())
            .fetch_all(&mut *conn(&self.pool).await?)
            .await
    }

    async fn jail_bans(&self, jail: &str, from: i64, to: i64) -> Result<Vec<(String, i64, Origin)>, StoreError> {
        let rows: Vec<JailBanRow> = Stmt::<DB>::new(JAIL_BANS)
            .bind(jail)
            .bind(from)
            .bind(to)
            .bind(Event::Ban.as_str())
            .fetch_all(&mut *conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn purge_history(&self, before: i64) -> Result<u64, StoreError> {
        Stmt::<DB>::new(PURGE).bind(before).execute(&mut *conn(&self.pool).await?).await
    }

    async fn cursor(&self, source: &str) -> Result<Option<i64>, StoreError> {
        Stmt::<DB>::new(SELECT_CURSOR).bind(source).optional_scalar(&mut *conn(&self.pool).await?).await
    }

    async fn set_cursor(&self, source: &str, position: i64, at: i64) -> Result<(), StoreError> {
        Stmt::<DB>::new(UPSERT_CURSOR)
            .bind(source)
            .bind(position)
            .bind(at)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(())
    }
}
