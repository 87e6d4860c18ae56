//! The SQLite control database: one file, WAL mode, the default backend
//! (one replica).

use sqlx::SqlitePool;

use super::StoreError;

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

super::shared::impl_control_store!(
    SqliteStore,
    "sqlite",
    "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
    "",
    // Reads no table, so it takes no snapshot: the insert that follows takes
    // the database's one write lock before it counts.
    "SELECT $1"
);

impl super::history::HasDb for SqliteStore {
    type Db = sqlx::Sqlite;
}

super::history::impl_history_store!(SqliteStore, 50);
