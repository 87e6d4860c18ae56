//! [`BlocklistStore`], once for both backends.

use sqlx::AssertSqlSafe;

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

/// `sql` with the fixed parameters bound by `fixed`, then each of `values`.
fn chunk_stmt<DB: Dialect>(sql: String, fixed: &impl Fn(Stmt<DB>) -> Stmt<DB>, values: &[String]) -> Stmt<DB> {
    values.iter().fold(fixed(Stmt::new(AssertSqlSafe(sql))), |stmt, v| stmt.bind(v.as_str()))
}

/// Of `candidates`, those `head … IN (chunk)` returns, chunk by chunk;
/// `fixed` binds the `fixed_count` parameters before the chunk.
async fn select_in<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    fixed_count: usize,
    fixed: impl Fn(Stmt<DB>) -> Stmt<DB> + Send + Sync,
    candidates: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut found = Vec::new();
    for chunk in candidates.chunks(LIST_CHUNK) {
        let sql = in_list(head, fixed_count + 1, chunk.len());
        found.extend(chunk_stmt(sql, &fixed, chunk).scalars::<String>(conn).await?);
    }
    Ok(found)
}

/// Runs `head … IN (chunk)` (a DELETE) chunk by chunk.
async fn delete_in<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    fixed_count: usize,
    fixed: impl Fn(Stmt<DB>) -> Stmt<DB> + Send + Sync,
    values: &[String],
) -> Result<(), StoreError> {
    for chunk in values.chunks(LIST_CHUNK) {
        chunk_stmt(in_list(head, fixed_count + 1, chunk.len()), &fixed, chunk).execute(conn).await?;
    }
    Ok(())
}

/// Inserts one row per value, `row(placeholder)`, chunk by chunk; rows
/// already there are kept.
async fn insert_rows<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    fixed_count: usize,
    fixed: impl Fn(Stmt<DB>) -> Stmt<DB> + Send + Sync,
    row: impl Fn(&str) -> String + Send + Sync,
    values: &[String],
) -> Result<(), StoreError> {
    for chunk in values.chunks(LIST_CHUNK) {
        let sql = values_rows(head, fixed_count + 1, chunk.len(), &row, KEEP_EXISTING);
        chunk_stmt(sql, &fixed, chunk).execute(conn).await?;
    }
    Ok(())
}

/// `stmt` with a spec's ten columns bound, in the statements' order.
fn bind_spec<DB: Dialect>(stmt: Stmt<DB>, spec: &SourceSpec) -> Stmt<DB> {
    stmt.bind(spec.name.as_str())
        .bind(spec.url.as_str())
        .bind(spec.enabled)
        .bind(spec.jail.as_str())
        .bind(spec.schedule.as_str())
        .bind(spec.cidr_policy.as_str())
        .bind(spec.max_bytes)
        .bind(spec.max_entries)
        .bind(i64::from(spec.ban_min_prefix_v4))
        .bind(i64::from(spec.ban_min_prefix_v6))
}

/// [`INSERT_RUN`] with `run` bound.
fn insert_run<DB: Dialect>(run: &ImportRun) -> Result<Stmt<DB>, StoreError> {
    let bad_lines = serde_json::to_string(&run.bad_lines)
        .map_err(|e| StoreError::Corrupt(format!("bad lines not serializable: {e}")))?;
    let c = &run.counts;
    let stmt = Stmt::<DB>::new(INSERT_RUN)
        .bind(run.source_id)
        .bind(run.source_name.as_str())
        .bind(run.trigger.as_str())
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(run.status.as_str())
        .bind(run.http_status.map(i64::from))
        .bind(count(run.bytes))
        .bind(run.sha256.as_deref());
    let stmt = [
        c.valid,
        c.invalid,
        c.duplicate,
        c.reserved,
        c.ignored,
        c.never_ban,
        c.cidr_skipped,
        c.already_banned,
        c.newly_banned,
        c.unbanned,
        c.failed,
    ]
    .into_iter()
    .fold(stmt, |stmt, n| stmt.bind(count(n)));
    Ok(stmt.bind(bad_lines.as_str()).bind(run.error.as_deref()))
}

/// Refreshes the entry statistics where the backend needs it. The import
/// is committed by then: a failure here is logged, not returned.
async fn analyze_entries<DB: Dialect>(pool: &sqlx::Pool<DB>) {
    let Some(analyze) = DB::ANALYZE_ENTRIES else { return };
    let analyzed = match conn(pool).await {
        Ok(mut conn) => Stmt::<DB>::new(analyze).execute(&mut conn).await,
        Err(e) => Err(e),
    };
    if let Err(error) = analyzed {
        tracing::warn!(%error, "refreshing the blocklist entry statistics failed");
    }
}

#[async_trait::async_trait]
impl<DB: Dialect> BlocklistStore for Store<DB> {
    async fn create_source(&self, spec: &SourceSpec, now: i64) -> Result<Source, SourceWriteError> {
        let row: SourceRow = bind_spec(Stmt::<DB>::new(INSERT_SOURCE), spec)
            .bind(now)
            .fetch_one(&mut *conn(&self.pool).await?)
            .await
            .map_err(|e| name_taken(e, &spec.name))?;
        Ok(row.into())
    }

    async fn update_source(&self, id: i64, spec: &SourceSpec, now: i64) -> Result<Source, SourceWriteError> {
        let row: Option<SourceRow> = bind_spec(Stmt::<DB>::new(UPDATE_SOURCE).bind(id), spec)
            .bind(now)
            .fetch_optional(&mut *conn(&self.pool).await?)
            .await
            .map_err(|e| name_taken(e, &spec.name))?;
        row.map(Source::from).ok_or(SourceWriteError::NotFound(id))
    }

    async fn source(&self, id: i64) -> Result<Option<Source>, StoreError> {
        let row: Option<SourceRow> =
            Stmt::<DB>::new(SOURCE_BY_ID).bind(id).fetch_optional(&mut *conn(&self.pool).await?).await?;
        Ok(row.map(Into::into))
    }

    async fn source_by_name(&self, name: &str) -> Result<Option<Source>, StoreError> {
        let row: Option<SourceRow> =
            Stmt::<DB>::new(SOURCE_BY_NAME).bind(name).fetch_optional(&mut *conn(&self.pool).await?).await?;
        Ok(row.map(Into::into))
    }

    async fn sources(&self) -> Result<Vec<Source>, StoreError> {
        let rows: Vec<SourceRow> = Stmt::<DB>::new(ALL_SOURCES).fetch_all(&mut *conn(&self.pool).await?).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn hold_source(&self, id: i64, now: i64, stale_before: i64) -> Result<bool, StoreError> {
        let taken =
            Stmt::<DB>::new(HOLD).bind(id).bind(now).bind(stale_before).execute(&mut *conn(&self.pool).await?).await?;
        Ok(taken == 1)
    }

    async fn release_source(&self, id: i64) -> Result<(), StoreError> {
        Stmt::<DB>::new(RELEASE).bind(id).execute(&mut *conn(&self.pool).await?).await?;
        Ok(())
    }

    async fn entries(&self, source_id: i64) -> Result<Vec<String>, StoreError> {
        Stmt::<DB>::new(ENTRIES).bind(source_id).scalars(&mut *conn(&self.pool).await?).await
    }

    async fn listed_elsewhere(
        &self,
        source_id: i64,
        jail: &str,
        candidates: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let fixed = |stmt: Stmt<DB>| stmt.bind(source_id).bind(jail);
        let mut listed = select_in(&mut *conn(&self.pool).await?, LISTED_ELSEWHERE, 2, fixed, candidates).await?;
        listed.sort_unstable();
        listed.dedup();
        Ok(listed)
    }

    async fn owned(&self, jail: &str, candidates: &[String]) -> Result<Vec<String>, StoreError> {
        select_in(&mut *conn(&self.pool).await?, OWNED, 1, |stmt: Stmt<DB>| stmt.bind(jail), candidates).await
    }

    async fn own(&self, jail: &str, source_id: i64, entries: &[String], at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let fixed = |stmt: Stmt<DB>| stmt.bind(jail).bind(source_id).bind(at);
        insert_rows(&mut *tx, OWN, 3, fixed, |p| format!("($1, {p}, $2, $3)"), entries).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn disown(&self, jail: &str, entries: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        delete_in(&mut *tx, DISOWN, 1, |stmt: Stmt<DB>| stmt.bind(jail), entries).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn exclusively_owned(&self, source_id: i64) -> Result<Vec<String>, StoreError> {
        Stmt::<DB>::new(EXCLUSIVELY_OWNED).bind(source_id).scalars(&mut *conn(&self.pool).await?).await
    }

    async fn finish_import(&self, commit: &ImportCommit<'_>, keep_runs: u32) -> Result<i64, StoreError> {
        let source_id = commit.run.source_id;
        let insert = insert_run::<DB>(commit.run)?;
        let mut tx = self.pool.begin().await?;
        let fixed = |stmt: Stmt<DB>| stmt.bind(source_id);
        delete_in(&mut *tx, REMOVE_ENTRIES, 1, fixed, commit.removed).await?;
        insert_rows(&mut *tx, ADD_ENTRIES, 1, fixed, |p| format!("($1, {p})"), commit.added).await?;
        if let Some(seen) = &commit.seen {
            Stmt::<DB>::new(SET_SEEN)
                .bind(source_id)
                .bind(seen.etag.as_deref())
                .bind(seen.last_modified.as_deref())
                .bind(seen.sha256.as_deref())
                .execute(&mut tx)
                .await?;
        }
        let id: i64 = insert.scalar(&mut tx).await?;
        Stmt::<DB>::new(RELEASE).bind(source_id).execute(&mut tx).await?;
        // The run just written is always kept: its id is the answer.
        let keep = i64::from(keep_runs.max(1));
        Stmt::<DB>::new(TRIM_RUNS).bind(source_id).bind(keep).execute(&mut tx).await?;
        tx.commit().await?;
        if commit.added.len() + commit.removed.len() >= ANALYZE_AFTER {
            analyze_entries::<DB>(&self.pool).await;
        }
        Ok(id)
    }

    async fn delete_source(&self, id: i64, unbanned: &[String]) -> Result<(), SourceWriteError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let jail: Option<String> = Stmt::<DB>::new(DELETE_SOURCE).bind(id).optional_scalar(&mut tx).await?;
        // Dropping `tx` rolls back: nothing was deleted.
        let jail = jail.ok_or(SourceWriteError::NotFound(id))?;
        Stmt::<DB>::new(DELETE_ENTRIES).bind(id).execute(&mut tx).await?;
        Stmt::<DB>::new(DELETE_RUNS).bind(id).execute(&mut tx).await?;
        delete_in(&mut *tx, DISOWN, 1, |stmt: Stmt<DB>| stmt.bind(jail.as_str()), unbanned).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    async fn runs(&self, source_id: i64, before: Option<i64>, limit: u32) -> Result<Vec<ImportRun>, StoreError> {
        let rows: Vec<RunRow> = Stmt::<DB>::new(RUNS_BEFORE)
            .bind(source_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn(&self.pool).await?)
            .await?;
        rows.into_iter().map(ImportRun::try_from).collect()
    }

    async fn run(&self, id: i64) -> Result<Option<ImportRun>, StoreError> {
        let row: Option<RunRow> =
            Stmt::<DB>::new(RUN_BY_ID).bind(id).fetch_optional(&mut *conn(&self.pool).await?).await?;
        row.map(ImportRun::try_from).transpose()
    }
}
