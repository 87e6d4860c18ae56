//! What the typed commands answer ([`crate::Fail2ban`]).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// A jail's counters, from `status <jail>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailStatus {
    pub name: String,
    pub currently_failed: u64,
    pub total_failed: u64,
    pub currently_banned: u64,
    pub total_banned: u64,
    pub log_paths: Vec<String>,
    pub journal_matches: Vec<String>,
    /// Last idle flag set through this service, if any (fail2ban cannot be asked).
    pub idle: Option<bool>,
}

/// One active ban, from `get <jail> banip --with-time`. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveBan {
    pub jail: String,
    pub ip: String,
    pub banned_at: i64,
    /// `None` for a permanent ban.
    pub expires_at: Option<i64>,
    /// -1 for a permanent ban.
    pub ban_seconds: i64,
}

/// A jail in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailDetail {
    pub status: JailStatus,
    pub bans: Vec<ActiveBan>,
    pub bantime: i64,
    pub findtime: i64,
    pub maxretry: u32,
    pub ignore_ips: Vec<String>,
    pub actions: Vec<String>,
}

/// Server-wide status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub version: String,
    pub jails: Vec<JailStatus>,
}

/// New values for a jail; `None` leaves a value as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JailParams {
    pub bantime: Option<i64>,
    pub findtime: Option<i64>,
    pub maxretry: Option<u32>,
}

/// How to start a stopped jail: fail2ban-client with the configuration.
#[derive(Debug, Clone)]
pub struct StartSettings {
    pub client_binary: PathBuf,
    pub config_dir: Option<PathBuf>,
    pub timeout: Duration,
}
