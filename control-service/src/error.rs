//! Errors more than one component shares. Each component has its own
//! error enum (`AuthError`, `SettingsError`, `Fail2banError`, …) built on
//! these; `api` maps every one of them to a gRPC status.

/// A bad argument: which request field, and why (INVALID_ARGUMENT with a
/// BadRequest detail naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidArgument {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidArgument {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// The control database failed (shared with the geo-service).
pub use bangui_runtime::db::StoreError;
