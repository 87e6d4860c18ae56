//! The SQLite control database: one file, WAL mode, the default backend
//! (one replica).

use sqlx::SqlitePool;

use super::{ActionRow, ControlStore, JailAction, StoreError, outcome, select_recent};

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

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
