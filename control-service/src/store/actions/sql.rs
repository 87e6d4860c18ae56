//! [`ActionLog`], once for both backends.

use super::*;
use crate::store::{Dialect, Stmt, Store, conn};

#[async_trait::async_trait]
impl<DB: Dialect> ActionLog for Store<DB> {
    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError> {
        Stmt::<DB>::new(INSERT_ACTION)
            .bind(action.at)
            .bind(action.action.as_str())
            .bind(action.jail.as_deref())
            .bind(action.ip.as_deref())
            .bind(action.detail.as_str())
            .bind(outcome(action.ok))
            .scalar(&mut *conn(&self.pool).await?)
            .await
    }

    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError> {
        let rows: Vec<ActionRow> =
            Stmt::<DB>::new(SELECT_RECENT).bind(i64::from(limit)).fetch_all(&mut *conn(&self.pool).await?).await?;
        rows.into_iter().map(JailAction::try_from).collect()
    }
}
