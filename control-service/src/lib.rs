//! BanGUI control-service: owns fail2ban and everything around it.
//!
//! It speaks fail2ban's own socket protocol and offers jails and bans as
//! gRPC (`bangui.control.v1.JailService`), logs every change it makes in
//! the control database, archives fail2ban's bans for the dashboard
//! (`HistoryService`), and places bans on the map through the geo-service.
//! Only callers with a session (`AuthService.Login`) get in; runtime
//! settings live in the database (`SettingsService`); one replica at a
//! time runs the scheduled jobs (`ClusterService`). See `shared/DESIGN.md`
//! sections 3 to 6.
//!
//! Layout, one module per concern. `app` wires the rest; handlers in `api`
//! convert and call a domain module; only the domain modules use `store`;
//! time comes from the one [`clock::Clock`] `app` builds.
//! * `main.rs`: the binary (config, build, serve until SIGTERM).
//! * [`app`]: startup stages, serving gRPC and metrics, dependency probes,
//!   graceful shutdown.
//! * [`agent_port`]: the agent port (`--agent-listen`), where the fleet's
//!   agents enroll and attach, outside the session gate.
//! * [`config`]: the typed configuration (defaults → `CONTROL_*` env → flags).
//! * [`api`]: the gRPC edge, one module per service: proto ↔ domain
//!   conversions and the one error → status mapping.
//! * [`auth`]: the master password, sessions, login throttling and the
//!   session gate in front of every control service.
//! * [`settings`]: runtime settings, typed and validated.
//! * [`jails`]: the jail operations behind JailService, each logged.
//! * [`blocklist`]: blocklist sources, their download, parsing and import
//!   into a jail.
//! * [`history`]: the ban archive's sync from fail2ban's database;
//!   [`history::queries`], the dashboard's questions over it.
//! * [`hosts`]: the fleet's identity: enrollment, credentials, revocation
//!   and each host's one live agent stream (HostService, AgentService).
//! * [`cluster`]: who leads, the jobs and "run now", behind ClusterService.
//! * [`leader`]: the lease and the elector (exactly one replica leads).
//! * [`jobs`]: the scheduled jobs, gated on leadership and the run ledger.
//! * [`fail2ban`]: the pickle codec, the socket client, input checks, the
//!   typed commands and the reader of fail2ban's database.
//! * [`geo_client`]: the geo-service client.
//! * [`store`]: the control database: one repository trait per aggregate,
//!   one implementation of each, generic over the backend (SQLite,
//!   PostgreSQL), the dialects' differences in one trait.
//! * [`kinds`]: the words stored as text (origins, events, jail actions).
//! * [`error`]: the error types components share.
//! * [`clock`]: wall time, injectable so tests can move it.
//! * [`metrics`]: Prometheus metric names and the registry.

pub mod agent_port;
pub mod api;
pub mod app;
pub mod auth;
pub mod blocklist;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fleet;

pub mod geo_client;
pub mod history;
pub mod hosts;
pub mod jails;
pub mod jobs;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod settings;
pub mod store;

pub use app::{Application, StartupError};
pub use config::Config;
