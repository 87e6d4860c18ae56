//! The SQLite control database: one file, WAL mode, the default backend
//! (one replica).

use sqlx::SqlitePool;

use super::{
    ActionRow, ControlStore, Failures, JailAction, SessionDbRow, SessionRow, StoreError, failures, outcome,
    select_recent,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/sqlite");

/// The control database in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the file in `url` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = bangui_runtime::db::sqlite_pool(url).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl ControlStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jail_actions (at, action, jail, ip, detail, outcome) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(action.at)
        .bind(action.action.as_str())
        .bind(&action.jail)
        .bind(&action.ip)
        .bind(&action.detail)
        .bind(outcome(action.ok))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError> {
        let rows: Vec<ActionRow> =
            sqlx::query_as(select_recent!("?")).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.into_iter().map(JailAction::try_from).collect()
    }

    async fn password(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT phc FROM admin_password WHERE id = 1").fetch_optional(&self.pool).await?)
    }

    async fn set_password_if_absent(&self, phc: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(phc)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
            Some(old) => {
                sqlx::query("UPDATE admin_password SET phc = ?, updated_at = ? WHERE id = 1 AND phc = ?")
                    .bind(phc)
                    .bind(at)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO admin_password (id, phc, updated_at) VALUES (1, ?, ?) \
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
                sqlx::query("DELETE FROM sessions WHERE token_sha256 <> ?").bind(keep).execute(&mut *tx).await?;
            }
            None => {
                sqlx::query("DELETE FROM sessions").execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO sessions (token_sha256, created_at, expires_at, client) VALUES (?, ?, ?, ?)")
            .bind(&session.token_sha256)
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(&session.client)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, token_sha256: &[u8]) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<SessionDbRow> =
            sqlx::query_as("SELECT token_sha256, created_at, expires_at, client FROM sessions WHERE token_sha256 = ?")
                .bind(token_sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(SessionRow::from))
    }

    async fn delete_session(&self, token_sha256: &[u8]) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM sessions WHERE token_sha256 = ?").bind(token_sha256).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_expired(&self, now: i64, attempts_before: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at <= ?").bind(now).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM login_attempts WHERE at < ?").bind(attempts_before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(sessions.rows_affected())
    }

    async fn record_login(&self, client: &str, at: i64, success: bool) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO login_attempts (at, client, success) VALUES (?, ?, ?)")
            .bind(at)
            .bind(client)
            .bind(success)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn failures_since(&self, client: Option<&str>, since: i64) -> Result<Failures, StoreError> {
        let row: (i64, Option<i64>) = match client {
            Some(client) => {
                sqlx::query_as(
                    "SELECT count(*), min(at) FROM login_attempts WHERE success = 0 AND at >= ? AND client = ?",
                )
                .bind(since)
                .bind(client)
                .fetch_one(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as("SELECT count(*), min(at) FROM login_attempts WHERE success = 0 AND at >= ?")
                    .bind(since)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(failures(row))
    }

    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT key, value FROM settings ORDER BY key").fetch_all(&self.pool).await?)
    }

    async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in values {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
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

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
