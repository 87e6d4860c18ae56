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

    async fn ip_events(&self, ip: &str, host: Option<&str>) -> Result<Vec<ArchivedBan>, StoreError> {
        Stmt::<DB>::new(IP_EVENTS).bind(ip).bind(host).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn ip_events_page(
        &self,
        ip: &str,
        host: Option<&str>,
        after: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<ArchivedBan>, StoreError> {
        let stmt = match after {
            Some((at, id)) => Stmt::<DB>::new(IP_EVENTS_AFTER).bind(ip).bind(host).bind(at).bind(id),
            None => Stmt::new(IP_EVENTS_FIRST).bind(ip).bind(host),
        };
        stmt.bind(i64::from(limit)).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn ip_summary(&self, ip: &str, host: Option<&str>) -> Result<IpSummary, StoreError> {
        let mut conn = conn(&self.pool).await?;
        let ban = Event::Ban.as_str();
        let totals: IpTotals = Stmt::<DB>::new(IP_TOTALS).bind(ip).bind(ban).bind(host).fetch_one(&mut conn).await?;
        let jails = Stmt::<DB>::new(IP_JAILS).bind(ip).bind(host).scalars(&mut conn).await?;
        let hosts = Stmt::<DB>::new(IP_HOSTS).bind(ip).bind(host).bind(ban).scalars(&mut conn).await?;
        let placed = Stmt::<DB>::new(IP_PLACE).bind(ip).bind(host).fetch_optional(&mut conn).await?;
        Ok(summary(totals, jails, hosts, placed))
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

    async fn manual_bans(&self, host: &str, from: i64, to: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        Stmt::<DB>::new(MANUAL_BANS)
            .bind(from)
            .bind(to)
            .bind(Origin::Fail2ban.as_str())
            .bind(Event::Ban.as_str())
            .bind(host)
            .fetch_all(&mut *conn(&self.pool).await?)
            .await
    }

    async fn jail_bans(
        &self,
        host: &str,
        jail: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, i64, Origin)>, StoreError> {
        let rows: Vec<JailBanRow> = Stmt::<DB>::new(JAIL_BANS)
            .bind(jail)
            .bind(from)
            .bind(to)
            .bind(Event::Ban.as_str())
            .bind(host)
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

    async fn archive_with_cursors(
        &self,
        rows: &[ArchivedBan],
        cursors: &[(&str, i64)],
        at: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for chunk in rows.chunks(DB::ROWS_PER_INSERT) {
            added += statement::<DB>(archive_insert::<DB>(chunk)).execute(&mut tx).await?;
        }
        for (source, position) in cursors {
            Stmt::<DB>::new(UPSERT_CURSOR).bind(*source).bind(*position).bind(at).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn event_cursor(&self, host: &str) -> Result<i64, StoreError> {
        let cursor =
            Stmt::<DB>::new(SELECT_EVENT_CURSOR).bind(host).optional_scalar(&mut *conn(&self.pool).await?).await?;
        Ok(cursor.unwrap_or(0))
    }

    async fn store_events(&self, batch: &EventBatch) -> Result<EventsStored, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Dropping `tx` rolls back: a refused batch writes nothing. Writes
        // first: SQLite takes its write lock at the first one (waiting
        // for it, where a read first could not upgrade).
        Stmt::<DB>::new(INSERT_EVENT_CURSOR).bind(batch.host.as_str()).bind(batch.at).execute(&mut tx).await?;
        let cursor: i64 =
            Stmt::<DB>::new(LOCK_EVENT_CURSOR).bind(batch.host.as_str()).bind(batch.at).scalar(&mut tx).await?;
        let holds: i64 = Stmt::<DB>::new(HOLDS_STREAM)
            .bind(batch.host.as_str())
            .bind(batch.stream_id.as_str())
            .scalar(&mut tx)
            .await?;
        if holds == 0 {
            return Ok(EventsStored::NotHolder);
        }
        if batch.first > cursor + 1 {
            return Ok(EventsStored::Gap { cursor });
        }
        let last = batch.last();
        if last <= cursor {
            // Everything was stored before (a resent batch).
            return Ok(EventsStored::Stored { through: cursor, added: 0 });
        }
        let skip = usize::try_from(cursor + 1 - batch.first).unwrap_or(0);
        let rows: Vec<ArchivedBan> = batch.rows.iter().skip(skip).flatten().cloned().collect();
        let mut added = 0;
        for chunk in rows.chunks(DB::ROWS_PER_INSERT) {
            added += statement::<DB>(archive_insert::<DB>(chunk)).execute(&mut tx).await?;
        }
        Stmt::<DB>::new(SET_EVENT_CURSOR).bind(batch.host.as_str()).bind(last).bind(batch.at).execute(&mut tx).await?;
        tx.commit().await?;
        Ok(EventsStored::Stored { through: last, added })
    }
}
