//! The gRPC edge: one module per service. Handlers are thin: they turn
//! the request into checked domain values, call the domain service and
//! convert the answer back. Errors become gRPC statuses here, in one
//! exhaustive mapping per error type.

pub mod agent;
pub mod auth;
pub mod blocklist;
pub mod cluster;
pub mod history;
pub mod hosts;
pub mod jail;
pub mod settings;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::AuthError,
    blocklist::BlocklistError,
    cluster::ClusterError,
    error::{InvalidArgument, StoreError},
    history::queries::QueryError,
    settings::SettingsError,
};
use bangui_fail2ban::Fail2banError;

/// INVALID_ARGUMENT naming the field, with a BadRequest detail.
pub fn invalid(error: InvalidArgument) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        error.to_string(),
        ErrorDetails::with_bad_request_violation(error.field, error.reason),
    )
}

/// fail2ban's failure as the caller should see it.
pub(crate) fn fail2ban_status(error: Fail2banError) -> Status {
    match error {
        Fail2banError::Invalid(e) => invalid(e),
        e @ (Fail2banError::Unavailable { .. } | Fail2banError::Timeout { .. }) => Status::unavailable(e.to_string()),
        e @ Fail2banError::UnknownJail(_) => Status::not_found(e.to_string()),
        e @ Fail2banError::ReplyTooLarge { .. } => Status::resource_exhausted(e.to_string()),
        e @ (Fail2banError::Rejected { .. } | Fail2banError::CannotStart { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        e @ (Fail2banError::Server(_) | Fail2banError::Protocol(_)) => {
            tracing::error!(error = %e, "fail2ban answered something this service cannot use");
            Status::internal("fail2ban's reply could not be used; see the control-service log")
        }
        // Another host's failure, by the kind its agent named.
        Fail2banError::Remote { kind, message } => Status::new(
            match kind {
                "unavailable" | "timeout" => Code::Unavailable,
                "not_found" => Code::NotFound,
                "rejected" | "cannot_start" => Code::FailedPrecondition,
                "too_large" => Code::ResourceExhausted,
                _ => Code::Internal,
            },
            message,
        ),
    }
}

/// SQLSTATEs of a value the request made out of range (numeric overflow,
/// datetime overflow): the request's fault, not the database's.
const OUT_OF_RANGE_SQLSTATES: [&str; 2] = ["22003", "22008"];

/// The control database failed: the caller learns only that it is down.
/// A value out of range (requests are checked before SQL, so this is a
/// missed check) is INVALID_ARGUMENT, never "unavailable".
pub(crate) fn store_unavailable(error: &StoreError) -> Status {
    if let StoreError::Database(sqlx::Error::Database(db)) = error
        && db.code().is_some_and(|code| OUT_OF_RANGE_SQLSTATES.contains(&code.as_ref()))
    {
        tracing::warn!(%error, "a request value was out of range in SQL");
        return Status::invalid_argument("a value in the request is out of range");
    }
    tracing::error!(%error, "control database error");
    Status::unavailable("the control database is unavailable")
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid(e) => invalid(e),
            e @ (AuthError::AlreadySetUp | AuthError::NotSetUp | AuthError::ManagedByConfig) => {
                Status::failed_precondition(e.to_string())
            }
            e @ (AuthError::WrongPassword | AuthError::Unauthenticated(_)) => Status::unauthenticated(e.to_string()),
            e @ AuthError::Throttled { retry_after, .. } => Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            e @ AuthError::Busy => Status::with_error_details(
                Code::ResourceExhausted,
                e.to_string(),
                ErrorDetails::with_retry_info(Some(crate::auth::hasher::BUSY_RETRY)),
            ),
            e @ AuthError::SetupToken(_) => Status::permission_denied(e.to_string()),
            e @ AuthError::Conflict => Status::aborted(e.to_string()),
            AuthError::Hash(reason) => {
                tracing::error!(%reason, "password hashing failed");
                Status::internal("password hashing failed; see the control-service log")
            }
            AuthError::Store(e) => store_unavailable(&e),
        }
    }
}

impl From<SettingsError> for Status {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Invalid(e) => invalid(e),
            SettingsError::Store(e) => store_unavailable(&e),
        }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Invalid(e) => invalid(e),
            QueryError::Store(e) => store_unavailable(&e),
        }
    }
}

impl From<BlocklistError> for Status {
    fn from(error: BlocklistError) -> Self {
        match error {
            BlocklistError::Invalid(e) => invalid(e),
            e @ BlocklistError::NameTaken(_) => Status::already_exists(e.to_string()),
            e @ BlocklistError::NotFound(_) => Status::not_found(e.to_string()),
            e @ (BlocklistError::MissingJail(_) | BlocklistError::JailFixed(_)) => {
                Status::failed_precondition(e.to_string())
            }
            // Another holder has it: try again later.
            e @ BlocklistError::Busy { .. } => Status::aborted(e.to_string()),
            e @ BlocklistError::NoException { .. } => Status::not_found(e.to_string()),
            e @ BlocklistError::Incomplete(_) => Status::unavailable(e.to_string()),
            e @ BlocklistError::PreviewsBusy(_) => Status::resource_exhausted(e.to_string()),
            BlocklistError::Fail2ban(e) => fail2ban_status(e),
            // The list's server is another party: its failure is not ours.
            e @ (BlocklistError::Fetch(_) | BlocklistError::Parse(_)) => Status::failed_precondition(e.to_string()),
            BlocklistError::Store(e) => store_unavailable(&e),
        }
    }
}

impl From<ClusterError> for Status {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Invalid(e) => invalid(e),
            e @ ClusterError::UnknownJob { .. } => Status::not_found(e.to_string()),
            ClusterError::Store(e) => store_unavailable(&e),
        }
    }
}
