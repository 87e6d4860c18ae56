//! Prometheus metrics: every name in one place.
//!
//! The registry belongs to the application (no global state), so tests can
//! run several services in one process.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::fail2ban::Fail2banError;

/// `control_fail2ban_commands_total{command,outcome}`: commands sent to fail2ban's socket.
pub const FAIL2BAN_COMMANDS: &str = "control_fail2ban_commands";
/// `control_fail2ban_command_duration_seconds{command}`: time from sending a command to its reply.
pub const FAIL2BAN_COMMAND_DURATION: &str = "control_fail2ban_command_duration_seconds";
/// `control_dependency_up{dependency}`: 1 when fail2ban, the geo-service or the database answered the last probe.
pub const DEPENDENCY_UP: &str = "control_dependency_up";
/// `control_jail_actions_total{action,outcome}`: changes made to fail2ban through this service.
pub const JAIL_ACTIONS: &str = "control_jail_actions";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandOnly {
    command: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    durations: Family<CommandOnly, Histogram>,
    dependency_up: Family<DependencyLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
}

/// The service's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The command word as a bounded label value.
fn command_label(command: &str) -> &'static str {
    match command {
        "ping" => "ping",
        "version" => "version",
        "status" => "status",
        "get" => "get",
        "set" => "set",
        "stop" => "stop",
        "unban" => "unban",
        "banned" => "banned",
        _ => "other",
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(FAIL2BAN_COMMANDS, "Commands sent to fail2ban's socket, by outcome", commands.clone());
        let durations = Family::<CommandOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            FAIL2BAN_COMMAND_DURATION,
            "Time from sending a command to fail2ban to its reply",
            durations.clone(),
        );
        let dependency_up = Family::<DependencyLabels, Gauge>::default();
        registry.register(DEPENDENCY_UP, "1 when the dependency answered the last probe", dependency_up.clone());
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(JAIL_ACTIONS, "Changes made to fail2ban through this service", actions.clone());
        Self { inner: Arc::new(Inner { registry, commands, durations, dependency_up, actions }) }
    }

    pub(crate) fn fail2ban_command(&self, command: &str, error: Option<&Fail2banError>, took: Duration) {
        let command = command_label(command);
        let outcome = match error {
            None => "ok",
            Some(Fail2banError::Unavailable { .. }) => "unavailable",
            Some(Fail2banError::Timeout { .. }) => "timeout",
            Some(Fail2banError::UnknownJail(_)) => "not_found",
            Some(Fail2banError::Rejected { .. }) => "rejected",
            Some(Fail2banError::Invalid(_)) => "invalid",
            Some(_) => "error",
        };
        self.inner.commands.get_or_create(&CommandLabels { command, outcome }).inc();
        self.inner.durations.get_or_create(&CommandOnly { command }).observe(took.as_secs_f64());
    }

    pub fn set_dependency_up(&self, dependency: &'static str, up: bool) {
        self.inner.dependency_up.get_or_create(&DependencyLabels { dependency }).set(i64::from(up));
    }

    pub fn jail_action(&self, action: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner.actions.get_or_create(&ActionLabels { action, outcome }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}
