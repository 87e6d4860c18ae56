//! Commands for a host whose stream is on another replica (PostgreSQL,
//! several replicas): a durable row in `host_commands`, with LISTEN/NOTIFY
//! only as the wake-up.
//!
//! * The caller's replica ([`Hosts::command_elsewhere`]) writes the row with
//!   its deadline (the database's clock) and waits for its outcome: woken
//!   by `bangui_host_results`, and polling every [`POLL`] in case a
//!   notification was lost. At its deadline it deletes the row whatever
//!   became of it and answers UNAVAILABLE naming the host.
//! * Every replica runs [`Hosts::relay`]: woken by `bangui_host_commands`
//!   (the host id), and sweeping every [`SWEEP`], it takes the rows of the
//!   hosts whose streams it holds (one UPDATE: a row is taken once, never
//!   after its deadline), sends each down the stream
//!   ([`Hosts::command_here`]) and writes the outcome.
//!
//! A host between two streams (seen within [`REATTACH`]) is waited for
//! before its row is written, within the caller's deadline; a row taken
//! by a replica whose stream for the host ended before the command was
//! sent is given back, and the host's next stream takes it.
//!
//! At most once: a row is taken once; the deadline it carries goes down
//! the stream, and the agent does not run a command it reads later. The
//! row's deadline is [`MARGIN`] before the caller's, so an outcome written
//! just in time still reaches the caller before it gives up.
//! On SQLite there is one replica: a host not here is not connected.

use std::time::Duration;

use bangui_fail2ban::{
    Fail2banError,
    command::{Command, Failure, Reply},
};
use serde::{Deserialize, Serialize};
use tokio::{sync::broadcast, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Host, HostId, Hosts, REATTACH, commands::unreachable};
use crate::store::hosts::{COMMANDS_CHANNEL, NewCommand, RESULTS_CHANNEL, TakenCommand};

/// How often a caller looks for its outcome without a wake-up.
pub const POLL: Duration = Duration::from_millis(500);
/// How often a replica looks for rows for its hosts without a wake-up.
pub const SWEEP: Duration = Duration::from_secs(1);
/// How often a caller looks whether a host between two streams is back.
const REATTACH_POLL: Duration = Duration::from_millis(50);
/// The row's deadline is this much before its caller's.
pub const MARGIN: Duration = Duration::from_millis(150);
/// Rows whose deadline passed this long ago are deleted (their caller
/// died before it could).
const PURGE_AFTER: Duration = Duration::from_secs(60);

/// A command's outcome as its row holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    /// JSON of the reply.
    Reply(String),
    Failure(Failure),
}

impl Stored {
    fn of(result: &Result<Reply, Fail2banError>, command: &Command) -> Self {
        match result {
            Ok(reply) => match reply.to_json(command) {
                Ok(json) => Stored::Reply(json),
                Err(too_large) => Stored::Failure(Failure::from(&too_large)),
            },
            Err(error) => Stored::Failure(Failure::from(error)),
        }
    }

    fn settle(text: &str) -> Result<Reply, Fail2banError> {
        match serde_json::from_str(text) {
            Ok(Stored::Reply(json)) => Reply::from_json(&json),
            Ok(Stored::Failure(failure)) => Err(failure.into()),
            Err(error) => Err(Fail2banError::Protocol(format!("a command outcome this replica cannot read: {error}"))),
        }
    }
}

/// Waits until `notices` says `payload` on `channel` (or they lag: then
/// the caller looks anyway).
async fn woken(notices: &mut broadcast::Receiver<(String, String)>, channel: &str, payload: &str) {
    loop {
        match notices.recv().await {
            Ok((c, p)) if c == channel && p == payload => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Hosts {
    /// Runs `command` on host `id` through the replica holding its stream.
    pub async fn command_elsewhere(
        &self,
        id: &HostId,
        name: &str,
        command: &Command,
        deadline: Instant,
    ) -> Result<Reply, Fail2banError> {
        let down = |_| unreachable(name, "the control database is unavailable");
        let Some(notices) = &self.notices else {
            return Err(unreachable(name, "its agent is not connected"));
        };
        // A host between two streams (its replica drained or went away, and
        // its agent attaches to another within 2 s) is waited for, within
        // the call's deadline and [`REATTACH`] of its last sign of life: a
        // rolling update of the replicas fails no command. A host gone for
        // longer is unreachable at once.
        loop {
            let Some(row) = self.store.host(id.as_str()).await.map_err(down)? else {
                return Err(unreachable(name, "its agent is not connected"));
            };
            let seen_ago = row.last_seen.map(|seen| row.db_now.saturating_sub(seen));
            let revoked = row.revoked_at.is_some();
            if Host::from(row).replica.is_some() {
                break;
            }
            let reattach_ms = i64::try_from(REATTACH.as_millis()).unwrap_or(i64::MAX);
            let expected_back = !revoked && seen_ago.is_some_and(|ago| ago < reattach_ms);
            if !expected_back || Instant::now() + REATTACH_POLL + MARGIN >= deadline {
                return Err(unreachable(name, "its agent is not connected"));
            }
            tokio::time::sleep(REATTACH_POLL).await;
            // Back on this replica: down its stream here.
            if let Some(answer) = self.command_here(id, name, command, deadline).await {
                return answer;
            }
        }
        let relay_left = deadline.saturating_duration_since(Instant::now()).saturating_sub(MARGIN);
        if relay_left.is_zero() {
            return Err(unreachable(name, "the call's deadline leaves no time to reach it"));
        }
        // Subscribed before the row exists: its outcome's wake-up is not missed.
        let mut wake = notices.subscribe();
        let command_id = uuid::Uuid::new_v4().to_string();
        let operation = command.to_json();
        let row = NewCommand {
            id: &command_id,
            host: id.as_str(),
            operation: &operation,
            ttl_ms: i64::try_from(relay_left.as_millis()).unwrap_or(i64::MAX),
        };
        self.store.insert_command(&row).await.map_err(down)?;
        tracing::info!(host = %id.as_str(), %name, id = %command_id, command = command.label(), "command relayed");
        let waited = tokio::time::timeout_at(deadline, async {
            loop {
                if let Some(outcome) = self.store.command_outcome(&command_id).await? {
                    return Ok(outcome);
                }
                tokio::select! {
                    () = woken(&mut wake, RESULTS_CHANNEL, &command_id) => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        })
        .await;
        if let Err(error) = self.store.delete_command(&command_id).await {
            tracing::warn!(%error, id = %command_id, "cannot delete a command row (purged later)");
        }
        match waited {
            Ok(Ok(outcome)) => Stored::settle(&outcome).map_err(|error| match error {
                Fail2banError::Remote { kind: "unavailable", message } => {
                    Fail2banError::Remote { kind: "unavailable", message: message.replace(id.as_str(), name) }
                }
                other => other,
            }),
            Ok(Err(error)) => Err(down(error)),
            Err(_) => Err(unreachable(name, "no answer within the call's deadline")),
        }
    }

    /// Runs the commands other replicas write for the hosts whose streams
    /// are here, until `stop`; then waits for the commands it took to have
    /// their outcomes written (each within its deadline), so a replica that
    /// shuts down leaves no caller waiting for an outcome that never comes.
    /// Without notifications (SQLite) there are no other replicas: it
    /// returns at once.
    pub async fn relay(self, stop: CancellationToken) {
        let Some(notices) = self.notices.clone() else { return };
        let running = TaskTracker::new();
        self.take_and_relay(&notices, &running, &stop).await;
        running.close();
        running.wait().await;
    }

    async fn take_and_relay(
        &self,
        notices: &crate::store::postgres::Notices,
        running: &TaskTracker,
        stop: &CancellationToken,
    ) {
        let mut wake = notices.subscribe();
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_AFTER);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hosts: Vec<String> = tokio::select! {
                () = stop.cancelled() => return,
                notice = wake.recv() => match notice {
                    Ok((channel, host)) if channel == COMMANDS_CHANNEL && self.registry.contains(&host) => vec![host],
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.hosts_waiting().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sweep.tick() => self.hosts_waiting().await,
                _ = purge.tick() => {
                    let after = i64::try_from(PURGE_AFTER.as_millis()).unwrap_or(i64::MAX);
                    match self.store.purge_commands(after).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(rows = n, "stale command rows deleted"),
                        Err(error) => tracing::warn!(%error, "cannot purge stale command rows"),
                    }
                    continue;
                }
            };
            for host in hosts {
                match self.store.take_commands(&host, &self.replica).await {
                    Ok(taken) => {
                        for row in taken {
                            running.spawn(self.clone().relay_one(row));
                        }
                    }
                    Err(error) => tracing::warn!(%error, %host, "cannot take commands for a host here"),
                }
            }
        }
    }

    /// The hosts here with command rows waiting.
    async fn hosts_waiting(&self) -> Vec<String> {
        match self.store.hosts_with_commands().await {
            Ok(hosts) => hosts.into_iter().filter(|host| self.registry.contains(host)).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot look for command rows");
                Vec::new()
            }
        }
    }

    /// Sends one taken row down its host's stream and writes the outcome;
    /// gives it back unsent when the stream left this replica first (the
    /// host's next stream takes it).
    async fn relay_one(self, row: TakenCommand) {
        let deadline = Instant::now() + Duration::from_millis(u64::try_from(row.left_ms).unwrap_or(0));
        let stored = match (Command::from_json(&row.operation), HostId::parse("host", &row.host_id)) {
            (Ok(command), Ok(id)) => match self.command_here(&id, &row.host_id, &command, deadline).await {
                Some(result) => Stored::of(&result, &command),
                None => {
                    match self.store.return_command(&row.id, &row.host_id).await {
                        Ok(_) => {
                            tracing::info!(id = %row.id, host = %row.host_id, "command given back unsent: its stream left")
                        }
                        Err(error) => {
                            tracing::warn!(%error, id = %row.id, "cannot give a command back (its caller hears UNAVAILABLE at its deadline)")
                        }
                    }
                    return;
                }
            },
            (Err(invalid), _) | (_, Err(invalid)) => Stored::Failure(Failure::from(&Fail2banError::Invalid(invalid))),
        };
        let text = serde_json::to_string(&stored).unwrap_or_default();
        match self.store.finish_command(&row.id, &text).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(id = %row.id, "the command's caller gave up before its outcome"),
            Err(error) => tracing::warn!(%error, id = %row.id, "cannot write a command's outcome"),
        }
    }
}
