//! BanGUI geo-service: where IP addresses are.
//!
//! Local MaxMind-format databases (MMDB) are the primary source, read in
//! memory and shared lock-free between requests; reserved ranges are
//! answered locally and never reach a database. See `shared/DESIGN.md`
//! section 2.
//!
//! Layout, one module per concern (imports only point down this list's
//! domain part: `lookup` → `cache`, `fallback`, `resolve` → `mmdb`; `metrics`
//! and `clock` import no domain module but `resolve`'s `Outcome` and `mmdb`):
//! * [`config`]: the typed configuration (defaults → `GEO_*` env → flags).
//! * [`app`]: startup stages, serving gRPC and metrics, graceful shutdown.
//! * [`transport`]: per-method decode limits and the gate on batches.
//! * [`api`]: thin gRPC handlers: validation and proto ↔ domain conversions.
//! * [`lookup`]: the resolution order (databases → cache → fallback →
//!   negative), ReResolve, purge and the `GetInfo` snapshot.
//! * [`resolve`]: input bounds, parsing and normalization, reserved ranges,
//!   the local database step and the answer types.
//! * [`cache`]: the fallback's answers in memory in front of [`store`],
//!   written behind the lookups.
//! * [`store`]: the persistent cache, one trait with one implementation
//!   generic over SQLite and PostgreSQL, the dialects' differences in one
//!   trait (as in the control-service).
//! * [`fallback`]: the ip-api client, its budget, breaker and bounds.
//! * [`mmdb`]: loading, verifying and merging databases of every schema.
//! * [`reload`]: hot reload of the database files.
//! * [`metrics`]: Prometheus metric names and the registry.
//! * [`clock`]: Unix time for rows and metrics.
//!
//! Logging, the SIGTERM signal and the metrics endpoint come from
//! `bangui-runtime`, shared with the control-service.

pub mod api;
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod fallback;
pub mod lookup;
pub mod metrics;
pub mod mmdb;
pub mod reload;
pub mod resolve;
pub mod store;
pub mod transport;

pub use app::{Application, StartupError};
pub use config::Config;
