//! Where a jail operation runs: the fleet's hosts as one address book.
//!
//! The host `local` is the control-service's own fail2ban
//! (`--fail2ban-socket`): its commands run in this process, through the
//! same [`command::run`] an agent uses. Every enrolled host's commands go
//! down its agent's stream: from this replica when the stream is here
//! ([`Hosts::command_here`]), else through the database to the replica
//! that holds it ([`Hosts::command_elsewhere`]). A request names a
//! host by name or id; an empty name means the only host when there is
//! exactly one ([`Fleet::address`]).

use std::{future::Future, sync::Arc, time::Duration};

use bangui_fail2ban::{
    Fail2ban, Fail2banError,
    command::{self, Command, Reply},
};
use futures_util::{StreamExt, stream};
use tokio::time::Instant;

use crate::{
    error::InvalidArgument,
    hosts::{Host, HostError, HostId, Hosts, commands::unreachable},
    store::HostStore,
};

/// The name and id of the control-service's own fail2ban (the archive's
/// host for its bans too).
pub const LOCAL: &str = crate::store::history::LOCAL_HOST;

/// How long a command may take when the caller sets no deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// StartJail runs fail2ban-client, which reads the whole configuration.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// Hosts asked at once by an operation on every host.
const FAN_OUT: usize = 64;

/// A host an operation is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub name: String,
}

impl Target {
    pub fn local() -> Self {
        Self { id: LOCAL.to_owned(), name: LOCAL.to_owned() }
    }

    pub fn is_local(&self) -> bool {
        self.id == LOCAL
    }
}

/// Which hosts a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressed {
    One(Target),
    /// Every host (a read without a host, or a write with `all_hosts`).
    Every(Vec<Target>),
}

/// Why a request's host does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("no host {0:?} (HostService.ListHosts lists them)")]
    NotFound(String),
    #[error(transparent)]
    Hosts(#[from] HostError),
}

/// The fleet's hosts, as jail operations address them.
#[derive(Debug, Clone)]
pub struct Fleet {
    local: Fail2ban,
    /// The host `local` is served (`--local-fail2ban`).
    serve_local: bool,
    hosts: Hosts,
    store: Arc<dyn HostStore>,
}

impl Fleet {
    pub fn new(local: Fail2ban, hosts: Hosts, store: Arc<dyn HostStore>) -> Self {
        Self { local, serve_local: true, hosts, store }
    }

    /// Without the host `local` (`--local-fail2ban=false`): every host is
    /// an agent's.
    #[must_use]
    pub fn without_local(mut self) -> Self {
        self.serve_local = false;
        self
    }

    pub fn serves_local(&self) -> bool {
        self.serve_local
    }

    pub fn local(&self) -> &Fail2ban {
        &self.local
    }

    /// Every host: `local` first (when served), then the enrolled hosts
    /// (not revoked) by name.
    pub async fn targets(&self) -> Result<Vec<Target>, AddressError> {
        let rows = self.store.hosts().await.map_err(HostError::from)?;
        let enrolled = rows.into_iter().filter(|row| row.revoked_at.is_none());
        let local = self.serve_local.then(Target::local);
        Ok(local.into_iter().chain(enrolled.map(|row| Target { id: row.id, name: row.name })).collect())
    }

    /// Every host with what its agent last pushed (`None`: the host
    /// `local`, which is asked instead).
    pub async fn pushed(&self) -> Result<Vec<(Target, Option<Host>)>, AddressError> {
        let rows = self.store.hosts().await.map_err(HostError::from)?;
        let enrolled = rows.into_iter().filter(|row| row.revoked_at.is_none()).map(|row| {
            let host = Host::from(row);
            (Target { id: host.id.clone(), name: host.name.clone() }, Some(host))
        });
        let local = self.serve_local.then(|| (Target::local(), None));
        Ok(local.into_iter().chain(enrolled).collect())
    }

    /// The hosts a request is for: `host` by name or id; empty: the only
    /// host, or every host (a read, or a write with `all_hosts`). A write
    /// without a host where there are several is INVALID_ARGUMENT.
    pub async fn address(&self, host: &str, all_hosts: bool, write: bool) -> Result<Addressed, AddressError> {
        if all_hosts {
            if !host.is_empty() {
                return Err(InvalidArgument::new("all_hosts", "set either `host` or `all_hosts`, not both").into());
            }
            return Ok(Addressed::Every(self.targets().await?));
        }
        if host.is_empty() {
            let mut every = self.targets().await?;
            return match every.len() {
                0 => Err(AddressError::NotFound("(none: enroll a host, HostService.CreateEnrollmentToken)".into())),
                1 => Ok(Addressed::One(every.remove(0))),
                n if write => Err(InvalidArgument::new(
                    "host",
                    format!("required: {n} hosts (name one, or set all_hosts to change every host)"),
                )
                .into()),
                _ => Ok(Addressed::Every(every)),
            };
        }
        if host.len() > 64 {
            return Err(InvalidArgument::new("host", "a host name or id is at most 64 characters").into());
        }
        if host == LOCAL && self.serve_local {
            return Ok(Addressed::One(Target::local()));
        }
        let rows = self.store.hosts().await.map_err(HostError::from)?;
        let id = HostId::parse("host", host).ok();
        rows.into_iter()
            .filter(|row| row.revoked_at.is_none())
            .find(|row| row.name == host || id.as_ref().is_some_and(|id| id.as_str() == row.id))
            .map(|row| Addressed::One(Target { id: row.id, name: row.name }))
            .ok_or_else(|| AddressError::NotFound(host.to_owned()))
    }

    /// Runs `command` on `target` by `deadline`.
    pub async fn run(&self, target: &Target, command: &Command, deadline: Instant) -> Result<Reply, Fail2banError> {
        if target.is_local() {
            return command::run(&self.local, command).await;
        }
        // (`local` is only a target when served: `address` and `targets`.)
        let id = HostId::parse("host", &target.id)?;
        match self.hosts.command_here(&id, &target.name, command, deadline).await {
            Some(answer) => answer,
            None => self.hosts.command_elsewhere(&id, &target.name, command, deadline).await,
        }
    }
}

/// Runs `op` for every target (at most [`FAN_OUT`] at once), each by
/// `deadline`: one slow or dead host delays no other's answer past it.
pub async fn each<T, F, Fut>(targets: Vec<Target>, deadline: Instant, op: F) -> Vec<(Target, Result<T, Fail2banError>)>
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = Result<T, Fail2banError>>,
{
    stream::iter(targets)
        .map(|target| {
            let work = op(target.clone());
            async move {
                let answer = tokio::time::timeout_at(deadline, work)
                    .await
                    .unwrap_or_else(|_| Err(unreachable(&target.name, "no answer within the deadline")));
                (target, answer)
            }
        })
        .buffered(FAN_OUT)
        .collect()
        .await
}
