//! The control store's operations, written once: both backends run the same
//! SQL. Parameters are `$1, $2, …` (PostgreSQL's; SQLite reads them as named
//! parameters in order of appearance, so every statement uses them in
//! order), and booleans are bound (`success = $1`), never spelled.

/// `impl ControlStore for $store` over `self.pool`; `$backend` names it,
/// `$now` is the database's clock in Unix milliseconds, `$for_share` locks
/// the lease row a run checks (empty where the database has one writer),
/// `$lock_client` is the statement (binding the client key as `$1`) that
/// serializes a client's attempt reservations inside a transaction (a no-op
/// where the database has one writer: there the insert's write lock does).
macro_rules! impl_control_store {
    ($store:ty, $backend:literal, $now:literal, $for_share:literal, $lock_client:literal) => {
        impl $store {
            /// Records a run ($1 job, $2 slot, $3 term, $4 replica, $5
            /// trigger, $6 lease) only under the current, unexpired lease of
            /// that holder and term, and only once per slot; returns its id.
            const START_RUN: &'static str = concat!(
                "INSERT INTO job_runs (job, scheduled_for, term, replica, trigger, started_at, status) ",
                "SELECT $1, $2, $3, $4, $5, ", $now, ", 'running' ",
                "WHERE EXISTS (SELECT 1 FROM leases WHERE name = $6 AND holder = $4 AND term = $3 ",
                "AND expires_at > ", $now, " ", $for_share, ") ",
                "ON CONFLICT (job, scheduled_for) DO NOTHING RETURNING id"
            );
        }

        #[async_trait::async_trait]
        impl $crate::store::ControlStore for $store {
            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn record_action(&self, action: &$crate::store::JailAction) -> Result<i64, $crate::store::StoreError> {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO jail_actions (at, action, jail, ip, detail, outcome) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(action.at)
                .bind(action.action.as_str())
                .bind(&action.jail)
                .bind(&action.ip)
                .bind(&action.detail)
                .bind($crate::store::outcome(action.ok))
                .fetch_one(&self.pool)
                .await?;
                Ok(id)
            }

            async fn recent_actions(&self, limit: u32) -> Result<Vec<$crate::store::JailAction>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::ActionRow> =
                    sqlx::query_as($crate::store::select_recent!("$1")).bind(i64::from(limit)).fetch_all(&self.pool).await?;
                rows.into_iter().map($crate::store::JailAction::try_from).collect()
            }

            async fn password(&self) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT phc FROM admin_password WHERE id = 1").fetch_optional(&self.pool).await?)
            }

            async fn complete_setup(&self, phc: &str, at: i64, token_sha256: &[u8]) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                // The token row is the lock: of concurrent callers one deletes it.
                let token = sqlx::query("DELETE FROM setup_tokens WHERE token_sha256 = $1")
                    .bind(token_sha256)
                    .execute(&mut *tx)
                    .await?;
                if token.rows_affected() != 1 {
                    return Ok(false);
                }
                let done = sqlx::query(
                    "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
                )
                .bind(phc)
                .bind(at)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM setup_tokens").execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn setup_tokens(&self) -> Result<Vec<Vec<u8>>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT token_sha256 FROM setup_tokens").fetch_all(&self.pool).await?)
            }

            async fn add_setup_token(&self, token_sha256: &[u8], at: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO setup_tokens (token_sha256, created_at) VALUES ($1, $2)")
                    .bind(token_sha256)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn clear_setup_tokens(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("DELETE FROM setup_tokens").execute(&self.pool).await?;
                Ok(())
            }

            async fn replace_password(
                &self,
                expected: Option<&str>,
                phc: &str,
                at: i64,
                keep: Option<&[u8]>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = match expected {
                    Some(old) => {
                        sqlx::query("UPDATE admin_password SET phc = $1, updated_at = $2 WHERE id = 1 AND phc = $3")
                            .bind(phc)
                            .bind(at)
                            .bind(old)
                            .execute(&mut *tx)
                            .await?
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, $1, $2) \
                             ON CONFLICT (id) DO UPDATE SET phc = excluded.phc, updated_at = excluded.updated_at",
                        )
                        .bind(phc)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?
                    }
                };
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                match keep {
                    Some(keep) => {
                        sqlx::query("DELETE FROM sessions WHERE token_sha256 <> $1").bind(keep).execute(&mut *tx).await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM sessions").execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn insert_session(&self, session: &$crate::store::SessionRow) -> Result<(), $crate::store::StoreError> {
                sqlx::query("INSERT INTO sessions (token_sha256, created_at, expires_at, client) VALUES ($1, $2, $3, $4)")
                    .bind(&session.token_sha256)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .bind(&session.client)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session(&self, token_sha256: &[u8]) -> Result<Option<$crate::store::SessionRow>, $crate::store::StoreError> {
                let row: Option<$crate::store::SessionDbRow> =
                    sqlx::query_as("SELECT token_sha256, created_at, expires_at, client FROM sessions WHERE token_sha256 = $1")
                        .bind(token_sha256)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map($crate::store::SessionRow::from))
            }

            async fn delete_session(&self, token_sha256: &[u8]) -> Result<bool, $crate::store::StoreError> {
                let done =
                    sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1").bind(token_sha256).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn delete_expired(&self, now: i64, attempts_before: i64) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM login_attempts WHERE at < $1").bind(attempts_before).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(sessions.rows_affected())
            }

            async fn reserve_attempt(
                &self,
                client: &str,
                at: i64,
                since: i64,
                limit: u32,
            ) -> Result<$crate::store::Reservation, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($lock_client).bind(client).execute(&mut *tx).await?;
                // One statement: the count and the insert see the same rows.
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO login_attempts (at, client, success) SELECT $1, $2, $3 \
                     WHERE (SELECT count(*) FROM login_attempts WHERE client = $4 AND success = $5 AND at >= $6) < $7 \
                     RETURNING id",
                )
                .bind(at)
                .bind(client)
                .bind(false)
                .bind(client)
                .bind(false)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_optional(&mut *tx)
                .await?;
                let reservation = match id {
                    Some(id) => $crate::store::Reservation::Reserved(id),
                    None => {
                        let row: (i64, Option<i64>) = sqlx::query_as(
                            "SELECT count(*), min(at) FROM login_attempts WHERE success = $1 AND at >= $2 AND client = $3",
                        )
                        .bind(false)
                        .bind(since)
                        .bind(client)
                        .fetch_one(&mut *tx)
                        .await?;
                        $crate::store::Reservation::Refused($crate::store::failures(row))
                    }
                };
                tx.commit().await?;
                Ok(reservation)
            }

            async fn attempt_succeeded(&self, id: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE login_attempts SET success = $1 WHERE id = $2")
                    .bind(true)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<$crate::store::Failures, $crate::store::StoreError> {
                let row: (i64, Option<i64>) = match client {
                    Some(client) => {
                        sqlx::query_as(
                            "SELECT count(*), min(at) FROM login_attempts WHERE success = $1 AND at >= $2 AND client = $3",
                        )
                        .bind(false)
                        .bind(since)
                        .bind(client)
                        .fetch_one(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as("SELECT count(*), min(at) FROM login_attempts WHERE success = $1 AND at >= $2")
                            .bind(false)
                            .bind(since)
                            .fetch_one(&self.pool)
                            .await?
                    }
                };
                Ok($crate::store::failures(row))
            }

            async fn settings(&self) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT key, value FROM settings ORDER BY key").fetch_all(&self.pool).await?)
            }

            async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                for (key, value) in values {
                    sqlx::query(
                        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .bind(key)
                    .bind(value)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                ttl_ms: i64,
            ) -> Result<Option<$crate::store::LeaseGrant>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "INSERT INTO leases (name, holder, term, acquired_at, renewed_at, expires_at) ",
                    "VALUES ($1, $2, 1, ", $now, ", ", $now, ", ", $now, " + $3) ",
                    "ON CONFLICT (name) DO UPDATE SET ",
                    "term = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > ", $now,
                    " THEN leases.term ELSE leases.term + 1 END, ",
                    "acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > ", $now,
                    " THEN leases.acquired_at ELSE ", $now, " END, ",
                    "holder = excluded.holder, renewed_at = ", $now, ", expires_at = ", $now, " + $3 ",
                    "WHERE leases.holder = excluded.holder OR leases.expires_at <= ", $now,
                    " RETURNING term, acquired_at, expires_at, ", $now, " AS db_now"
                ))
                .bind(name)
                .bind(holder)
                .bind(ttl_ms)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn release_lease(&self, name: &str, holder: &str, term: i64) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(concat!(
                    "UPDATE leases SET expires_at = ", $now, " WHERE name = $1 AND holder = $2 AND term = $3"
                ))
                .bind(name)
                .bind(holder)
                .bind(term)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn lease(&self, name: &str) -> Result<Option<$crate::store::Lease>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT name, holder, term, acquired_at, renewed_at, expires_at, ", $now,
                    " AS db_now FROM leases WHERE name = $1"
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn start_run(&self, run: &$crate::store::NewRun<'_>) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(Self::START_RUN)
                .bind(run.job)
                .bind(run.scheduled_for)
                .bind(run.term)
                .bind(run.replica)
                .bind(run.trigger)
                .bind(run.lease)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!("UPDATE job_runs SET finished_at = ", $now, ", status = $2, error = $3 WHERE id = $1"))
                    .bind(id)
                    .bind(status)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn last_runs(&self) -> Result<Vec<$crate::store::JobRun>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT id, job, scheduled_for, term, replica, trigger, started_at, finished_at, status, error \
                     FROM job_runs WHERE id IN (SELECT max(id) FROM job_runs GROUP BY job) ORDER BY job",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn request_run(&self, job: &str, requested_by: &str) -> Result<i64, $crate::store::StoreError> {
                Ok(sqlx::query_scalar(concat!(
                    "INSERT INTO job_requests (job, requested_at, requested_by) VALUES ($1, ", $now, ", $2) RETURNING id"
                ))
                .bind(job)
                .bind(requested_by)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn requested_jobs(&self) -> Result<Vec<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar("SELECT DISTINCT job FROM job_requests WHERE taken_at IS NULL ORDER BY job")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn start_requested_run(
                &self,
                run: &$crate::store::RequestedRun<'_>,
            ) -> Result<Option<$crate::store::StartedRun>, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let taken: Vec<i64> = sqlx::query_scalar(concat!(
                    "UPDATE job_requests SET taken_at = ", $now, ", taken_by = $1 ",
                    "WHERE job = $2 AND taken_at IS NULL RETURNING requested_at"
                ))
                .bind(run.replica)
                .bind(run.job)
                .fetch_all(&mut *tx)
                .await?;
                // Dropping `tx` rolls the take back.
                let Some(slot) = taken.into_iter().max() else { return Ok(None) };
                let id: Option<i64> = sqlx::query_scalar(Self::START_RUN)
                .bind(run.job)
                .bind(slot)
                .bind(run.term)
                .bind(run.replica)
                .bind("manual")
                .bind(run.lease)
                .fetch_optional(&mut *tx)
                .await?;
                match id {
                    Some(id) => {
                        tx.commit().await?;
                        Ok(Some($crate::store::StartedRun { id, scheduled_for: slot }))
                    }
                    None => {
                        // A run of this very millisecond answers the requests (they
                        // were made as it started); otherwise the term is stale.
                        let ran: i64 =
                            sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = $1 AND scheduled_for = $2")
                                .bind(run.job)
                                .bind(slot)
                                .fetch_one(&mut *tx)
                                .await?;
                        if ran > 0 {
                            tx.commit().await?;
                        }
                        Ok(None)
                    }
                }
            }

            fn backend(&self) -> &'static str {
                $backend
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}
pub(crate) use impl_control_store;
