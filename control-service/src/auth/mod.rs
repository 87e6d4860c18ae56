//! The master password, sessions and login throttling.
//!
//! * [`password`]: argon2id hashing (PHC strings).
//! * [`token`]: 256-bit session tokens; only their SHA-256 is stored.
//! * [`SessionGate`]: the gate in front of every control gRPC service.
//!
//! Sessions live in the control database, so every replica accepts them and
//! a logout ends them everywhere at once. A session's expiry is fixed at
//! login (`session_duration`, a runtime setting): it does not slide. Login
//! failures are counted in the database per client address and overall, so
//! the limits hold across replicas.

pub mod password;
pub mod token;

use std::{sync::Arc, time::Duration};

use bangui_runtime::guard::{Gate, bearer_token};
use subtle::ConstantTimeEq;
use tonic::{Status, body::Body};

use crate::{
    clock::Clock,
    fail2ban::InvalidArgument,
    settings::SettingsStore,
    store::{ControlStore, SessionRow, StoreError},
};

/// How many failed logins are allowed, per client and overall, in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub per_client: u32,
    pub global: u32,
    pub window: Duration,
}

/// A caller's session, as handlers see it (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token_sha256: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub client: String,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            token_sha256: row.token_sha256,
            created_at: row.created_at,
            expires_at: row.expires_at,
            client: row.client,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("a password is already set")]
    AlreadySetUp,
    #[error("no password is set yet: call Setup first")]
    NotSetUp,
    #[error("the password is managed by --admin-password-hash and cannot be changed here")]
    ManagedByConfig,
    #[error("wrong password")]
    WrongPassword,
    #[error("too many failed logins {scope}; retry in {}s", retry_after.as_secs())]
    Throttled { scope: &'static str, retry_after: Duration },
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("the password changed meanwhile; try again")]
    Conflict,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The password and sessions.
#[derive(Debug, Clone)]
pub struct Auth {
    store: Arc<dyn ControlStore>,
    settings: SettingsStore,
    clock: Arc<dyn Clock>,
    throttle: ThrottlePolicy,
    managed_by_config: bool,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AuthError::Hash(e.to_string()))
}

impl Auth {
    pub fn new(
        store: Arc<dyn ControlStore>,
        settings: SettingsStore,
        clock: Arc<dyn Clock>,
        throttle: ThrottlePolicy,
        managed_by_config: bool,
    ) -> Self {
        Self { store, settings, clock, throttle, managed_by_config }
    }

    /// At start, with `--admin-password-hash`: that hash is the password.
    /// Sessions survive when it is unchanged and end when it changed.
    pub async fn bootstrap(&self, phc: &str) -> Result<(), AuthError> {
        if self.store.password().await?.as_deref() == Some(phc) {
            return Ok(());
        }
        self.store.replace_password(None, phc, self.clock.now(), None).await?;
        tracing::info!("master password set from --admin-password-hash; existing sessions ended");
        Ok(())
    }

    /// (password set, managed by configuration).
    pub async fn setup_status(&self) -> Result<(bool, bool), AuthError> {
        Ok((self.store.password().await?.is_some(), self.managed_by_config))
    }

    pub async fn setup(&self, password: String) -> Result<(), AuthError> {
        password::check_new("password", &password)?;
        if self.store.password().await?.is_some() {
            return Err(AuthError::AlreadySetUp);
        }
        let phc = blocking(move || password::hash(&password)).await?.map_err(AuthError::Hash)?;
        // The insert decides: of concurrent callers exactly one sets it.
        if self.store.set_password_if_absent(&phc, self.clock.now()).await? {
            tracing::info!("master password set up");
            Ok(())
        } else {
            Err(AuthError::AlreadySetUp)
        }
    }

    /// A new session for the right password; `client` is the caller's address.
    pub async fn login(&self, password: String, client: &str) -> Result<(String, i64), AuthError> {
        let now = self.clock.now();
        self.check_throttle(client, now).await?;
        let Some(phc) = self.store.password().await? else { return Err(AuthError::NotSetUp) };
        let ok = blocking(move || password::verify(&phc, &password)).await?;
        self.store.record_login(client, now, ok).await?;
        if !ok {
            tracing::warn!(client, "login failed: wrong password");
            return Err(AuthError::WrongPassword);
        }
        let duration = i64::try_from(self.settings.get().await?.session_duration.as_secs()).unwrap_or(i64::MAX);
        let (token, token_sha256) = token::new_token();
        let row = SessionRow {
            token_sha256,
            created_at: now,
            expires_at: now.saturating_add(duration),
            client: client.to_owned(),
        };
        self.store.insert_session(&row).await?;
        tracing::info!(client, expires_at = row.expires_at, "login succeeded");
        Ok((token, row.expires_at))
    }

    async fn check_throttle(&self, client: &str, now: i64) -> Result<(), AuthError> {
        let window = i64::try_from(self.throttle.window.as_secs()).unwrap_or(i64::MAX);
        let since = now.saturating_sub(window);
        for (scope, who, limit) in
            [("from this address", Some(client), self.throttle.per_client), ("overall", None, self.throttle.global)]
        {
            let failures = self.store.failures_since(who, since).await?;
            if failures.count >= u64::from(limit) {
                let oldest = failures.oldest.unwrap_or(now);
                let wait = (oldest.saturating_add(window) - now).max(1);
                tracing::warn!(client, scope, failures = failures.count, "login throttled");
                return Err(AuthError::Throttled {
                    scope,
                    retry_after: Duration::from_secs(u64::try_from(wait).unwrap_or(1)),
                });
            }
        }
        Ok(())
    }

    /// The live session of `token`.
    pub async fn authenticate(&self, token: &str) -> Result<Session, AuthError> {
        let digest = token::digest(token);
        let Some(row) = self.store.session(&digest).await? else {
            return Err(AuthError::Unauthenticated("unknown or ended session"));
        };
        // The lookup matched on the digest; compare again in constant time.
        if !bool::from(row.token_sha256.as_slice().ct_eq(&digest)) {
            return Err(AuthError::Unauthenticated("unknown or ended session"));
        }
        if row.expires_at <= self.clock.now() {
            self.store.delete_session(&digest).await?;
            return Err(AuthError::Unauthenticated("session expired: log in again"));
        }
        Ok(row.into())
    }

    pub async fn logout(&self, session: &Session) -> Result<(), AuthError> {
        self.store.delete_session(&session.token_sha256).await?;
        tracing::info!(client = %session.client, "logout");
        Ok(())
    }

    /// Changes the password; every session but `session` ends.
    pub async fn change_password(&self, session: &Session, old: String, new: String) -> Result<(), AuthError> {
        if self.managed_by_config {
            return Err(AuthError::ManagedByConfig);
        }
        password::check_new("new_password", &new)?;
        let Some(current) = self.store.password().await? else { return Err(AuthError::NotSetUp) };
        let (ok, current, phc) = blocking(move || {
            let ok = password::verify(&current, &old);
            (ok, current, if ok { Some(password::hash(&new)) } else { None })
        })
        .await?;
        if !ok {
            tracing::warn!(client = %session.client, "password change refused: wrong old password");
            return Err(AuthError::WrongPassword);
        }
        let phc = phc.unwrap_or_else(|| Err("not hashed".into())).map_err(AuthError::Hash)?;
        if !self.store.replace_password(Some(&current), &phc, self.clock.now(), Some(&session.token_sha256)).await? {
            return Err(AuthError::Conflict);
        }
        tracing::info!(client = %session.client, "password changed; other sessions ended");
        Ok(())
    }

    /// Deletes expired sessions (and old login attempts); returns how many
    /// sessions went. The scheduler runs it hourly.
    pub async fn cleanup(&self) -> Result<u64, AuthError> {
        let now = self.clock.now();
        let keep = i64::try_from(self.throttle.window.as_secs()).unwrap_or(0).max(86_400);
        Ok(self.store.delete_expired(now, now - keep).await?)
    }
}

/// Lets a request through with a live session (added to the request's
/// extensions as [`Session`]), or to one of the `open` methods
/// (`/package.Service/Method`) without one.
#[derive(Debug, Clone)]
pub struct SessionGate {
    auth: Auth,
    open: &'static [&'static str],
}

impl SessionGate {
    pub fn new(auth: Auth, open: &'static [&'static str]) -> Self {
        Self { auth, open }
    }
}

impl Gate for SessionGate {
    async fn admit(&self, request: &mut http::Request<Body>) -> Result<(), Status> {
        if self.open.contains(&request.uri().path()) {
            return Ok(());
        }
        let Some(token) = bearer_token(request) else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <token>` metadata: log in first"));
        };
        let session = self.auth.authenticate(token).await.map_err(Status::from)?;
        request.extensions_mut().insert(session);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
