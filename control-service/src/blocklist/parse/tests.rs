#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

const BAN: ParseLimits = ParseLimits::new(CidrPolicy::Ban, 1_000_000);
const SKIP: ParseLimits = ParseLimits::new(CidrPolicy::Skip, 1_000_000);
const EXPAND: ParseLimits = ParseLimits::new(CidrPolicy::Expand, 1_000_000);
/// `ban` with the broadest networks a source may allow (/8, IPv6 /16).
const BAN_BROADEST: ParseLimits =
    ParseLimits { ban_min_prefix_v4: BROADEST_BAN_PREFIX_V4, ban_min_prefix_v6: BROADEST_BAN_PREFIX_V6, ..BAN };

fn net(text: &str) -> IpNet {
    parse_entry(text).unwrap_or_else(|| panic!("{text} is an entry"))
}

fn nets(texts: &[&str]) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = texts.iter().map(|t| net(t)).collect();
    nets.sort();
    nets
}

fn texts(entries: &[IpNet]) -> Vec<String> {
    entries.iter().map(entry_text).collect()
}

fn counts(valid: u64, invalid: u64, duplicate: u64, cidr_skipped: u64) -> ImportCounts {
    ImportCounts { valid, invalid, duplicate, cidr_skipped, ..ImportCounts::default() }
}

// ---- the formats ----

#[test]
fn blocklist_de_bare_addresses() {
    let body = "1.12.61.8\n1.15.143.18\n2.57.122.194\n2001:41d0:8:e8ad::1\n\
                1.15.143.18\n2a01:4f8:c17:2a4b::1\n103.149.28.12";
    let parsed = parse(body.as_bytes(), &SKIP).unwrap();
    assert_eq!(
        texts(&parsed.entries),
        ["1.12.61.8", "1.15.143.18", "2.57.122.194", "103.149.28.12", "2001:41d0:8:e8ad::1", "2a01:4f8:c17:2a4b::1"]
    );
    assert_eq!(parsed.counts, counts(6, 0, 1, 0));
    assert_eq!(parsed.lines, 7);
    assert!(parsed.bad_lines.is_empty());
}

const DROP_TXT: &str = "; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project SLT\n\
; https://www.spamhaus.org/drop/drop.txt\n\
; Last-Modified: Mon, 01 Jan 2024 12:00:00 GMT\n\
; Expires: Mon, 01 Jan 2024 13:00:00 GMT\n\
1.10.16.0/20 ; SBL256894\n\
1.19.0.0/16 ; SBL434604\n\
1.32.128.0/18 ; SBL286275\n\
2.56.192.0/22 ; SBL459831\n\
5.134.128.0/19 ; SBL270738\n";

#[test]
fn spamhaus_drop_text_under_each_policy() {
    let parsed = parse(DROP_TXT.as_bytes(), &BAN).unwrap();
    assert_eq!(
        texts(&parsed.entries),
        ["1.10.16.0/20", "1.19.0.0/16", "1.32.128.0/18", "2.56.192.0/22", "5.134.128.0/19"]
    );
    assert_eq!(parsed.counts, counts(5, 0, 0, 0));
    assert_eq!(parsed.lines, 9);

    // A list of networks under `skip` is still a list: nothing to ban.
    let parsed = parse(DROP_TXT.as_bytes(), &SKIP).unwrap();
    assert!(parsed.entries.is_empty());
    assert_eq!(parsed.counts, counts(0, 0, 0, 5));

    // All wider than /24: nothing to expand.
    let parsed = parse(DROP_TXT.as_bytes(), &EXPAND).unwrap();
    assert!(parsed.entries.is_empty());
    assert_eq!(parsed.counts.cidr_skipped, 5);
}

#[test]
fn spamhaus_drop_json_lines() {
    let v4 = r#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}
{"cidr":"1.19.0.0/16","sblid":"SBL434604","rir":"apnic"}
{"cidr":"2.56.192.0/22","sblid":"SBL459831","rir":"ripencc"}
{"type":"metadata","timestamp":1700000000,"size":12345,"records":3,"copyright":"(c) 2024 The Spamhaus Project SLT","terms":"https://www.spamhaus.org/drop/terms/"}
"#;
    let parsed = parse(v4.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.10.16.0/20", "1.19.0.0/16", "2.56.192.0/22"]);
    assert_eq!(parsed.counts, counts(3, 0, 0, 0));
    assert_eq!(parsed.lines, 4);

    let v6 = "{\"cidr\":\"2001:678:738::/48\",\"sblid\":\"SBL594728\",\"rir\":\"ripencc\"}\r\n\
              {\"cidr\":\"2a06:e480::/29\",\"sblid\":\"SBL573245\",\"rir\":\"ripencc\"}\r\n\
              {\"sblid\":\"SBL1\",\"rir\":\"ripencc\"}\r\n\
              {\"cidr\":42}\r\n\
              {\"cidr\":\"not a network\"}\r\n\
              {\"cidr\":\"2a0e:1c80:1:1::/64\",\"sblid\":\"SBL1\"\r\n\
              {\"type\":\"metadata\",\"timestamp\":1700000000,\"size\":300,\"records\":2}";
    let parsed = parse(v6.as_bytes(), &EXPAND).unwrap_err();
    // Two networks skipped by `expand`, four invalid objects: not a list.
    assert!(matches!(parsed, ParseError::NotAList { valid: 0, invalid: 4, .. }), "{parsed:?}");

    let parsed = parse(v6.as_bytes(), &BAN_BROADEST).unwrap_err();
    assert!(matches!(parsed, ParseError::NotAList { valid: 2, invalid: 4, .. }), "{parsed:?}");

    let fine = v6.lines().filter(|l| l.contains("2001:678") || l.contains("2a06") || l.contains("cidr\":42"));
    let fine: String = fine.map(|l| format!("{l}\n")).collect();
    let parsed = parse(fine.as_bytes(), &BAN_BROADEST).unwrap();
    assert_eq!(texts(&parsed.entries), ["2001:678:738::/48", "2a06:e480::/29"]);
    assert_eq!(parsed.counts, counts(2, 1, 0, 0));
    assert_eq!(parsed.bad_lines, [BadLine { line: 3, text: r#"{"cidr":42}"#.into() }]);
    // A /29 is broader than `ban` bans by default (IPv6 /32).
    let parsed = parse(fine.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["2001:678:738::/48"]);
    assert_eq!(parsed.counts, counts(1, 1, 0, 1));
}

const FIREHOL_LEVEL1: &str = "#\n\
# firehol_level1\n\
# ipv4 hash:net ipset\n\
#\n\
# A firewall blacklist composed from IP lists, providing\n\
# maximum protection with minimum false positives.\n\
#\n\
# Source URL: https://iplists.firehol.org/?ipset=firehol_level1\n\
#\n\
# This File Date: Mon Jan  1 12:00:00 UTC 2024\n\
# Entries: 4 unique IPs, 16843009 subnets\n\
#\n\
0.0.0.0/8\n\
1.10.16.0/20\n\
1.19.0.0/16\n\
10.0.0.0/8\n\
100.64.0.0/10\n\
103.4.116.50\n\
127.0.0.0/8\n\
185.11.61.0/24\n\
192.168.0.0/16\n\
224.0.0.0/3\n";

#[test]
fn firehol_netset_keeps_reserved_networks_for_the_filters() {
    // `ban` with the broadest bound a source may set: the /8s are read and
    // left to the filters; 224.0.0.0/3 is broader than any source may ban.
    let parsed = parse(FIREHOL_LEVEL1.as_bytes(), &BAN_BROADEST).unwrap();
    assert_eq!(
        texts(&parsed.entries),
        [
            "0.0.0.0/8",
            "1.10.16.0/20",
            "1.19.0.0/16",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "103.4.116.50",
            "127.0.0.0/8",
            "185.11.61.0/24",
            "192.168.0.0/16",
        ]
    );
    assert_eq!(parsed.counts, counts(9, 0, 0, 1));

    let mut counts = parsed.counts;
    let mut kept = parsed.entries;
    Exclusions::new(&[], &[]).apply(&mut kept, &mut counts);
    assert_eq!(texts(&kept), ["1.10.16.0/20", "1.19.0.0/16", "103.4.116.50", "185.11.61.0/24"]);
    assert_eq!(counts.reserved, 5);

    // The default bound (/12) leaves out the /8s, the /10 and the /3.
    let parsed = parse(FIREHOL_LEVEL1.as_bytes(), &BAN).unwrap();
    assert_eq!(
        texts(&parsed.entries),
        ["1.10.16.0/20", "1.19.0.0/16", "103.4.116.50", "185.11.61.0/24", "192.168.0.0/16"]
    );
    assert_eq!(parsed.counts, counts_with(5, 5));

    // Under `skip` only the host is left; under `expand` the /24 as well.
    let parsed = parse(FIREHOL_LEVEL1.as_bytes(), &SKIP).unwrap();
    assert_eq!(texts(&parsed.entries), ["103.4.116.50"]);
    assert_eq!(parsed.counts, counts_with(1, 9));
    let parsed = parse(FIREHOL_LEVEL1.as_bytes(), &EXPAND).unwrap();
    assert_eq!(parsed.counts, counts_with(257, 8));
    assert_eq!(entry_text(&parsed.entries[1]), "185.11.61.0");
    assert_eq!(entry_text(&parsed.entries[256]), "185.11.61.255");
}

fn counts_with(valid: u64, cidr_skipped: u64) -> ImportCounts {
    counts(valid, 0, 0, cidr_skipped)
}

#[test]
fn feodo_blocklist_with_banner_and_end_line() {
    let body = "################################################################\n\
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (recommended)  #\n\
# Last updated: 2024-01-01 12:00:00 UTC                        #\n\
#                                                              #\n\
# Terms Of Use: https://feodotracker.abuse.ch/blocklist/       #\n\
# For questions please contact feodotracker [at] abuse.ch      #\n\
################################################################\n\
#\n\
# DstIP\n\
162.243.103.246\n\
167.86.75.145\n\
50.16.16.211\n\
# END 3 entries";
    let parsed = parse(body.as_bytes(), &SKIP).unwrap();
    assert_eq!(texts(&parsed.entries), ["50.16.16.211", "162.243.103.246", "167.86.75.145"]);
    assert_eq!(parsed.counts, counts(3, 0, 0, 0));
    assert_eq!(parsed.lines, 13);
}

#[test]
fn ipsum_address_tab_count() {
    let body = "# IPsum Threat Intelligence Feed\n\
# (https://github.com/stamparm/ipsum)\n\
#\n\
# Last update: Mon, 01 Jan 2024 03:01:24 +0100\n\
#\n\
# IP\tnumber of (black)lists\n\
#\n\
185.224.128.17\t10\n\
80.94.95.115\t9\n\
218.92.0.76\t8\n\
2001:db8:1::5 \t 3\n";
    let parsed = parse(body.as_bytes(), &SKIP).unwrap();
    assert_eq!(texts(&parsed.entries), ["80.94.95.115", "185.224.128.17", "218.92.0.76", "2001:db8:1::5"]);
    assert_eq!(parsed.counts, counts(4, 0, 0, 0));
}

#[test]
fn comments_crlf_bom_blank_lines_and_a_last_line_without_newline() {
    let body = "\u{FEFF}# a list\r\n\
                ; another comment\r\n\
                \r\n\
                \t  \r\n\
                1.2.3.4 # inline note\r\n\
                5.6.7.0/24 ; SBL1\r\n\
                9.9.9.9;no space\r\n\
                \x20 8.8.4.4  \r\n\
                2001:db8::2";
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.2.3.4", "5.6.7.0/24", "8.8.4.4", "9.9.9.9", "2001:db8::2"]);
    assert_eq!(parsed.counts, counts(5, 0, 0, 0));
    assert_eq!(parsed.lines, 9);

    // The BOM before the first entry, and a final CRLF.
    let parsed = parse("\u{FEFF}1.2.3.4\r\n".as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.2.3.4"]);
    assert_eq!(parsed.lines, 1);
}

#[test]
fn what_follows_an_entry_must_be_a_count_or_a_comment() {
    let body = "1.2.3.4 10\n1.2.3.5 foo\n<td>1.2.3.6</td>\n1.2.3.7 10 20\n1.2.3.8 -1\n1.2.3.9 +5\n\
                1.2.3.10\n1.2.3.11\n1.2.3.12\n1.2.3.13\n1.2.3.14\n1.2.3.15\n";
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(parsed.counts, counts(7, 5, 0, 0));
    let bad: Vec<u64> = parsed.bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(bad, [2, 3, 4, 5, 6]);
    assert_eq!(parsed.bad_lines[1].text, "<td>1.2.3.6</td>");
}

#[test]
fn entries_are_canonical() {
    let body = "::ffff:1.2.3.4\n1.2.3.99/24\n9.9.9.9/32\n2001:DB8:0:0::1\n2001:db8::1/128\n\
                ::ffff:5.6.7.8/120\n2001:db8:ab::1/48\n";
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(
        texts(&parsed.entries),
        ["1.2.3.0/24", "1.2.3.4", "5.6.7.0/24", "9.9.9.9", "2001:db8::1", "2001:db8:ab::/48"]
    );
    assert_eq!(parsed.counts, counts(6, 0, 1, 0));
    for entry in &parsed.entries {
        assert_eq!(parse_entry(&entry_text(entry)), Some(*entry));
    }
    assert_eq!(parse_entry(" 10.0.0.1/8 "), Some(net("10.0.0.0/8")));
    for bad in ["", "1.2.3", "1.2.3.4/33", "1.2.3.4/+8", "1.2.3.4/", "fe80::1%eth0", "example.com", "01.2.3.4"] {
        assert_eq!(parse_entry(bad), None, "{bad}");
    }
}

// ---- not a list ----

#[test]
fn an_html_page_is_not_a_list() {
    let body = "<!DOCTYPE html>\n<html>\n<head><title>503 Service Unavailable</title></head>\n\
                <body>\n<h1>503 Service Unavailable</h1>\n<p>Try 1.2.3.4 later</p>\n</body>\n</html>\n";
    let err = parse(body.as_bytes(), &BAN).unwrap_err();
    let ParseError::NotAList { valid, invalid, first_bad } = err else { panic!("{err:?}") };
    assert_eq!((valid, invalid), (0, 8));
    assert_eq!(first_bad, Some(BadLine { line: 1, text: "<!DOCTYPE html>".into() }));
}

#[test]
fn an_empty_or_comment_only_body_is_not_a_list() {
    for body in ["", "\n", "\r\n \t\n", "\u{FEFF}", "# nothing here\n; nor here\n"] {
        let err = parse(body.as_bytes(), &BAN).unwrap_err();
        assert!(matches!(err, ParseError::NotAList { valid: 0, invalid: 0, first_bad: None }), "{body:?}: {err:?}");
    }
}

#[test]
fn more_invalid_lines_than_entries_is_not_a_list() {
    let body = "1.2.3.4\nerror\n5.6.7.8\nnot found\nsorry\n";
    let err = parse(body.as_bytes(), &BAN).unwrap_err();
    let ParseError::NotAList { valid, invalid, first_bad } = err else { panic!("{err:?}") };
    assert_eq!((valid, invalid), (2, 3));
    assert_eq!(first_bad, Some(BadLine { line: 2, text: "error".into() }));
    assert!(err_text(body).contains("line 2"));

    // As many invalid as valid: a list, with its bad lines.
    let parsed = parse("1.2.3.4\nerror\n5.6.7.8\nnot found\n".as_bytes(), &BAN).unwrap();
    assert_eq!(parsed.counts, counts(2, 2, 0, 0));
}

fn err_text(body: &str) -> String {
    parse(body.as_bytes(), &BAN).unwrap_err().to_string()
}

// ---- limits ----

fn numbered(n: u32) -> String {
    (0..n).map(|i| format!("{}\n", Ipv4Addr::from(0x0B00_0000 + i))).collect()
}

#[test]
fn too_many_entries_stops_at_the_limit() {
    let limits = ParseLimits::new(CidrPolicy::Ban, 100);
    let parsed = parse(numbered(100).as_bytes(), &limits).unwrap();
    assert_eq!(parsed.entries.len(), 100);

    let err = parse(numbered(101).as_bytes(), &limits).unwrap_err();
    assert!(matches!(err, ParseError::TooManyEntries { limit: 100 }), "{err:?}");
    assert_eq!(err.to_string(), "the list has more than 100 entries");

    // Duplicates do not count toward the limit, however many.
    let repeated = numbered(100).repeat(50);
    let parsed = parse(repeated.as_bytes(), &limits).unwrap();
    assert_eq!(parsed.counts, counts(100, 0, 4_900, 0));
}

#[test]
fn the_collector_never_holds_much_more_than_the_limit() {
    let mut collector = Collector::new(1_000, false);
    let mut result = Ok(());
    for i in 0..1_000_000u32 {
        result = collector.push(IpNet::from(IpAddr::from(Ipv4Addr::from(i))));
        assert!(collector.entries.capacity() <= 1_000 + 500 + 256);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(ParseError::TooManyEntries { limit: 1_000 })));
}

#[test]
fn cidr_policies() {
    let body = "192.0.2.0/30\n192.0.2.1\n198.51.100.0/23\n2001:db8::/126\n2001:db8:1::/120\n2001:db8:2::/119\n\
                203.0.113.7/32\n";
    let parsed = parse(body.as_bytes(), &SKIP).unwrap();
    assert_eq!(texts(&parsed.entries), ["192.0.2.1", "203.0.113.7"]);
    assert_eq!(parsed.counts, counts(2, 0, 0, 5));

    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(parsed.counts, counts(7, 0, 0, 0));
    assert!(parsed.entries.contains(&net("198.51.100.0/23")));

    let parsed = parse(body.as_bytes(), &EXPAND).unwrap();
    // 4 + 1 + 4 + 256 addresses; 192.0.2.1 is listed again after its /30.
    assert_eq!(parsed.counts, counts(4 + 1 + 4 + 256, 0, 1, 2));
    assert_eq!(texts(&parsed.entries[..5]), ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "203.0.113.7"]);
    assert!(parsed.entries.contains(&net("2001:db8:1::ff")));
    assert!(parsed.entries.iter().all(is_host));

    // Expanded addresses count toward the limit.
    let limits = ParseLimits::new(CidrPolicy::Expand, 255);
    let err = parse(b"5.6.7.0/24\n", &limits).unwrap_err();
    assert!(matches!(err, ParseError::TooManyEntries { limit: 255 }));
}

// ---- bad lines ----

#[test]
fn bad_lines_keep_the_first_twenty_with_their_numbers_cut_at_200_bytes() {
    let mut body = String::new();
    let mut expected_numbers = Vec::new();
    for i in 1..=100u32 {
        if i % 3 == 0 {
            body.push_str(&format!("junk {i}\n"));
            expected_numbers.push(u64::from(i));
        } else {
            body.push_str(&format!("{}\n", Ipv4Addr::from(0x0B00_0000 + i)));
        }
    }
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(parsed.counts.invalid, 33);
    assert_eq!(parsed.bad_lines.len(), MAX_BAD_LINES);
    let numbers: Vec<u64> = parsed.bad_lines.iter().map(|b| b.line).collect();
    assert_eq!(numbers, expected_numbers[..MAX_BAD_LINES]);
    assert_eq!(parsed.bad_lines[0].text, "junk 3");

    let long_ascii = "x".repeat(300);
    let long_euro = "€".repeat(100);
    let body = format!("1.1.1.1\n{long_ascii}\n2.2.2.2\n{long_euro}\n3.3.3.3\n");
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(parsed.bad_lines[0], BadLine { line: 2, text: "x".repeat(200) });
    // 66 three-byte chars: the 67th would end at byte 201.
    assert_eq!(parsed.bad_lines[1], BadLine { line: 4, text: "€".repeat(66) });
}

#[test]
fn non_utf8_bytes_make_the_line_invalid_never_a_panic() {
    let body =
        b"1.1.1.1\n1.2.3.4\xff\n\xc3\x28 9.9.9.9\n# caf\xe9 banner\n2.2.2.2\n{\"cidr\":\"3.3.3.3\xff\"}\n4.4.4.4\n";
    let parsed = parse(body, &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.1.1.1", "2.2.2.2", "4.4.4.4"]);
    assert_eq!(parsed.counts, counts(3, 3, 0, 0));
    assert_eq!(parsed.bad_lines[0], BadLine { line: 2, text: "1.2.3.4\u{FFFD}".into() });
    assert_eq!(parsed.bad_lines[1].line, 3);
    assert_eq!(parsed.bad_lines[2].line, 6);
    assert!(parsed.bad_lines.iter().all(|b| b.text.len() <= 200));

    // A cut through a multi-byte sequence of invalid bytes stays within 200 bytes.
    let mut long = vec![0xffu8; 300];
    long.insert(0, b'x');
    let text = bad_line_text(&long);
    assert!(text.len() <= 200 && text.starts_with('x'), "{}", text.len());
}

// ---- exclusions ----

#[test]
fn reserved_ranges_are_always_dropped() {
    let entries = nets(&[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.1",
        "192.168.1.0/24",
        "fe80::1",
        "2001:db8::/32",
        "8.0.0.0/6",
        "45.1.2.3",
        "2a01:4f8::1",
    ]);
    let mut counts = ImportCounts::default();
    let mut kept = entries;
    Exclusions::new(&[], &[]).apply(&mut kept, &mut counts);
    assert_eq!(texts(&kept), ["45.1.2.3", "2a01:4f8::1"]);
    // 8.0.0.0/6 contains 10.0.0.0/8.
    assert_eq!(counts.reserved, 7);
    assert_eq!((counts.ignored, counts.never_ban), (0, 0));
}

#[test]
fn ignoreip_and_never_ban_with_the_first_reason_counted() {
    let ignoreip: Vec<String> = [
        "127.0.0.1/8",
        "::1",
        "45.1.2.3",
        "81.2.0.0/16",
        "monitoring.example.com",
        "%(known/ignoreip)s",
        "93.184.0.0/255.255.0.0",
        "2a01:4f8::/32",
    ]
    .map(String::from)
    .into();
    let mapped = IpNet::V6(Ipv6Net::new("::ffff:150.1.2.3".parse().unwrap(), 128).unwrap());
    let never_ban = [net("81.2.3.0/24"), net("100.1.0.0/16"), mapped];
    let exclusions = Exclusions::new(&ignoreip, &never_ban);
    assert_eq!(exclusions.ignore.len(), 6);
    assert_eq!(exclusions.never_ban[2], net("150.1.2.3"));

    let entries = nets(&[
        "127.0.0.2",     // reserved, and in ignoreip: reserved counts
        "45.1.2.3",      // ignoreip address
        "45.0.0.0/8",    // a network containing an ignoreip address
        "81.2.3.4",      // in ignoreip and never_ban: ignoreip counts
        "93.184.216.34", // ignoreip by dotted mask
        "2a01:4f8:1::1", // ignoreip IPv6 network
        "100.1.200.3",   // never_ban
        "100.0.0.0/15",  // contains a never_ban network
        "150.1.2.3",     // never_ban given as IPv4-mapped
        "46.1.2.3",      // kept
        "2a02:4f8::1",   // kept
        "100.2.0.0/16",  // kept
    ]);
    let mut counts = ImportCounts { valid: 12, ..ImportCounts::default() };
    let mut kept = entries;
    exclusions.apply(&mut kept, &mut counts);
    assert_eq!(texts(&kept), ["46.1.2.3", "100.2.0.0/16", "2a02:4f8::1"]);
    assert_eq!((counts.reserved, counts.ignored, counts.never_ban), (1, 5, 3));
    assert_eq!(counts.valid, 12);
}

// ---- the bounds of the CIDR policies ----

#[test]
fn ban_skips_and_counts_networks_broader_than_the_sources_bound() {
    let body = "32.0.0.0/3\n4000::/2\n1.0.0.0/12\n2.0.0.0/11\n2a00::/32\n2a02::/31\n45.1.2.3\n0.0.0.0/0\n::/0\n";
    // The defaults: IPv4 /12, IPv6 /32.
    let parsed = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.0.0.0/12", "45.1.2.3", "2a00::/32"]);
    assert_eq!(parsed.counts, counts(3, 0, 0, 6));

    // The broadest a source may allow: /8, IPv6 /16. An eighth of the
    // address space is still never banned.
    let parsed = parse(body.as_bytes(), &BAN_BROADEST).unwrap();
    assert_eq!(texts(&parsed.entries), ["1.0.0.0/12", "2.0.0.0/11", "45.1.2.3", "2a00::/32", "2a02::/31"]);
    assert_eq!(parsed.counts, counts(5, 0, 0, 4));

    let limits = ParseLimits { ban_min_prefix_v4: 8, ..BAN };
    let parsed = parse(b"7.0.0.0/8\n6.0.0.0/7\n2a02::/31\n", &limits).unwrap();
    assert_eq!(texts(&parsed.entries), ["7.0.0.0/8"]);
    assert_eq!(parsed.counts, counts(1, 0, 0, 2));

    // A list of only broad networks is a list with nothing to ban, not the
    // wrong file; what it held is in the counts.
    let parsed = parse(b"32.0.0.0/3\n4000::/2\n", &BAN).unwrap();
    assert!(parsed.entries.is_empty());
    assert_eq!(parsed.counts.cidr_skipped, 2);
}

#[test]
fn expand_keeps_its_bound_and_a_repeated_network_costs_one_line_of_work() {
    // Broader than /24 (IPv6 /120), however broad: skipped.
    let parsed = parse(b"0.0.0.0/0\n32.0.0.0/3\n::/0\n5.6.7.0/23\n2001:db8::/119\n", &EXPAND).unwrap();
    assert!(parsed.entries.is_empty());
    assert_eq!(parsed.counts, counts(0, 0, 0, 5));

    // Nested and repeated: an address or network inside one listed before
    // (or after) is a duplicate, as when every address was listed.
    let body = "5.6.7.9\n5.6.7.0/24\n5.6.7.128/25\n5.6.7.0/24\n5.6.8.1\n2001:db8::/127\n2001:db8::1\n";
    let parsed = parse(body.as_bytes(), &EXPAND).unwrap();
    assert_eq!(parsed.counts, counts(256 + 1 + 2, 0, 1 + 128 + 256 + 1, 0));
    assert_eq!(texts(&parsed.entries[..2]), ["5.6.7.0", "5.6.7.1"]);
    assert_eq!(texts(&parsed.entries[255..]), ["5.6.7.255", "5.6.8.1", "2001:db8::", "2001:db8::1"]);
    assert!(parsed.entries.iter().all(is_host));

    // 300 000 lines of the same /24 are 256 addresses. Expanding each line
    // (76 800 000 addresses pushed and sorted) took minutes here; a network
    // that stays one value until the end takes a line's work.
    let body = "5.6.7.0/24\n".repeat(300_000);
    let started = std::time::Instant::now();
    let parsed = parse(body.as_bytes(), &EXPAND).unwrap();
    let took = started.elapsed();
    assert_eq!(parsed.counts, counts(256, 0, 256 * 299_999, 0));
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

// ---- streaming ----

/// `body` fed in the pieces that `cuts` (ascending offsets) make.
fn parse_in_pieces(body: &[u8], limits: &ParseLimits, cuts: &[usize]) -> Result<Parsed, ParseError> {
    let mut reader = ListReader::new(*limits);
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        reader.feed(&body[from..cut])?;
        from = cut;
    }
    reader.finish()
}

/// A body with a BOM, CRLF, multi-byte UTF-8 in comments and in bad
/// lines, JSON, a count, a network, a blank line and no final newline.
const AWKWARD: &str = "\u{FEFF}# café ☕ banner\r\n1.2.3.4\r\n{\"cidr\":\"5.6.7.0/30\",\"sblid\":\"SBL1\"}\r\n\
                       2001:db8::1 ; €uro\r\n€€€ not an address\r\n\r\n9.9.9.9\t12\r\n8.8.8.0/30\r\n1.2.3.4\r\n10.0.0.1";

const LIMITS: [ParseLimits; 3] = [SKIP, BAN, EXPAND];

#[test]
fn pieces_cut_anywhere_read_as_the_whole_body() {
    let bodies: [&[u8]; 9] = [
        AWKWARD.as_bytes(),
        b"\xEF\xBB1.2.3.4\n5.6.7.8\n9.9.9.9\n",
        b"\xEF1.2.3.4\r\n",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB",
        b"\r\n\r\n1.2.3.4\r",
        b"1.2.3.4\n\n",
        b"",
        b"\n",
    ];
    for body in bodies {
        for limits in &LIMITS {
            let whole = parse(body, limits);
            // Two pieces, cut at every offset; one byte at a time.
            for cut in 0..=body.len() {
                assert_eq!(parse_in_pieces(body, limits, &[cut]), whole, "{body:?} cut at {cut}");
            }
            let every: Vec<usize> = (1..body.len()).collect();
            assert_eq!(parse_in_pieces(body, limits, &every), whole, "{body:?} byte by byte");
        }
    }
    // Three pieces, every pair of cuts, on the awkward one.
    let body = AWKWARD.as_bytes();
    let whole = parse(body, &BAN);
    for a in 0..=body.len() {
        for b in a..=body.len() {
            assert_eq!(parse_in_pieces(body, &BAN, &[a, b]), whole, "cut at {a} and {b}");
        }
    }
    let parsed = whole.unwrap();
    assert_eq!(texts(&parsed.entries), ["1.2.3.4", "5.6.7.0/30", "8.8.8.0/30", "9.9.9.9", "10.0.0.1", "2001:db8::1"]);
    assert_eq!(parsed.counts, counts(6, 1, 1, 0));
    assert_eq!(parsed.bad_lines, [BadLine { line: 5, text: "€€€ not an address".into() }]);
    assert_eq!(parsed.lines, 10);
}

#[test]
fn a_partial_bom_is_the_start_of_the_first_line() {
    // Not a BOM: the bytes stay, and the first line is not UTF-8.
    let parsed = parse(b"\xEF\xBB1.2.3.4\n5.6.7.8\n9.9.9.9\n", &BAN).unwrap();
    assert_eq!(parsed.counts, counts(2, 1, 0, 0));
    assert_eq!(parsed.bad_lines[0].line, 1);
    // A BOM alone, or after nothing else, is an empty body.
    for body in [&b"\xEF\xBB\xBF"[..], b"\xEF\xBB\xBF\n# only a comment\n"] {
        let err = parse(body, &BAN).unwrap_err();
        assert_eq!(err, ParseError::NotAList { valid: 0, invalid: 0, first_bad: None });
    }
}

#[test]
fn an_overlong_line_is_a_comment_or_invalid_and_never_held_whole() {
    let comment = format!("  # {}\n", "x".repeat(3 * MAX_LINE_BYTES));
    let junk = format!("{}\r\n", "1.2.3.4 ".repeat(MAX_LINE_BYTES / 4));
    let body = format!("{comment}1.1.1.1\n{junk}2.2.2.2\n3.3.3.3");
    let whole = parse(body.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&whole.entries), ["1.1.1.1", "2.2.2.2", "3.3.3.3"]);
    assert_eq!(whole.counts, counts(3, 1, 0, 0));
    assert_eq!(whole.bad_lines[0].line, 3);
    assert!(whole.bad_lines[0].text.starts_with("1.2.3.4 1.2.3.4 ") && whole.bad_lines[0].text.len() <= 200);

    // In pieces, the reader holds at most MAX_LINE_BYTES of a line (and
    // what Vec's growth rounds that up to).
    for size in [1000, 4096, 65_537] {
        let mut reader = ListReader::new(BAN);
        for piece in body.as_bytes().chunks(size) {
            reader.feed(piece).unwrap();
            assert!(reader.partial.capacity() <= 2 * MAX_LINE_BYTES, "{}", reader.partial.capacity());
        }
        assert_eq!(reader.finish().unwrap(), whole, "pieces of {size}");
    }
    // A line of exactly the limit is a line.
    let padded = format!("1.2.3.4{}\n5.6.7.8\n", " ".repeat(MAX_LINE_BYTES - 7));
    assert_eq!(parse(padded.as_bytes(), &BAN).unwrap().counts, counts(2, 0, 0, 0));
}

#[test]
fn too_many_entries_stops_the_reader_at_once_and_for_good() {
    let limits = ParseLimits::new(CidrPolicy::Ban, 100);
    let body = numbered(10_000);
    let mut reader = ListReader::new(limits);
    let mut fed = 0;
    let mut failed = None;
    for piece in body.as_bytes().chunks(1024) {
        if let Err(error) = reader.feed(piece) {
            failed = Some(error);
            break;
        }
        fed += piece.len();
    }
    assert_eq!(failed, Some(ParseError::TooManyEntries { limit: 100 }));
    // Within 1.5 times the cap (and a piece) of the start, not at the end.
    assert!(fed < 500 * 12, "{fed} bytes read before the refusal");
    assert_eq!(reader.feed(b"1.1.1.1\n"), Err(ParseError::TooManyEntries { limit: 100 }));
    assert_eq!(reader.finish(), Err(ParseError::TooManyEntries { limit: 100 }));
}

/// The whole-body parser this streaming one replaced, kept as the oracle
/// the properties below compare with (with no bound on `ban`, which it
/// did not have).
mod reference {
    use super::super::*;

    pub(super) fn parse(body: &[u8], limits: &ParseLimits) -> Result<Parsed, ParseError> {
        let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
        let mut collector = OldCollector::new(limits.max_entries);
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

    fn split_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        let pieces = if body.is_empty() { None } else { Some(body.split(|b| *b == b'\n')) };
        pieces.into_iter().flatten().map(|line| line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn add_entry(
        net: IpNet,
        policy: CidrPolicy,
        collector: &mut OldCollector,
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
                    for host in net.hosts_all() {
                        collector.push(host)?;
                    }
                }
            }
        }
        Ok(())
    }

    trait AllHosts {
        fn hosts_all(&self) -> Vec<IpNet>;
    }

    impl AllHosts for IpNet {
        /// Network and broadcast included.
        fn hosts_all(&self) -> Vec<IpNet> {
            match self {
                IpNet::V4(v4) => (u32::from(v4.network())..=u32::from(v4.broadcast()))
                    .map(|bits| IpNet::V4(Ipv4Net::from(Ipv4Addr::from(bits))))
                    .collect(),
                IpNet::V6(v6) => (u128::from(v6.network())..=u128::from(v6.broadcast()))
                    .map(|bits| IpNet::V6(Ipv6Net::from(Ipv6Addr::from(bits))))
                    .collect(),
            }
        }
    }

    struct OldCollector {
        entries: Vec<IpNet>,
        limit: usize,
        compact_at: usize,
        duplicates: u64,
    }

    impl OldCollector {
        fn new(limit: usize) -> Self {
            let compact_at = limit.saturating_add(limit / 2).saturating_add(256);
            OldCollector { entries: Vec::new(), limit, compact_at, duplicates: 0 }
        }

        fn push(&mut self, net: IpNet) -> Result<(), ParseError> {
            if self.entries.len() >= self.compact_at {
                self.compact()?;
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

        fn finish(mut self) -> Result<(Vec<IpNet>, u64), ParseError> {
            self.compact()?;
            Ok((self.entries, self.duplicates))
        }
    }
}

/// What the whole-body parser gave, with the one difference made on
/// purpose: a body of one `\n` (after a BOM) is one empty line, not none.
fn reference_parse(body: &[u8], limits: &ParseLimits) -> Result<Parsed, ParseError> {
    let unbounded = ParseLimits { ban_min_prefix_v4: 0, ban_min_prefix_v6: 0, ..*limits };
    let mut expected = reference::parse(body, &unbounded);
    if body.strip_prefix(UTF8_BOM).unwrap_or(body) == b"\n"
        && let Ok(parsed) = &mut expected
    {
        parsed.lines = 1;
    }
    expected
}

#[test]
fn the_fixed_bodies_read_as_the_whole_body_parser_read_them() {
    let numbered = numbered(300);
    let bodies: [&[u8]; 6] = [
        AWKWARD.as_bytes(),
        DROP_TXT.as_bytes(),
        FIREHOL_LEVEL1.as_bytes(),
        b"\xEF\xBB1.2.3.4\n5.6.7.8\n9.9.9.9\n",
        b"192.0.2.0/30\n192.0.2.1\n198.51.100.0/23\n2001:db8::/126\n2001:db8:1::/120\n5.6.7.0/24\n5.6.7.128/25\n",
        numbered.as_bytes(),
    ];
    for body in bodies {
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            for max in [0, 3, 100, 1_000_000] {
                let limits =
                    ParseLimits { ban_min_prefix_v4: 0, ban_min_prefix_v6: 0, ..ParseLimits::new(policy, max) };
                assert_eq!(parse(body, &limits), reference_parse(body, &limits), "{policy:?} {max}: {body:?}");
            }
        }
    }
}

// ---- properties ----

fn line_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u32>().prop_map(|bits| Ipv4Addr::from(bits).to_string()),
        (any::<u32>(), 0u8..=32).prop_map(|(bits, len)| format!("{}/{len}", Ipv4Addr::from(bits))),
        (any::<u128>(), 100u8..=128).prop_map(|(bits, len)| format!("{}/{len}", Ipv6Addr::from(bits))),
        (0u8..4, 20u8..=32).prop_map(|(last, len)| format!("10.0.0.{last}/{len} ; dup")),
        Just("# comment".to_owned()),
        Just(r#"{"cidr":"1.2.3.0/24"}"#.to_owned()),
        Just(r#"{"type":"metadata"}"#.to_owned()),
        "[ -~]{0,40}",
        "[ -~é€☕\u{FEFF}\t]{0,20}",
        (any::<u32>(), 1u8..8).prop_map(|(bits, len)| format!("{}/{len} ; broad", Ipv4Addr::from(bits))),
        (0u8..4, 22u8..=26).prop_map(|(n, len)| format!("192.0.2.{n}/{len}")),
    ]
}

/// A body of list-like lines, with or without a BOM and CRLF, and where to cut it.
fn body_and_cuts() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    (proptest::collection::vec(line_strategy(), 0..120), any::<bool>(), any::<bool>(), any::<bool>())
        .prop_flat_map(|(lines, crlf, bom, newline_at_end)| {
            let mut body = String::new();
            if bom {
                body.push('\u{FEFF}');
            }
            body.push_str(&lines.join(if crlf { "\r\n" } else { "\n" }));
            if newline_at_end {
                body.push('\n');
            }
            let body = body.into_bytes();
            let len = body.len();
            (Just(body), proptest::collection::vec(0..=len, 0..12))
        })
        .prop_map(|(body, mut cuts)| {
            cuts.sort_unstable();
            (body, cuts)
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000), max in 0usize..50) {
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            if let Ok(parsed) = parse(&body, &ParseLimits::new(policy, max)) {
                prop_assert!(parsed.entries.len() <= max);
                prop_assert!(parsed.bad_lines.len() <= MAX_BAD_LINES);
            }
        }
    }

    #[test]
    fn overlap_is_containment_either_way(
        (a, la, b, lb) in (any::<u32>(), 0u8..=32, any::<u32>(), 0u8..=32),
        (c, lc, d, ld) in (any::<u128>(), 0u8..=128, any::<u128>(), 0u8..=128),
    ) {
        let v4 = |bits: u32, len| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(bits), len).unwrap());
        let v6 = |bits: u128, len| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(bits), len).unwrap());
        // Close addresses as well, or random pairs would almost never overlap.
        for (x, y) in [(v4(a, la), v4(b, lb)), (v4(a, la), v4(a ^ (b & 0xff), lb)), (v6(c, lc), v6(d, ld)),
                       (v6(c, lc), v6(c ^ (d & 0xffff), ld)), (v4(a, la), v6(c, lc))] {
            prop_assert_eq!(overlaps(&x, &y), x.contains(&y) || y.contains(&x), "{} {}", x, y);
        }
    }

    #[test]
    fn a_body_in_pieces_reads_as_the_whole_body_and_as_the_old_parser_read_it(
        (body, cuts) in body_and_cuts(),
        max in prop_oneof![0usize..40, Just(1_000_000)],
    ) {
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            let limits = ParseLimits::new(policy, max);
            let whole = parse(&body, &limits);
            prop_assert_eq!(&parse_in_pieces(&body, &limits, &cuts), &whole);
            let unbounded = ParseLimits { ban_min_prefix_v4: 0, ban_min_prefix_v6: 0, ..limits };
            prop_assert_eq!(parse_in_pieces(&body, &unbounded, &cuts), reference_parse(&body, &unbounded));
            // The bound only moves broad networks (each listing of one)
            // from the entries to cidr_skipped.
            if let (Ok(bounded), Ok(free)) = (&whole, parse(&body, &unbounded)) {
                prop_assert!(bounded.entries.iter().all(|e| free.entries.contains(e)));
                prop_assert!(bounded.entries.iter().all(|e| !limits.too_broad_to_ban(e) || policy != CidrPolicy::Ban));
                let read = |c: &ImportCounts| c.valid + c.duplicate + c.cidr_skipped;
                prop_assert_eq!(read(&bounded.counts), read(&free.counts));
            }
        }
    }

    #[test]
    fn list_like_bodies_give_sorted_unique_entries_within_the_limit(
        lines in proptest::collection::vec(line_strategy(), 0..300),
        max in 0usize..600,
        crlf in any::<bool>(),
    ) {
        let body = lines.join(if crlf { "\r\n" } else { "\n" });
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            match parse(body.as_bytes(), &ParseLimits::new(policy, max)) {
                Ok(parsed) => {
                    prop_assert!(parsed.entries.len() <= max);
                    prop_assert!(parsed.entries.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(parsed.entries.iter().all(|e| canonical(*e) == *e));
                    prop_assert_eq!(parsed.counts.valid, parsed.entries.len() as u64);
                    prop_assert!(parsed.bad_lines.iter().all(|b| b.text.len() <= 200));
                }
                Err(ParseError::TooManyEntries { limit }) => prop_assert_eq!(limit, max),
                Err(ParseError::NotAList { .. }) => {}
            }
        }
    }
}
