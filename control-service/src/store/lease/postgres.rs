//! [`LeaseStore`] and [`RunLedger`] on PostgreSQL.

use std::sync::LazyLock;

use super::*;
use crate::store::PgStore;

/// The database's clock in Unix milliseconds (`now()` is the transaction's
/// start). A run's term check locks the lease row (FOR SHARE), so a new
/// holder's acquire waits until the run's row is committed.
static SQL: LazyLock<Statements> =
    LazyLock::new(|| Statements::new("(extract(epoch from now()) * 1000)::bigint", " FOR SHARE"));

#[async_trait::async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<LeaseGrant>, StoreError> {
        Ok(sqlx::query_as(SQL.acquire_lease.as_str())
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn release_lease(&self, name: &str, holder: &str, term: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query(SQL.release_lease.as_str()).bind(name).bind(holder).bind(term).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        Ok(sqlx::query_as(SQL.select_lease.as_str()).bind(name).fetch_optional(&self.pool).await?)
    }
}

#[async_trait::async_trait]
impl RunLedger for PgStore {
    async fn start_run(&self, run: &NewRun<'_>) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(SQL.start_run.as_str())
            .bind(run.job)
            .bind(run.scheduled_for)
            .bind(run.term)
            .bind(run.replica)
            .bind(run.trigger)
            .bind(run.lease)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(SQL.finish_run.as_str()).bind(id).bind(status).bind(error).execute(&self.pool).await?;
        Ok(())
    }

    async fn last_runs(&self) -> Result<Vec<JobRun>, StoreError> {
        Ok(sqlx::query_as(LAST_RUNS).fetch_all(&self.pool).await?)
    }

    async fn request_run(&self, job: &str, requested_by: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(SQL.insert_request.as_str()).bind(job).bind(requested_by).fetch_one(&self.pool).await?)
    }

    async fn requested_jobs(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(REQUESTED_JOBS).fetch_all(&self.pool).await?)
    }

    async fn start_requested_run(&self, run: &RequestedRun<'_>) -> Result<Option<StartedRun>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let taken: Vec<i64> =
            sqlx::query_scalar(SQL.take_requests.as_str()).bind(run.replica).bind(run.job).fetch_all(&mut *tx).await?;
        // Dropping `tx` rolls the take back.
        let Some(slot) = taken.into_iter().max() else { return Ok(None) };
        let id: Option<i64> = sqlx::query_scalar(SQL.start_run.as_str())
            .bind(run.job)
            .bind(slot)
            .bind(run.term)
            .bind(run.replica)
            .bind(MANUAL)
            .bind(run.lease)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(id) = id {
            tx.commit().await?;
            return Ok(Some(StartedRun { id, scheduled_for: slot }));
        }
        // A run of this very millisecond answers the requests (they were
        // made as it started); otherwise the term is stale.
        let ran: i64 = sqlx::query_scalar(SLOT_RUNS).bind(run.job).bind(slot).fetch_one(&mut *tx).await?;
        if ran > 0 {
            tx.commit().await?;
        }
        Ok(None)
    }
}
