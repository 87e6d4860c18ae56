//! [`LeaseStore`] and [`RunLedger`], once for both backends; the statements
//! judged by the database's clock come from [`Dialect::lease_statements`].

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

#[async_trait::async_trait]
impl<DB: Dialect> LeaseStore for Store<DB> {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<LeaseGrant>, StoreError> {
        Stmt::<DB>::new(DB::lease_statements().acquire_lease.as_str())
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&mut *conn(&self.pool).await?)
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str, term: i64) -> Result<bool, StoreError> {
        let done = Stmt::<DB>::new(DB::lease_statements().release_lease.as_str())
            .bind(name)
            .bind(holder)
            .bind(term)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(done > 0)
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        Stmt::<DB>::new(DB::lease_statements().select_lease.as_str())
            .bind(name)
            .fetch_optional(&mut *conn(&self.pool).await?)
            .await
    }
}

#[async_trait::async_trait]
impl<DB: Dialect> RunLedger for Store<DB> {
    async fn start_run(&self, run: &NewRun<'_>) -> Result<Option<i64>, StoreError> {
        Stmt::<DB>::new(DB::lease_statements().start_run.as_str())
            .bind(run.job)
            .bind(run.scheduled_for)
            .bind(run.term)
            .bind(run.replica)
            .bind(run.trigger)
            .bind(run.lease)
            .optional_scalar(&mut *conn(&self.pool).await?)
            .await
    }

    async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), StoreError> {
        Stmt::<DB>::new(DB::lease_statements().finish_run.as_str())
            .bind(id)
            .bind(status)
            .bind(error)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(())
    }

    async fn last_runs(&self) -> Result<Vec<JobRun>, StoreError> {
        Stmt::<DB>::new(LAST_RUNS).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn request_run(&self, job: &str, requested_by: &str) -> Result<i64, StoreError> {
        Stmt::<DB>::new(DB::lease_statements().insert_request.as_str())
            .bind(job)
            .bind(requested_by)
            .scalar(&mut *conn(&self.pool).await?)
            .await
    }

    async fn requested_jobs(&self) -> Result<Vec<String>, StoreError> {
        Stmt::<DB>::new(REQUESTED_JOBS).scalars(&mut *conn(&self.pool).await?).await
    }

    async fn start_requested_run(&self, run: &RequestedRun<'_>) -> Result<Option<StartedRun>, StoreError> {
        let sql = DB::lease_statements();
        let mut tx = self.pool.begin().await?;
        let taken: Vec<i64> =
            Stmt::<DB>::new(sql.take_requests.as_str()).bind(run.replica).bind(run.job).scalars(&mut tx).await?;
        // Dropping `tx` rolls the take back.
        let Some(slot) = taken.into_iter().max() else { return Ok(None) };
        let id: Option<i64> = Stmt::<DB>::new(sql.start_run.as_str())
            .bind(run.job)
            .bind(slot)
            .bind(run.term)
            .bind(run.replica)
            .bind(MANUAL)
            .bind(run.lease)
            .optional_scalar(&mut tx)
            .await?;
        if let Some(id) = id {
            tx.commit().await?;
            return Ok(Some(StartedRun { id, scheduled_for: slot }));
        }
        // A run of this very millisecond answers the requests (they were
        // made as it started); otherwise the term is stale.
        let ran: i64 = Stmt::<DB>::new(SLOT_RUNS).bind(run.job).bind(slot).scalar(&mut tx).await?;
        if ran > 0 {
            tx.commit().await?;
        }
        Ok(None)
    }
}
