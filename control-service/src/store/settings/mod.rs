//! Runtime settings: one row per key, as text. The same statements on both
//! backends, bound and run once in `sql.rs`.

mod sql;

#[cfg(test)]
mod contract;

use super::StoreError;

/// The runtime settings' rows.
#[async_trait::async_trait]
pub trait SettingsStore: Send + Sync + std::fmt::Debug {
    /// Every stored runtime setting, as text, by key.
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// One transaction: upserts `values`.
    async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), StoreError>;
}

const SELECT_SETTINGS: &str = "SELECT key, value FROM settings ORDER BY key";
/// Sets $1 to $2 at $3.
const UPSERT_SETTING: &str = "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                              ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
