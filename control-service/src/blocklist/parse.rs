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
//! The body is read as it streams ([`ListReader`]): `feed` takes the body
//! in pieces of any size, cut anywhere (mid-line, mid-CRLF, mid-BOM,
//! mid-UTF-8), and keeps only the line not ended yet, itself at most
//! [`MAX_LINE_BYTES`] (a longer line is read as a comment when it starts
//! as one, else as an invalid line). The result does not depend on where
//! the pieces were cut: [`parse`] is one `feed` and `finish`.
//!
//! Memory is bounded by the entry cap: entries are [`IpNet`] values (18
//! bytes, no heap) in one `Vec` that is sorted and deduplicated whenever it
//! grows half the cap past it, so it never holds much more than 1.5 times
//! the cap. Under [`CidrPolicy::Expand`] a network stays one value until
//! `finish` (it counts as its addresses; an address or network inside one
//! listed before is a duplicate), so a list repeating a /24 costs a line's
//! work, not 256 pushes, per line.

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
/// The longest line read as a line (its `\r` included). A longer one is a
/// comment when it starts as one (`#`, `;`), else invalid: no list format
/// has lines this long, and the reader never holds more of one.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The broadest IPv4 network [`CidrPolicy::Ban`] bans when the source says
/// nothing: a /12 (Spamhaus DROP's widest entries fit).
pub const DEFAULT_BAN_MIN_PREFIX_V4: u8 = 12;
/// The broadest IPv6 network [`CidrPolicy::Ban`] bans when the source says
/// nothing: a /32.
pub const DEFAULT_BAN_MIN_PREFIX_V6: u8 = 32;
/// The broadest IPv4 network a source may allow `ban` to ban (a /8).
pub const BROADEST_BAN_PREFIX_V4: u8 = 8;
/// The broadest IPv6 network a source may allow `ban` to ban (a /16).
pub const BROADEST_BAN_PREFIX_V6: u8 = 16;

/// How entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// What happens to networks.
    pub policy: CidrPolicy,
    /// Most unique entries a list may have (after expansion).
    pub max_entries: usize,
    /// Under [`CidrPolicy::Ban`]: the shortest IPv4 prefix banned. A
    /// broader network (`32.0.0.0/3` with 12) is skipped and counted in
    /// `cidr_skipped`, never banned. The parser takes any value; sources
    /// are checked against [`BROADEST_BAN_PREFIX_V4`] where they are set.
    pub ban_min_prefix_v4: u8,
    /// The same for IPv6.
    pub ban_min_prefix_v6: u8,
}

impl ParseLimits {
    /// `policy` and `max_entries` with the default bounds of `ban`.
    pub const fn new(policy: CidrPolicy, max_entries: usize) -> Self {
        ParseLimits {
            policy,
            max_entries,
            ban_min_prefix_v4: DEFAULT_BAN_MIN_PREFIX_V4,
            ban_min_prefix_v6: DEFAULT_BAN_MIN_PREFIX_V6,
        }
    }

    /// `net` is broader than `ban` bans.
    fn too_broad_to_ban(&self, net: &IpNet) -> bool {
        let min = match net {
            IpNet::V4(_) => self.ban_min_prefix_v4,
            IpNet::V6(_) => self.ban_min_prefix_v6,
        };
        net.prefix_len() < min
    }
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
    /// Lines read in total: every `\n` ends one, and a last line without
    /// one counts when it is not empty.
    pub lines: u64,
}

/// Why a body gives no list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

/// Reads a whole list body (any supported format, auto-detected line by
/// line): one [`ListReader::feed`] and [`ListReader::finish`].
pub fn parse(body: &[u8], limits: &ParseLimits) -> Result<Parsed, ParseError> {
    let mut reader = ListReader::new(*limits);
    reader.feed(body)?;
    reader.finish()
}

/// How much of a leading UTF-8 byte order mark has been seen.
#[derive(Debug, Clone, Copy)]
enum Bom {
    /// This many of its bytes began the body so far.
    Matching(usize),
    /// Skipped, or the body does not start with one.
    Done,
}

/// A list read as its body streams: [`feed`](Self::feed) the body in
/// pieces, then [`finish`](Self::finish). A body that starts again (a
/// retried download) needs a new reader.
#[derive(Debug)]
pub struct ListReader {
    limits: ParseLimits,
    collector: Collector,
    counts: ImportCounts,
    bad_lines: Vec<BadLine>,
    lines: u64,
    /// The start of the line not ended yet: at most [`MAX_LINE_BYTES`].
    partial: Vec<u8>,
    /// Bytes of that line so far, kept or not.
    partial_len: usize,
    bom: Bom,
    /// The entry cap was passed: nothing more is read.
    over_limit: bool,
}

impl ListReader {
    /// A reader at the start of a body.
    pub fn new(limits: ParseLimits) -> Self {
        ListReader {
            limits,
            collector: Collector::new(limits.max_entries, limits.policy == CidrPolicy::Expand),
            counts: ImportCounts::default(),
            bad_lines: Vec::new(),
            lines: 0,
            partial: Vec::new(),
            partial_len: 0,
            bom: Bom::Matching(0),
            over_limit: false,
        }
    }

    /// Reads the next piece of the body. `Err` ([`ParseError::TooManyEntries`])
    /// as soon as the list has more unique entries than the cap: the rest
    /// need not be downloaded, and every later call fails the same way.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), ParseError> {
        if self.over_limit {
            return Err(ParseError::TooManyEntries { limit: self.limits.max_entries });
        }
        let piece = self.skip_bom(piece);
        let fed = self.feed_lines(piece);
        self.over_limit = fed.is_err();
        fed
    }

    /// The list: every entry sorted and unique, or why the body is none.
    pub fn finish(mut self) -> Result<Parsed, ParseError> {
        if self.over_limit {
            return Err(ParseError::TooManyEntries { limit: self.limits.max_entries });
        }
        // A body that is the start of a BOM and nothing else.
        if let Bom::Matching(seen) = self.bom
            && seen < UTF8_BOM.len()
        {
            self.keep(&UTF8_BOM[..seen]);
        }
        if self.partial_len > 0 {
            let last = std::mem::take(&mut self.partial);
            self.line(&last, self.partial_len)?;
        }
        let ListReader { collector, mut counts, bad_lines, lines, .. } = self;
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

    /// `piece` without what belongs to a BOM at the start of the body; the
    /// bytes of a BOM's start that turn out not to be one are kept.
    fn skip_bom<'a>(&mut self, mut piece: &'a [u8]) -> &'a [u8] {
        while let Bom::Matching(seen) = self.bom {
            if seen == UTF8_BOM.len() {
                self.bom = Bom::Done;
                break;
            }
            let Some((&byte, rest)) = piece.split_first() else { break };
            if byte == UTF8_BOM[seen] {
                self.bom = Bom::Matching(seen + 1);
                piece = rest;
            } else {
                self.bom = Bom::Done;
                self.keep(&UTF8_BOM[..seen]);
            }
        }
        piece
    }

    fn feed_lines(&mut self, mut piece: &[u8]) -> Result<(), ParseError> {
        while let Some(at) = piece.iter().position(|b| *b == b'\n') {
            let (line, rest) = (&piece[..at], &piece[at + 1..]);
            piece = rest;
            if self.partial_len == 0 {
                self.line(line, line.len())?;
            } else {
                self.keep(line);
                let mut whole = std::mem::take(&mut self.partial);
                let read = self.line(&whole, self.partial_len);
                // The buffer is used again for the next line that spans pieces.
                whole.clear();
                self.partial = whole;
                self.partial_len = 0;
                read?;
            }
        }
        self.keep(piece);
        Ok(())
    }

    /// Adds `bytes` to the line not ended yet, keeping at most
    /// [`MAX_LINE_BYTES`] of it.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.partial_len = self.partial_len.saturating_add(bytes.len());
    }

    /// One line without its `\n`: `raw` is all of it, or its first
    /// [`MAX_LINE_BYTES`] when it is `len` long.
    fn line(&mut self, raw: &[u8], len: usize) -> Result<(), ParseError> {
        self.lines += 1;
        let (raw, read) = if len > MAX_LINE_BYTES {
            let head = &raw[..raw.len().min(MAX_LINE_BYTES)];
            let read = match head.trim_ascii_start().first() {
                Some(b'#' | b';') => Line::Nothing,
                _ => Line::Invalid,
            };
            (head, read)
        } else {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            (raw, read_line(raw))
        };
        match read {
            Line::Nothing => {}
            Line::Entry(net) => self.add_entry(net)?,
            Line::Invalid => {
                self.counts.invalid += 1;
                if self.bad_lines.len() < MAX_BAD_LINES {
                    self.bad_lines.push(BadLine { line: self.lines, text: bad_line_text(raw) });
                }
            }
        }
        Ok(())
    }

    /// Applies the CIDR policy to one entry read from a line.
    fn add_entry(&mut self, net: IpNet) -> Result<(), ParseError> {
        if is_host(&net) {
            return self.collector.push(net);
        }
        let skip = match self.limits.policy {
            CidrPolicy::Skip => true,
            CidrPolicy::Ban => self.limits.too_broad_to_ban(&net),
            // Expanded at the end (see `Collector`).
            CidrPolicy::Expand => net.max_prefix_len() - net.prefix_len() > EXPAND_MAX_HOST_BITS,
        };
        if skip {
            self.counts.cidr_skipped += 1;
            Ok(())
        } else {
            self.collector.push(net)
        }
    }
}

/// "1.2.3.4" for a host, "1.2.3.0/24" for a network; IPv6 in RFC 5952 form (Rust's Display). This is the text sent to fail2ban and stored in the database.
pub fn entry_text(entry: &IpNet) -> String {
    if entry.prefix_len() == entry.max_prefix_len() { entry.addr().to_string() } else { entry.to_string() }
}

/// The inverse of entry_text (also accepts what parse accepts for one token); None if not an entry.
pub fn parse_entry(text: &str) -> Option<IpNet> {
    parse_token(text.trim())
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

/// The entries seen so far, deduplicated in batches so that memory stays
/// within about 1.5 times the cap however many duplicates a body repeats.
///
/// When expanding, a network stands for its addresses until `finish`: it
/// counts as that many, and an entry inside one kept before is a duplicate
/// (prefixes nest or are disjoint, so after sorting an entry is inside an
/// earlier one exactly when it is inside the last one kept).
#[derive(Debug)]
struct Collector {
    entries: Vec<IpNet>,
    limit: usize,
    /// When `entries` reaches this length it is sorted and deduplicated.
    compact_at: usize,
    /// Networks are addresses to expand (`CidrPolicy::Expand`), not entries.
    expand: bool,
    /// Addresses (entries when not expanding) pushed, repeats included.
    listed: u64,
}

impl Collector {
    fn new(limit: usize, expand: bool) -> Self {
        let compact_at = limit.saturating_add(limit / 2).saturating_add(256);
        Collector { entries: Vec::new(), limit, compact_at, expand, listed: 0 }
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
        self.listed += self.size(&net);
        self.entries.push(net);
        Ok(())
    }

    /// Addresses `net` stands for.
    fn size(&self, net: &IpNet) -> u64 {
        if self.expand { 1 << (net.max_prefix_len() - net.prefix_len()) } else { 1 }
    }

    /// Sorts and deduplicates; returns the unique entries (addresses when
    /// expanding) held.
    fn compact(&mut self) -> Result<usize, ParseError> {
        self.entries.sort_unstable();
        let unique = if self.expand {
            self.entries.dedup_by(|later, kept| kept.contains(&*later));
            self.entries.iter().map(|net| self.size(net)).sum::<u64>()
        } else {
            self.entries.dedup();
            self.entries.len() as u64
        };
        match usize::try_from(unique) {
            Ok(unique) if unique <= self.limit => Ok(unique),
            _ => Err(ParseError::TooManyEntries { limit: self.limit }),
        }
    }

    /// The unique entries, sorted, and how many repeats were dropped.
    fn finish(mut self) -> Result<(Vec<IpNet>, u64), ParseError> {
        let unique = self.compact()?;
        if self.expand {
            self.expand_in_place(unique);
        }
        self.entries.shrink_to_fit();
        Ok((self.entries, self.listed - unique as u64))
    }

    /// Replaces the sorted, disjoint networks held by their `unique`
    /// addresses, in order, without a second vector: from the last network
    /// back, each one's addresses go to the end of what is still free. The
    /// addresses of network `i` start at or after index `i`, so no network
    /// is overwritten before it is read.
    fn expand_in_place(&mut self, unique: usize) {
        let kept = self.entries.len();
        let placeholder = IpNet::V4(Ipv4Net::default());
        self.entries.resize(unique, placeholder);
        let mut end = unique;
        for i in (0..kept).rev() {
            let net = self.entries[i];
            match net {
                IpNet::V4(v4) => {
                    let (first, last) = (u32::from(v4.network()), u32::from(v4.broadcast()));
                    for bits in (first..=last).rev() {
                        end -= 1;
                        self.entries[end] = IpNet::V4(Ipv4Net::from(Ipv4Addr::from(bits)));
                    }
                }
                IpNet::V6(v6) => {
                    let (first, last) = (u128::from(v6.network()), u128::from(v6.broadcast()));
                    for bits in (first..=last).rev() {
                        end -= 1;
                        self.entries[end] = IpNet::V6(Ipv6Net::from(Ipv6Addr::from(bits)));
                    }
                }
            }
        }
        debug_assert_eq!(end, 0);
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
    ///
    /// In place: what is kept stays in its order, in the same allocation.
    pub fn apply(&self, entries: &mut Vec<IpNet>, counts: &mut ImportCounts) {
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
