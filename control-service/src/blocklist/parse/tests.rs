#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;

const BAN: ParseLimits = ParseLimits { policy: CidrPolicy::Ban, max_entries: 1_000_000 };
const SKIP: ParseLimits = ParseLimits { policy: CidrPolicy::Skip, max_entries: 1_000_000 };
const EXPAND: ParseLimits = ParseLimits { policy: CidrPolicy::Expand, max_entries: 1_000_000 };

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

    let parsed = parse(v6.as_bytes(), &BAN).unwrap_err();
    assert!(matches!(parsed, ParseError::NotAList { valid: 2, invalid: 4, .. }), "{parsed:?}");

    let fine = v6.lines().filter(|l| l.contains("2001:678") || l.contains("2a06") || l.contains("cidr\":42"));
    let fine: String = fine.map(|l| format!("{l}\n")).collect();
    let parsed = parse(fine.as_bytes(), &BAN).unwrap();
    assert_eq!(texts(&parsed.entries), ["2001:678:738::/48", "2a06:e480::/29"]);
    assert_eq!(parsed.counts, counts(2, 1, 0, 0));
    assert_eq!(parsed.bad_lines, [BadLine { line: 3, text: r#"{"cidr":42}"#.into() }]);
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
    let parsed = parse(FIREHOL_LEVEL1.as_bytes(), &BAN).unwrap();
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
            "224.0.0.0/3"
        ]
    );
    assert_eq!(parsed.counts, counts(10, 0, 0, 0));

    let mut counts = parsed.counts;
    let kept = Exclusions::new(&[], &[]).apply(parsed.entries, &mut counts);
    assert_eq!(texts(&kept), ["1.10.16.0/20", "1.19.0.0/16", "103.4.116.50", "185.11.61.0/24"]);
    assert_eq!(counts.reserved, 6);

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
    let limits = ParseLimits { policy: CidrPolicy::Ban, max_entries: 100 };
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
    let mut collector = Collector::new(1_000);
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
    let limits = ParseLimits { policy: CidrPolicy::Expand, max_entries: 255 };
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
    let kept = Exclusions::new(&[], &[]).apply(entries, &mut counts);
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
    let kept = exclusions.apply(entries, &mut counts);
    assert_eq!(texts(&kept), ["46.1.2.3", "100.2.0.0/16", "2a02:4f8::1"]);
    assert_eq!((counts.reserved, counts.ignored, counts.never_ban), (1, 5, 3));
    assert_eq!(counts.valid, 12);
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
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000), max in 0usize..50) {
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            if let Ok(parsed) = parse(&body, &ParseLimits { policy, max_entries: max }) {
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
    fn list_like_bodies_give_sorted_unique_entries_within_the_limit(
        lines in proptest::collection::vec(line_strategy(), 0..300),
        max in 0usize..600,
        crlf in any::<bool>(),
    ) {
        let body = lines.join(if crlf { "\r\n" } else { "\n" });
        for policy in [CidrPolicy::Skip, CidrPolicy::Ban, CidrPolicy::Expand] {
            match parse(body.as_bytes(), &ParseLimits { policy, max_entries: max }) {
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
