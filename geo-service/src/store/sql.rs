//! [`CacheStore`], once for both backends.

use std::{fmt::Write, sync::Arc};

use bangui_runtime::sql::{Stmt, conn};
use sqlx::AssertSqlSafe;

use super::*;

/// `$first, $first+1, …`: `count` numbered parameters.
fn numbered(first: usize, count: usize) -> impl Iterator<Item = String> {
    (first..first + count).map(|n| format!("${n}"))
}

/// `IN ($1, …, $count)`, appended to `head`.
fn in_list(head: &str, count: usize) -> String {
    format!("{head}IN ({})", numbered(1, count).collect::<Vec<_>>().join(", "))
}

/// `($1, $2), ($3, $4), …`: `rows` pairs.
fn pairs(rows: usize) -> String {
    let mut out = String::new();
    for row in 0..rows {
        let sep = if row == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}(${}, ${})", 2 * row + 1, 2 * row + 2);
    }
    out
}

#[async_trait::async_trait]
impl<DB: GeoDialect> CacheStore for Store<DB> {
    async fn get(&self, ips: &[String]) -> Result<Vec<CachedAnswer>, StoreError> {
        let mut conn = conn(&self.pool).await?;
        let mut out = Vec::new();
        for chunk in ips.chunks(CHUNK) {
            let stmt = chunk
                .iter()
                .fold(Stmt::<DB>::new(AssertSqlSafe(in_list(SELECT_ROWS, chunk.len()))), |s, ip| s.bind(ip.as_str()));
            for row in stmt.fetch_all::<DbRow>(&mut conn).await? {
                out.push(row.try_into()?);
            }
        }
        Ok(out)
    }

    async fn write(&self, answers: &[CachedAnswer], seen: &[(String, i64)]) -> Result<u64, StoreError> {
        let upsert: Arc<str> = UPSERT.replace("{greatest}", DB::GREATEST).into();
        let touch = TOUCH.replace("{greatest}", DB::GREATEST);
        let mut tx = self.pool.begin().await?;
        for a in answers {
            let [country_code, country_name, continent_code, as_org] = columns(a);
            Stmt::<DB>::new(AssertSqlSafe(upsert.clone()))
                .bind(a.ip.as_str())
                .bind(country_code)
                .bind(country_name)
                .bind(continent_code)
                .bind(asn(a))
                .bind(as_org)
                .bind(a.resolved_at)
                .bind(a.last_seen)
                .execute(&mut tx)
                .await?;
        }
        let mut touched = 0;
        for chunk in seen.chunks(CHUNK) {
            let stmt = Stmt::<DB>::new(AssertSqlSafe(touch.replace("{rows}", &pairs(chunk.len()))));
            let stmt = chunk.iter().fold(stmt, |s, (ip, at)| s.bind(ip.as_str()).bind(*at));
            touched += stmt.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(touched)
    }

    async fn purge_older_than(&self, cutoff: i64) -> Result<u64, StoreError> {
        Stmt::<DB>::new(PURGE_OLDER_THAN).bind(cutoff).execute(&mut *conn(&self.pool).await?).await
    }

    async fn negatives(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Stmt::<DB>::new(SELECT_NEGATIVES).bind(i64::from(limit)).scalars(&mut *conn(&self.pool).await?).await
    }

    async fn delete(&self, ips: &[String]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for chunk in ips.chunks(CHUNK) {
            let stmt = Stmt::<DB>::new(AssertSqlSafe(in_list(DELETE_ROWS, chunk.len())));
            deleted += chunk.iter().fold(stmt, |s, ip| s.bind(ip.as_str())).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (rows, negatives): (i64, i64) =
            Stmt::<DB>::new(SELECT_STATS).fetch_one(&mut *conn(&self.pool).await?).await?;
        Ok(StoreStats { rows: rows.try_into().unwrap_or(0), negatives: negatives.try_into().unwrap_or(0) })
    }

    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_lists_are_numbered_from_one() {
        assert_eq!(in_list("… ip ", 3), "… ip IN ($1, $2, $3)");
        assert_eq!(pairs(2), "($1, $2), ($3, $4)");
    }
}
