//! The auth rules on a real database (SQLite file and PostgreSQL schema),
//! with a clock the tests move.

use std::{sync::Arc, time::Duration};

use bangui_testkit::postgres::PgSchema;

use super::*;
use crate::{
    clock::ManualClock,
    metrics::Metrics,
    settings::{RuntimeSettings, SettingsUpdate},
    store::{PgStore, SqliteStore, Stores, auth::Failures},
};

const PASSWORD: &str = "correct horse battery staple";
const T0: i64 = 1_800_000_000;

fn auth(stores: &Stores, clock: &ManualClock) -> Auth {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let settings = RuntimeSettings::new(stores.settings.clone(), clock.clone());
    let policy = ThrottlePolicy { per_client: 3, global: 5, window: Duration::from_secs(900) };
    Auth::new(stores.auth.clone(), settings, clock, policy, false).with_limits(
        HashLimits { concurrency: 2, queue: 4 },
        Duration::from_millis(400),
        Metrics::new(),
    )
}

/// The samples of `name` in the metrics text, summed.
fn counted(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scenarios(stores: Stores) {
    let store = stores.auth.clone();
    let clock = ManualClock::at(T0);
    let mut auth = auth(&stores, &clock);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("setup-token");

    // Setup needs the one-time token the service made at start.
    assert_eq!(auth.setup_status().await.unwrap(), (false, false));
    assert!(matches!(auth.login(PASSWORD.into(), "10.0.0.1").await, Err(AuthError::NotSetUp)));
    auth.prepare_setup(&file).await.unwrap();
    let setup_token = setup_token::read(&file).expect("a token in the file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777,
        0o600
    );
    let stored = store.setup_token().await.unwrap().expect("the token is stored");
    assert_eq!((stored.token.as_str(), stored.expires_at), (setup_token.as_str(), T0 + 86_400), "valid for 24 h");
    // A restart keeps it, and writes it again to a lost file.
    std::fs::remove_file(&file).unwrap();
    auth.prepare_setup(&file).await.unwrap();
    assert_eq!(setup_token::read(&file).unwrap(), setup_token);
    // Another replica (its own file, holding some older token) shows the
    // same one: one valid token, whatever each file held.
    let mut other = auth.clone();
    let other_file = dir.path().join("other-token");
    let older = "an-older-setup-token-that-is-no-longer-valid";
    std::fs::write(&other_file, older).unwrap();
    other.prepare_setup(&other_file).await.unwrap();
    assert_eq!(setup_token::read(&other_file).unwrap(), setup_token);
    assert_eq!(store.setup_token().await.unwrap().unwrap().token, setup_token);
    assert!(matches!(other.setup(PASSWORD.into(), older).await, Err(AuthError::SetupToken(_))));

    // At 24 h it expires: the next look replaces it, and each replica's
    // file follows at its next refresh.
    clock.advance(86_399);
    assert!(auth.refresh_setup_token(false).await.unwrap(), "still pending");
    assert_eq!(setup_token::read(&file).unwrap(), setup_token, "still valid");
    clock.advance(1);
    assert!(matches!(auth.setup(PASSWORD.into(), &setup_token).await, Err(AuthError::SetupToken(_))), "expired");
    assert!(other.refresh_setup_token(false).await.unwrap());
    let renewed = setup_token::read(&other_file).unwrap();
    assert_ne!(renewed, setup_token);
    assert_eq!(setup_token::read(&file).unwrap(), setup_token, "not yet refreshed");
    assert!(auth.refresh_setup_token(false).await.unwrap());
    assert_eq!(setup_token::read(&file).unwrap(), renewed);
    assert_eq!(store.setup_token().await.unwrap().unwrap().expires_at, T0 + 2 * 86_400);
    assert!(matches!(auth.setup(PASSWORD.into(), &setup_token).await, Err(AuthError::SetupToken(_))));
    let setup_token = renewed;

    assert!(matches!(auth.setup(PASSWORD.into(), "").await, Err(AuthError::SetupToken(_))));
    assert!(matches!(auth.setup(PASSWORD.into(), "not-the-token").await, Err(AuthError::SetupToken(_))));
    assert!(store.password().await.unwrap().is_none(), "nothing stored");
    assert!(matches!(auth.setup("short".into(), &setup_token).await, Err(AuthError::Invalid(_))));
    let racers: Vec<_> = ["first password!", "second password!", "third password!!"]
        .into_iter()
        .map(|p| {
            let (auth, setup_token) = (auth.clone(), setup_token.clone());
            tokio::spawn(async move { auth.setup(p.into(), &setup_token).await })
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
    assert!(!file.exists(), "the token file goes with the setup");
    assert_eq!(store.setup_token().await.unwrap(), None, "the token ends");
    assert!(matches!(
        other.setup(PASSWORD.into(), &setup_token::read(&other_file).unwrap()).await,
        Err(AuthError::AlreadySetUp)
    ));
    // The other replica's stale file goes when it notices (a status call
    // or its next refresh, which then says setup is done).
    assert_eq!(other.setup_status().await.unwrap(), (true, false));
    assert!(!other_file.exists());
    std::fs::write(&other_file, &setup_token).unwrap();
    assert!(!other.refresh_setup_token(false).await.unwrap(), "setup is done");
    assert!(!other_file.exists());
    assert_eq!(store.setup_token().await.unwrap(), None, "a refresh makes no token once a password exists");
    // Put a known password in place for the rest (on a clock back at T0).
    let clock = ManualClock::at(T0);
    let mut auth = self::auth(&stores, &clock);
    let phc = password::hash(PASSWORD).unwrap();
    auth.bootstrap(&phc).await.unwrap();
    assert!(matches!(auth.setup(PASSWORD.into(), &setup_token).await, Err(AuthError::AlreadySetUp)));
    assert_eq!(auth.setup_status().await.unwrap(), (true, false));
    // A start with a password set makes no token.
    auth.prepare_setup(&file).await.unwrap();
    assert!(!file.exists() && store.setup_token().await.unwrap().is_none());

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
    let settings = RuntimeSettings::new(stores.settings.clone(), Arc::new(clock.clone()));
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
        auth.change_password(&me, "10.0.0.3", "not the old one".into(), "a new password!!".into()).await,
        Err(AuthError::WrongPassword)
    ));
    assert!(auth.authenticate(&other).await.is_ok(), "a refused change ends nothing");
    auth.change_password(&me, "10.0.0.3", PASSWORD.into(), "a new password!!".into()).await.unwrap();
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

async fn throttling(stores: Stores) {
    let clock = ManualClock::at(T0);
    let auth = auth(&stores, &clock);
    auth.bootstrap(&password::hash(PASSWORD).unwrap()).await.unwrap();

    // Three failures from one address: the fourth attempt is refused even
    // with the right password, with how long to wait.
    for _ in 0..3 {
        assert!(matches!(auth.login("wrong password!".into(), "192.0.2.1").await, Err(AuthError::WrongPassword)));
        clock.advance(10);
    }
    for same in ["192.0.2.1", "::ffff:192.0.2.1"] {
        match auth.login(PASSWORD.into(), same).await {
            Err(AuthError::Throttled { scope, retry_after }) => {
                assert_eq!(scope, "from this address");
                assert_eq!(retry_after, Duration::from_secs(900 - 30), "the oldest failure leaves the window then");
            }
            other => panic!("expected throttling of {same}, got {other:?}"),
        }
    }
    // Another address is not throttled by it.
    assert!(auth.login(PASSWORD.into(), "192.0.2.2").await.is_ok());
    // IPv6: one /64 is one client.
    for host in ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"] {
        assert!(matches!(auth.login("wrong password!".into(), host).await, Err(AuthError::WrongPassword)));
    }
    assert!(matches!(
        auth.login(PASSWORD.into(), "2001:db8:0:1::99").await,
        Err(AuthError::Throttled { scope: "from this /64 network", .. })
    ));
    assert!(auth.login(PASSWORD.into(), "2001:db8:0:2::1").await.is_ok(), "the next /64 is another client");
    // A wrong old password in ChangePassword is a failed attempt too.
    let (token, _) = auth.login(PASSWORD.into(), "192.0.2.7").await.unwrap();
    let me = auth.authenticate(&token).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            auth.change_password(&me, "192.0.2.7", "not the old one".into(), "a new password!!".into()).await,
            Err(AuthError::WrongPassword)
        ));
    }
    assert!(matches!(
        auth.change_password(&me, "192.0.2.7", PASSWORD.into(), "a new password!!".into()).await,
        Err(AuthError::Throttled { .. })
    ));
    assert!(matches!(auth.login(PASSWORD.into(), "192.0.2.7").await, Err(AuthError::Throttled { .. })));

    // 9 failures overall (limit 5): nobody is refused for it, everyone waits
    // (400 ms / 10 per failure from the 5th: 5 steps, 200 ms).
    let started = std::time::Instant::now();
    let (_, _) = auth.login(PASSWORD.into(), "192.0.2.9").await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The window passes: logins work again.
    clock.advance(901);
    assert!(auth.login(PASSWORD.into(), "192.0.2.1").await.is_ok());
}

/// 40 concurrent wrong passwords from one address: exactly as many checked
/// as the limit allows, the rest refused before any hash.
async fn burst(stores: Stores) {
    let store = stores.auth.clone();
    let clock = ManualClock::at(T0);
    let metrics = Metrics::new();
    let policy = ThrottlePolicy { per_client: 5, global: 1000, window: Duration::from_secs(900) };
    let clock_arc: Arc<dyn Clock> = Arc::new(clock.clone());
    let settings = RuntimeSettings::new(stores.settings.clone(), clock_arc.clone());
    let auth = Auth::new(store.clone(), settings, clock_arc, policy, false).with_limits(
        HashLimits { concurrency: 2, queue: 8 },
        Duration::from_secs(1),
        metrics.clone(),
    );
    auth.bootstrap(&password::hash(PASSWORD).unwrap()).await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.login("wrong password!".into(), "198.51.100.1").await })
        })
        .collect();
    let (mut wrong, mut throttled, mut busy) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Err(AuthError::WrongPassword) => wrong += 1,
            Err(AuthError::Throttled { .. }) => throttled += 1,
            Err(AuthError::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(wrong, 5, "throttled {throttled}, busy {busy}");
    assert_eq!(wrong + throttled + busy, 40);
    assert_eq!(counted(&metrics, "control_password_checks_total"), 5.0, "guesses checked");
    assert_eq!(counted(&metrics, "control_login_limited_total"), f64::from(throttled + busy));

    // The store's reservation alone: 50 at once, 5 reserved.
    let reservations: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve_attempt("203.0.113.1", T0, T0 - 900, 5).await.unwrap() })
        })
        .collect();
    let mut reserved = Vec::new();
    for r in reservations {
        if let Reservation::Reserved(id) = r.await.unwrap() {
            reserved.push(id);
        }
    }
    assert_eq!(reserved.len(), 5);
    store.attempt_succeeded(reserved[0]).await.unwrap();
    let failures = store.failures_since(Some("203.0.113.1"), T0 - 900).await.unwrap();
    assert_eq!(failures, Failures { count: 4, oldest: Some(T0) }, "a success is not a failure");
    assert!(matches!(store.reserve_attempt("203.0.113.1", T0, T0 - 900, 5).await.unwrap(), Reservation::Reserved(_)));
    assert_eq!(
        store.reserve_attempt("203.0.113.1", T0 + 1, T0 - 899, 5).await.unwrap(),
        Reservation::Refused(Failures { count: 5, oldest: Some(T0) })
    );
}

#[test]
fn client_keys_and_the_slowdown() {
    assert_eq!(client_key("192.0.2.1"), "192.0.2.1");
    assert_eq!(client_key("::ffff:192.0.2.1"), "192.0.2.1");
    assert_eq!(client_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    assert_eq!(client_key("unknown"), "unknown");
    let policy = ThrottlePolicy { per_client: 5, global: 20, window: Duration::from_secs(900) };
    let max = Duration::from_secs(3);
    assert_eq!(policy.slowdown(19, max), Duration::ZERO);
    assert_eq!(policy.slowdown(20, max), Duration::from_millis(300));
    assert_eq!(policy.slowdown(24, max), Duration::from_millis(1500));
    assert_eq!(policy.slowdown(29, max), max);
    assert_eq!(policy.slowdown(u64::MAX, max), max, "capped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("control.db").display());
    scenarios(Stores::of(SqliteStore::connect(&url).await.unwrap())).await;
    let url = format!("sqlite://{}", dir.path().join("throttle.db").display());
    throttling(Stores::of(SqliteStore::connect(&url).await.unwrap())).await;
    let url = format!("sqlite://{}", dir.path().join("burst.db").display());
    burst(Stores::of(SqliteStore::connect(&url).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_on_postgres() {
    let schema = PgSchema::create("control_auth").await;
    let stores = Stores::of(PgStore::connect_with(schema.options()).await.unwrap());
    scenarios(stores.clone()).await;
    stores.pool.close().await;
    let schema = PgSchema::create("control_throttle").await;
    throttling(Stores::of(PgStore::connect_with(schema.options()).await.unwrap())).await;
    let schema = PgSchema::create("control_burst").await;
    burst(Stores::of(PgStore::connect_with(schema.options()).await.unwrap())).await;
}
