//! The SQLite control database: one file, WAL mode, the default backend
//! (one replica). Its repositories are in each aggregate's `sqlite.rs`.

use sqlx::SqlitePool;

use super::{Pool, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/sqlite");

/// The control database in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(in crate::store) pool: SqlitePool,
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
impl Pool for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
