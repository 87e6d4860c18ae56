//! [`AuthStore`] on SQLite.

use super::*;
use crate::store::SqliteStore;

#[async_trait::async_trait]
impl AuthStore for SqliteStore {
    async fn password(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(SELECT_PASSWORD).fetch_optional(&self.pool).await?)
    }

    async fn complete_setup(&self, phc: &str, at: i64, token_sha256: &[u8]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The token row is the lock: of concurrent callers one deletes it.
        let token = sqlx::query(DELETE_SETUP_TOKEN).bind(token_sha256).execute(&mut *tx).await?;
        if token.rows_affected() != 1 {
            return Ok(false);
        }
        let done = sqlx::query(INSERT_PASSWORD).bind(phc).bind(at).execute(&mut *tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(DELETE_SETUP_TOKENS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn setup_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(SELECT_SETUP_TOKENS).fetch_all(&self.pool).await?)
    }

    async fn add_setup_token(&self, token_sha256: &[u8], at: i64) -> Result<(), StoreError> {
        sqlx::query(INSERT_SETUP_TOKEN).bind(token_sha256).bind(at).execute(&self.pool).await?;
        Ok(())
    }

    async fn clear_setup_tokens(&self) -> Result<(), StoreError> {
        sqlx::query(DELETE_SETUP_TOKENS).execute(&self.pool).await?;
        Ok(())
    }

    async fn replace_password(
        &self,
        expected: Option<&str>,
        phc: &str,
        at: i64,
        keep: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = match expected {
            Some(old) => sqlx::query(SWAP_PASSWORD).bind(phc).bind(at).bind(old).execute(&mut *tx).await?,
            None => sqlx::query(UPSERT_PASSWORD).bind(phc).bind(at).execute(&mut *tx).await?,
        };
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        match keep {
            Some(keep) => sqlx::query(DELETE_SESSIONS_BUT).bind(keep).execute(&mut *tx).await?,
            None => sqlx::query(DELETE_SESSIONS).execute(&mut *tx).await?,
        };
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(INSERT_SESSION)
            .bind(&session.token_sha256)
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(&session.client)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(SELECT_SESSION).bind(token_sha256).fetch_optional(&self.pool).await?)
    }

    async fn delete_session(&self, token_sha256: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_SESSION).bind(token_sha256).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_expired(&self, now: i64, attempts_before: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sessions = sqlx::query(DELETE_EXPIRED_SESSIONS).bind(now).execute(&mut *tx).await?;
        sqlx::query(DELETE_OLD_ATTEMPTS).bind(attempts_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(sessions.rows_affected())
    }

    async fn reserve_attempt(&self, client: &str, at: i64, since: i64, limit: u32) -> Result<Reservation, StoreError> {
        // One writer at a time: the insert takes the database's write lock
        // before it counts, so concurrent reservations wait for each other.
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(RESERVE_ATTEMPT)
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
            Some(id) => Reservation::Reserved(id),
            None => {
                let row: (i64, Option<i64>) =
                    sqlx::query_as(CLIENT_FAILURES).bind(false).bind(since).bind(client).fetch_one(&mut *tx).await?;
                Reservation::Refused(row.into())
            }
        };
        tx.commit().await?;
        Ok(reservation)
    }

    async fn attempt_succeeded(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(ATTEMPT_SUCCEEDED).bind(true).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<Failures, StoreError> {
        let row: (i64, Option<i64>) = match client {
            Some(client) => {
                sqlx::query_as(CLIENT_FAILURES).bind(false).bind(since).bind(client).fetch_one(&self.pool).await?
            }
            None => sqlx::query_as(ALL_FAILURES).bind(false).bind(since).fetch_one(&self.pool).await?,
        };
        Ok(row.into())
    }
}
