//! `fail2ban-agent`: runs beside fail2ban on each host and dials the
//! BanGUI control plane (DESIGN.md section 12). It opens no port for the
//! control plane: it enrolls once with a one-time token ([`enroll`]), keeps
//! the host's identity on disk ([`identity`]), and holds the host's one
//! live stream to any control-service replica ([`session`]), reconnecting
//! with jittered backoff ([`backoff`]) to the next endpoint when a replica
//! goes away. The jail operations the control plane sends down that
//! stream run against the local fail2ban ([`commands`]). The host's ban
//! history goes up through a durable outbox ([`outbox`]): filled from
//! fail2ban's database whether or not the control plane is reachable,
//! delivered with per-host sequence numbers and deleted once acknowledged.
//!
//! What it reports about fail2ban comes from [`bangui_fail2ban`], the same
//! code the control-service uses for a local socket.

pub mod backoff;
pub mod commands;
pub mod config;
pub mod connect;
pub mod enroll;
pub mod identity;
pub mod metrics;
pub mod outbox;
pub mod session;

pub use config::Config;

/// The agent's version, announced in every Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
