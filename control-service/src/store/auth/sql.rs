//! [`AuthStore`], once for both backends.

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

#[async_trait::async_trait]
impl<DB: Dialect> AuthStore for Store<DB> {
    async fn password(&self) -> Result<Option<String>, StoreError> {
        Stmt::<DB>::new(SELECT_PASSWORD).optional_scalar(&mut *conn(&self.pool).await?).await
    }

    async fn complete_setup(&self, phc: &str, at: i64, token: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The token row is the lock: of concurrent callers one deletes it.
        if Stmt::<DB>::new(CONSUME_SETUP_TOKEN).bind(token).bind(at).execute(&mut tx).await? != 1 {
            return Ok(false);
        }
        if Stmt::<DB>::new(INSERT_PASSWORD).bind(phc).bind(at).execute(&mut tx).await? != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn setup_token(&self) -> Result<Option<SetupTokenRow>, StoreError> {
        Stmt::<DB>::new(SELECT_SETUP_TOKEN).fetch_optional(&mut *conn(&self.pool).await?).await
    }

    async fn ensure_setup_token(
        &self,
        candidate: &SetupTokenRow,
        now: i64,
    ) -> Result<Option<SetupTokenRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        Stmt::<DB>::new(DELETE_EXPIRED_SETUP_TOKEN).bind(now).execute(&mut tx).await?;
        // On PostgreSQL a concurrent insert makes this one wait, then do
        // nothing; the select below (a statement of its own under read
        // committed) then sees the winner's row.
        Stmt::<DB>::new(INSERT_SETUP_TOKEN)
            .bind(candidate.token.as_str())
            .bind(candidate.created_at)
            .bind(candidate.expires_at)
            .execute(&mut tx)
            .await?;
        let row = Stmt::<DB>::new(SELECT_SETUP_TOKEN).fetch_optional(&mut tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn clear_setup_token(&self) -> Result<(), StoreError> {
        Stmt::<DB>::new(DELETE_SETUP_TOKEN).execute(&mut *conn(&self.pool).await?).await?;
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
        let swap = match expected {
            Some(old) => Stmt::<DB>::new(SWAP_PASSWORD).bind(phc).bind(at).bind(old),
            None => Stmt::new(UPSERT_PASSWORD).bind(phc).bind(at),
        };
        if swap.execute(&mut tx).await? != 1 {
            return Ok(false);
        }
        match keep {
            Some(keep) => Stmt::<DB>::new(DELETE_SESSIONS_BUT).bind(keep),
            None => Stmt::new(DELETE_SESSIONS),
        }
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        Stmt::<DB>::new(INSERT_SESSION)
            .bind(session.token_sha256.as_slice())
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(session.client.as_str())
            .execute(&mut *conn(&self.pool).await?)
            .await?;
        Ok(())
    }

    async fn session(&self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        Stmt::<DB>::new(SELECT_SESSION).bind(token_sha256).fetch_optional(&mut *conn(&self.pool).await?).await
    }

    async fn delete_session(&self, token_sha256: &[u8]) -> Result<bool, StoreError> {
        Ok(Stmt::<DB>::new(DELETE_SESSION).bind(token_sha256).execute(&mut *conn(&self.pool).await?).await? > 0)
    }

    async fn delete_expired(&self, now: i64, attempts_before: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sessions = Stmt::<DB>::new(DELETE_EXPIRED_SESSIONS).bind(now).execute(&mut tx).await?;
        Stmt::<DB>::new(DELETE_OLD_ATTEMPTS).bind(attempts_before).execute(&mut tx).await?;
        tx.commit().await?;
        Ok(sessions)
    }

    async fn reserve_attempt(&self, client: &str, at: i64, since: i64, limit: u32) -> Result<Reservation, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(lock) = DB::LOCK_CLIENT {
            Stmt::<DB>::new(lock).bind(client).execute(&mut tx).await?;
        }
        let id: Option<i64> = Stmt::<DB>::new(RESERVE_ATTEMPT)
            .bind(at)
            .bind(client)
            .bind(false)
            .bind(client)
            .bind(false)
            .bind(since)
            .bind(i64::from(limit))
            .optional_scalar(&mut tx)
            .await?;
        let reservation = match id {
            Some(id) => Reservation::Reserved(id),
            None => {
                let row: (i64, Option<i64>) =
                    Stmt::<DB>::new(CLIENT_FAILURES).bind(false).bind(since).bind(client).fetch_one(&mut tx).await?;
                Reservation::Refused(row.into())
            }
        };
        tx.commit().await?;
        Ok(reservation)
    }

    async fn attempt_succeeded(&self, id: i64) -> Result<(), StoreError> {
        Stmt::<DB>::new(ATTEMPT_SUCCEEDED).bind(true).bind(id).execute(&mut *conn(&self.pool).await?).await?;
        Ok(())
    }

    async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<Failures, StoreError> {
        let stmt = match client {
            Some(client) => Stmt::<DB>::new(CLIENT_FAILURES).bind(false).bind(since).bind(client),
            None => Stmt::new(ALL_FAILURES).bind(false).bind(since),
        };
        let row: (i64, Option<i64>) = stmt.fetch_one(&mut *conn(&self.pool).await?).await?;
        Ok(row.into())
    }
}
