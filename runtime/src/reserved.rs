//! The special-purpose address table: addresses that are not public. The
//! geo-service answers them locally; the control-service keeps them out of
//! blocklist imports and refuses them as download targets. One table serves
//! all three, so they cannot disagree.
//!
//! The table is the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (RFC 6890 and its updates): every block that is not globally reachable.
//! Besides the registries: multicast (`224.0.0.0/4`, `ff00::/8`) and the
//! deprecated site-local block (`fec0::/10`, RFC 3879), which hosts may still
//! route locally. The registries mark a few anycast and identifier blocks
//! inside `192.0.0.0/24` and `2001::/23` as globally reachable (PCP, TURN and
//! DNS-SD anycast, AMT, AS112, ORCHIDv2, drone DETs); they stay reserved
//! here with their parent block: an anycast service address is answered by
//! the nearest router, often a local one, and none of them is a host to
//! download a list from, to ban or to locate.
//!
//! # Addresses that carry an IPv4 address
//!
//! These IPv6 forms are judged by the IPv4 address inside:
//! IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, SIIT
//! `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96` (well-known) and `64:ff9b:1::/48`
//! (local use, IPv4 in the last 32 bits), 6to4 `2002::/16` (IPv4 in bits
//! 16..48) and Teredo `2001::/32` (server IPv4 in bits 32..64, client IPv4
//! the last 32 bits inverted; both are judged). The rule:
//!
//! * When an IPv4 address inside is special-purpose, the IPv6 address is
//!   reserved with that IPv4 address's kind: `64:ff9b::7f00:1` and
//!   `2002:7f00:1::` are loopback, `64:ff9b::a9fe:a9fe` is link-local. A
//!   download guard therefore never reaches an internal address through a
//!   translator or a tunnel.
//! * When every IPv4 address inside is public, the IPv6 address is as public
//!   as they are (`64:ff9b::808:808`, `2002:808:808::`, `::ffff:8.8.8.8`):
//!   a DNS64 resolver gives an IPv6-only pod every public host in
//!   `64:ff9b::/96` (RFC 6052 forbids that prefix for non-global IPv4), so
//!   refusing it would refuse every list on such a cluster.
//! * Except the local-use NAT64 prefix `64:ff9b:1::/48`, which is always
//!   reserved (`Other` when its IPv4 is public): the registry marks it not
//!   globally reachable, and where the IPv4 sits inside it depends on the
//!   local translator's prefix length (RFC 8215), so an address there cannot
//!   be judged by an IPv4 read from a fixed place.
//!
//! The geo-service turns an IPv4-mapped address into its IPv4 address before
//! it asks, and answers it as that address.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// The kind of a reserved address. Every entry of the table maps onto one;
/// an address that carries a special-purpose IPv4 address takes that
/// address's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedRange {
    /// Private use: `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, `fec0::/10`.
    Private,
    /// `127/8`, `::1`.
    Loopback,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Shared address space `100.64/10`.
    Cgnat,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// Every other special-purpose block (see the table).
    Other,
}

use ReservedRange as R;

/// What a table entry says about the addresses in it that no narrower entry
/// holds.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Not globally reachable.
    Reserved(ReservedRange),
    /// Carries IPv4 addresses and is judged by them (see the module doc).
    Embeds(Embedding),
}

/// Where an IPv6 form carries its IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// The last 32 bits: IPv4-mapped, IPv4-compatible, SIIT, NAT64 well-known.
    Last32,
    /// NAT64 local use: the last 32 bits give the kind; reserved even when
    /// they are a public address.
    LocalUse,
    /// 6to4: bits 16..48.
    SixToFour,
    /// Teredo: the server in bits 32..64, the client in the last 32 bits
    /// with every bit inverted.
    Teredo,
}

impl Embedding {
    /// Each IPv4 address inside: its first bit, counted from the top of the
    /// IPv6 address, and the bits it is stored inverted by.
    fn places(self) -> &'static [(u32, u32)] {
        match self {
            Self::Last32 | Self::LocalUse => &[(96, 0)],
            Self::SixToFour => &[(16, 0)],
            Self::Teredo => &[(32, 0), (96, u32::MAX)],
        }
    }
}

/// A block: its first address (an IPv4 address in the low 32 bits), its
/// prefix length, and its verdict.
#[derive(Debug, Clone, Copy)]
struct Entry {
    first: u128,
    len: u8,
    verdict: Verdict,
}

const fn v4(addr: [u8; 4], len: u8, kind: ReservedRange) -> Entry {
    Entry { first: u32::from_be_bytes(addr) as u128, len, verdict: Verdict::Reserved(kind) }
}

const fn v6(addr: Ipv6Addr, len: u8, verdict: Verdict) -> Entry {
    Entry { first: addr.to_bits(), len, verdict }
}

const fn v6r(addr: Ipv6Addr, len: u8, kind: ReservedRange) -> Entry {
    v6(addr, len, Verdict::Reserved(kind))
}

const fn a6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}

/// The IPv4 table. A narrower entry stands before the wider one it sits in
/// (checked by a test), so the first entry holding an address is the
/// narrowest.
const V4_TABLE: &[Entry] = &[
    v4([0, 0, 0, 0], 32, R::Unspecified),        // "this host on this network", RFC 1122
    v4([0, 0, 0, 0], 8, R::Other),               // "this network", RFC 791
    v4([10, 0, 0, 0], 8, R::Private),            // private use, RFC 1918
    v4([100, 64, 0, 0], 10, R::Cgnat),           // shared address space, RFC 6598
    v4([127, 0, 0, 0], 8, R::Loopback),          // RFC 1122
    v4([169, 254, 0, 0], 16, R::LinkLocal),      // RFC 3927
    v4([172, 16, 0, 0], 12, R::Private),         // RFC 1918
    v4([192, 0, 0, 0], 29, R::Other),            // IPv4 service continuity (DS-Lite), RFC 7335
    v4([192, 0, 0, 8], 32, R::Other),            // IPv4 dummy address, RFC 7600
    v4([192, 0, 0, 170], 32, R::Other),          // NAT64/DNS64 discovery, RFC 8880
    v4([192, 0, 0, 171], 32, R::Other),          // NAT64/DNS64 discovery, RFC 8880
    v4([192, 0, 0, 0], 24, R::Other),            // IETF protocol assignments, RFC 6890 (see the module doc)
    v4([192, 0, 2, 0], 24, R::Documentation),    // TEST-NET-1, RFC 5737
    v4([192, 88, 99, 0], 24, R::Other),          // 6to4 relay anycast, deprecated, RFC 7526
    v4([192, 168, 0, 0], 16, R::Private),        // RFC 1918
    v4([198, 18, 0, 0], 15, R::Other),           // benchmarking, RFC 2544
    v4([198, 51, 100, 0], 24, R::Documentation), // TEST-NET-2, RFC 5737
    v4([203, 0, 113, 0], 24, R::Documentation),  // TEST-NET-3, RFC 5737
    v4([224, 0, 0, 0], 4, R::Multicast),         // RFC 5771 (not in the special-purpose registry)
    v4([255, 255, 255, 255], 32, R::Other),      // limited broadcast, RFC 919
    v4([240, 0, 0, 0], 4, R::Other),             // reserved, RFC 1112
];

const LAST32: Verdict = Verdict::Embeds(Embedding::Last32);
const LOCAL_USE: Verdict = Verdict::Embeds(Embedding::LocalUse);
const SIX_TO_FOUR: Verdict = Verdict::Embeds(Embedding::SixToFour);
const TEREDO: Verdict = Verdict::Embeds(Embedding::Teredo);

/// The IPv6 table; narrower entries first, as in [`V4_TABLE`].
const V6_TABLE: &[Entry] = &[
    v6r(a6([0, 0, 0, 0, 0, 0, 0, 0]), 128, R::Unspecified), // RFC 4291
    v6r(a6([0, 0, 0, 0, 0, 0, 0, 1]), 128, R::Loopback),    // RFC 4291
    v6(a6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96, LAST32),      // IPv4-mapped, RFC 4291
    v6(a6([0, 0, 0, 0, 0xffff, 0, 0, 0]), 96, LAST32),      // SIIT IPv4-translated, RFC 2765
    v6(a6([0, 0, 0, 0, 0, 0, 0, 0]), 96, LAST32),           // IPv4-compatible, deprecated, RFC 4291
    v6(a6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96, LAST32),   // NAT64 well-known prefix, RFC 6052
    v6(a6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48, LOCAL_USE), // NAT64 local use, RFC 8215
    v6r(a6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64, R::Other),    // discard-only, RFC 6666
    v6r(a6([0x100, 0, 0, 1, 0, 0, 0, 0]), 64, R::Other),    // dummy IPv6 prefix, RFC 9780
    v6(a6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32, TEREDO),      // Teredo, RFC 4380
    v6r(a6([0x2001, 2, 0, 0, 0, 0, 0, 0]), 48, R::Other),   // benchmarking, RFC 5180
    v6r(a6([0x2001, 0x10, 0, 0, 0, 0, 0, 0]), 28, R::Other), // ORCHID, deprecated, RFC 4843
    v6r(a6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23, R::Other),   // IETF protocol assignments, RFC 2928 (see the module doc)
    v6r(a6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, R::Documentation), // RFC 3849
    v6(a6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16, SIX_TO_FOUR), // 6to4, RFC 3056
    v6r(a6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20, R::Documentation), // RFC 9637
    v6r(a6([0x5f00, 0, 0, 0, 0, 0, 0, 0]), 16, R::Other),   // SRv6 SIDs, RFC 9602
    v6r(a6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7, R::Private),  // unique local, RFC 4193
    v6r(a6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, R::LinkLocal), // RFC 4291
    v6r(a6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10, R::Private), // site-local, deprecated, RFC 3879
    v6r(a6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, R::Multicast), // RFC 4291
];

/// One family's table and the width of its addresses.
#[derive(Debug, Clone, Copy)]
struct Table {
    width: u32,
    entries: &'static [Entry],
}

const V4: Table = Table { width: 32, entries: V4_TABLE };
const V6: Table = Table { width: 128, entries: V6_TABLE };

/// `a` and `b` (`width` bits wide) have the same first `len` bits.
fn agree(a: u128, b: u128, len: u8, width: u32) -> bool {
    (a ^ b).checked_shr(width - u32::from(len)).unwrap_or(0) == 0
}

impl Table {
    /// The narrowest entry holding the network `first`/`len`.
    fn holding(self, first: u128, len: u8) -> Option<&'static Entry> {
        self.entries.iter().find(|e| e.len <= len && agree(first, e.first, e.len, self.width))
    }

    /// The entries strictly inside the network `first`/`len`.
    fn inside(self, first: u128, len: u8) -> impl Iterator<Item = &'static Entry> {
        let width = self.width;
        self.entries.iter().filter(move |e| e.len > len && agree(first, e.first, len, width))
    }

    /// A reserved kind of some address in the network `first`/`len`: the
    /// verdict of the entry holding it, else of an entry inside it. Exact,
    /// because a narrower entry only ever says "reserved": it never makes
    /// public what the entry around it reserves.
    fn overlap(self, first: u128, len: u8) -> Option<ReservedRange> {
        if let Some(kind) = self.holding(first, len).and_then(|e| judge(e.verdict, first, len)) {
            return Some(kind);
        }
        self.inside(first, len).find_map(|e| judge(e.verdict, e.first, e.len))
    }
}

/// `verdict` on the network `first`/`len` (of an entry holding it): a
/// reserved kind of some address in it, if any.
fn judge(verdict: Verdict, first: u128, len: u8) -> Option<ReservedRange> {
    match verdict {
        Verdict::Reserved(kind) => Some(kind),
        Verdict::Embeds(form) => {
            let inside = form.places().iter().find_map(|&(at, inverted)| {
                let (v4, v4_len) = embedded(first, len, at, inverted);
                V4.overlap(u128::from(v4), v4_len)
            });
            match (inside, form) {
                (Some(kind), _) => Some(kind),
                (None, Embedding::LocalUse) => Some(R::Other),
                (None, _) => None,
            }
        }
    }
}

/// The IPv4 network stored at bit `at` (from the top) of the IPv6 network
/// `first`/`len`, bits inverted by `inverted`: as many of its bits are fixed
/// as the IPv6 prefix covers.
fn embedded(first: u128, len: u8, at: u32, inverted: u32) -> (u32, u8) {
    // The truncation keeps exactly the 32 bits that start at `at`.
    let bits = (first >> (96 - at)) as u32 ^ inverted;
    let fixed = u32::from(len).saturating_sub(at).min(32);
    let mask = u32::MAX.checked_shl(32 - fixed).unwrap_or(0);
    // `fixed` is at most 32.
    (bits & mask, fixed as u8)
}

fn split(ip: IpAddr) -> (Table, u128) {
    match ip {
        IpAddr::V4(v4) => (V4, u128::from(v4.to_bits())),
        IpAddr::V6(v6) => (V6, v6.to_bits()),
    }
}

/// The reserved range `ip` falls in, if any. Any form is judged, IPv4-mapped
/// IPv6 included (by the IPv4 address inside, as every embedded form: see
/// the module doc).
pub fn reserved_range(ip: IpAddr) -> Option<ReservedRange> {
    let (table, bits) = split(ip);
    // The widths are 32 and 128.
    let host = table.width as u8;
    table.holding(bits, host).and_then(|e| judge(e.verdict, bits, host))
}

/// A reserved range `net` overlaps (some address of `net` is reserved), if
/// any: `net` lies in a reserved range, contains one, or carries a
/// special-purpose IPv4 address (`2002::/16` contains `2002:7f00:1::`).
pub fn reserved_overlap(net: &IpNet) -> Option<ReservedRange> {
    let (table, first) = split(net.network());
    table.overlap(first, net.prefix_len())
}

#[cfg(test)]
mod tests;
