//! Blocklist imports: public lists of bad addresses mirrored into a
//! fail2ban jail (DESIGN.md section 10).
//!
//! * [`parse`]: every common list format into unique entries, with the
//!   lines it could not read; the filters that keep reserved ranges, the
//!   jail's ignoreip and the operator's networks out.
//! * [`fetch`]: the download (conditional GET, size cap while streaming,
//!   retries, public targets only).

pub mod fetch;
pub mod parse;

/// Lines of a list kept for the operator when they cannot be read.
pub const MAX_BAD_LINES: usize = 20;

/// A line of a list that is not an address, a network or a comment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadLine {
    /// 1-based.
    pub line: u64,
    /// The line as read (lossy UTF-8), at most 200 bytes.
    pub text: String,
}

/// What one import saw and did, entry by entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    /// Addresses and networks read from the list (after the CIDR policy,
    /// before the filters), each once.
    pub valid: u64,
    /// Lines that are not an entry, a comment or blank.
    pub invalid: u64,
    /// Entries listed again (the same address or network, or an address
    /// inside an expanded network listed before).
    pub duplicate: u64,
    /// In a reserved range (private, loopback, documentation, …).
    pub reserved: u64,
    /// In the jail's ignoreip list.
    pub ignored: u64,
    /// In the operator's `--never-ban` networks.
    pub never_ban: u64,
    /// Networks left out by the CIDR policy.
    pub cidr_skipped: u64,
    /// Listed and already banned in the jail (by any means).
    pub already_banned: u64,
    /// Banned by this import.
    pub newly_banned: u64,
    /// Unbanned by this import (left the list, listed by no other source).
    pub unbanned: u64,
    /// Bans or unbans fail2ban did not carry out.
    pub failed: u64,
}
