//! The closed vocabularies this service stores as text, each with its one
//! string mapping (the words in the database and on the API): where a ban
//! came from ([`Origin`]), what an archived event is ([`Event`]), what a
//! change to fail2ban was ([`ActionKind`]), what a blocklist import does with
//! networks ([`CidrPolicy`]), how it ended ([`ImportStatus`]) and what started
//! it ([`RunTrigger`]).

use std::{fmt, str::FromStr};

/// A word that is not one of a vocabulary's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {text:?}")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub text: String,
}

/// A vocabulary: every word and its text.
pub trait Word: Copy + Sized + 'static {
    /// What the words name (in errors).
    const KIND: &'static str;
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// The word spelled `text`.
    fn parse_word(text: &str) -> Result<Self, UnknownWord> {
        Self::ALL
            .iter()
            .copied()
            .find(|word| word.as_str() == text)
            .ok_or_else(|| UnknownWord { kind: Self::KIND, text: text.to_owned() })
    }
}

/// Where an archived ban came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// fail2ban banned it (copied from its database).
    Fail2ban,
    /// Banned or unbanned through JailService.
    Manual,
    /// A blocklist import.
    Blocklist,
}

impl Word for Origin {
    const KIND: &'static str = "origin";
    const ALL: &'static [Self] = &[Origin::Fail2ban, Origin::Manual, Origin::Blocklist];

    fn as_str(self) -> &'static str {
        match self {
            Origin::Fail2ban => "fail2ban",
            Origin::Manual => "manual",
            Origin::Blocklist => "blocklist",
        }
    }
}

/// What an archived event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Ban,
    Unban,
}

impl Word for Event {
    const KIND: &'static str = "event";
    const ALL: &'static [Self] = &[Event::Ban, Event::Unban];

    fn as_str(self) -> &'static str {
        match self {
            Event::Ban => "ban",
            Event::Unban => "unban",
        }
    }
}

/// What was changed in fail2ban through this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl Word for ActionKind {
    const KIND: &'static str = "action";
    const ALL: &'static [Self] = &[
        ActionKind::Ban,
        ActionKind::Unban,
        ActionKind::Start,
        ActionKind::Stop,
        ActionKind::Idle,
        ActionKind::Params,
        ActionKind::IgnoreAdd,
        ActionKind::IgnoreRemove,
    ];

    fn as_str(self) -> &'static str {
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

/// What an import does with a network (CIDR) entry of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CidrPolicy {
    /// Networks are not banned (counted as `cidr_skipped`).
    #[default]
    Skip,
    /// The network is banned as it is (fail2ban bans networks), when it
    /// is no broader than the source allows (default IPv4 /12, IPv6 /32;
    /// never broader than /8, IPv6 /16); broader ones are skipped.
    Ban,
    /// Networks up to /24 (IPv6: /120) are banned address by address,
    /// larger ones skipped; the addresses count against the entry cap.
    Expand,
}

impl Word for CidrPolicy {
    const KIND: &'static str = "cidr policy";
    const ALL: &'static [Self] = &[CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand];

    fn as_str(self) -> &'static str {
        match self {
            CidrPolicy::Skip => "skip",
            CidrPolicy::Ban => "ban",
            CidrPolicy::Expand => "expand",
        }
    }
}

/// How a blocklist import ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImportStatus {
    /// The list is mirrored into the jail.
    Ok,
    /// Not modified (304) or the same body as the last import: nothing sent
    /// to fail2ban.
    Unchanged,
    /// Some bans or unbans failed; the rest were applied.
    Partial,
    /// Nothing applied: the download, the parse or fail2ban failed.
    Failed,
}

impl Word for ImportStatus {
    const KIND: &'static str = "import status";
    const ALL: &'static [Self] =
        &[ImportStatus::Ok, ImportStatus::Unchanged, ImportStatus::Partial, ImportStatus::Failed];

    fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Ok => "ok",
            ImportStatus::Unchanged => "unchanged",
            ImportStatus::Partial => "partial",
            ImportStatus::Failed => "failed",
        }
    }
}

/// What started a blocklist import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunTrigger {
    /// The source's schedule.
    Schedule,
    /// An operator asked for it.
    Manual,
}

impl Word for RunTrigger {
    const KIND: &'static str = "run trigger";
    const ALL: &'static [Self] = &[RunTrigger::Schedule, RunTrigger::Manual];

    fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
        }
    }
}

/// The same conversions for every vocabulary: `as_str` as an inherent
/// method (callers need not import `Word`), `FromStr`, `TryFrom<String>`
/// (what sqlx reads a column with), `Display`.
macro_rules! conversions {
    ($($word:ty),+ $(,)?) => {$(
        impl $word {
            pub fn as_str(self) -> &'static str {
                Word::as_str(self)
            }
        }

        impl FromStr for $word {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, UnknownWord> {
                Self::parse_word(text)
            }
        }

        impl TryFrom<String> for $word {
            type Error = UnknownWord;

            fn try_from(text: String) -> Result<Self, UnknownWord> {
                Self::parse_word(&text)
            }
        }

        impl fmt::Display for $word {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

conversions!(Origin, Event, ActionKind, CidrPolicy, ImportStatus, RunTrigger);

#[cfg(test)]
mod tests {
    use super::*;

    fn reads_back<W: Word + FromStr<Err = UnknownWord> + PartialEq + fmt::Debug>() {
        for word in W::ALL {
            assert_eq!(word.as_str().parse::<W>(), Ok(*word));
        }
    }

    #[test]
    fn every_word_reads_back_and_nothing_else_does() {
        reads_back::<Origin>();
        reads_back::<Event>();
        reads_back::<ActionKind>();
        reads_back::<CidrPolicy>();
        reads_back::<ImportStatus>();
        reads_back::<RunTrigger>();
        assert_eq!("reload".parse::<ActionKind>().unwrap_err().to_string(), "unknown action \"reload\"");
        assert_eq!(Origin::try_from("Manual".to_owned()).unwrap_err().kind, "origin");
        assert!("".parse::<Event>().is_err());
    }
}
