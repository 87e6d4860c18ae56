//! Both backends for the contract suites: SQLite in a temporary file,
//! PostgreSQL in a schema of its own in the `test` database (dropped
//! afterwards).

use bangui_testkit::postgres::PgSchema;

use super::{PgStore, SqliteStore};

/// A migrated SQLite store in a file of `dir`.
pub(crate) async fn sqlite_in(dir: &tempfile::TempDir, file: &str) -> SqliteStore {
    SqliteStore::connect(&sqlite_url(dir, file)).await.unwrap()
}

/// The URL of `file` in `dir`.
pub(crate) fn sqlite_url(dir: &tempfile::TempDir, file: &str) -> String {
    format!("sqlite://{}", dir.path().join(file).display())
}

/// A migrated PostgreSQL store in a new schema `<prefix>_<unique>`.
pub(crate) async fn postgres(prefix: &str) -> (PgStore, PgSchema) {
    let schema = PgSchema::create(prefix).await;
    let store = PgStore::connect_with(schema.options()).await.unwrap();
    (store, schema)
}
