//! One agent stream's life on this replica: attach (version, credential,
//! the host's lease, a place in the registry), refresh every heartbeat,
//! end (release the lease, leave the registry).
//!
//! A stream holds a permit of its replica's stream cap from before its
//! hello is read until it ends, so open streams never exceed
//! `--agent-max-streams`, however slow their agents are.

use std::sync::{Mutex, PoisonError};

use bangui_proto::agent::v1::Command;
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc},
    time::Instant,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::{Announcement, HostError, HostId, Hosts, STALE, credential, version};
use crate::store::hosts::{Presence, StreamClaim};

/// A stream's first message, checked.
#[derive(Debug, Clone)]
pub struct Hello {
    pub host_id: HostId,
    pub agent_version: String,
    /// The agent process.
    pub instance: String,
    pub announcement: Announcement,
}

/// An open agent stream: the host's one live stream while it lasts.
#[derive(Debug)]
pub struct LiveStream {
    hosts: Hosts,
    host: HostId,
    host_name: String,
    stream_id: String,
    agent_version: String,
    cancel: CancellationToken,
    /// What the agent last said and when it came, written at the next refresh.
    announcement: Mutex<(Announcement, Instant)>,
    /// Commands for this host from this replica's callers, until the
    /// stream's keeper takes them ([`LiveStream::take_commands`]).
    commands: Option<mpsc::Receiver<Command>>,
    _permit: OwnedSemaphorePermit,
}

/// Commands queued for one stream, at most; a caller beyond waits for a
/// place (within its deadline).
const QUEUED_COMMANDS: usize = 64;

impl Hosts {
    /// A place for one more stream, or RESOURCE_EXHAUSTED at once.
    pub fn stream_permit(&self) -> Result<OwnedSemaphorePermit, HostError> {
        self.streams.clone().try_acquire_owned().map_err(|_| HostError::TooManyStreams(self.max_streams))
    }

    /// Opens host `hello.host_id`'s stream for an agent presenting
    /// `credential`: its version must be spoken here, the credential must
    /// be that host's (not revoked), and no other live stream may hold the
    /// host (unless it is the same agent process, reconnecting).
    pub async fn attach(
        &self,
        permit: OwnedSemaphorePermit,
        credential: &str,
        hello: Hello,
    ) -> Result<LiveStream, HostError> {
        if !version::compatible(&hello.agent_version, version::CONTROL_VERSION) {
            return Err(HostError::Version { agent: hello.agent_version, control: version::CONTROL_VERSION });
        }
        self.authenticate(&hello.host_id, credential).await?;
        let stream_id = credential::new_secret();
        let jails = hello.announcement.jails_json();
        let states = hello.announcement.states_json();
        let claim = StreamClaim {
            host: hello.host_id.as_str(),
            stream_id: &stream_id,
            replica: &self.replica,
            instance: &hello.instance,
        };
        let presence = Presence {
            agent_version: &hello.agent_version,
            fail2ban_version: &hello.announcement.fail2ban_version,
            jails: &jails,
            jail_states: &states,
            states_age_ms: hello.announcement.states_age_ms,
            outbox_backlog: hello.announcement.outbox_backlog,
        };
        let stale_ms = i64::try_from(STALE.as_millis()).unwrap_or(i64::MAX);
        if !self.store.take_stream(&claim, &presence, stale_ms).await? {
            return Err(HostError::AlreadyConnected(hello.host_id.as_str().to_owned()));
        }
        let cancel = CancellationToken::new();
        let (commands_in, commands) = mpsc::channel(QUEUED_COMMANDS);
        self.registry.insert(hello.host_id.as_str(), &stream_id, cancel.clone(), commands_in);
        let host_name = match self.store.host(hello.host_id.as_str()).await {
            Ok(Some(row)) => row.name,
            Ok(None) | Err(_) => String::new(),
        };
        tracing::info!(host = %hello.host_id.as_str(), name = %host_name, instance = %hello.instance, "agent attached");
        self.open_streams.inc();
        Ok(LiveStream {
            hosts: self.clone(),
            host: hello.host_id,
            host_name,
            stream_id,
            agent_version: hello.agent_version,
            cancel,
            announcement: Mutex::new((hello.announcement, Instant::now())),
            commands: Some(commands),
            _permit: permit,
        })
    }
}

impl LiveStream {
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    pub fn host_id(&self) -> &str {
        self.host.as_str()
    }

    /// This stream's id (what the host's lease names while it holds it).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The commands callers on this replica send the host (once).
    pub fn take_commands(&mut self) -> Option<mpsc::Receiver<Command>> {
        self.commands.take()
    }

    /// Resolves when this replica cuts the stream (the host revoked here,
    /// or its agent attached again).
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Why the stream was cut: revoked (UNAUTHENTICATED) or replaced.
    pub async fn why_cut(&self) -> HostError {
        match self.hosts.store.credential(self.host.as_str()).await {
            Ok(Some((_, Some(_)))) => HostError::Unauthenticated("the host was revoked"),
            _ => HostError::LeaseLost(self.host.as_str().to_owned()),
        }
    }

    /// Keeps what a heartbeat said, for the next refresh.
    pub fn record(&self, announcement: Announcement) {
        *self.announcement.lock().unwrap_or_else(PoisonError::into_inner) = (announcement, Instant::now());
    }

    /// Refreshes the lease (and what the agent said). An error ends the
    /// stream: the host was revoked (possibly on another replica), or
    /// another stream took the lease.
    pub async fn refresh(&self) -> Result<(), HostError> {
        let (said, age) = {
            let (said, heard) = &*self.announcement.lock().unwrap_or_else(PoisonError::into_inner);
            // Older by the time since it came.
            let since = i64::try_from(heard.elapsed().as_millis()).unwrap_or(i64::MAX);
            (said.clone(), said.states_age_ms.map(|age| age.saturating_add(since)))
        };
        let (jails, states) = (said.jails_json(), said.states_json());
        let presence = Presence {
            agent_version: &self.agent_version,
            fail2ban_version: &said.fail2ban_version,
            jails: &jails,
            jail_states: &states,
            states_age_ms: age,
            outbox_backlog: said.outbox_backlog,
        };
        if self.hosts.store.refresh_stream(self.host.as_str(), &self.stream_id, &presence).await? {
            return Ok(());
        }
        Err(self.why_cut().await)
    }

    /// Ends the stream: releases the lease if it still holds it.
    pub async fn close(self) {
        self.hosts.open_streams.dec();
        self.hosts.registry.remove(self.host.as_str(), &self.stream_id);
        if let Err(error) = self.hosts.store.release_stream(self.host.as_str(), &self.stream_id).await {
            // The lease goes stale by itself.
            tracing::warn!(%error, host = %self.host.as_str(), "could not release a stream lease");
        }
        tracing::info!(host = %self.host.as_str(), "agent stream ended");
    }
}
