//! [`SettingsStore`] on both backends.

use super::*;
use crate::store::{Pool, testing};

fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn settings_are_upserted_and_read_by_key(store: &impl SettingsStore) {
    assert!(store.settings().await.unwrap().is_empty(), "nothing stored: every setting has its default");
    store
        .put_settings(&rows(&[("session_duration", "1800"), ("history_sync_schedule", "0 * * * * *")]), 1)
        .await
        .unwrap();
    store.put_settings(&rows(&[("session_duration", "600")]), 2).await.unwrap();
    assert_eq!(
        store.settings().await.unwrap(),
        rows(&[("history_sync_schedule", "0 * * * * *"), ("session_duration", "600")]),
        "by key, the latest value"
    );
}

#[tokio::test]
async fn settings_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    settings_are_upserted_and_read_by_key(&store).await;
    store.close().await;
}

#[tokio::test]
async fn settings_store_on_postgres() {
    let (store, _schema) = testing::postgres("control_settings").await;
    settings_are_upserted_and_read_by_key(&store).await;
    store.close().await;
}
