//! The closed vocabularies this service stores as text, each with its one
//! string mapping (the names in the database and on the API).

use std::{fmt, str::FromStr};

/// A word that is not one of a vocabulary's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {text:?}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub text: String,
}

/// What was changed in fail2ban through this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Ban,
    Unban,
    Start,
    Stop,
    Idle,
    Params,
    IgnoreAdd,
    IgnoreRemove,
}

impl ActionKind {
    pub const ALL: [ActionKind; 8] = [
        ActionKind::Ban,
        ActionKind::Unban,
        ActionKind::Start,
        ActionKind::Stop,
        ActionKind::Idle,
        ActionKind::Params,
        ActionKind::IgnoreAdd,
        ActionKind::IgnoreRemove,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Ban => "ban",
            ActionKind::Unban => "unban",
            ActionKind::Start => "start",
            ActionKind::Stop => "stop",
            ActionKind::Idle => "idle",
            ActionKind::Params => "params",
            ActionKind::IgnoreAdd => "ignore_add",
            ActionKind::IgnoreRemove => "ignore_remove",
        }
    }
}

impl FromStr for ActionKind {
    type Err = UnknownWord;

    fn from_str(text: &str) -> Result<Self, UnknownWord> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| UnknownWord { kind: "action", text: text.into() })
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str().parse::<ActionKind>(), Ok(kind));
        }
        assert_eq!("reload".parse::<ActionKind>().unwrap_err().to_string(), "unknown action \"reload\"");
    }
}
