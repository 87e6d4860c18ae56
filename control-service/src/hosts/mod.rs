//! The fleet's identity: which hosts exist, how an agent joins (an
//! enrollment token traded once for a credential of its own), and which
//! agent stream is a host's one live stream.
//!
//! * [`name`]: the checked values at the edge (ids, names, announcements).
//! * [`credential`]: secrets, their hashes, the constant-time check.
//! * [`version`]: which agent versions this control plane speaks.
//! * [`registry`]: the live streams on this replica, to cut them at once.
//! * [`stream`]: one agent stream's life: attach, keep the lease, end.
//! * [`commands`]: jail operations down a stream here, and their answers.
//! * [`relay`]: jail operations for a host whose stream is on another
//!   replica, through the database.
//! * [`events`]: the history events a host's agent delivers from its
//!   outbox, stored once each.
//!
//! Across replicas the database decides (`store::hosts`): a token is used
//! by one UPDATE, a stream holds a lease in its host's row that it
//! refreshes every second. Revocation cancels a stream on this replica at
//! once; a stream on another replica is cut at its next refresh (every
//! [`HEARTBEAT`]), which finds the host revoked.

pub mod commands;
pub mod credential;
pub mod events;
pub mod name;
pub mod registry;
pub mod relay;
pub mod stream;
pub mod version;

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

pub use self::{
    name::{Announcement, HostId, HostName, JailState},
    registry::Registry,
    stream::{Hello, LiveStream},
};
use crate::{
    error::{InvalidArgument, StoreError},
    store::{
        HostStore,
        hosts::{Enrollment, HostRow, NewHost, Rename},
    },
};

/// How often an agent sends a heartbeat, and a stream refreshes its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A lease not refreshed for this long is free for another stream.
pub const STALE: Duration = Duration::from_secs(15);
/// A host whose stream ended this recently is expected back: an agent
/// whose replica drains is on another within 2 s (DESIGN.md section 12),
/// and its last sign of life is at most a heartbeat older. A command for it
/// waits for it (within the command's deadline) instead of failing at once.
pub const REATTACH: Duration = Duration::from_secs(3);
/// The longest an enrollment token lives, and its default.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest note on a token.
pub const MAX_NOTE_CHARS: usize = 200;

/// What went wrong with a host operation.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("no host {0}")]
    NotFound(String),
    #[error("the host name {0:?} is in use")]
    NameTaken(String),
    #[error("a host with id {0} is already enrolled")]
    IdTaken(String),
    #[error("the enrollment token is unknown, used or expired")]
    TokenRefused,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("host {0} already has a live stream")]
    AlreadyConnected(String),
    #[error("agent version {agent:?} is not spoken by control-service {control} (same major, minor ±1)")]
    Version { agent: String, control: &'static str },
    #[error("{0} agent streams are open on this replica: its limit (--agent-max-streams)")]
    TooManyStreams(usize),
    #[error("host {0}'s stream was taken over by another")]
    LeaseLost(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A host, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: String,
    pub name: String,
    /// The replica holding its live stream, if any.
    pub replica: Option<String>,
    pub enrolled_at: i64,
    pub last_seen: Option<i64>,
    pub agent_version: String,
    pub fail2ban_version: String,
    pub jails: Vec<String>,
    pub revoked_at: Option<i64>,
    /// Each jail's counters as the agent last pushed them, and when it read
    /// them (Unix ms; `None`: it pushed none).
    pub jail_states: Vec<JailState>,
    pub states_at: Option<i64>,
    pub outbox_backlog: u64,
}

impl Host {
    /// Bans in force over its jails (as last pushed).
    pub fn active_bans(&self) -> u64 {
        self.jail_states.iter().map(|s| s.currently_banned).sum()
    }
}

impl From<HostRow> for Host {
    fn from(row: HostRow) -> Self {
        let fresh = |seen: i64| row.db_now - seen < i64::try_from(STALE.as_millis()).unwrap_or(i64::MAX);
        let replica = row.stream_holder.filter(|_| row.revoked_at.is_none() && row.stream_seen_at.is_some_and(fresh));
        // Written by this service only; a row that does not read lists no jails.
        let jails = serde_json::from_str(&row.jails).unwrap_or_default();
        let jail_states = serde_json::from_str(&row.jail_states).unwrap_or_default();
        Self {
            jail_states,
            states_at: row.states_at,
            outbox_backlog: u64::try_from(row.outbox_backlog).unwrap_or(0),
            id: row.id,
            name: row.name,
            replica,
            enrolled_at: row.enrolled_at,
            last_seen: row.last_seen,
            agent_version: row.agent_version,
            fail2ban_version: row.fail2ban_version,
            jails,
            revoked_at: row.revoked_at,
        }
    }
}

/// A new enrollment token: shown once.
#[derive(Debug)]
pub struct NewToken {
    pub token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// An enrolled host and its credential: shown once.
#[derive(Debug)]
pub struct Enrolled {
    pub host: Host,
    pub credential: String,
}

/// The fleet's hosts, on this replica.
#[derive(Debug, Clone)]
pub struct Hosts {
    store: Arc<dyn HostStore>,
    registry: Registry,
    /// Commands sent down streams here, waiting for their results.
    waiting: commands::Waiting,
    /// PostgreSQL's notifications, when there are several replicas.
    notices: Option<Arc<crate::store::postgres::Notices>>,
    replica: Arc<str>,
    /// One permit per open agent stream (`--agent-max-streams`).
    streams: Arc<Semaphore>,
    max_streams: usize,
    /// `control_agent_streams`.
    open_streams: Gauge,
}

impl Hosts {
    pub fn new(store: Arc<dyn HostStore>, replica: &str, max_streams: usize) -> Self {
        Self {
            store,
            registry: Registry::default(),
            waiting: commands::Waiting::default(),
            notices: None,
            replica: replica.into(),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            open_streams: Gauge::default(),
        }
    }

    /// Counts open streams in `gauge` (`control_agent_streams`).
    pub fn with_gauge(mut self, gauge: Gauge) -> Self {
        self.open_streams = gauge;
        self
    }

    /// Wakes command relays through `notices` (PostgreSQL): commands then
    /// reach hosts whose streams are on other replicas ([`relay`]).
    pub fn with_notices(mut self, notices: Option<Arc<crate::store::postgres::Notices>>) -> Self {
        self.notices = notices;
        self
    }

    /// This replica's name, as streams record it.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// A one-time token valid for `ttl` (zero: an hour; 1 s to 7 days).
    pub async fn create_enrollment_token(&self, ttl: Duration, note: &str) -> Result<NewToken, HostError> {
        let ttl = if ttl.is_zero() { DEFAULT_TOKEN_TTL } else { ttl };
        if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
            return Err(InvalidArgument::new("ttl_seconds", "1 second to 7 days (0: one hour)").into());
        }
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(InvalidArgument::new("note", format!("at most {MAX_NOTE_CHARS} characters")).into());
        }
        let token = credential::new_secret();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = self.store.insert_enrollment_token(&credential::hash(&token), ttl_ms).await?;
        tracing::info!(note, expires_at, "enrollment token created");
        Ok(NewToken { token, expires_at })
    }

    /// Trades `token` for host `id`'s credential.
    pub async fn enroll(&self, token: &str, id: &HostId, name: &HostName) -> Result<Enrolled, HostError> {
        if token.is_empty() || token.len() > credential::MAX_SECRET_LEN {
            return Err(HostError::TokenRefused);
        }
        let secret = credential::new_secret();
        let names = name.candidates(id);
        let new = NewHost { id: id.as_str(), names: &names, credential_hash: &credential::hash(&secret) };
        match self.store.enroll(&credential::hash(token), &new).await? {
            Enrollment::Enrolled(row) => {
                tracing::info!(host = %row.id, name = %row.name, "host enrolled");
                Ok(Enrolled { host: (*row).into(), credential: secret })
            }
            Enrollment::TokenRefused => Err(HostError::TokenRefused),
            Enrollment::IdTaken => Err(HostError::IdTaken(id.as_str().to_owned())),
            Enrollment::NameTaken => Err(HostError::NameTaken(name.as_str().to_owned())),
        }
    }

    pub async fn list(&self) -> Result<Vec<Host>, HostError> {
        Ok(self.store.hosts().await?.into_iter().map(Host::from).collect())
    }

    pub async fn get(&self, id: &HostId) -> Result<Host, HostError> {
        self.store.host(id.as_str()).await?.map(Host::from).ok_or_else(|| HostError::NotFound(id.as_str().into()))
    }

    pub async fn rename(&self, id: &HostId, name: &HostName) -> Result<Host, HostError> {
        match self.store.rename_host(id.as_str(), name.as_str()).await? {
            Rename::Renamed(row) => Ok((*row).into()),
            Rename::NotFound => Err(HostError::NotFound(id.as_str().into())),
            Rename::NameTaken => Err(HostError::NameTaken(name.as_str().into())),
        }
    }

    /// Revokes the host: its credential is refused from now on, its stream
    /// here is cut at once (elsewhere at that stream's next refresh).
    pub async fn revoke(&self, id: &HostId) -> Result<Host, HostError> {
        let row = self.store.revoke_host(id.as_str()).await?.ok_or_else(|| HostError::NotFound(id.as_str().into()))?;
        let cut_here = self.registry.cancel(id.as_str());
        tracing::info!(host = %id.as_str(), cut_here, "host revoked");
        Ok(row.into())
    }

    /// Checks `credential` against host `id`'s: unknown host, wrong
    /// credential and revoked host are all UNAUTHENTICATED, and say no more.
    pub async fn authenticate(&self, id: &HostId, credential: &str) -> Result<(), HostError> {
        const REFUSED: &str = "the host credential is not valid for this host, or the host is revoked";
        if credential.is_empty() || credential.len() > credential::MAX_SECRET_LEN {
            return Err(HostError::Unauthenticated(REFUSED));
        }
        match self.store.credential(id.as_str()).await? {
            Some((stored, None)) if credential::matches(credential, &stored) => Ok(()),
            _ => Err(HostError::Unauthenticated(REFUSED)),
        }
    }

    /// A command's result came up a stream on this replica.
    pub fn command_answered(&self, result: bangui_proto::agent::v1::CommandResult) {
        let id = result.id.clone();
        if !self.waiting.answer(result) {
            tracing::info!(%id, "a command result nobody waits for (its caller gave up): dropped");
        }
    }

    /// Whether a caller on this replica still waits for command `id`.
    pub fn command_awaited(&self, id: &str) -> bool {
        self.waiting.contains(id)
    }

    /// A stream ended: the commands still queued for it were never sent;
    /// their callers hear so and may send them to the host's next stream.
    pub fn commands_not_sent(&self, queue: &mut tokio::sync::mpsc::Receiver<bangui_proto::agent::v1::Command>) {
        queue.close();
        while let Ok(command) = queue.try_recv() {
            self.waiting.not_sent(&command.id);
        }
    }

    /// Streams open on this replica.
    pub fn live_streams(&self) -> usize {
        self.registry.len()
    }
}
