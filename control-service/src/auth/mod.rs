//! The master password, sessions and login throttling.
//!
//! * [`password`]: argon2id hashing (PHC strings).
//! * [`token`]: 256-bit session tokens; only their SHA-256 is stored.
//! * [`SessionGate`]: the gate in front of every control gRPC service.
//!
//! Sessions live in the control database, so every replica accepts them and
//! a logout ends them everywhere at once. A session's expiry is fixed at
//! login (`session_duration`, a runtime setting): it does not slide. Login
//! attempts are counted in the database per client key and overall, before
//! the password is checked (see [`ThrottlePolicy`] and
//! [`crate::store::AuthStore::reserve_attempt`]).
//!
//! What holds across replicas sharing one PostgreSQL: a client key's
//! attempts are reserved under a transaction-scoped advisory lock on that
//! key, so at most `per_client` passwords per key are checked in a window
//! over the whole cluster (windows are judged by each replica's clock, so
//! clock skew between replicas shifts them by the skew). The overall count
//! that slows logins down is read from the same table, without a lock: a
//! burst may be slowed by a count a few attempts old. The bound on hashes
//! at once (`--password-hash-concurrency`) is per process.

pub mod hasher;
pub mod password;
pub mod setup_token;
pub mod token;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bangui_runtime::guard::{Gate, bearer_token};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tonic::{Status, body::Body};

use crate::{
    clock::Clock,
    error::InvalidArgument,
    metrics::Metrics,
    settings::RuntimeSettings,
    store::{
        AuthStore, StoreError,
        auth::{Failures, Reservation, SessionRow, SetupTokenRow},
    },
};

pub use hasher::{HashLimits, Hasher};

/// The login policy (README, "Login policy"): failed attempts are counted
/// per client key ([`client_key`]) and overall over `window`. A client key
/// gets `per_client` attempts that fail in a window (each counted before
/// its password is checked); past that it is refused until the oldest
/// leaves the window. Past `global` failures overall, every attempt waits
/// first: `slowdown_max / 10` for each failure from `global` on, at most
/// `slowdown_max`. Nobody is refused for what others did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub per_client: u32,
    pub global: u32,
    pub window: Duration,
}

impl ThrottlePolicy {
    /// How long an attempt waits when `failures` failed overall in the window.
    pub fn slowdown(&self, failures: u64, max: Duration) -> Duration {
        let Some(over) = failures.checked_sub(u64::from(self.global)) else { return Duration::ZERO };
        let steps = u32::try_from(over.saturating_add(1)).unwrap_or(u32::MAX).min(10);
        (max / 10).saturating_mul(steps).min(max)
    }
}

/// The key failures are counted under: an IPv4 address (/32, IPv4-mapped
/// IPv6 included), or the /64 of an IPv6 address (one host usually has the
/// whole /64). Anything else (no address known) is its own key.
pub fn client_key(client: &str) -> String {
    match client.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ipnet::Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        },
        Err(_) => client.to_owned(),
    }
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
    #[error("too many password checks at once; retry in {}s", hasher::BUSY_RETRY.as_secs())]
    Busy,
    #[error("{0}")]
    SetupToken(&'static str),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("the password changed meanwhile; try again")]
    Conflict,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<hasher::Busy> for AuthError {
    fn from(_: hasher::Busy) -> Self {
        AuthError::Busy
    }
}

impl From<hasher::Failed> for AuthError {
    fn from(error: hasher::Failed) -> Self {
        AuthError::Hash(error.0)
    }
}

/// What a checked password is for (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Login,
    ChangePassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::ChangePassword => "change_password",
        }
    }
}

/// The password and sessions.
#[derive(Debug, Clone)]
pub struct Auth {
    store: Arc<dyn AuthStore>,
    settings: RuntimeSettings,
    clock: Arc<dyn Clock>,
    throttle: ThrottlePolicy,
    managed_by_config: bool,
    hasher: Hasher,
    slowdown_max: Duration,
    metrics: Metrics,
    /// Where this replica keeps its setup token.
    setup_token_file: Option<PathBuf>,
    /// Whether the last write of the token file failed (its error is
    /// logged once, not at every retry).
    setup_token_write_failed: Arc<AtomicBool>,
    /// Password attempts under way in this process, per client key.
    in_progress: Arc<Mutex<HashMap<String, usize>>>,
}

/// One attempt under way for a client key; released when dropped. A client
/// key has at most `per_client` attempts under way in a process (no more
/// than it may fail in a window); more are refused at once, so a flood from
/// one address cannot fill the process's in-flight requests with attempts
/// waiting out the slowdown and crowd out other clients' logins.
struct InProgress {
    map: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl InProgress {
    fn enter(map: &Arc<Mutex<HashMap<String, usize>>>, key: &str, limit: usize) -> Option<Self> {
        let mut entries = map.lock().unwrap_or_else(PoisonError::into_inner);
        let count = entries.entry(key.to_owned()).or_insert(0);
        if *count >= limit.max(1) {
            return None;
        }
        *count += 1;
        Some(Self { map: map.clone(), key: key.to_owned() })
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut entries = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = entries.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                entries.remove(&self.key);
            }
        }
    }
}

impl Auth {
    pub fn new(
        store: Arc<dyn AuthStore>,
        settings: RuntimeSettings,
        clock: Arc<dyn Clock>,
        throttle: ThrottlePolicy,
        managed_by_config: bool,
    ) -> Self {
        Self {
            store,
            settings,
            clock,
            throttle,
            managed_by_config,
            hasher: Hasher::new(HashLimits::default()),
            slowdown_max: Duration::from_secs(3),
            metrics: Metrics::new(),
            setup_token_file: None,
            setup_token_write_failed: Arc::default(),
            in_progress: Arc::default(),
        }
    }

    /// The hashing bounds, the longest slowdown and the metrics to count in.
    #[must_use]
    pub fn with_limits(mut self, hash: HashLimits, slowdown_max: Duration, metrics: Metrics) -> Self {
        self.hasher = Hasher::new(hash);
        self.slowdown_max = slowdown_max;
        self.metrics = metrics;
        self
    }

    /// At start, with `--admin-password-hash`: that hash is the password.
    /// Sessions survive when it is unchanged and end when it changed.
    pub async fn bootstrap(&self, phc: &str) -> Result<(), AuthError> {
        self.store.clear_setup_token().await?;
        if self.store.password().await?.as_deref() == Some(phc) {
            return Ok(());
        }
        self.store.replace_password(None, phc, self.clock.now(), None).await?;
        tracing::info!("master password set from --admin-password-hash; existing sessions ended");
        Ok(())
    }

    /// At start: while no password exists, makes sure `file` holds the
    /// current setup token (see [`Auth::refresh_setup_token`]) and logs
    /// where it is, never the token; once a password exists, removes the
    /// file.
    pub async fn prepare_setup(&mut self, file: &Path) -> Result<(), AuthError> {
        // Logged as an absolute path: the operator may not know the working directory.
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        self.setup_token_file = Some(file);
        self.refresh_setup_token(true).await?;
        Ok(())
    }

    /// While no password exists: the one setup token of the whole cluster
    /// (replicas sharing a database share it) is the stored one while it is
    /// valid, else a new one valid for [`setup_token::LIFETIME`]; this
    /// replica's token file is rewritten when it does not hold it. Once a
    /// password exists: no token, no file. Returns whether setup is still
    /// pending. `at_start` logs where the token is even when nothing changed.
    pub async fn refresh_setup_token(&self, at_start: bool) -> Result<bool, AuthError> {
        let Some(file) = self.setup_token_file.clone() else { return Ok(false) };
        if self.store.password().await?.is_some() {
            // A token stored by a replica that raced a Setup goes here too.
            self.store.clear_setup_token().await?;
            self.remove_setup_token_file().await;
            return Ok(false);
        }
        let now = self.clock.now();
        let (token, _) = token::new_token();
        let lifetime = i64::try_from(setup_token::LIFETIME.as_secs()).unwrap_or(i64::MAX);
        let candidate = SetupTokenRow { token, created_at: now, expires_at: now.saturating_add(lifetime) };
        let Some(current) = self.store.ensure_setup_token(&candidate, now).await? else {
            self.remove_setup_token_file().await;
            return Ok(false);
        };
        let made = current.token == candidate.token;
        let expires_at = current.expires_at;
        let shown = setup_token::off_runtime({
            let file = file.clone();
            move || Ok(setup_token::read(&file))
        })
        .await
        .ok()
        .flatten();
        if shown.as_deref() == Some(current.token.as_str()) {
            if at_start {
                tracing::warn!(
                    setup_token_file = %file.display(),
                    expires_at,
                    "setup pending: the one-time setup token is in the file; call AuthService/Setup with it"
                );
            }
            return Ok(true);
        }
        let written = setup_token::off_runtime({
            let file = file.clone();
            move || setup_token::write(&file, &current.token)
        })
        .await;
        match written {
            Ok(()) => {
                self.setup_token_write_failed.store(false, Ordering::Relaxed);
                let what = if made {
                    "setup pending: a new one-time setup token is in the file; call AuthService/Setup with it"
                } else {
                    "setup pending: the current one-time setup token was written to the file; call AuthService/Setup with it"
                };
                tracing::warn!(setup_token_file = %file.display(), expires_at, "{what}");
            }
            // Logged once until a write succeeds again (the refresh retries).
            Err(error) if !self.setup_token_write_failed.swap(true, Ordering::Relaxed) => tracing::error!(
                setup_token_file = %file.display(),
                %error,
                "cannot write the setup token file (it is never logged): fix the path or its permissions \
                 (--setup-token-file); the service tries again every {}s",
                setup_token::REFRESH.as_secs()
            ),
            Err(_) => {}
        }
        Ok(true)
    }

    /// Keeps this replica's token file current until setup is done or
    /// `stop` is cancelled: a token that expired is replaced, a file that
    /// was deleted or holds another token is rewritten, and the file goes
    /// once a password exists (set on any replica).
    pub async fn keep_setup_token_file(&self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(setup_token::REFRESH);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => match self.refresh_setup_token(false).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => tracing::warn!(%error, "cannot check the setup token; trying again"),
                },
            }
        }
    }

    async fn remove_setup_token_file(&self) {
        let Some(file) = self.setup_token_file.clone() else { return };
        let removed = setup_token::off_runtime({
            let file = file.clone();
            move || std::fs::remove_file(file)
        })
        .await;
        match removed {
            Ok(()) => tracing::info!(setup_token_file = %file.display(), "a password is set: setup token file removed"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(setup_token_file = %file.display(), %error, "cannot remove the setup token file")
            }
        }
    }

    /// (password set, managed by configuration). A replica whose token
    /// file outlived setup (done on another replica) removes it here.
    pub async fn setup_status(&self) -> Result<(bool, bool), AuthError> {
        let set = self.store.password().await?.is_some();
        if set && self.setup_token_file.is_some() {
            self.remove_setup_token_file().await;
        }
        Ok((set, self.managed_by_config))
    }

    /// Sets the first password; needs the current setup token.
    pub async fn setup(&self, password: String, setup_token: &str) -> Result<(), AuthError> {
        if self.store.password().await?.is_some() {
            return Err(AuthError::AlreadySetUp);
        }
        if setup_token.is_empty() {
            return Err(AuthError::SetupToken(
                "Setup needs setup_token: the one-time token in the control-service's setup token file \
                 (its log names the file)",
            ));
        }
        let now = self.clock.now();
        let current = self.store.setup_token().await?;
        // Compared in constant time; only the right token reaches the
        // database's own comparison below.
        let valid = current
            .as_ref()
            .is_some_and(|row| row.expires_at > now && bool::from(row.token.as_bytes().ct_eq(setup_token.as_bytes())));
        if !valid {
            // A concurrent Setup may have just consumed the token.
            if self.store.password().await?.is_some() {
                return Err(AuthError::AlreadySetUp);
            }
            tracing::warn!("Setup refused: wrong or expired setup token");
            return Err(AuthError::SetupToken(WRONG_SETUP_TOKEN));
        }
        password::check_new("password", &password)?;
        let phc = self.hasher.admit()?.run(move |memory| password::hash_in(&password, memory)).await?;
        let phc = phc.map_err(AuthError::Hash)?;
        // The token's deletion decides: of concurrent callers exactly one sets it.
        if self.store.complete_setup(&phc, self.clock.now(), setup_token).await? {
            tracing::info!("master password set up; setup token deleted");
            self.remove_setup_token_file().await;
            Ok(())
        } else if self.store.password().await?.is_some() {
            Err(AuthError::AlreadySetUp)
        } else {
            // It expired while the password was hashed.
            Err(AuthError::SetupToken(WRONG_SETUP_TOKEN))
        }
    }

    /// A new session for the right password; `client` is the caller's address.
    pub async fn login(&self, password: String, client: &str) -> Result<(String, i64), AuthError> {
        let Some(phc) = self.store.password().await? else { return Err(AuthError::NotSetUp) };
        if !self.check_password(Purpose::Login, phc, password, client).await? {
            tracing::warn!(client, "login failed: wrong password");
            return Err(AuthError::WrongPassword);
        }
        let now = self.clock.now();
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

    /// Whether `password` matches `phc`, under the login policy: refused
    /// for a client over its limit, slowed down while many fail overall,
    /// refused when too many checks run at once; the attempt is counted
    /// before the hash runs.
    async fn check_password(
        &self,
        purpose: Purpose,
        phc: String,
        password: String,
        client: &str,
    ) -> Result<bool, AuthError> {
        let key = client_key(client);
        let Some(_in_progress) = InProgress::enter(&self.in_progress, &key, self.throttle.per_client as usize) else {
            tracing::warn!(client, "login shed: this address already has attempts under way");
            self.metrics.login_limited("busy");
            return Err(AuthError::Busy);
        };
        let window = i64::try_from(self.throttle.window.as_secs()).unwrap_or(i64::MAX);
        // A client over its limit is refused at once, without waiting.
        let now = self.clock.now();
        let failures = self.store.failures_since(Some(&key), now.saturating_sub(window)).await?;
        if failures.count >= u64::from(self.throttle.per_client) {
            return Err(self.throttled(client, failures, now, window));
        }
        // Everyone slows down while many fail; the wait holds no hashing turn.
        let overall = self.store.failures_since(None, now.saturating_sub(window)).await?;
        let delay = self.throttle.slowdown(overall.count, self.slowdown_max);
        if !delay.is_zero() {
            tracing::info!(
                client,
                failures = overall.count,
                delay_ms = delay.as_millis(),
                "login slowed down: many failures overall"
            );
            self.metrics.login_limited("slowed");
            tokio::time::sleep(delay).await;
        }
        let turn = self.hasher.admit().inspect_err(|_| {
            tracing::warn!(client, "login shed: too many password checks at once");
            self.metrics.login_limited("busy");
        })?;
        // Counted before the hash runs: at most `per_client` are checked.
        let now = self.clock.now();
        let id =
            match self.store.reserve_attempt(&key, now, now.saturating_sub(window), self.throttle.per_client).await? {
                Reservation::Reserved(id) => id,
                Reservation::Refused(failures) => return Err(self.throttled(client, failures, now, window)),
            };
        let ok = turn.run(move |memory| password::verify_in(&phc, &password, memory)).await?;
        self.metrics.password_checked(purpose.as_str(), ok);
        if ok {
            self.store.attempt_succeeded(id).await?;
        }
        Ok(ok)
    }

    fn throttled(&self, client: &str, failures: Failures, now: i64, window: i64) -> AuthError {
        let oldest = failures.oldest.unwrap_or(now);
        let wait = (oldest.saturating_add(window) - now).max(1);
        let scope = if client.contains(':') && !client.starts_with("::ffff:") {
            "from this /64 network"
        } else {
            "from this address"
        };
        tracing::warn!(client, scope, failures = failures.count, "login throttled");
        self.metrics.login_limited("throttled");
        AuthError::Throttled { scope, retry_after: Duration::from_secs(u64::try_from(wait).unwrap_or(1)) }
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

    /// Changes the password; every session but `session` ends. The old
    /// password's check is a login attempt of `client` (the caller's
    /// address), under the same limits.
    pub async fn change_password(
        &self,
        session: &Session,
        client: &str,
        old: String,
        new: String,
    ) -> Result<(), AuthError> {
        if self.managed_by_config {
            return Err(AuthError::ManagedByConfig);
        }
        password::check_new("new_password", &new)?;
        let Some(current) = self.store.password().await? else { return Err(AuthError::NotSetUp) };
        if !self.check_password(Purpose::ChangePassword, current.clone(), old, client).await? {
            tracing::warn!(client, "password change refused: wrong old password");
            return Err(AuthError::WrongPassword);
        }
        let phc = self.hasher.admit()?.run(move |memory| password::hash_in(&new, memory)).await?;
        let phc = phc.map_err(AuthError::Hash)?;
        if !self.store.replace_password(Some(&current), &phc, self.clock.now(), Some(&session.token_sha256)).await? {
            return Err(AuthError::Conflict);
        }
        tracing::info!(client, "password changed; other sessions ended");
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

/// What Setup answers to a token that is not the current valid one.
const WRONG_SETUP_TOKEN: &str =
    "wrong or expired setup_token: the current one is in the control-service's setup token file";

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
