//! The gRPC edge: one module per service. Handlers are thin: they turn
//! the request into checked domain values, call the domain service and
//! convert the answer back. Errors become gRPC statuses here, in one
//! exhaustive mapping per error type.

pub mod jail;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::fail2ban::{Fail2banError, InvalidArgument};

/// INVALID_ARGUMENT naming the field, with a BadRequest detail.
pub fn invalid(error: InvalidArgument) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        error.to_string(),
        ErrorDetails::with_bad_request_violation(error.field, error.reason),
    )
}

impl From<Fail2banError> for Status {
    fn from(error: Fail2banError) -> Self {
        match error {
            Fail2banError::Invalid(e) => invalid(e),
            e @ (Fail2banError::Unavailable { .. } | Fail2banError::Timeout { .. }) => {
                Status::unavailable(e.to_string())
            }
            e @ Fail2banError::UnknownJail(_) => Status::not_found(e.to_string()),
            e @ (Fail2banError::Rejected { .. } | Fail2banError::CannotStart { .. }) => {
                Status::failed_precondition(e.to_string())
            }
            e @ (Fail2banError::Server(_) | Fail2banError::Protocol(_)) => {
                tracing::error!(error = %e, "fail2ban answered something this service cannot use");
                Status::internal("fail2ban's reply could not be used; see the control-service log")
            }
        }
    }
}
