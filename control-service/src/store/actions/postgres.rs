//! [`ActionLog`] on PostgreSQL.

use super::*;
use crate::store::PgStore;

#[async_trait::async_trait]
impl ActionLog for PgStore {
    async fn record_action(&self, action: &JailAction) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(INSERT_ACTION)
            .bind(action.at)
            .bind(action.action.as_str())
            .bind(&action.jail)
            .bind(&action.ip)
            .bind(&action.detail)
            .bind(outcome(action.ok))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn recent_actions(&self, limit: u32) -> Result<Vec<JailAction>, StoreError> {
        let rows: Vec<ActionRow> = sqlx::query_as(SELECT_RECENT).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.into_iter().map(JailAction::try_from).collect()
    }
}
