//! List parsing: every common blocklist format into sorted, unique,
//! canonical entries, and the filters that keep what must never be banned
//! out of them.
//!
//! One line-by-line reader covers all formats (DESIGN.md section 10): bare
//! addresses (blocklist.de, abuse.ch), networks with inline comments
//! (Spamhaus DROP text, FireHOL), `address<TAB>count` (ipsum) and one JSON
//! object a line (Spamhaus DROP JSON). Lines that are none of these are kept
//! (the first [`MAX_BAD_LINES`]) for the operator; a body with more of them
//! than entries is not a list at all and nothing is applied from it.
//!
//! Memory is bounded by the entry cap: entries collect in one `Vec` that is
//! sorted and deduplicated whenever it grows half the cap past it, so it
//! never holds much more than 1.5 times the cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bangui_runtime::reserved::{reserved_overlap, reserved_range};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{BadLine, ImportCounts, MAX_BAD_LINES};
use crate::kinds::CidrPolicy;

/// Longest text kept of a bad line, in bytes.
const BAD_LINE_BYTES: usize = 200;
/// Networks with at most this many addresses are expanded by
/// [`CidrPolicy::Expand`] (an IPv4 /24, an IPv6 /120).
const EXPAND_MAX_HOST_BITS: u8 = 8;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// What happens to networks.
    pub policy: CidrPolicy,
    /// Most unique entries a list may have (after expansion).
    pub max_entries: usize,
}

/// A list, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Sorted, unique, canonical: a host is /32 or /128 (IPv4-mapped IPv6 becomes IPv4),
    /// a network is truncated to its prefix (1.2.3.4/24 -> 1.2.3.0/24).
    pub entries: Vec<IpNet>,
    /// `valid`, `invalid`, `duplicate`, `cidr_skipped` filled; the rest 0.
    pub counts: ImportCounts,
    /// The first MAX_BAD_LINES invalid lines, with 1-based line numbers, each at most 200 bytes (cut on a char boundary).
    pub bad_lines: Vec<BadLine>,
    /// Lines read in total.
    pub lines: u64,
}

/// Why a body gives no list.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// More unique entries than `max_entries` (stop as soon as it is exceeded: memory stays bounded by the limit).
    #[error("the list has more than {limit} entries")]
    TooManyEntries {
        /// The cap that was exceeded.
        limit: usize,
    },
    /// No entry at all, or more invalid lines than valid entries: an HTML page, an error page, the wrong file. Nothing may be applied from it.
    ///
    /// Networks left out by the CIDR policy count as entries read here: a
    /// network-only list (Spamhaus DROP) under `skip` is an empty list, not
    /// the wrong file.
    #[error("not a list: {valid} entries, {invalid} invalid lines{}", first_bad_suffix(.first_bad))]
    NotAList {
        /// Entries read (after the CIDR policy).
        valid: u64,
        /// Lines that were not an entry, a comment or blank.
        invalid: u64,
        /// The first of those lines, if any.
        first_bad: Option<BadLine>,
    },
}

fn first_bad_suffix(first_bad: &Option<BadLine>) -> String {
    match first_bad {
        Some(bad) => format!(" (line {}: {:?})", bad.line, bad.text),
        None => String::new(),
    }
}

/// Reads a list body (any supported format, auto-detected line by line).
pub fn parse(body: &[u8], limits: &ParseLimits) -> Result<Parsed, ParseError> {
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    let mut collector = Collector::new(limits.max_entries);
    let mut counts = ImportCounts::default();
    let mut bad_lines = Vec::new();
    let mut lines = 0u64;

    for raw in split_lines(body) {
        lines += 1;
        match read_line(raw) {
            Line::Nothing => {}
            Line::Entry(net) => add_entry(net, limits.policy, &mut collector, &mut counts)?,
            Line::Invalid => {
                counts.invalid += 1;
                if bad_lines.len() < MAX_BAD_LINES {
                    bad_lines.push(BadLine { line: lines, text: bad_line_text(raw) });
                }
            }
        }
    }

    let (entries, duplicate) = collector.finish()?;
    counts.valid = entries.len() as u64;
    counts.duplicate = duplicate;

    // Networks skipped by the policy were read correctly: a list of only
    // networks under `skip` is a list (whose entries are all left out), not
    // the wrong file.
    let recognised = counts.valid + counts.cidr_skipped;
    if recognised == 0 || counts.invalid > recognised {
        return Err(ParseError::NotAList {
            valid: counts.valid,
            invalid: counts.invalid,
            first_bad: bad_lines.into_iter().next(),
        });
    }
    Ok(Parsed { entries, counts, bad_lines, lines })
}

/// "1.2.3.4" for a host, "1.2.3.0/24" for a network; IPv6 in RFC 5952 form (Rust's Display). This is the text sent to fail2ban and stored in the database.
pub fn entry_text(entry: &IpNet) -> String {
    if entry.prefix_len() == entry.max_prefix_len() { entry.addr().to_string() } else { entry.to_string() }
}

/// The inverse of entry_text (also accepts what parse accepts for one token); None if not an entry.
pub fn parse_entry(text: &str) -> Option<IpNet> {
    parse_token(text.trim())
}

/// The lines of `body`: split on `\n`, a trailing `\r` dropped; a final
/// line without newline is a line, the empty rest after a final newline is
/// not.
fn split_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let pieces = if body.is_empty() { None } else { Some(body.split(|b| *b == b'\n')) };
    pieces.into_iter().flatten().map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// What one line holds.
enum Line {
    /// Blank, a comment, or a metadata object.
    Nothing,
    Entry(IpNet),
    Invalid,
}

fn read_line(raw: &[u8]) -> Line {
    let line = raw.trim_ascii();
    match line.first() {
        None | Some(b'#' | b';') => Line::Nothing,
        Some(b'{') => read_json_line(line),
        Some(_) => read_text_line(line),
    }
}

/// `entry [count] [# comment | ; comment]`. The whole line must be UTF-8
/// (a whole-line comment need not be: it was skipped before).
fn read_text_line(line: &[u8]) -> Line {
    let Ok(line) = std::str::from_utf8(line) else { return Line::Invalid };
    let data = match line.find(['#', ';']) {
        Some(at) => &line[..at],
        None => line,
    };
    let mut tokens = data.split_ascii_whitespace();
    let entry = tokens.next().and_then(parse_token);
    let count_ok = match tokens.next() {
        None => true,
        Some(count) => is_digits(count) && tokens.next().is_none(),
    };
    match entry {
        Some(net) if count_ok => Line::Entry(net),
        _ => Line::Invalid,
    }
}

/// Spamhaus DROP JSON lines: `{"cidr":"1.10.16.0/20",...}`; the metadata
/// object at the end carries no entry.
fn read_json_line(line: &[u8]) -> Line {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(line) else {
        return Line::Invalid;
    };
    if let Some(cidr) = object.get("cidr").and_then(|v| v.as_str()) {
        return parse_token(cidr).map_or(Line::Invalid, Line::Entry);
    }
    match object.get("type").and_then(|v| v.as_str()) {
        Some("metadata") => Line::Nothing,
        _ => Line::Invalid,
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// One address or `address/prefix`, canonical (see [`Parsed::entries`]).
fn parse_token(token: &str) -> Option<IpNet> {
    match token.split_once('/') {
        None => Some(IpNet::from(token.parse::<IpAddr>().ok()?.to_canonical())),
        Some((addr, prefix)) => {
            // `u8::from_str` takes a leading '+', which no list means.
            if !is_digits(prefix) {
                return None;
            }
            let net = IpNet::new(addr.parse::<IpAddr>().ok()?, prefix.parse::<u8>().ok()?).ok()?;
            Some(canonical(net))
        }
    }
}

/// Truncated to its prefix; an IPv4-mapped IPv6 network that stays inside
/// the mapped range (/96 or longer) becomes the IPv4 network.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped.trunc());
    }
    net.trunc()
}

fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// Applies the CIDR policy to one entry read from a line.
fn add_entry(
    net: IpNet,
    policy: CidrPolicy,
    collector: &mut Collector,
    counts: &mut ImportCounts,
) -> Result<(), ParseError> {
    if is_host(&net) {
        return collector.push(net);
    }
    match policy {
        CidrPolicy::Skip => counts.cidr_skipped += 1,
        CidrPolicy::Ban => collector.push(net)?,
        CidrPolicy::Expand => {
            if net.max_prefix_len() - net.prefix_len() > EXPAND_MAX_HOST_BITS {
                counts.cidr_skipped += 1;
            } else {
                expand(net, collector)?;
            }
        }
    }
    Ok(())
}

/// Every address of a small network, network and broadcast included.
fn expand(net: IpNet, collector: &mut Collector) -> Result<(), ParseError> {
    match net {
        IpNet::V4(v4) => {
            let first = u32::from(v4.network());
            for bits in first..=u32::from(v4.broadcast()) {
                collector.push(IpNet::V4(Ipv4Net::from(Ipv4Addr::from(bits))))?;
            }
        }
        IpNet::V6(v6) => {
            let first = u128::from(v6.network());
            for bits in first..=u128::from(v6.broadcast()) {
                collector.push(IpNet::V6(Ipv6Net::from(Ipv6Addr::from(bits))))?;
            }
        }
    }
    Ok(())
}

/// The entries seen so far, deduplicated in batches so that memory stays
/// within about 1.5 times the cap however many duplicates a body repeats.
struct Collector {
    entries: Vec<IpNet>,
    limit: usize,
    /// When `entries` reaches this length it is sorted and deduplicated.
    compact_at: usize,
    duplicates: u64,
}

impl Collector {
    fn new(limit: usize) -> Self {
        let compact_at = limit.saturating_add(limit / 2).saturating_add(256);
        Collector { entries: Vec::new(), limit, compact_at, duplicates: 0 }
    }

    fn push(&mut self, net: IpNet) -> Result<(), ParseError> {
        if self.entries.len() >= self.compact_at {
            self.compact()?;
        }
        if self.entries.len() == self.entries.capacity() {
            // Doubling past `compact_at` would allocate memory never used.
            let target = self.entries.capacity().saturating_mul(2).max(1024).min(self.compact_at);
            self.entries.reserve_exact(target.saturating_sub(self.entries.len()).max(1));
        }
        self.entries.push(net);
        Ok(())
    }

    fn compact(&mut self) -> Result<(), ParseError> {
        let before = self.entries.len();
        self.entries.sort_unstable();
        self.entries.dedup();
        self.duplicates += (before - self.entries.len()) as u64;
        if self.entries.len() > self.limit {
            return Err(ParseError::TooManyEntries { limit: self.limit });
        }
        Ok(())
    }

    /// The unique entries, sorted, and how many duplicates were dropped.
    fn finish(mut self) -> Result<(Vec<IpNet>, u64), ParseError> {
        self.compact()?;
        self.entries.shrink_to_fit();
        Ok((self.entries, self.duplicates))
    }
}

/// The line for the operator: lossy UTF-8, at most [`BAD_LINE_BYTES`],
/// cut on a char boundary.
fn bad_line_text(raw: &[u8]) -> String {
    let line = raw.trim_ascii();
    // Every byte becomes at most 3 (U+FFFD), so this much raw text is
    // enough; the rest of a long line is never converted.
    let head = &line[..line.len().min(BAD_LINE_BYTES)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    let mut cut = text.len().min(BAD_LINE_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

/// What never gets banned: the jail's ignoreip and the operator's networks (reserved ranges always).
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    ignore: Vec<IpNet>,
    never_ban: Vec<IpNet>,
}

impl Exclusions {
    /// `jail_ignoreip`: fail2ban's `get <jail> ignoreip` strings: IPs, CIDRs, and also DNS names or other words fail2ban accepts — those are skipped (debug log).
    pub fn new(jail_ignoreip: &[String], never_ban: &[IpNet]) -> Self {
        let ignore = jail_ignoreip
            .iter()
            .filter_map(|word| {
                let net = parse_ignoreip(word);
                if net.is_none() {
                    tracing::debug!(ignoreip = %word, "ignoreip word is not an address or network; not used to filter blocklists");
                }
                net
            })
            .collect();
        Exclusions { ignore, never_ban: never_ban.iter().copied().map(canonical).collect() }
    }

    /// Drops entries overlapping a reserved range (counts.reserved), else the jail's ignoreip (counts.ignored), else the operator's networks (counts.never_ban): first matching reason counts. "Overlapping": the entry is inside the excluded net, or a network entry contains it.
    pub fn apply(&self, entries: Vec<IpNet>, counts: &mut ImportCounts) -> Vec<IpNet> {
        let mut entries = entries;
        entries.retain(|entry| {
            let entry = canonical(*entry);
            if is_reserved(&entry) {
                counts.reserved += 1;
            } else if overlaps_any(&entry, &self.ignore) {
                counts.ignored += 1;
            } else if overlaps_any(&entry, &self.never_ban) {
                counts.never_ban += 1;
            } else {
                return true;
            }
            false
        });
        entries
    }
}

impl Exclusions {
    /// `entry` is never banned (any reason of [`Exclusions::apply`]).
    pub fn excludes(&self, entry: &IpNet) -> bool {
        let entry = canonical(*entry);
        is_reserved(&entry) || overlaps_any(&entry, &self.ignore) || overlaps_any(&entry, &self.never_ban)
    }
}

/// A host is reserved when its address is in a range; only a network can
/// also contain one (the second, costlier half of `reserved_overlap`).
fn is_reserved(entry: &IpNet) -> bool {
    if is_host(entry) { reserved_range(entry.addr()).is_some() } else { reserved_overlap(entry).is_some() }
}

fn overlaps_any(entry: &IpNet, nets: &[IpNet]) -> bool {
    nets.iter().any(|net| overlaps(entry, net))
}

/// One net contains the other: prefixes nest or are disjoint, so they
/// overlap exactly when they agree on the shorter prefix's bits (one
/// comparison instead of two `contains`, each bounds on both sides).
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let len = a.prefix_len().min(b.prefix_len());
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => {
            agree(u128::from(u32::from(a.addr())), u128::from(u32::from(b.addr())), len, 32)
        }
        (IpNet::V6(a), IpNet::V6(b)) => agree(u128::from(a.addr()), u128::from(b.addr()), len, 128),
        _ => false,
    }
}

/// `a` and `b` (`width` bits wide) have the same first `len` bits.
fn agree(a: u128, b: u128, len: u8, width: u32) -> bool {
    (a ^ b).checked_shr(width - u32::from(len)).unwrap_or(0) == 0
}

/// An ignoreip word as a network: what [`parse_entry`] takes, and also
/// fail2ban's `address/dotted-mask` form.
fn parse_ignoreip(word: &str) -> Option<IpNet> {
    let word = word.trim();
    if let Some(net) = parse_entry(word) {
        return Some(net);
    }
    let (addr, mask) = word.split_once('/')?;
    let addr = addr.parse::<Ipv4Addr>().ok()?;
    let prefix = ipnet::ipv4_mask_to_prefix(mask.parse::<Ipv4Addr>().ok()?).ok()?;
    Some(IpNet::V4(Ipv4Net::new(addr, prefix).ok()?.trunc()))
}

#[cfg(test)]
mod tests;
