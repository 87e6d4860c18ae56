//! [`ActionLog`] on both backends.

use super::*;
use crate::{
    kinds::ActionKind,
    store::{PgStore, Pool, SqliteStore, testing},
};

fn action(at: i64, kind: ActionKind, jail: Option<&str>, ok: bool) -> JailAction {
    JailAction {
        at,
        action: kind,
        jail: jail.map(Into::into),
        ip: Some("192.0.2.1".into()),
        detail: if ok { String::new() } else { "UnknownJailException: x".into() },
        ok,
    }
}

async fn actions_round_trip_newest_first(store: &(impl ActionLog + Pool)) {
    store.ping().await.unwrap();
    assert!(store.recent_actions(10).await.unwrap().is_empty());
    let written = [
        action(100, ActionKind::Ban, Some("sshd"), true),
        action(100, ActionKind::Unban, None, true),
        action(90, ActionKind::IgnoreAdd, Some("x"), false),
    ];
    let mut ids = Vec::new();
    for a in &written {
        ids.push(store.record_action(a).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // Newest by insertion, not by clock: the third was written last.
    let got = store.recent_actions(10).await.unwrap();
    assert_eq!(got, vec![written[2].clone(), written[1].clone(), written[0].clone()]);
    assert_eq!(store.recent_actions(1).await.unwrap(), vec![written[2].clone()]);
}

#[tokio::test]
async fn action_log_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    actions_round_trip_newest_first(&store).await;
    // Migrations are idempotent: a second start over the same file works.
    store.close().await;
    let again = SqliteStore::connect(&testing::sqlite_url(&dir, "control.db")).await.unwrap();
    assert_eq!(again.recent_actions(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn action_log_on_postgres() {
    let (store, schema) = testing::postgres("control_contract").await;
    actions_round_trip_newest_first(&store).await;
    store.close().await;
    let again = PgStore::connect_with(schema.options()).await.unwrap();
    assert_eq!(again.recent_actions(10).await.unwrap().len(), 3);
    again.close().await;
}
