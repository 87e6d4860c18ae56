//! The SQLite control database: one file, WAL mode, the default backend
//! (one replica), and SQLite's side of `Dialect`.

use std::sync::LazyLock;

use sqlx::Sqlite;

use super::{Dialect, Store, StoreError, hosts, lease::Statements};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/control/sqlite");

/// The control database in a SQLite file.
pub type SqliteStore = Store<Sqlite>;

impl SqliteStore {
    /// Opens (creating if missing) the file in `url` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // 8 MiB of page cache a connection: a blocklist import of a million walks
        // tables far larger than any cache, and four connections of 32 MiB each
        // would be the whole memory budget (the OS keeps the file cached anyway).
        let pool = bangui_runtime::db::sqlite_pool_sized(url, 4, 8 * 1024).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

/// The database's clock in Unix milliseconds (SQLite has no such function;
/// `'now'` is the same for every use within one statement).
const NOW_MS: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// Runs need no row lock: the database has one writer.
static LEASE: LazyLock<Statements> = LazyLock::new(|| Statements::new(NOW_MS, ""));
static HOSTS: LazyLock<hosts::Statements> = LazyLock::new(|| hosts::Statements::new(NOW_MS));

impl Dialect for Sqlite {
    /// With numbered placeholders binding got slower with the square of a
    /// statement's parameters (500-row inserts 6 600 rows/s, 50-row
    /// inserts 28 000); with [`Self::placeholder`]'s `?` it does not.
    const ROWS_PER_INSERT: usize = 500;

    /// None: one writer at a time; the reservation's insert takes the
    /// database's write lock before it counts, so concurrent reservations
    /// wait for each other.
    const LOCK_CLIENT: Option<&'static str> = None;

    /// None: without statistics SQLite assumes an equality on an
    /// indexed column is selective (and its ANALYZE reads every row).
    const ANALYZE_ENTRIES: Option<&'static str> = None;

    fn placeholder(_n: usize) -> String {
        "?".to_owned()
    }

    const NOTIFY: Option<&'static str> = None;

    fn lease_statements() -> &'static Statements {
        &LEASE
    }

    fn host_statements() -> &'static hosts::Statements {
        &HOSTS
    }
}
