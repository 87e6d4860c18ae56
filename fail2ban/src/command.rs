//! Jail operations as values: what the control plane asks of a host's
//! fail2ban ([`Command`]), what comes back ([`Reply`], or a [`Failure`]),
//! and [`run`], which carries one out against a [`Fail2ban`].
//!
//! The same [`run`] serves a `fail2ban-agent` (the command came down its
//! stream as JSON) and the control-service's embedded host `local` (the
//! command never left the process), so a jail operation behaves the same
//! wherever its fail2ban is. Everything in a command is checked again
//! here, as if it came from the network: a control plane that sends a bad
//! jail name or address gets `invalid`, and fail2ban gets nothing.

use std::net::IpAddr;

use bangui_runtime::InvalidArgument;
use serde::{Deserialize, Serialize};

use crate::{
    ActiveBan, Fail2ban, Fail2banError, JailDetail, JailParams, JailStatus, ServerStatus,
    validate::{JailName, parse_ignore_entry, parse_seconds},
};

/// The largest command or reply carried as JSON, in bytes. A reply larger
/// than this (a host with tens of thousands of active bans, asked for all
/// of them) is [`Fail2banError::ReplyTooLarge`]: nothing of it is sent.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// One jail operation for a host's fail2ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    ServerStatus,
    JailDetail {
        jail: String,
    },
    StartJail {
        jail: String,
    },
    StopJail {
        jail: String,
    },
    SetIdle {
        jail: String,
        idle: bool,
    },
    SetParams {
        jail: String,
        bantime: Option<i64>,
        findtime: Option<i64>,
        maxretry: Option<u32>,
    },
    AddIgnore {
        jail: String,
        entry: String,
    },
    RemoveIgnore {
        jail: String,
        entry: String,
    },
    Ban {
        jail: String,
        ip: IpAddr,
    },
    /// From `jail`, or from every jail.
    Unban {
        ip: IpAddr,
        jail: Option<String>,
    },
    ActiveBans,
}

impl Command {
    /// A short name, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Command::ServerStatus => "server_status",
            Command::JailDetail { .. } => "jail_detail",
            Command::StartJail { .. } => "start_jail",
            Command::StopJail { .. } => "stop_jail",
            Command::SetIdle { .. } => "set_idle",
            Command::SetParams { .. } => "set_params",
            Command::AddIgnore { .. } => "add_ignore",
            Command::RemoveIgnore { .. } => "remove_ignore",
            Command::Ban { .. } => "ban",
            Command::Unban { .. } => "unban",
            Command::ActiveBans => "active_bans",
        }
    }

    /// Changes something (as opposed to: only reads).
    pub fn is_write(&self) -> bool {
        !matches!(self, Command::ServerStatus | Command::JailDetail { .. } | Command::ActiveBans)
    }

    pub fn to_json(&self) -> String {
        // A command is a plain tree of strings and numbers.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A command read from the wire: at most [`MAX_JSON_BYTES`], one of
    /// the operations above, nothing more.
    pub fn from_json(text: &str) -> Result<Self, InvalidArgument> {
        if text.len() > MAX_JSON_BYTES {
            return Err(InvalidArgument::new("operation", format!("longer than {MAX_JSON_BYTES} bytes")));
        }
        serde_json::from_str(text).map_err(|e| InvalidArgument::new("operation", e.to_string()))
    }
}

/// What a command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    ServerStatus {
        status: ServerStatus,
    },
    JailDetail {
        detail: JailDetail,
    },
    /// `started`: false when it was running already.
    Started {
        status: JailStatus,
        started: bool,
    },
    Stopped,
    Idle {
        idle: bool,
    },
    Params {
        bantime: i64,
        findtime: i64,
        maxretry: u32,
    },
    IgnoreList {
        entries: Vec<String>,
    },
    /// `None`: it was banned already. Else fail2ban's ban time (Unix
    /// seconds) and length.
    Banned {
        ban: Option<(i64, i64)>,
    },
    /// How many bans were lifted, and the jails the address was banned in
    /// before (for the archive's unban events).
    Unbanned {
        lifted: u32,
        jails: Vec<String>,
    },
    ActiveBans {
        bans: Vec<ActiveBan>,
    },
}

impl Reply {
    /// Which reply it is, for errors and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Reply::ServerStatus { .. } => "server_status",
            Reply::JailDetail { .. } => "jail_detail",
            Reply::Started { .. } => "started",
            Reply::Stopped => "stopped",
            Reply::Idle { .. } => "idle",
            Reply::Params { .. } => "params",
            Reply::IgnoreList { .. } => "ignore_list",
            Reply::Banned { .. } => "banned",
            Reply::Unbanned { .. } => "unbanned",
            Reply::ActiveBans { .. } => "active_bans",
        }
    }

    /// The reply as JSON, or [`Fail2banError::ReplyTooLarge`] beyond
    /// [`MAX_JSON_BYTES`].
    pub fn to_json(&self, command: &Command) -> Result<String, Fail2banError> {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() > MAX_JSON_BYTES {
            return Err(Fail2banError::ReplyTooLarge {
                command: command.label().to_owned(),
                limit: format!("{} bytes as JSON, more than {MAX_JSON_BYTES}", text.len()),
            });
        }
        Ok(text)
    }

    pub fn from_json(text: &str) -> Result<Self, Fail2banError> {
        if text.len() > MAX_JSON_BYTES {
            return Err(Fail2banError::Protocol(format!("a reply longer than {MAX_JSON_BYTES} bytes")));
        }
        serde_json::from_str(text).map_err(|e| Fail2banError::Protocol(format!("a reply this side cannot read: {e}")))
    }
}

/// A [`Fail2banError`] as it crosses the wire: its kind
/// ([`Fail2banError::kind`]), its message, and for `invalid` the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: String,
    pub message: String,
    pub field: String,
}

impl From<&Fail2banError> for Failure {
    fn from(error: &Fail2banError) -> Self {
        match error {
            Fail2banError::Invalid(invalid) => {
                Failure { kind: "invalid".into(), message: invalid.reason.clone(), field: invalid.field.to_owned() }
            }
            Fail2banError::Remote { kind, message } => {
                Failure { kind: (*kind).to_owned(), message: message.clone(), field: String::new() }
            }
            other => Failure { kind: other.kind().to_owned(), message: other.to_string(), field: String::new() },
        }
    }
}

/// The request fields a command can name as invalid: a field read from the
/// wire becomes one of these (or `operation`).
const FIELDS: [&str; 8] =
    ["jail", "ip", "bantime_seconds", "findtime_seconds", "maxretry", "entry", "idle", "operation"];

impl From<Failure> for Fail2banError {
    fn from(failure: Failure) -> Self {
        if failure.kind == "invalid" {
            let field = FIELDS.iter().find(|f| **f == failure.field).copied().unwrap_or("operation");
            return Fail2banError::Invalid(InvalidArgument::new(field, failure.message));
        }
        let kind = Fail2banError::KINDS.iter().find(|k| **k == failure.kind).copied().unwrap_or("error");
        Fail2banError::Remote { kind, message: failure.message }
    }
}

fn jail(name: &str) -> Result<JailName, Fail2banError> {
    Ok(JailName::parse("jail", name)?)
}

/// Carries out `command` against `fail2ban`, with the client's bounds.
pub async fn run(fail2ban: &Fail2ban, command: &Command) -> Result<Reply, Fail2banError> {
    Ok(match command {
        Command::ServerStatus => Reply::ServerStatus { status: fail2ban.server_status().await? },
        Command::JailDetail { jail: name } => Reply::JailDetail { detail: fail2ban.jail_detail(&jail(name)?).await? },
        Command::StartJail { jail: name } => {
            let name = jail(name)?;
            let started = fail2ban.start_jail(&name).await?;
            Reply::Started { status: fail2ban.jail_status(&name).await?, started }
        }
        Command::StopJail { jail: name } => {
            fail2ban.stop_jail(&jail(name)?).await?;
            Reply::Stopped
        }
        Command::SetIdle { jail: name, idle } => Reply::Idle { idle: fail2ban.set_idle(&jail(name)?, *idle).await? },
        Command::SetParams { jail: name, bantime, findtime, maxretry } => {
            let params = JailParams {
                bantime: bantime.map(|v| parse_seconds("bantime_seconds", v, true)).transpose()?,
                findtime: findtime.map(|v| parse_seconds("findtime_seconds", v, false)).transpose()?,
                maxretry: maxretry
                    .map(|v| {
                        if (1..=10_000).contains(&v) {
                            Ok(v)
                        } else {
                            Err(InvalidArgument::new("maxretry", "must be 1..=10000"))
                        }
                    })
                    .transpose()?,
            };
            let (bantime, findtime, maxretry) = fail2ban.set_params(&jail(name)?, params).await?;
            Reply::Params { bantime, findtime, maxretry }
        }
        Command::AddIgnore { jail: name, entry } => {
            let entry = parse_ignore_entry("entry", entry)?;
            Reply::IgnoreList { entries: fail2ban.add_ignore(&jail(name)?, &entry).await? }
        }
        Command::RemoveIgnore { jail: name, entry } => {
            let entry = parse_ignore_entry("entry", entry)?;
            Reply::IgnoreList { entries: fail2ban.remove_ignore(&jail(name)?, &entry).await? }
        }
        Command::Ban { jail: name, ip } => Reply::Banned { ban: fail2ban.ban_timed(&jail(name)?, *ip).await? },
        Command::Unban { ip, jail: name } => {
            let name = name.as_deref().map(jail).transpose()?;
            let jails = match &name {
                Some(name) => vec![name.to_string()],
                None => fail2ban.jails_banning(*ip).await.unwrap_or_default(),
            };
            let lifted = fail2ban.unban(*ip, name.as_ref()).await?;
            Reply::Unbanned { lifted, jails }
        }
        Command::ActiveBans => Reply::ActiveBans { bans: fail2ban.active_bans().await? },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_nothing_else_is_read() {
        let ban = Command::Ban { jail: "sshd".into(), ip: "192.0.2.7".parse().unwrap() };
        assert_eq!(ban.to_json(), r#"{"op":"ban","jail":"sshd","ip":"192.0.2.7"}"#);
        assert_eq!(Command::from_json(&ban.to_json()).unwrap(), ban);
        for bad in [
            r#"{"op":"reload"}"#,
            r#"{"op":"ban","jail":"sshd","ip":"192.0.2.7","extra":1}"#,
            r#"{"op":"ban","jail":"sshd","ip":"not-an-ip"}"#,
            "[]",
        ] {
            assert_eq!(Command::from_json(bad).unwrap_err().field, "operation", "{bad}");
        }
        let huge = format!(r#"{{"op":"stop_jail","jail":"{}"}}"#, "a".repeat(MAX_JSON_BYTES));
        assert!(Command::from_json(&huge).unwrap_err().reason.contains("longer than"));
    }

    #[test]
    fn failures_keep_their_kind_and_field_across_the_wire() {
        let sent = Fail2banError::Invalid(InvalidArgument::new("jail", "bad name"));
        let back = Fail2banError::from(Failure::from(&sent));
        assert!(matches!(back, Fail2banError::Invalid(ref i) if i.field == "jail" && i.reason == "bad name"));
        let sent = Fail2banError::UnknownJail("sshd".into());
        let back = Fail2banError::from(Failure::from(&sent));
        assert_eq!(back.kind(), "not_found");
        assert_eq!(back.to_string(), sent.to_string());
        let odd = Failure { kind: "something-new".into(), message: "m".into(), field: "nope".into() };
        assert_eq!(Fail2banError::from(odd).kind(), "error");
        let odd = Failure { kind: "invalid".into(), message: "m".into(), field: "nope".into() };
        assert!(matches!(Fail2banError::from(odd), Fail2banError::Invalid(i) if i.field == "operation"));
    }

    #[test]
    fn a_reply_too_large_is_refused_whole() {
        let ban =
            ActiveBan { jail: "j".into(), ip: "192.0.2.1".into(), banned_at: 1, expires_at: None, ban_seconds: -1 };
        let reply = Reply::ActiveBans { bans: vec![ban; 20_000] };
        let error = reply.to_json(&Command::ActiveBans).unwrap_err();
        assert_eq!(error.kind(), "too_large");
        let small = Reply::Banned { ban: Some((5, 600)) };
        assert_eq!(Reply::from_json(&small.to_json(&Command::ActiveBans).unwrap()).unwrap(), small);
    }
}
