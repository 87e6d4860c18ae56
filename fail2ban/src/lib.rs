//! Talking to fail2ban: its pickle protocol ([`codec`]), the socket
//! ([`client`]), argument checks ([`validate`]) and the typed
//! commands ([`Fail2ban`], in `server`), with their replies parsed into
//! plain structs (`types`); fail2ban's database ([`db`]) and the no-loss
//! reading of its `bans` table into a sink ([`history`]). The
//! control-service and `fail2ban-agent` both use it.
//!
//! Commands that change fail2ban's configuration as a whole (`reload`,
//! `start` with a config stream) are never sent over the socket: an empty
//! stream deletes every jail. Starting a stopped jail goes through the
//! `fail2ban-client` binary, which reads the jail's configuration itself
//! ([`child`]: it gets none of the service's environment but the path and
//! the locale).

pub mod banlist;
pub mod bantimes;
pub mod child;
pub mod client;
pub mod codec;
pub mod command;
pub mod db;
mod error;
pub mod history;
mod server;
mod types;
pub mod validate;

pub use self::{
    banlist::JailBans,
    client::{CommandObserver, SocketClient, SocketSettings, Unobserved, command_label},
    codec::PyValue,
    error::Fail2banError,
    server::{BAN_LIST_TIMEOUT, BULK_TIMEOUT, Fail2ban},
    types::{ActiveBan, JailDetail, JailParams, JailStatus, ServerStatus, StartSettings},
    validate::JailName,
};
