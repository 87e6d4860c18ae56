//! The SQLite cache store: one file, WAL mode, the default backend, and
//! SQLite's side of `GeoDialect`.

use sqlx::Sqlite;

use super::{GeoDialect, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/geo/sqlite");

/// The cache in a SQLite file.
pub type SqliteStore = Store<Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the file in `url` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // The cache is one small table read in batches and written once a
        // flush: two connections and SQLite's default 2 MiB page cache each
        // keep its memory small (every connection holds its own cache).
        let pool = bangui_runtime::db::sqlite_pool_sized(url, 2, 2 * 1024).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

impl GeoDialect for Sqlite {
    /// SQLite's `max` with two arguments is the scalar larger-of.
    const GREATEST: &'static str = "max";
}
