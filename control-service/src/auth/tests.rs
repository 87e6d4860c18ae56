//! The auth rules on a real database (SQLite file and PostgreSQL schema),
//! with a clock the tests move.

use std::{sync::Arc, time::Duration};

use bangui_testkit::postgres::PgSchema;

use super::*;
use crate::{
    clock::ManualClock,
    settings::{SettingsStore, SettingsUpdate},
    store::{postgres::PgStore, sqlite::SqliteStore},
};

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn auth(store: Arc<dyn ControlStore>, clock: &ManualClock) -> Auth {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let settings = SettingsStore::new(store.clone(), clock.clone());
    let policy = ThrottlePolicy { per_client: 3, global: 5, window: Duration::from_secs(900) };
    Auth::new(store, settings, clock, policy, false)
}

async fn scenarios(store: Arc<dyn ControlStore>) {
    let clock = ManualClock::at(T0);
    let auth = auth(store.clone(), &clock);

    // Setup: once, then refused; a short password is refused first.
    assert_eq!(auth.setup_status().await.unwrap(), (false, false));
    assert!(matches!(auth.login(PASSWORD.into(), "10.0.0.1").await, Err(AuthError::NotSetUp)));
    assert!(matches!(auth.setup("short".into()).await, Err(AuthError::Invalid(_))));
    let racers: Vec<_> = ["first password!", "second password!", "third password!!"]
        .into_iter()
        .map(|p| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.setup(p.into()).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(()) => won += 1,
            Err(AuthError::AlreadySetUp) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one concurrent Setup wins");
    // Put a known password in place for the rest.
    let phc = password::hash(PASSWORD).unwrap();
    auth.bootstrap(&phc).await.unwrap();
    assert!(matches!(auth.setup(PASSWORD.into()).await, Err(AuthError::AlreadySetUp)));
    assert_eq!(auth.setup_status().await.unwrap(), (true, false));

    // Login: the right password gives a token that works; a wrong one does not.
    let (token, expires_at) = auth.login(PASSWORD.into(), "10.0.0.1").await.unwrap();
    assert_eq!(expires_at, T0 + 3600, "default session_duration is 60 minutes, fixed at login");
    let session = auth.authenticate(&token).await.unwrap();
    assert_eq!((session.created_at, session.client.as_str()), (T0, "10.0.0.1"));
    assert!(matches!(auth.login("wrong password!".into(), "10.0.0.1").await, Err(AuthError::WrongPassword)));
    assert!(matches!(auth.authenticate("not-a-token").await, Err(AuthError::Unauthenticated(_))));

    // Logout ends it at once.
    auth.logout(&session).await.unwrap();
    assert!(matches!(auth.authenticate(&token).await, Err(AuthError::Unauthenticated(_))));

    // Expiry ends it; a shorter session_duration applies to new logins.
    let (token, _) = auth.login(PASSWORD.into(), "10.0.0.2").await.unwrap();
    clock.advance(3599);
    assert!(auth.authenticate(&token).await.is_ok(), "not yet: the session does not slide, nor end early");
    clock.advance(1);
    assert!(matches!(auth.authenticate(&token).await, Err(AuthError::Unauthenticated(m)) if m.contains("expired")));
    let settings = SettingsStore::new(store.clone(), Arc::new(clock.clone()));
    settings
        .update(&SettingsUpdate { session_duration: Some(Duration::from_secs(60)), ..Default::default() })
        .await
        .unwrap();
    let (_, expires_at) = auth.login(PASSWORD.into(), "10.0.0.2").await.unwrap();
    assert_eq!(expires_at, clock.now() + 60);

    // ChangePassword ends every other session, keeps the caller's.
    let (mine, _) = auth.login(PASSWORD.into(), "10.0.0.3").await.unwrap();
    let (other, _) = auth.login(PASSWORD.into(), "10.0.0.4").await.unwrap();
    let me = auth.authenticate(&mine).await.unwrap();
    assert!(matches!(
        auth.change_password(&me, "not the old one".into(), "a new password!!".into()).await,
        Err(AuthError::WrongPassword)
    ));
    assert!(auth.authenticate(&other).await.is_ok(), "a refused change ends nothing");
    auth.change_password(&me, PASSWORD.into(), "a new password!!".into()).await.unwrap();
    assert!(auth.authenticate(&mine).await.is_ok());
    assert!(matches!(auth.authenticate(&other).await, Err(AuthError::Unauthenticated(_))));
    assert!(matches!(auth.login(PASSWORD.into(), "10.0.0.5").await, Err(AuthError::WrongPassword)));
    let (_, _) = auth.login("a new password!!".into(), "10.0.0.5").await.unwrap();

    // Stored rows hold neither the token nor the password.
    let stored = store.session(&token::digest(&mine)).await.unwrap().unwrap();
    assert_ne!(stored.token_sha256, mine.as_bytes());
    assert_eq!(stored.token_sha256.len(), 32);
    let phc = store.password().await.unwrap().unwrap();
    assert!(phc.starts_with("$argon2id$") && !phc.contains("a new password"));

    // Cleanup deletes the expired sessions and says how many.
    clock.advance(61);
    assert!(auth.cleanup().await.unwrap() >= 2);
    assert!(matches!(auth.authenticate(&mine).await, Err(AuthError::Unauthenticated(_))));
}

async fn throttling(store: Arc<dyn ControlStore>) {
    let clock = ManualClock::at(T0);
    let auth = auth(store.clone(), &clock);
    auth.bootstrap(&password::hash(PASSWORD).unwrap()).await.unwrap();

    // Three failures from one address: the fourth attempt is refused even
    // with the right password, with how long to wait.
    for _ in 0..3 {
        assert!(matches!(auth.login("wrong password!".into(), "192.0.2.1").await, Err(AuthError::WrongPassword)));
        clock.advance(10);
    }
    match auth.login(PASSWORD.into(), "192.0.2.1").await {
        Err(AuthError::Throttled { scope, retry_after }) => {
            assert_eq!(scope, "from this address");
            assert_eq!(retry_after, Duration::from_secs(900 - 30), "the oldest failure leaves the window then");
        }
        other => panic!("expected throttling, got {other:?}"),
    }
    // Another address is not throttled by it...
    assert!(auth.login(PASSWORD.into(), "192.0.2.2").await.is_ok());
    // ...until failures from everyone reach the global limit (5).
    assert!(auth.login("wrong password!".into(), "192.0.2.3").await.is_err());
    assert!(auth.login("wrong password!".into(), "192.0.2.4").await.is_err());
    assert!(matches!(
        auth.login(PASSWORD.into(), "192.0.2.5").await,
        Err(AuthError::Throttled { scope: "overall", .. })
    ));
    // The window passes: logins work again.
    clock.advance(901);
    assert!(auth.login(PASSWORD.into(), "192.0.2.1").await.is_ok());
}

#[tokio::test]
async fn auth_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    scenarios(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
    let url = format!("sqlite://{}", dir.path().join("throttle.db").display());
    throttling(Arc::new(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test]
async fn auth_on_postgres() {
    let schema = PgSchema::create("control_auth").await;
    let store = PgStore::connect_with(schema.options()).await.unwrap();
    scenarios(Arc::new(store.clone())).await;
    store.close().await;
    let schema = PgSchema::create("control_throttle").await;
    throttling(Arc::new(PgStore::connect_with(schema.options()).await.unwrap())).await;
}
