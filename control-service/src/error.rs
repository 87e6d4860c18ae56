//! Errors more than one component shares. Each component has its own
//! error enum (`AuthError`, `SettingsError`, `Fail2banError`, …) built on
//! these; `api` maps every one of them to a gRPC status.

/// A bad argument: which request field, and why (shared with the fail2ban
/// crate).
pub use bangui_runtime::InvalidArgument;

/// The control database failed (shared with the geo-service).
pub use bangui_runtime::db::StoreError;
