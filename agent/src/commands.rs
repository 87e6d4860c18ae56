//! The commands the control plane sends down the stream: each checked,
//! run against the local fail2ban ([`bangui_fail2ban::command::run`]) and
//! answered once with a `CommandResult` naming it.
//!
//! At most once, and never late: a command read after its deadline is not
//! run and answers `expired` (an agent resumed after SIGSTOP, or one whose
//! stream stalled, does not apply what its caller has given up on). The
//! deadline is in the control plane's clock; [`ControlClock`] turns it into
//! this host's, from the time Welcome said, so skew between hosts does
//! not matter. At most [`RUNNING`] commands run at once; a command that
//! waited for its turn past its deadline is not run either.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bangui_fail2ban::{
    Fail2ban,
    command::{self, Command, Failure},
};
use bangui_proto::agent::v1::{self as pb, attach_request, command_result::Outcome};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;

/// Commands run against fail2ban at once (fail2ban answers one command at
/// a time per connection; a slow StartJail must not hold up a ban).
pub const RUNNING: usize = 8;

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The control plane's clock as seen from this host.
#[derive(Debug, Clone, Copy)]
pub struct ControlClock {
    /// Control plane's time minus this host's, in milliseconds.
    offset_ms: i64,
}

impl ControlClock {
    /// From Welcome's `control_unix_ms` (0: an older control plane that
    /// sends none; then the host's clock is taken as the control plane's).
    pub fn from_welcome(control_unix_ms: i64) -> Self {
        let offset_ms = if control_unix_ms == 0 { 0 } else { control_unix_ms.saturating_sub(unix_ms()) };
        Self { offset_ms }
    }

    /// How long until `deadline_unix_ms` (control plane's clock); zero when
    /// it has passed.
    pub fn left(&self, deadline_unix_ms: i64) -> Duration {
        let now = unix_ms().saturating_add(self.offset_ms);
        Duration::from_millis(u64::try_from(deadline_unix_ms.saturating_sub(now)).unwrap_or(0))
    }
}

/// Runs the commands of one stream.
#[derive(Debug, Clone)]
pub struct Runner {
    fail2ban: Fail2ban,
    clock: ControlClock,
    turns: Arc<Semaphore>,
    metrics: Metrics,
    results: mpsc::Sender<pb::AttachRequest>,
}

impl Runner {
    pub fn new(
        fail2ban: Fail2ban,
        clock: ControlClock,
        metrics: Metrics,
        results: mpsc::Sender<pb::AttachRequest>,
    ) -> Self {
        Self { fail2ban, clock, turns: Arc::new(Semaphore::new(RUNNING)), metrics, results }
    }

    /// Takes a command off the stream; its result is sent when it is done
    /// (the stream's reader never waits for fail2ban).
    pub fn start(&self, received: pb::Command) {
        let runner = self.clone();
        tokio::spawn(async move {
            let id = received.id.clone();
            let outcome = runner.outcome(received).await;
            let result = pb::CommandResult { id, outcome: Some(outcome) };
            // A closed stream drops the result: the caller's deadline
            // answers for it, and the command ran at most once.
            let _ = runner.results.send(pb::AttachRequest { body: Some(attach_request::Body::Result(result)) }).await;
        });
    }

    async fn outcome(&self, received: pb::Command) -> Outcome {
        let command = match Command::from_json(&received.operation) {
            Ok(command) => command,
            Err(invalid) => {
                self.metrics.command_run("unknown", "invalid");
                return Outcome::Failure(pb::CommandFailure {
                    kind: "invalid".into(),
                    message: invalid.reason,
                    field: invalid.field.into(),
                });
            }
        };
        let label = command.label();
        let left = self.clock.left(received.deadline_unix_ms);
        let Ok(Ok(_turn)) = tokio::time::timeout(left, self.turns.acquire()).await else {
            return self.expired(label, &received.id);
        };
        if self.clock.left(received.deadline_unix_ms).is_zero() {
            return self.expired(label, &received.id);
        }
        match command::run(&self.fail2ban, &command).await.and_then(|reply| reply.to_json(&command)) {
            Ok(reply) => {
                self.metrics.command_run(label, "ok");
                tracing::info!(id = %received.id, command = label, "command done");
                Outcome::Reply(reply)
            }
            Err(error) => {
                let failure = Failure::from(&error);
                self.metrics.command_run(label, error.kind());
                tracing::info!(id = %received.id, command = label, %error, "command failed");
                Outcome::Failure(pb::CommandFailure {
                    kind: failure.kind,
                    message: failure.message,
                    field: failure.field,
                })
            }
        }
    }

    fn expired(&self, label: &'static str, id: &str) -> Outcome {
        self.metrics.command_run(label, "expired");
        tracing::warn!(%id, command = label, "command read after its deadline: not run");
        Outcome::Expired(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_in_the_control_planes_clock() {
        let now = unix_ms();
        // The control plane is an hour ahead of this host.
        let clock = ControlClock::from_welcome(now + 3_600_000);
        assert!(clock.left(now + 3_600_000 + 5_000) > Duration::from_secs(4));
        assert!(clock.left(now + 5_000).is_zero(), "in the control plane's clock, that was an hour ago");
        let same = ControlClock::from_welcome(0);
        assert!(same.left(now + 5_000) > Duration::from_secs(4));
        assert!(same.left(i64::MIN).is_zero());
    }
}
