//! [`SettingsStore`] on PostgreSQL.

use super::*;
use crate::store::PgStore;

#[async_trait::async_trait]
impl SettingsStore for PgStore {
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(SELECT_SETTINGS).fetch_all(&self.pool).await?)
    }

    async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in values {
            sqlx::query(UPSERT_SETTING).bind(key).bind(value).bind(at).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
