//! What can go wrong talking to fail2ban.

use std::time::Duration;

use bangui_runtime::InvalidArgument;

use crate::codec::{self, PyValue};

/// What can go wrong talking to fail2ban.
#[derive(Debug, thiserror::Error)]
pub enum Fail2banError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error("fail2ban is unavailable on {socket}: {reason}")]
    Unavailable { socket: String, reason: String },
    #[error("fail2ban did not answer `{command}` within {after:?}")]
    Timeout { after: Duration, command: String },
    #[error("jail {0:?} does not exist")]
    UnknownJail(String),
    #[error("fail2ban refused the command: {class}: {message}")]
    Rejected { class: String, message: String },
    #[error("fail2ban failed: {0}")]
    Server(String),
    #[error("unexpected reply from fail2ban: {0}")]
    Protocol(String),
    /// The reply is larger than this service reads (e.g. a jail with more
    /// bans than [`crate::banlist::MAX_BAN_LIST_ITEMS`]); nothing of it is used.
    #[error("fail2ban's reply to `{command}` is not read: {limit}")]
    ReplyTooLarge { command: String, limit: String },
    #[error("cannot start jail {jail:?}: {reason}")]
    CannotStart { jail: String, reason: String },
    /// One of the above, on another host: its kind and its message, as the
    /// agent sent them ([`crate::command::Failure`]).
    #[error("{message}")]
    Remote { kind: &'static str, message: String },
}

impl Fail2banError {
    pub(crate) fn from_exception(module: &str, name: &str, args: &PyValue) -> Self {
        let message = codec::Reply::exception_message(args);
        match (module, name) {
            ("fail2ban.exceptions", "UnknownJailException") => Fail2banError::UnknownJail(message),
            _ => Fail2banError::Rejected { class: format!("{module}.{name}"), message },
        }
    }

    /// Every [`Fail2banError::kind`].
    pub const KINDS: [&'static str; 8] =
        ["unavailable", "timeout", "not_found", "rejected", "cannot_start", "too_large", "invalid", "error"];

    /// A short label of the error's kind, for metrics and for the wire
    /// (one of [`Fail2banError::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Fail2banError::Unavailable { .. } => "unavailable",
            Fail2banError::Timeout { .. } => "timeout",
            Fail2banError::UnknownJail(_) => "not_found",
            Fail2banError::Rejected { .. } => "rejected",
            Fail2banError::CannotStart { .. } => "cannot_start",
            Fail2banError::ReplyTooLarge { .. } => "too_large",
            Fail2banError::Invalid(_) => "invalid",
            Fail2banError::Remote { kind, .. } => kind,
            Fail2banError::Server(_) | Fail2banError::Protocol(_) => "error",
        }
    }

    /// fail2ban could not be reached (as opposed to: it answered no).
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind(), "unavailable" | "timeout")
    }
}

pub(crate) fn shape(what: &str, value: &PyValue) -> Fail2banError {
    let mut text = format!("{value:?}");
    if text.len() > 200 {
        let cut = (0..=200).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    Fail2banError::Protocol(format!("{what}: {text}"))
}
