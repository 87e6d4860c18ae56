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

use bangui_fail2ban::{CommandObserver, Fail2banError, command_label};

/// `control_fail2ban_commands_total{command,outcome}`: commands sent to fail2ban's socket.
pub const FAIL2BAN_COMMANDS: &str = "control_fail2ban_commands";
/// `control_fail2ban_command_duration_seconds{command}`: time from sending a command to its reply.
pub const FAIL2BAN_COMMAND_DURATION: &str = "control_fail2ban_command_duration_seconds";
/// `control_dependency_up{dependency}`: 1 when fail2ban, the geo-service or the database answered the last probe.
pub const DEPENDENCY_UP: &str = "control_dependency_up";
/// `control_jail_actions_total{action,outcome}`: changes made to fail2ban through this service.
pub const JAIL_ACTIONS: &str = "control_jail_actions";

/// `control_agent_streams`: agent streams (Attach) open on this replica.
pub const AGENT_STREAMS: &str = "control_agent_streams";
/// `control_is_leader`: 1 while this replica leads.
pub const IS_LEADER: &str = "control_is_leader";
/// `control_leader_term`: the term this replica leads with (0 when following).
pub const LEADER_TERM: &str = "control_leader_term";
/// `control_lease_renew_failures_total`: acquire/renew attempts that failed (database unreachable or slow).
pub const LEASE_RENEW_FAILURES: &str = "control_lease_renew_failures";
/// `control_job_runs_total{job,status}`: job runs by outcome (ok, failed, cancelled, skipped).
pub const JOB_RUNS: &str = "control_job_runs";
/// `control_job_duration_seconds{job}`: how long job runs took.
pub const JOB_DURATION: &str = "control_job_duration_seconds";
/// `control_history_unreadable_rows_total{reason}`: fail2ban rows archived without their `data`
/// (reason: not_utf8, not_json, too_large).
pub const HISTORY_UNREADABLE_ROWS: &str = "control_history_unreadable_rows";

/// `control_password_checks_total{purpose,outcome}`: argon2 password verifications actually run (`login` or `change_password`; `match` or `mismatch`).
pub const PASSWORD_CHECKS: &str = "control_password_checks";
/// `control_login_limited_total{reason}`: login (and ChangePassword) attempts refused before any hash (`throttled`: the client's limit; `busy`: too many hashes at once) or slowed down (`slowed`).
pub const LOGIN_LIMITED: &str = "control_login_limited";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    purpose: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitedLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    job: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobOnly {
    job: &'static str,
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    durations: Family<CommandOnly, Histogram>,
    dependency_up: Family<DependencyLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
    is_leader: Gauge,
    term: Gauge,
    agent_streams: Gauge,
    renew_failures: Counter,
    job_runs: Family<JobLabels, Counter>,
    job_durations: Family<JobOnly, Histogram>,
    password_checks: Family<CheckLabels, Counter>,
    login_limited: Family<LimitedLabels, Counter>,
    unreadable_rows: Family<ReasonLabels, Counter>,
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
        let is_leader = Gauge::default();
        registry.register(IS_LEADER, "1 while this replica leads", is_leader.clone());
        let term = Gauge::default();
        registry.register(LEADER_TERM, "The term this replica leads with (0 when following)", term.clone());
        let agent_streams = Gauge::default();
        registry.register(AGENT_STREAMS, "Agent streams (Attach) open on this replica", agent_streams.clone());
        let renew_failures = Counter::default();
        registry.register(LEASE_RENEW_FAILURES, "Lease acquire/renew attempts that failed", renew_failures.clone());
        let job_runs = Family::<JobLabels, Counter>::default();
        registry.register(JOB_RUNS, "Job runs by outcome", job_runs.clone());
        let job_durations = Family::<JobOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0])
        });
        registry.register(JOB_DURATION, "How long job runs took", job_durations.clone());
        let password_checks = Family::<CheckLabels, Counter>::default();
        registry.register(PASSWORD_CHECKS, "argon2 password verifications actually run", password_checks.clone());
        let login_limited = Family::<LimitedLabels, Counter>::default();
        registry.register(
            LOGIN_LIMITED,
            "Password attempts refused before any hash (throttled, busy) or slowed down (slowed)",
            login_limited.clone(),
        );
        let unreadable_rows = Family::<ReasonLabels, Counter>::default();
        registry.register(
            HISTORY_UNREADABLE_ROWS,
            "fail2ban rows archived without their data (not UTF-8, not JSON, too large)",
            unreadable_rows.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                commands,
                durations,
                dependency_up,
                actions,
                is_leader,
                term,
                agent_streams,
                renew_failures,
                job_runs,
                job_durations,
                password_checks,
                login_limited,
                unreadable_rows,
            }),
        }
    }

    /// The gauge of open agent streams (the hosts domain moves it).
    pub fn agent_streams(&self) -> Gauge {
        self.inner.agent_streams.clone()
    }

    pub fn set_dependency_up(&self, dependency: &'static str, up: bool) {
        self.inner.dependency_up.get_or_create(&DependencyLabels { dependency }).set(i64::from(up));
    }

    pub fn jail_action(&self, action: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.inner.actions.get_or_create(&ActionLabels { action, outcome }).inc();
    }

    pub fn set_leader(&self, leading: bool, term: i64) {
        self.inner.is_leader.set(i64::from(leading));
        self.inner.term.set(term);
    }

    pub fn lease_renew_failed(&self) {
        self.inner.renew_failures.inc();
    }

    pub fn job_run(&self, job: &'static str, status: &'static str, took: Option<Duration>) {
        self.inner.job_runs.get_or_create(&JobLabels { job, status }).inc();
        if let Some(took) = took {
            self.inner.job_durations.get_or_create(&JobOnly { job }).observe(took.as_secs_f64());
        }
    }

    pub fn password_checked(&self, purpose: &'static str, matched: bool) {
        let outcome = if matched { "match" } else { "mismatch" };
        self.inner.password_checks.get_or_create(&CheckLabels { purpose, outcome }).inc();
    }

    pub fn login_limited(&self, reason: &'static str) {
        self.inner.login_limited.get_or_create(&LimitedLabels { reason }).inc();
    }

    pub fn history_unreadable_row(&self, reason: &'static str) {
        self.inner.unreadable_rows.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

impl CommandObserver for Metrics {
    /// Counts a command to fail2ban by outcome, and times it.
    fn command(&self, command: &str, error: Option<&Fail2banError>, took: Duration) {
        let command = command_label(command);
        let outcome = error.map_or("ok", Fail2banError::kind);
        self.inner.commands.get_or_create(&CommandLabels { command, outcome }).inc();
        self.inner.durations.get_or_create(&CommandOnly { command }).observe(took.as_secs_f64());
    }
}
