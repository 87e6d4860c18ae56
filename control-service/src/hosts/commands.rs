//! Commands to hosts whose stream is on this replica: each gets an id and
//! a deadline, goes down the stream, and waits (at most until its
//! deadline) for the `CommandResult` with its id.
//!
//! A command is sent once and never again: when its deadline passes the
//! caller hears UNAVAILABLE naming the host, and an agent that reads it
//! later does not run it (`fail2ban-agent`'s `commands` module). A result
//! that arrives after its caller gave up is dropped here: the caller was
//! told the host did not answer, and nothing was recorded as done.
//!
//! A command still queued for a stream when the stream ends was never
//! sent: its caller hears so ([`Waiting::not_sent`]) and may send it to the
//! host's next stream, wherever that is (a draining replica fails none of
//! its callers' commands).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bangui_fail2ban::{
    Fail2banError,
    command::{Command, Failure, Reply},
};
use bangui_proto::agent::v1::{self as pb, command_result::Outcome};
use tokio::{sync::oneshot, time::Instant};

use super::{HostId, Hosts};

/// A caller's answer: the agent's outcome, or `None` when the command was
/// never sent (its stream ended first).
type Answer = Option<Outcome>;

/// The answers this replica waits for: command id → its caller.
#[derive(Debug, Clone, Default)]
pub struct Waiting {
    callers: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
}

impl Waiting {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, oneshot::Sender<Answer>>) -> T) -> T {
        f(&mut self.callers.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn wait(&self, id: &str) -> oneshot::Receiver<Answer> {
        let (sender, receiver) = oneshot::channel();
        self.with(|callers| callers.insert(id.to_owned(), sender));
        receiver
    }

    /// Whether a caller still waits for command `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.with(|callers| callers.contains_key(id))
    }

    fn forget(&self, id: &str) {
        self.with(|callers| callers.remove(id));
    }

    /// A result came up a stream: its caller gets it, if it still waits.
    /// False when nobody waits for that id (late, or never sent).
    pub fn answer(&self, result: pb::CommandResult) -> bool {
        let Some(outcome) = result.outcome else { return false };
        match self.with(|callers| callers.remove(&result.id)) {
            Some(caller) => caller.send(Some(outcome)).is_ok(),
            None => false,
        }
    }

    /// Command `id` was taken off its stream's queue unsent (the stream
    /// ended): its caller may send it elsewhere.
    pub fn not_sent(&self, id: &str) {
        if let Some(caller) = self.with(|callers| callers.remove(id)) {
            let _ = caller.send(None);
        }
    }
}

/// The host did not answer in time (or its stream ended first).
pub fn unreachable(host: &str, why: &str) -> Fail2banError {
    Fail2banError::Remote { kind: "unavailable", message: format!("host {host} is unreachable: {why}") }
}

fn unix_ms_in(left: Duration) -> i64 {
    let at = SystemTime::now() + left;
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What an agent's outcome means to the caller.
pub fn settle(host: &str, outcome: Outcome) -> Result<Reply, Fail2banError> {
    match outcome {
        Outcome::Reply(json) => Reply::from_json(&json),
        Outcome::Failure(failure) => {
            Err(Failure { kind: failure.kind, message: failure.message, field: failure.field }.into())
        }
        Outcome::Expired(_) => {
            Err(unreachable(host, "its agent read the command after its deadline and did not run it"))
        }
    }
}

impl Hosts {
    /// Runs `command` on host `id` through its stream on this replica, if
    /// it is here (`None`: it is not, or its stream ended before the
    /// command was sent: nothing ran). `name` is how errors call the host.
    pub async fn command_here(
        &self,
        id: &HostId,
        name: &str,
        command: &Command,
        deadline: Instant,
    ) -> Option<Result<Reply, Fail2banError>> {
        let stream = self.registry.commands(id.as_str())?;
        let command_id = uuid::Uuid::new_v4().to_string();
        let answer = self.waiting.wait(&command_id);
        let left = deadline.saturating_duration_since(Instant::now());
        let down =
            pb::Command { id: command_id.clone(), deadline_unix_ms: unix_ms_in(left), operation: command.to_json() };
        tracing::info!(host = %id.as_str(), %name, id = %command_id, command = command.label(), "command sent");
        let outcome = tokio::time::timeout_at(deadline, async {
            if stream.send(down).await.is_err() {
                return Ok(None);
            }
            answer.await.map_err(|_| unreachable(name, "its stream ended before it answered"))
        })
        .await;
        self.waiting.forget(&command_id);
        match outcome {
            Ok(Ok(Some(outcome))) => Some(settle(name, outcome)),
            Ok(Ok(None)) => {
                tracing::info!(host = %id.as_str(), id = %command_id, "command not sent: the stream ended first");
                None
            }
            Ok(Err(error)) => Some(Err(error)),
            Err(_) => Some(Err(unreachable(name, &format!("no answer within {left:.1?}")))),
        }
    }
}
