//! BanGUI geo-service: where IP addresses are.
//!
//! Local MaxMind-format databases (MMDB) are the primary source, read in
//! memory and shared lock-free between requests; reserved ranges are
//! answered locally and never reach a database. See `shared/DESIGN.md`
//! section 2.
//!
//! Layout, one module per concern:
//! * [`config`]: the typed configuration (defaults → `GEO_*` env → flags).
//! * [`app`]: startup stages, serving gRPC and metrics, graceful shutdown.
//! * [`api`]: thin gRPC handlers and the proto ↔ domain conversions.
//! * [`resolve`]: input parsing and normalization, reserved ranges, the
//!   order of sources.
//! * [`mmdb`]: loading, verifying and merging databases of every schema.
//! * [`metrics`]: Prometheus metric names and the registry.
//!
//! Logging, the SIGTERM signal and the metrics endpoint come from
//! `bangui-runtime`, shared with the control-service.

pub mod api;
pub mod app;
pub mod cache;
pub mod config;
pub mod fallback;
pub mod metrics;
pub mod mmdb;
pub mod reload;
pub mod resolve;

pub use app::{Application, StartupError};
pub use config::Config;
pub mod store;
