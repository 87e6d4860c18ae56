//! The agent's Prometheus metrics, served on `--metrics-listen` (loopback
//! by default: nothing off the host reaches the agent).

use std::{sync::Arc, time::Duration};

use bangui_fail2ban::{CommandObserver, Fail2banError, command_label};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `agent_connected`: 1 while the host's stream is attached.
pub const CONNECTED: &str = "agent_connected";
/// `agent_attach_attempts_total{outcome}`: attempts to attach (`attached`,
/// `unreachable`, `refused`).
pub const ATTACH_ATTEMPTS: &str = "agent_attach_attempts";
/// `agent_fail2ban_commands_total{command,outcome}`: commands sent to the local fail2ban.
pub const FAIL2BAN_COMMANDS: &str = "agent_fail2ban_commands";
/// `agent_commands_total{command,outcome}`: commands from the control plane
/// (`outcome`: `ok`, `expired`, or the failure's kind).
pub const COMMANDS: &str = "agent_commands";
/// `agent_fail2ban_command_duration_seconds{command}`.
pub const FAIL2BAN_COMMAND_DURATION: &str = "agent_fail2ban_command_duration_seconds";
/// `agent_outbox_backlog`: history events in the outbox the control plane
/// has not acknowledged.
pub const OUTBOX_BACKLOG: &str = "agent_outbox_backlog";
/// `agent_outbox_events_total`: history events written to the outbox.
pub const OUTBOX_EVENTS: &str = "agent_outbox_events";
/// `agent_history_unreadable_rows_total{reason}`: fail2ban rows taken
/// without their log lines (`not_utf8`, `not_json`, `too_large`).
pub const HISTORY_UNREADABLE_ROWS: &str = "agent_history_unreadable_rows";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandOnly {
    command: &'static str,
}

/// The agent's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    connected: Gauge,
    attempts: Family<OutcomeLabels, Counter>,
    commands: Family<CommandLabels, Counter>,
    runs: Family<CommandLabels, Counter>,
    durations: Family<CommandOnly, Histogram>,
    backlog: Gauge,
    written: Counter,
    unreadable: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        registry.register(CONNECTED, "1 while the host's stream to the control plane is attached", connected.clone());
        let attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(ATTACH_ATTEMPTS, "Attempts to attach to the control plane, by outcome", attempts.clone());
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(FAIL2BAN_COMMANDS, "Commands sent to the local fail2ban, by outcome", commands.clone());
        let runs = Family::<CommandLabels, Counter>::default();
        registry.register(COMMANDS, "Commands from the control plane, by outcome", runs.clone());
        let durations = Family::<CommandOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        registry.register(FAIL2BAN_COMMAND_DURATION, "Time from a fail2ban command to its reply", durations.clone());
        let backlog = Gauge::default();
        registry.register(OUTBOX_BACKLOG, "History events in the outbox not yet acknowledged", backlog.clone());
        let written = Counter::default();
        registry.register(OUTBOX_EVENTS, "History events written to the outbox", written.clone());
        let unreadable = Family::<ReasonLabels, Counter>::default();
        registry.register(
            HISTORY_UNREADABLE_ROWS,
            "fail2ban rows taken without their log lines, by reason",
            unreadable.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                connected,
                attempts,
                commands,
                runs,
                durations,
                backlog,
                written,
                unreadable,
            }),
        }
    }

    pub fn set_connected(&self, connected: bool) {
        self.inner.connected.set(i64::from(connected));
    }

    /// `outcome`: `attached`, `unreachable` or `refused`.
    pub fn attach_attempt(&self, outcome: &'static str) {
        self.inner.attempts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn set_outbox_backlog(&self, events: i64) {
        self.inner.backlog.set(events.max(0));
    }

    pub fn outbox_written(&self, events: u64) {
        self.inner.written.inc_by(events);
    }

    /// `reason`: `not_utf8`, `not_json` or `too_large`.
    pub fn history_unreadable_row(&self, reason: &'static str) {
        self.inner.unreadable.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The outbox backlog last set (for the heartbeat).
    pub fn outbox_backlog(&self) -> u64 {
        u64::try_from(self.inner.backlog.get()).unwrap_or(0)
    }

    /// A command from the control plane ended with `outcome`.
    pub fn command_run(&self, command: &'static str, outcome: &'static str) {
        self.inner.runs.get_or_create(&CommandLabels { command, outcome }).inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.inner.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl CommandObserver for Metrics {
    fn command(&self, command: &str, error: Option<&Fail2banError>, took: Duration) {
        let command = command_label(command);
        let outcome = error.map_or("ok", Fail2banError::kind);
        self.inner.commands.get_or_create(&CommandLabels { command, outcome }).inc();
        self.inner.durations.get_or_create(&CommandOnly { command }).observe(took.as_secs_f64());
    }
}
