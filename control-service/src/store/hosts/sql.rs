//! [`HostStore`], once for both backends; the statements judged by the
//! database's clock come from [`Dialect::host_statements`].

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

/// Whether `error` is a unique-constraint violation (a name in use).
fn is_unique_violation(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
}

#[async_trait::async_trait]
impl<DB: Dialect> HostStore for Store<DB> {
    async fn insert_enrollment_token(&self, token_hash: &[u8], ttl_ms: i64) -> Result<i64, StoreError> {
        Stmt::<DB>::new(DB::host_statements().insert_token.as_str())
            .bind(token_hash)
            .bind(ttl_ms)
            .scalar(&mut *conn(&self.pool).await?)
            .await
    }

    async fn enroll(&self, token_hash: &[u8], host: &NewHost<'_>) -> Result<Enrollment, StoreError> {
        let sql = DB::host_statements();
        let mut tx = self.pool.begin().await?;
        // Dropping `tx` rolls back: a refused enrollment writes nothing.
        let used = Stmt::<DB>::new(sql.use_token.as_str()).bind(token_hash).bind(host.id).execute(&mut tx).await?;
        if used == 0 {
            return Ok(Enrollment::TokenRefused);
        }
        let exists: i64 = Stmt::<DB>::new(HOST_EXISTS).bind(host.id).scalar(&mut tx).await?;
        if exists > 0 {
            return Ok(Enrollment::IdTaken);
        }
        for name in host.names {
            let inserted = Stmt::<DB>::new(sql.insert_host.as_str())
                .bind(host.id)
                .bind(name.as_str())
                .bind(host.credential_hash)
                .execute(&mut tx)
                .await?;
            if inserted > 0 {
                let row: HostRow = Stmt::<DB>::new(sql.select_host.as_str()).bind(host.id).fetch_one(&mut tx).await?;
                tx.commit().await?;
                return Ok(Enrollment::Enrolled(Box::new(row)));
            }
            // Not inserted: the id was enrolled meanwhile, or the name is taken.
            let exists: i64 = Stmt::<DB>::new(HOST_EXISTS).bind(host.id).scalar(&mut tx).await?;
            if exists > 0 {
                return Ok(Enrollment::IdTaken);
            }
        }
        Ok(Enrollment::NameTaken)
    }

    async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        Stmt::<DB>::new(DB::host_statements().select_hosts.as_str()).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn host(&self, id: &str) -> Result<Option<HostRow>, StoreError> {
        Stmt::<DB>::new(DB::host_statements().select_host.as_str())
            .bind(id)
            .fetch_optional(&mut *conn(&self.pool).await?)
            .await
    }

    async fn credential(&self, id: &str) -> Result<Option<(Vec<u8>, Option<i64>)>, StoreError> {
        Stmt::<DB>::new(SELECT_CREDENTIAL).bind(id).fetch_optional(&mut *conn(&self.pool).await?).await
    }

    async fn rename_host(&self, id: &str, name: &str) -> Result<Rename, StoreError> {
        let mut conn = conn(&self.pool).await?;
        match Stmt::<DB>::new(RENAME_HOST).bind(id).bind(name).execute(&mut conn).await {
            Ok(0) => Ok(Rename::NotFound),
            Ok(_) => {
                let row = Stmt::<DB>::new(DB::host_statements().select_host.as_str())
                    .bind(id)
                    .fetch_optional(&mut conn)
                    .await?;
                Ok(row.map_or(Rename::NotFound, |row| Rename::Renamed(Box::new(row))))
            }
            Err(error) if is_unique_violation(&error) => Ok(Rename::NameTaken),
            Err(error) => Err(error),
        }
    }

    async fn revoke_host(&self, id: &str) -> Result<Option<HostRow>, StoreError> {
        let sql = DB::host_statements();
        let mut conn = conn(&self.pool).await?;
        if Stmt::<DB>::new(sql.revoke_host.as_str()).bind(id).execute(&mut conn).await? == 0 {
            return Ok(None);
        }
        Stmt::<DB>::new(sql.select_host.as_str()).bind(id).fetch_optional(&mut conn).await
    }

    async fn take_stream(
        &self,
        claim: &StreamClaim<'_>,
        presence: &Presence<'_>,
        stale_ms: i64,
    ) -> Result<bool, StoreError> {
        let taken = Stmt::<DB>::new(DB::host_statements().take_stream.as_str())
            .bind(claim.host)
            .bind(claim.stream_id)
            .bind(claim.replica)
            .bind(claim.instance)
            .bind(presence.agent_version)
            .bind(presence.fail2ban_version)
            .bind(presence.jails)
            .bind(stale_ms)
            .bind(presence.jail_states)
            .bind(presence.states_age_ms)
            .bind(presence.outbox_backlog)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(taken > 0)
    }

    async fn refresh_stream(&self, host: &str, stream_id: &str, presence: &Presence<'_>) -> Result<bool, StoreError> {
        let refreshed = Stmt::<DB>::new(DB::host_statements().refresh_stream.as_str())
            .bind(host)
            .bind(stream_id)
            .bind(presence.agent_version)
            .bind(presence.fail2ban_version)
            .bind(presence.jails)
            .bind(presence.jail_states)
            .bind(presence.states_age_ms)
            .bind(presence.outbox_backlog)
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(refreshed > 0)
    }

    async fn release_stream(&self, host: &str, stream_id: &str) -> Result<bool, StoreError> {
        let released =
            Stmt::<DB>::new(RELEASE_STREAM).bind(host).bind(stream_id).execute(&mut *conn(&self.pool).await?).await?;
        Ok(released > 0)
    }

    async fn insert_command(&self, command: &NewCommand<'_>) -> Result<(), StoreError> {
        let mut conn = conn(&self.pool).await?;
        Stmt::<DB>::new(DB::host_statements().insert_command.as_str())
            .bind(command.id)
            .bind(command.host)
            .bind(command.operation)
            .bind(command.ttl_ms)
            .execute(&mut conn)
            .await?;
        notify::<DB>(&mut conn, COMMANDS_CHANNEL, command.host).await
    }

    async fn hosts_with_commands(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = Stmt::<DB>::new(DB::host_statements().hosts_with_commands.as_str())
            .fetch_all(&mut *conn(&self.pool).await?)
            .await?;
        Ok(rows.into_iter().map(|(host,)| host).collect())
    }

    async fn take_commands(&self, host: &str, replica: &str) -> Result<Vec<TakenCommand>, StoreError> {
        Stmt::<DB>::new(DB::host_statements().take_commands.as_str())
            .bind(host)
            .bind(replica)
            .fetch_all(&mut *conn(&self.pool).await?)
            .await
    }

    async fn return_command(&self, id: &str, host: &str) -> Result<bool, StoreError> {
        let mut conn = conn(&self.pool).await?;
        if Stmt::<DB>::new(RETURN_COMMAND).bind(id).execute(&mut conn).await? == 0 {
            return Ok(false);
        }
        notify::<DB>(&mut conn, COMMANDS_CHANNEL, host).await?;
        Ok(true)
    }

    async fn finish_command(&self, id: &str, outcome: &str) -> Result<bool, StoreError> {
        let mut conn = conn(&self.pool).await?;
        if Stmt::<DB>::new(FINISH_COMMAND).bind(id).bind(outcome).execute(&mut conn).await? == 0 {
            return Ok(false);
        }
        notify::<DB>(&mut conn, RESULTS_CHANNEL, id).await?;
        Ok(true)
    }

    async fn command_outcome(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            Stmt::<DB>::new(COMMAND_OUTCOME).bind(id).fetch_optional(&mut *conn(&self.pool).await?).await?;
        Ok(row.and_then(|(outcome,)| outcome))
    }

    async fn delete_command(&self, id: &str) -> Result<(), StoreError> {
        Stmt::<DB>::new(DELETE_COMMAND).bind(id).execute(&mut *conn(&self.pool).await?).await?;
        Ok(())
    }

    async fn purge_commands(&self, after_ms: i64) -> Result<u64, StoreError> {
        Stmt::<DB>::new(DB::host_statements().purge_commands.as_str())
            .bind(after_ms)
            .execute(&mut *conn(&self.pool).await?)
            .await
    }
}

/// Wakes the listeners of `channel` where the database can (PostgreSQL's
/// NOTIFY); elsewhere the waiting side's polling finds the change.
async fn notify<DB: Dialect>(conn: &mut DB::Connection, channel: &str, payload: &str) -> Result<(), StoreError> {
    if let Some(sql) = DB::NOTIFY {
        Stmt::<DB>::new(sql).bind(channel).bind(payload).execute(conn).await?;
    }
    Ok(())
}
