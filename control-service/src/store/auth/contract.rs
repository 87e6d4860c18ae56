//! [`AuthStore`] on both backends: one setup token at a time that only one
//! caller can use, password swaps that notice a change, sessions, and login
//! attempts counted per client and overall.

use super::*;
use crate::store::{Pool, testing};

/// A setup token of `byte`s, valid from `created_at` until `expires_at`.
fn setup_token(byte: char, created_at: i64, expires_at: i64) -> SetupTokenRow {
    SetupTokenRow { token: byte.to_string().repeat(43), created_at, expires_at }
}

/// A PHC string (the table takes argon2id ones only).
fn phc(n: u8) -> String {
    format!("$argon2id$v=19$m=19456,t=2,p=1$salt{n}$hash{n}")
}

fn session(token: u8, expires_at: i64) -> SessionRow {
    SessionRow { token_sha256: vec![token; 32], created_at: 100, expires_at, client: "192.0.2.1".into() }
}

async fn setup_and_password(store: &impl AuthStore) {
    assert_eq!(store.password().await.unwrap(), None);
    assert_eq!(store.setup_token().await.unwrap(), None);
    // One token at a time: a second replica's candidate gets the first one.
    let (a, b, c) = (setup_token('a', 1, 100), setup_token('b', 2, 102), setup_token('c', 3, 103));
    // Replicas racing for the first token all get the same one.
    let raced = tokio::join!(store.ensure_setup_token(&a, 1), store.ensure_setup_token(&b, 1));
    let (first, second) = (raced.0.unwrap().unwrap(), raced.1.unwrap().unwrap());
    assert_eq!(first, second);
    assert!(first == a || first == b);
    store.clear_setup_token().await.unwrap();
    assert_eq!(store.ensure_setup_token(&a, 1).await.unwrap(), Some(a.clone()));
    assert_eq!(store.ensure_setup_token(&b, 2).await.unwrap(), Some(a.clone()), "the stored one wins");
    assert_eq!(store.setup_token().await.unwrap(), Some(a.clone()));
    assert_eq!(store.ensure_setup_token(&b, 99).await.unwrap(), Some(a.clone()), "valid until 100");
    // Expired: replaced by the next candidate.
    assert_eq!(store.ensure_setup_token(&b, 100).await.unwrap(), Some(b.clone()));
    assert_eq!(store.setup_token().await.unwrap(), Some(b.clone()));
    store.clear_setup_token().await.unwrap();
    assert_eq!(store.setup_token().await.unwrap(), None);
    assert_eq!(store.ensure_setup_token(&b, 100).await.unwrap(), Some(b.clone()));
    // Setup needs the current token, before it expires.
    assert!(!store.complete_setup(&phc(0), 50, &a.token).await.unwrap(), "a replaced token sets nothing");
    assert!(!store.complete_setup(&phc(0), 102, &b.token).await.unwrap(), "an expired token sets nothing");
    assert_eq!((store.password().await.unwrap(), store.setup_token().await.unwrap()), (None, Some(b.clone())));
    assert!(store.complete_setup(&phc(1), 101, &b.token).await.unwrap());
    assert_eq!(store.password().await.unwrap().as_deref(), Some(phc(1).as_str()));
    assert_eq!(store.setup_token().await.unwrap(), None, "the token ends with the setup");
    // Once a password exists no token is stored, and none sets anything.
    assert_eq!(store.ensure_setup_token(&c, 4).await.unwrap(), None);
    assert_eq!(store.setup_token().await.unwrap(), None);
    assert!(!store.complete_setup(&phc(2), 5, &c.token).await.unwrap());
    assert_eq!(store.password().await.unwrap().as_deref(), Some(phc(1).as_str()));

    // A swap checks the password it replaces, and ends the other sessions.
    for token in 1..=3 {
        store.insert_session(&session(token, 1_000)).await.unwrap();
    }
    assert!(!store.replace_password(Some(&phc(9)), &phc(3), 6, None).await.unwrap(), "changed meanwhile");
    assert_eq!(store.password().await.unwrap().as_deref(), Some(phc(1).as_str()));
    assert!(store.session(&[3; 32]).await.unwrap().is_some(), "a refused swap ends nothing");
    assert!(store.replace_password(Some(&phc(1)), &phc(3), 6, Some(&[1; 32])).await.unwrap());
    assert_eq!(store.password().await.unwrap().as_deref(), Some(phc(3).as_str()));
    assert!(store.session(&[1; 32]).await.unwrap().is_some(), "the caller's session stays");
    assert!(store.session(&[2; 32]).await.unwrap().is_none() && store.session(&[3; 32]).await.unwrap().is_none());
    // From configuration: any password is replaced, every session ends.
    assert!(store.replace_password(None, &phc(4), 7, None).await.unwrap());
    assert_eq!(store.password().await.unwrap().as_deref(), Some(phc(4).as_str()));
    assert!(store.session(&[1; 32]).await.unwrap().is_none());
}

async fn sessions(store: &impl AuthStore) {
    let short = session(7, 200);
    let long = session(8, 300);
    store.insert_session(&short).await.unwrap();
    store.insert_session(&long).await.unwrap();
    assert_eq!(store.session(&short.token_sha256).await.unwrap(), Some(short.clone()));
    assert_eq!(store.session(&[9; 32]).await.unwrap(), None);
    assert!(!store.delete_session(&[9; 32]).await.unwrap(), "no such session");
    // Expired at `now` inclusive.
    assert_eq!(store.delete_expired(199, 0).await.unwrap(), 0);
    assert_eq!(store.delete_expired(200, 0).await.unwrap(), 1);
    assert_eq!(store.session(&short.token_sha256).await.unwrap(), None);
    assert!(store.delete_session(&long.token_sha256).await.unwrap());
    assert_eq!(store.session(&long.token_sha256).await.unwrap(), None);
}

async fn attempts(store: &impl AuthStore) {
    assert_eq!(store.failures_since(None, 0).await.unwrap(), Failures { count: 0, oldest: None });
    let mut ids = Vec::new();
    for at in [10, 11, 12] {
        match store.reserve_attempt("198.51.100.1", at, 0, 3).await.unwrap() {
            Reservation::Reserved(id) => ids.push(id),
            refused => panic!("{refused:?}"),
        }
    }
    assert_eq!(
        store.reserve_attempt("198.51.100.1", 13, 0, 3).await.unwrap(),
        Reservation::Refused(Failures { count: 3, oldest: Some(10) }),
        "at the limit: refused with the failures"
    );
    assert!(matches!(store.reserve_attempt("198.51.100.2", 13, 0, 3).await.unwrap(), Reservation::Reserved(_)));
    // A success is not a failure: a place frees up.
    store.attempt_succeeded(ids[0]).await.unwrap();
    assert_eq!(store.failures_since(Some("198.51.100.1"), 0).await.unwrap(), Failures { count: 2, oldest: Some(11) });
    assert!(matches!(store.reserve_attempt("198.51.100.1", 14, 0, 3).await.unwrap(), Reservation::Reserved(_)));
    // The window: only attempts at or after `since` count.
    assert_eq!(store.failures_since(Some("198.51.100.1"), 12).await.unwrap(), Failures { count: 2, oldest: Some(12) });
    assert!(matches!(store.reserve_attempt("198.51.100.1", 15, 12, 3).await.unwrap(), Reservation::Reserved(_)));
    assert_eq!(store.failures_since(None, 0).await.unwrap(), Failures { count: 5, oldest: Some(11) });
    // Old attempts go with the expired sessions.
    store.delete_expired(0, 13).await.unwrap();
    assert_eq!(store.failures_since(None, 0).await.unwrap(), Failures { count: 3, oldest: Some(13) });
}

async fn run_all(store: &impl AuthStore) {
    setup_and_password(store).await;
    sessions(store).await;
    attempts(store).await;
}

#[tokio::test]
async fn auth_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = testing::sqlite_in(&dir, "control.db").await;
    run_all(&store).await;
    store.close().await;
}

#[tokio::test]
async fn auth_store_on_postgres() {
    let (store, _schema) = testing::postgres("control_auth_store").await;
    run_all(&store).await;
    store.close().await;
}
