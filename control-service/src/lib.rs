//! BanGUI control-service: owns fail2ban and everything around it.
//!
//! It speaks fail2ban's own socket protocol and offers jails and bans as
//! gRPC (`bangui.control.v1.JailService`), logs every change it makes in
//! the control database, and places active bans on the map through the
//! geo-service. Only callers with a session (`AuthService.Login`) get in;
//! runtime settings live in the database (`SettingsService`). See
//! `shared/DESIGN.md` sections 3, 5 and 6.
//!
//! Layout, one module per concern:
//! * [`config`]: the typed configuration (defaults → `CONTROL_*` env → flags).
//! * [`app`]: startup stages, serving gRPC and metrics, dependency probes,
//!   graceful shutdown.
//! * [`api`]: thin gRPC handlers and the proto ↔ domain conversions.
//! * [`jails`]: the jail operations behind the API.
//! * [`auth`]: the master password, sessions, login throttling and the
//!   session gate in front of every control service.
//! * [`settings`]: runtime settings kept in the control database.
//! * [`clock`]: injectable time.
//! * [`leader`]: the lease and the elector (exactly one replica leads).
//! * [`jobs`]: the scheduled jobs, gated on leadership and the run ledger.
//! * [`fail2ban`]: the pickle codec, the socket client, input checks and
//!   the typed commands.
//! * [`geo_client`]: the geo-service client.
//! * [`store`]: the control database (repository trait, SQLite, PostgreSQL).
//! * [`metrics`]: Prometheus metric names and the registry.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fail2ban;
pub mod geo_client;
pub mod history;
pub mod jails;
pub mod jobs;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod settings;
pub mod store;

pub use app::{Application, StartupError};
pub use config::Config;
