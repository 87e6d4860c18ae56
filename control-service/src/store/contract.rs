//! One contract, both backends: every scenario runs against SQLite (a
//! temporary file) and PostgreSQL (a schema of its own in the `test`
//! database, dropped afterwards).

use bangui_testkit::postgres::PgSchema;

use super::{ActionKind, ControlStore, JailAction, postgres::PgStore, sqlite::SqliteStore};

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

async fn actions_round_trip_newest_first(store: &dyn ControlStore) {
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

async fn run_all(store: &dyn ControlStore) {
    actions_round_trip_newest_first(store).await;
}

#[tokio::test]
async fn contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    let store = SqliteStore::connect(&url).await.unwrap();
    run_all(&store).await;
    // Migrations are idempotent: a second start over the same file works.
    store.close().await;
    let again = SqliteStore::connect(&url).await.unwrap();
    assert_eq!(again.recent_actions(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn contract_on_postgres() {
    let schema = PgSchema::create("control_contract").await;
    let store = PgStore::connect_with(schema.options()).await.unwrap();
    run_all(&store).await;
    store.close().await;
    let again = PgStore::connect_with(schema.options()).await.unwrap();
    assert_eq!(again.recent_actions(10).await.unwrap().len(), 3);
    again.close().await;
}
