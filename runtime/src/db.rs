//! Connection pools both services open the same way, and the error their
//! stores share. Each store runs its own migrations on the pool.

use std::{
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

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
    if let Some(file) = sqlite_file(url, &options) {
        let made = tokio::task::spawn_blocking(move || owner_only(&file)).await.map_err(std::io::Error::other);
        made.and_then(|made| made).map_err(sqlx::Error::Io)?;
    }
    let connections = if url.contains(":memory:") { 1 } else { connections.max(1) };
    Ok(SqlitePoolOptions::new().max_connections(connections).connect_with(options).await?)
}

/// The file of the SQLite database in `url` (parsed as `options`); none
/// for an in-memory one (`sqlite::memory:`, `?mode=memory`).
fn sqlite_file(url: &str, options: &SqliteConnectOptions) -> Option<PathBuf> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let in_memory = url.contains(":memory:") || query.split('&').any(|pair| pair == "mode=memory");
    (!in_memory).then(|| options.get_filename().to_owned())
}

/// The SQLite files the owner alone can read (they hold the password hash,
/// sessions' digests and, before setup, the setup token). Creates a missing
/// database file 0600 before SQLite opens it, whatever the process umask:
/// SQLite gives the `-wal` and `-shm` files it creates the database file's
/// mode. An existing database file, `-wal` or `-shm` that group or others
/// may read (0644, as earlier versions made them) loses those bits.
fn owner_only(file: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file) {
        // The mode above is filtered by the umask; make it exact.
        Ok(created) => return created.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        // Left to SQLite, whose error names the file the same way.
        Err(_) => return Ok(()),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let path = PathBuf::from(path);
        let Ok(metadata) = std::fs::metadata(&path) else { continue };
        let mode = metadata.permissions().mode();
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::info!(file = %path.display(), "database file made readable by its owner only"),
            Err(error) => tracing::warn!(
                file = %path.display(),
                %error,
                "the database file is readable by others and its mode cannot be changed: make it 0600"
            ),
        }
    }
    Ok(())
}

/// Connects to PostgreSQL (tests pass options with a `search_path`).
pub async fn pg_pool(options: PgConnectOptions) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(5)).connect_with(options).await?)
}

/// [`pg_pool`] from a URL.
pub async fn pg_pool_from_url(url: &str) -> Result<PgPool, StoreError> {
    pg_pool(PgConnectOptions::from_str(url)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn sqlite_files_are_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new.db");
        let pool = sqlite_pool(&format!("sqlite://{}", file.display())).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)").execute(&pool).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.path().join(format!("new.db{suffix}"));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        pool.close().await;

        // A database an earlier version left readable by others.
        let old = dir.path().join("old.db");
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.path().join(format!("old.db{suffix}"));
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let pool = sqlite_pool(&format!("sqlite://{}", old.display())).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&pool).await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.path().join(format!("old.db{suffix}"));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        pool.close().await;

        // In memory: no file.
        let pool = sqlite_pool("sqlite::memory:").await.unwrap();
        pool.close().await;
        let file = |url: &str| sqlite_file(url, &SqliteConnectOptions::from_str(url).unwrap());
        assert_eq!(file("sqlite::memory:"), None);
        assert_eq!(file("sqlite://x.db?mode=memory"), None);
        assert_eq!(file("sqlite:///var/lib/x/control.db?mode=rwc"), Some(PathBuf::from("/var/lib/x/control.db")));
    }
}
