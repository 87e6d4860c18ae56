//! Reserved address ranges: never located, never banned, never fetched
//! from. The geo-service answers them locally; the control-service keeps
//! them out of blocklist imports and refuses them as download targets.

use std::net::IpAddr;

use ipnet::IpNet;

/// A reserved range: not a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservedRange {
    Private,
    Loopback,
    LinkLocal,
    Cgnat,
    Documentation,
    Multicast,
    Unspecified,
    Other,
}

use ReservedRange as R;

const V4_RESERVED: &[([u8; 4], u8, ReservedRange)] = &[
    ([0, 0, 0, 0], 32, R::Unspecified),
    ([0, 0, 0, 0], 8, R::Other),
    ([10, 0, 0, 0], 8, R::Private),
    ([100, 64, 0, 0], 10, R::Cgnat),
    ([127, 0, 0, 0], 8, R::Loopback),
    ([169, 254, 0, 0], 16, R::LinkLocal),
    ([172, 16, 0, 0], 12, R::Private),
    ([192, 0, 0, 0], 24, R::Other),
    ([192, 0, 2, 0], 24, R::Documentation),
    ([192, 168, 0, 0], 16, R::Private),
    ([198, 18, 0, 0], 15, R::Other),
    ([198, 51, 100, 0], 24, R::Documentation),
    ([203, 0, 113, 0], 24, R::Documentation),
    ([224, 0, 0, 0], 4, R::Multicast),
    ([240, 0, 0, 0], 4, R::Other),
];

const V6_RESERVED: &[(u128, u8, ReservedRange)] = &[
    (0, 128, R::Unspecified),
    (1, 128, R::Loopback),
    (0x0100_0000_0000_0000 << 64, 64, R::Other),
    (0x2001_0db8 << 96, 32, R::Documentation),
    (0xfc00 << 112, 7, R::Private),
    (0xfe80 << 112, 10, R::LinkLocal),
    (0xff00 << 112, 8, R::Multicast),
];

/// The reserved range `ip` falls in, if any. Expects a canonical address
/// (IPv4-mapped IPv6 already turned into IPv4). The first match wins, so the
/// narrower entry stands before the wider one it sits in.
pub fn reserved_range(ip: IpAddr) -> Option<ReservedRange> {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            V4_RESERVED
                .iter()
                .find(|(net, len, _)| prefix_match(u128::from(bits), u128::from(u32::from_be_bytes(*net)), *len, 32))
                .map(|(_, _, range)| *range)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            V6_RESERVED.iter().find(|(net, len, _)| prefix_match(bits, *net, *len, 128)).map(|(_, _, range)| *range)
        }
    }
}

fn prefix_match(addr: u128, net: u128, len: u8, width: u32) -> bool {
    let host_bits = width - u32::from(len);
    addr.checked_shr(host_bits).unwrap_or(0) == net.checked_shr(host_bits).unwrap_or(0)
}

/// The reserved range `net` overlaps (contains, or lies in), if any.
/// Expects a canonical network (IPv4-mapped IPv6 already turned into IPv4).
pub fn reserved_overlap(net: &IpNet) -> Option<ReservedRange> {
    // The network's first address is in a range, or the network contains a
    // range's first address: the two overlap (prefixes nest or are disjoint).
    if let Some(range) = reserved_range(net.network()) {
        return Some(range);
    }
    match net {
        IpNet::V4(net) => V4_RESERVED
            .iter()
            .find(|(first, _, _)| net.contains(&std::net::Ipv4Addr::from(*first)))
            .map(|(_, _, range)| *range),
        IpNet::V6(net) => V6_RESERVED
            .iter()
            .find(|(first, _, _)| net.contains(&std::net::Ipv6Addr::from(*first)))
            .map(|(_, _, range)| *range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_overlapping_a_reserved_range_are_reserved() {
        let range = |text: &str| reserved_overlap(&text.parse().unwrap());
        assert_eq!(range("10.1.0.0/16"), Some(ReservedRange::Private));
        assert_eq!(range("0.0.0.0/8"), Some(ReservedRange::Unspecified));
        // Wider than a reserved range it contains.
        assert_eq!(range("8.0.0.0/5"), Some(ReservedRange::Private));
        assert_eq!(range("192.0.0.0/16"), Some(ReservedRange::Other));
        assert_eq!(range("1.10.16.0/20"), None);
        assert_eq!(range("8.8.8.8/32"), None);
        assert_eq!(range("2001:db8:1::/48"), Some(ReservedRange::Documentation));
        assert_eq!(range("2a00::/16"), None);
        assert_eq!(range("::/0"), Some(ReservedRange::Unspecified));
    }
}
