//! [`BlocklistStore`], once for both backends.

use ipnet::IpNet;
use sqlx::AssertSqlSafe;

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

/// Stored networks read back.
fn decoded(rows: Vec<Vec<u8>>) -> Result<Vec<IpNet>, StoreError> {
    rows.iter().map(|b| bytes_net(b)).collect()
}

/// Binds a statement's key (a jail or a source id).
type Key<'k, DB> = &'k (dyn Fn(Stmt<DB>) -> Stmt<DB> + Send + Sync);

/// Of `candidates`, those [`in_list`]`(head, chunk)` returns, chunk by chunk.
async fn select_in<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    key: Key<'_, DB>,
    candidates: &[IpNet],
) -> Result<Vec<IpNet>, StoreError> {
    let mut found = Vec::new();
    for chunk in candidates.chunks(LIST_CHUNK) {
        let rows: Vec<Vec<u8>> = in_stmt(head, key, chunk).scalars(conn).await?;
        found.extend(decoded(rows)?);
    }
    found.sort_unstable();
    Ok(found)
}

/// Runs [`in_list`]`(head, chunk)` (a DELETE) chunk by chunk.
async fn delete_in<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    key: Key<'_, DB>,
    values: &[IpNet],
) -> Result<(), StoreError> {
    for chunk in values.chunks(LIST_CHUNK) {
        in_stmt(head, key, chunk).execute(conn).await?;
    }
    Ok(())
}

/// [`in_list`]`(head, chunk)` with the key and the chunk bound.
fn in_stmt<DB: Dialect>(head: &str, key: Key<'_, DB>, chunk: &[IpNet]) -> Stmt<DB> {
    let stmt = key(Stmt::new(AssertSqlSafe(in_list::<DB>(head, chunk.len()))));
    chunk.iter().fold(stmt, |stmt, net| stmt.bind(net_bytes(net).as_slice()))
}

/// Inserts [`key_rows`]`(head, chunk)`, chunk by chunk; rows already there
/// are kept.
async fn insert_rows<DB: Dialect>(
    conn: &mut DB::Connection,
    head: &str,
    key: Key<'_, DB>,
    values: &[IpNet],
) -> Result<(), StoreError> {
    for chunk in values.chunks(LIST_CHUNK) {
        let stmt = Stmt::new(AssertSqlSafe(key_rows::<DB>(head, chunk.len())));
        let stmt = chunk.iter().fold(stmt, |stmt, net| key(stmt).bind(net_bytes(net).as_slice()));
        stmt.execute(conn).await?;
    }
    Ok(())
}

/// The lowest key a page can start after: below every stored network.
fn page_start(after: Option<&IpNet>) -> Vec<u8> {
    after.map(net_bytes).unwrap_or_default()
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
        c.rebanned,
        c.excepted,
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
        let mut conn = conn(&self.pool).await?;
        let row: Option<SourceRow> = bind_spec(Stmt::<DB>::new(UPDATE_SOURCE).bind(id), spec)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| name_taken(e, &spec.name))?;
        if let Some(row) = row {
            return Ok(row.into());
        }
        // Not there, or its jail is fixed.
        let current: Option<SourceRow> = Stmt::<DB>::new(SOURCE_BY_ID).bind(id).fetch_optional(&mut *conn).await?;
        match current {
            Some(current) => Err(SourceWriteError::JailFixed(Source::from(current).spec.jail)),
            None => Err(SourceWriteError::NotFound(id)),
        }
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

    async fn hold_source(&self, id: i64, holder: &str, now: i64, stale_before: i64) -> Result<bool, StoreError> {
        let taken = Stmt::<DB>::new(HOLD)
            .bind(id)
            .bind(now)
            .bind(stale_before)
            .bind(holder)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(taken == 1)
    }

    async fn refresh_hold(&self, id: i64, holder: &str, now: i64) -> Result<bool, StoreError> {
        let kept = Stmt::<DB>::new(REFRESH_HOLD)
            .bind(id)
            .bind(now)
            .bind(holder)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(kept == 1)
    }

    async fn release_source(&self, id: i64, holder: &str) -> Result<(), StoreError> {
        Stmt::<DB>::new(RELEASE).bind(id).bind(holder).execute(&mut *conn(&self.pool).await?).await?;
        Ok(())
    }

    async fn release_holds_of(&self, prefix: &str, current: &str) -> Result<u64, StoreError> {
        Stmt::<DB>::new(RELEASE_HOLDS_OF).bind(prefix).bind(current).execute(&mut *conn(&self.pool).await?).await
    }

    async fn listed_page(&self, source_id: i64, after: Option<&IpNet>, limit: u32) -> Result<Vec<IpNet>, StoreError> {
        let rows: Vec<Vec<u8>> = Stmt::<DB>::new(LISTED_PAGE)
            .bind(source_id)
            .bind(page_start(after).as_slice())
            .bind(i64::from(limit))
            .scalars(&mut *conn(&self.pool).await?)
            .await?;
        decoded(rows)
    }

    async fn owned_page(&self, jail: &str, after: Option<&IpNet>, limit: u32) -> Result<Vec<IpNet>, StoreError> {
        let rows: Vec<Vec<u8>> = Stmt::<DB>::new(OWNED_PAGE)
            .bind(jail)
            .bind(page_start(after).as_slice())
            .bind(i64::from(limit))
            .scalars(&mut *conn(&self.pool).await?)
            .await?;
        decoded(rows)
    }

    async fn owned_of(&self, jail: &str, candidates: &[IpNet]) -> Result<Vec<IpNet>, StoreError> {
        select_in(&mut *conn(&self.pool).await?, OWNED_OF, &|stmt: Stmt<DB>| stmt.bind(jail), candidates).await
    }

    async fn own(&self, jail: &str, nets: &[IpNet]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_rows(&mut *tx, OWN, &|stmt: Stmt<DB>| stmt.bind(jail), nets).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn disown(&self, jail: &str, nets: &[IpNet]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        delete_in(&mut *tx, DISOWN, &|stmt: Stmt<DB>| stmt.bind(jail), nets).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn operator_unbanned(&self, jail: &str, net: &IpNet, at: i64) -> Result<bool, StoreError> {
        let bytes = net_bytes(net);
        let mut tx = self.pool.begin().await?;
        let owned = Stmt::<DB>::new(DISOWN_ONE).bind(jail).bind(bytes.as_slice()).execute(&mut tx).await? > 0;
        if owned {
            Stmt::<DB>::new(ADD_EXCEPTION).bind(jail).bind(bytes.as_slice()).bind(at).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(owned)
    }

    async fn operator_banned(&self, jail: &str, net: &IpNet) -> Result<bool, StoreError> {
        let bytes = net_bytes(net);
        let dropped = Stmt::<DB>::new(DISOWN_ONE)
            .bind(jail)
            .bind(bytes.as_slice())
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(dropped > 0)
    }

    async fn exceptions(&self, jail: Option<&str>) -> Result<Vec<BanException>, StoreError> {
        let stmt = match jail {
            Some(jail) => Stmt::<DB>::new(JAIL_EXCEPTIONS).bind(jail),
            None => Stmt::<DB>::new(ALL_EXCEPTIONS),
        };
        let rows: Vec<(String, Vec<u8>, i64)> = stmt.fetch_all(&mut *conn(&self.pool).await?).await?;
        rows.into_iter()
            .map(|(jail, net, created_at)| Ok(BanException { jail, net: bytes_net(&net)?, created_at }))
            .collect()
    }

    async fn delete_exception(&self, jail: &str, net: &IpNet) -> Result<bool, StoreError> {
        let bytes = net_bytes(net);
        let deleted = Stmt::<DB>::new(DELETE_EXCEPTION)
            .bind(jail)
            .bind(bytes.as_slice())
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(deleted > 0)
    }

    async fn finish_import(&self, commit: &ImportCommit<'_>, keep_runs: u32) -> Result<i64, StoreError> {
        let source_id = commit.run.source_id;
        let insert = insert_run::<DB>(commit.run)?;
        let mut tx = self.pool.begin().await?;
        if let Some(listed) = commit.listed {
            // The whole list replaces the old one: a merge of the two would
            // read as many rows as it saves writing.
            Stmt::<DB>::new(DELETE_LISTED).bind(source_id).execute(&mut tx).await?;
            insert_rows(&mut *tx, ADD_LISTED, &|stmt: Stmt<DB>| stmt.bind(source_id), listed).await?;
        }
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
        Stmt::<DB>::new(RELEASE).bind(source_id).bind(commit.holder).execute(&mut tx).await?;
        // The run just written is always kept: its id is the answer.
        let keep = i64::from(keep_runs.max(1));
        Stmt::<DB>::new(TRIM_RUNS).bind(source_id).bind(keep).execute(&mut tx).await?;
        tx.commit().await?;
        if commit.listed.is_some_and(|l| l.len() >= ANALYZE_AFTER) {
            analyze_entries::<DB>(&self.pool).await;
        }
        Ok(id)
    }

    async fn delete_source(&self, id: i64) -> Result<(), SourceWriteError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let deleted = Stmt::<DB>::new(DELETE_SOURCE).bind(id).execute(&mut tx).await?;
        if deleted == 0 {
            // Dropping `tx` rolls back: nothing was deleted.
            return Err(SourceWriteError::NotFound(id));
        }
        Stmt::<DB>::new(DELETE_LISTED).bind(id).execute(&mut tx).await?;
        Stmt::<DB>::new(DELETE_RUNS).bind(id).execute(&mut tx).await?;
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

    async fn upgrade_legacy(&self) -> Result<u64, StoreError> {
        let mut moved = 0u64;
        loop {
            let mut tx = self.pool.begin().await?;
            let listed: Vec<(i64, String)> = Stmt::<DB>::new(LEGACY_LISTED).fetch_all(&mut tx).await?;
            let owned: Vec<(String, String)> = Stmt::<DB>::new(LEGACY_OWNED).fetch_all(&mut tx).await?;
            if listed.is_empty() && owned.is_empty() {
                return Ok(moved);
            }
            for (source_id, entry) in &listed {
                // A row that is not a network cannot be banned or unbanned: dropped.
                if let Ok(net) = entry.parse::<IpNet>().or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    let key = |stmt: Stmt<DB>| stmt.bind(*source_id);
                    insert_rows(&mut *tx, ADD_LISTED, &key, &[net.trunc()]).await?;
                }
                Stmt::<DB>::new(LEGACY_LISTED_DELETE).bind(*source_id).bind(entry.as_str()).execute(&mut tx).await?;
            }
            for (jail, entry) in &owned {
                if let Ok(net) = entry.parse::<IpNet>().or_else(|_| entry.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    insert_rows(&mut *tx, OWN, &|stmt: Stmt<DB>| stmt.bind(jail.as_str()), &[net.trunc()]).await?;
                }
                Stmt::<DB>::new(LEGACY_OWNED_DELETE).bind(jail.as_str()).bind(entry.as_str()).execute(&mut tx).await?;
            }
            tx.commit().await?;
            moved += (listed.len() + owned.len()) as u64;
        }
    }
}
