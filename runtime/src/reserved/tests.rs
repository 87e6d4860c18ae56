use super::*;

fn range(ip: &str) -> Option<ReservedRange> {
    reserved_range(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
}

fn overlap(net: &str) -> Option<ReservedRange> {
    reserved_overlap(&net.parse().unwrap_or_else(|e| panic!("{net}: {e}")))
}

/// Every block of the table, every embedded form with a special-purpose
/// IPv4 address inside, and the forms the download guard let through
/// before (issue 20, item 4).
const RESERVED: &[(&str, ReservedRange)] = &[
    // IPv4 registry.
    ("0.0.0.0", R::Unspecified),
    ("0.1.2.3", R::Other),
    ("10.1.2.3", R::Private),
    ("100.64.0.1", R::Cgnat),
    ("100.127.255.255", R::Cgnat),
    ("127.0.0.1", R::Loopback),
    ("127.255.255.254", R::Loopback),
    ("169.254.169.254", R::LinkLocal),
    ("172.16.0.1", R::Private),
    ("172.31.255.255", R::Private),
    ("192.0.0.1", R::Other),
    ("192.0.0.8", R::Other),
    ("192.0.0.9", R::Other),
    ("192.0.0.10", R::Other),
    ("192.0.0.170", R::Other),
    ("192.0.0.171", R::Other),
    ("192.0.0.255", R::Other),
    ("192.0.2.1", R::Documentation),
    ("192.88.99.1", R::Other),
    ("192.168.1.1", R::Private),
    ("198.18.0.1", R::Other),
    ("198.19.255.255", R::Other),
    ("198.51.100.7", R::Documentation),
    ("203.0.113.9", R::Documentation),
    ("224.0.0.1", R::Multicast),
    ("239.255.255.250", R::Multicast),
    ("240.0.0.1", R::Other),
    ("255.255.255.254", R::Other),
    ("255.255.255.255", R::Other),
    // IPv6 registry, multicast and site-local.
    ("::", R::Unspecified),
    ("::1", R::Loopback),
    ("100::1", R::Other),
    ("100::ffff:ffff:ffff:ffff", R::Other),
    ("100:0:0:1::1", R::Other),
    ("2001:1::1", R::Other),
    ("2001:1::2", R::Other),
    ("2001:2::1", R::Other),
    ("2001:3::1", R::Other),
    ("2001:4:112::1", R::Other),
    ("2001:10::1", R::Other),
    ("2001:20::1", R::Other),
    ("2001:30::1", R::Other),
    ("2001:1ff:ffff:ffff::1", R::Other),
    ("2001:db8::1", R::Documentation),
    ("2001:db8:ffff::1", R::Documentation),
    ("3fff::1", R::Documentation),
    ("3fff:fff:ffff::1", R::Documentation),
    ("5f00::1", R::Other),
    ("5f00:ffff::1", R::Other),
    ("fc00::1", R::Private),
    ("fd12:3456::1", R::Private),
    ("fe80::1", R::LinkLocal),
    ("febf:ffff::1", R::LinkLocal),
    ("fec0::1", R::Private),
    ("feff:ffff::1", R::Private),
    ("ff02::1", R::Multicast),
    // IPv4-mapped, judged as the IPv4 address.
    ("::ffff:127.0.0.1", R::Loopback),
    ("::ffff:10.0.0.1", R::Private),
    ("::ffff:169.254.169.254", R::LinkLocal),
    ("::ffff:0.0.0.0", R::Unspecified),
    // IPv4-compatible.
    ("::127.0.0.1", R::Loopback),
    ("::10.0.0.1", R::Private),
    ("::169.254.169.254", R::LinkLocal),
    ("::2", R::Other),
    // SIIT.
    ("::ffff:0:7f00:1", R::Loopback),
    ("::ffff:0:a9fe:a9fe", R::LinkLocal),
    ("::ffff:0:c0a8:1", R::Private),
    // NAT64, well-known prefix.
    ("64:ff9b::7f00:1", R::Loopback),
    ("64:ff9b::a9fe:a9fe", R::LinkLocal),
    ("64:ff9b::a00:1", R::Private),
    ("64:ff9b::6440:1", R::Cgnat),
    ("64:ff9b::", R::Unspecified),
    ("64:ff9b::e000:1", R::Multicast),
    // NAT64, local use: its kind from the last 32 bits, reserved anyway.
    ("64:ff9b:1::7f00:1", R::Loopback),
    ("64:ff9b:1::a9fe:a9fe", R::LinkLocal),
    ("64:ff9b:1::808:808", R::Other),
    ("64:ff9b:1:ffff:ffff:ffff:808:808", R::Other),
    // 6to4: bits 16..48.
    ("2002:7f00:1::", R::Loopback),
    ("2002:7f00:1:1::1", R::Loopback),
    ("2002:a9fe:a9fe::1", R::LinkLocal),
    ("2002:c0a8:101::", R::Private),
    ("2002::", R::Unspecified),
    ("2002:c000:201::1", R::Documentation),
    // Teredo: the server in bits 32..64, the client inverted in the last 32.
    ("2001:0:7f00:1::", R::Loopback),
    ("2001:0:a9fe:a9fe:0:0:f7f7:f7f7", R::LinkLocal),
    // Server public; client !0 = 255.255.255.255.
    ("2001:0:808:808::", R::Other),
    // Server public; client !f5ff:fffe = 10.0.0.1.
    ("2001:0:808:808:0:0:f5ff:fffe", R::Private),
    // RFC 4380's example: server 65.54.227.120, client 192.0.2.45.
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", R::Documentation),
];

/// Public addresses, and embedded forms whose IPv4 addresses are all public.
const PUBLIC: &[&str] = &[
    "8.8.8.8",
    "1.1.1.1",
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "172.15.255.255",
    "172.32.0.1",
    "192.0.1.255",
    "192.0.3.0",
    "192.31.196.1",
    "192.52.193.1",
    "192.88.98.255",
    "192.88.100.0",
    "192.175.48.1",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "2001:200::1",
    "2001:dba::1",
    "2a00:1450::1",
    "2620:4f:8000::1",
    "3fff:1000::1",
    "5eff::1",
    "fbff::1",
    // Embedded public IPv4: as public as the address inside.
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "::ffff:0:808:808",
    "64:ff9b::808:808",
    "64:ff9b::1.1.1.1",
    "2002:808:808::",
    "2002:808:808:1::1",
    // Teredo, server 8.8.8.8 and client !f7f7:f7f7 = 8.8.8.8.
    "2001:0:808:808:0:0:f7f7:f7f7",
];

#[test]
fn every_special_purpose_form_is_reserved_with_its_kind() {
    for (ip, kind) in RESERVED {
        assert_eq!(range(ip), Some(*kind), "{ip}");
        // A host network is judged the same way.
        let host = if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") };
        assert_eq!(overlap(&host), Some(*kind), "{host}");
    }
}

#[test]
fn public_addresses_are_not_reserved() {
    for ip in PUBLIC {
        assert_eq!(range(ip), None, "{ip}");
        let host = if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") };
        assert_eq!(overlap(&host), None, "{host}");
    }
}

#[test]
fn networks_overlapping_reserved_space_are_reserved() {
    for (net, expected) in [
        ("10.1.0.0/16", Some(R::Private)),
        ("0.0.0.0/8", Some(R::Other)),
        // Wider than a reserved range it contains.
        ("8.0.0.0/5", Some(R::Private)),
        ("192.0.0.0/16", Some(R::Other)),
        ("192.0.0.8/30", Some(R::Other)),
        ("1.10.16.0/20", None),
        ("8.8.8.8/32", None),
        ("8.0.0.0/7", None),
        ("2001:db8:1::/48", Some(R::Documentation)),
        ("2a00::/16", None),
        ("2001:4860::/32", None),
        ("3fff:1000::/20", None),
        ("fe00::/7", Some(R::LinkLocal)),
        ("fec0::/10", Some(R::Private)),
        // An embedded form as a whole carries every IPv4 address.
        ("2002::/16", Some(R::Unspecified)),
        ("64:ff9b::/96", Some(R::Unspecified)),
        ("2001::/32", Some(R::Unspecified)),
        ("::ffff:0:0/96", Some(R::Unspecified)),
        // ... and a part of it the IPv4 networks that part carries.
        ("64:ff9b::808:800/120", None),
        ("64:ff9b::a00:0/104", Some(R::Private)),
        ("64:ff9b::800:0/104", None),
        ("::ffff:10.0.0.0/104", Some(R::Private)),
        ("::ffff:8.8.8.0/120", None),
        ("2002:808:808::/48", None),
        ("2002:808:800::/40", None),
        ("2002:800::/24", None),
        ("2002::/20", Some(R::Unspecified)),
        ("2002:a00::/24", Some(R::Private)),
        // Teredo: a fixed public server, but every client.
        ("2001:0:808:808::/64", Some(R::Unspecified)),
        ("2001:0:808:808:0:0:f7f7:f700/120", None),
        ("2001:0:808:808:0:0:f5ff:ff00/120", Some(R::Private)),
        // Local-use NAT64 is reserved whatever it carries.
        ("64:ff9b:1::808:800/120", Some(R::Other)),
        ("64:ff9b:1::/48", Some(R::Unspecified)),
        // Networks holding blocks of the table.
        ("2000::/3", Some(R::Unspecified)),
        ("::/0", Some(R::Unspecified)),
        ("0.0.0.0/0", Some(R::Unspecified)),
        ("::/8", Some(R::Unspecified)),
    ] {
        assert_eq!(overlap(net), expected, "{net}");
    }
}

#[test]
fn narrower_entries_stand_before_the_blocks_they_sit_in() {
    for table in [V4, V6] {
        for (i, entry) in table.entries.iter().enumerate() {
            assert!(u32::from(entry.len) <= table.width);
            let host_bits = (table.width - u32::from(entry.len)) as usize;
            let below = u128::MAX.checked_shr(128 - host_bits as u32).unwrap_or(0);
            assert_eq!(entry.first & below, 0, "entry {i} has host bits set");
            assert!(table.width == 128 || entry.first <= u128::from(u32::MAX));
            for later in &table.entries[i + 1..] {
                let inside = later.len > entry.len && agree(later.first, entry.first, entry.len, table.width);
                assert!(!inside, "entry {i} stands before a narrower entry inside it");
                assert!((later.first, later.len) != (entry.first, entry.len), "entry {i} twice");
            }
        }
    }
}

/// A small xorshift generator: the property tests below are the same on
/// every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn wide(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// A random address near a block of the table (or inside it, with a
/// table IPv4 block placed where an embedded form carries one), with some
/// of its low bits flipped so it lands near the block's edges too.
fn near_a_block(rng: &mut Rng) -> (Table, u128) {
    let table = if rng.below(2) == 0 { V4 } else { V6 };
    let entry = table.entries[rng.below(table.entries.len() as u64) as usize];
    let mut bits = entry.first;
    if let Verdict::Embeds(form) = entry.verdict {
        for &(at, inverted) in form.places() {
            let v4 = if rng.below(2) == 0 {
                V4_TABLE[rng.below(V4_TABLE.len() as u64) as usize].first as u32 ^ (rng.next() as u32 & 0xff)
            } else {
                rng.next() as u32
            };
            let shift = 96 - at;
            bits = (bits & !(u128::from(u32::MAX) << shift)) | (u128::from(v4 ^ inverted) << shift);
        }
    }
    let flip = rng.below(u64::from(table.width) + 1) as u32;
    let low = u128::MAX.checked_shr(128 - flip).unwrap_or(0);
    bits ^= rng.wide() & low;
    if table.width == 32 {
        bits &= u128::from(u32::MAX);
    }
    (table, bits)
}

fn truncate(bits: u128, len: u8, width: u32) -> u128 {
    let host_bits = width - u32::from(len);
    bits.checked_shr(host_bits).unwrap_or(0).checked_shl(host_bits).unwrap_or(0)
}

/// A network overlaps reserved space exactly when one of its halves does:
/// with a host overlapping exactly when it is reserved, every network's
/// answer is the union of its addresses' answers.
#[test]
fn a_network_overlaps_exactly_when_one_of_its_halves_does() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200_000 {
        let (table, bits) = near_a_block(&mut rng);
        let len = rng.below(u64::from(table.width) + 1) as u8;
        let first = truncate(bits, len, table.width);
        let whole = table.overlap(first, len);
        if u32::from(len) == table.width {
            let ip = if table.width == 32 {
                IpAddr::from(std::net::Ipv4Addr::from_bits(first as u32))
            } else {
                IpAddr::from(Ipv6Addr::from_bits(first))
            };
            assert_eq!(whole, reserved_range(ip), "{ip}");
            continue;
        }
        let half = 1u128 << (table.width - u32::from(len) - 1);
        let halves = [table.overlap(first, len + 1), table.overlap(first | half, len + 1)];
        assert_eq!(whole.is_some(), halves.iter().any(Option::is_some), "{first:#x}/{len}: {halves:?}");
    }
}

/// Small networks near the blocks, address by address.
#[test]
fn a_small_network_overlaps_exactly_when_one_of_its_addresses_is_reserved() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..5_000 {
        let (table, bits) = near_a_block(&mut rng);
        let len = (table.width - rng.below(9) as u32) as u8;
        let first = truncate(bits, len, table.width);
        let size = 1u128 << (table.width - u32::from(len));
        let any = (0..size).any(|offset| table.overlap(first + offset, table.width as u8).is_some());
        assert_eq!(table.overlap(first, len).is_some(), any, "{first:#x}/{len}");
    }
}
