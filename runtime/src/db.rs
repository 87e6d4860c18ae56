//! Connection pools both services open the same way, and the error their
//! stores share. Each store runs its own migrations on the pool.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// Errors of a service's database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Holds the URL without its password ([`crate::redact_url`]).
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite:…` or `postgres://…`/`postgresql://…`.
    pub fn of(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(crate::redact_url(url)))
        }
    }
}

/// Opens (creating if missing) the SQLite file in `url`: WAL mode, a busy
/// timeout, a few connections (one for `:memory:`, where each connection is
/// a database of its own).
pub async fn sqlite_pool(url: &str) -> Result<SqlitePool, StoreError> {
    // 32 MiB of page cache (the default is 2): the archive's indexes stay in memory.
    sqlite_pool_sized(url, 4, 32 * 1024).await
}

/// [`sqlite_pool`] with at most `connections` connections and a page cache
/// of `cache_kib` KiB each (memory SQLite may keep per connection).
pub async fn sqlite_pool_sized(url: &str, connections: u32, cache_kib: u32) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .pragma("cache_size", format!("-{cache_kib}"))
        // A large transaction (a blocklist of a million) grows the WAL; after
        // the next checkpoint it is cut back to this, not kept at its peak.
        .pragma("journal_size_limit", (64 * 1024 * 1024).to_string());
    let connections = if url.contains(":memory:") { 1 } else { connections.max(1) };
    Ok(SqlitePoolOptions::new().max_connections(connections).connect_with(options).await?)
}

/// Connects to PostgreSQL (tests pass options with a `search_path`).
pub async fn pg_pool(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(5)).connect_with(options).await?)
}

/// [`pg_pool`] from a URL.
pub async fn pg_pool_from_url(url: &str) -> Result<PgPool, StoreError> {
    pg_pool(PgConnectOptions::from_str(url)?).await
}
