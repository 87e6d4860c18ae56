//! [`SettingsStore`], once for both backends.

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

#[async_trait::async_trait]
impl<DB: Dialect> SettingsStore for Store<DB> {
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        Stmt::<DB>::new(SELECT_SETTINGS).fetch_all(&mut *conn(&self.pool).await?).await
    }

    async fn put_settings(&self, values: &[(String, String)], at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in values {
            Stmt::<DB>::new(UPSERT_SETTING).bind(key.as_str()).bind(value.as_str()).bind(at).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
