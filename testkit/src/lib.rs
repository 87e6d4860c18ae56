//! Test fixtures for the BanGUI services.
//!
//! Small MaxMind-format databases (MMDB) in every schema the geo-service
//! reads, built in memory with `mmdb-writer` from the tables in
//! [`facts`], so tests can assert against the same constants the files were
//! made from. Every file has a fixed build time and a deterministic byte
//! layout: building twice gives the same bytes.
//!
//! [`sample_database`] is the database the geo-service embeds as
//! `builtin:sample` (committed as `geo-service/data/sample.mmdb`; a test in
//! this crate fails when the committed file drifts from this code).
//!
//! [`postgres::PgSchema`] gives each PostgreSQL test a schema of its own.
//!
//! [`list_server::ListServer`] serves blocklists over HTTP for download
//! tests: conditional answers, gzip, oversized and stalled bodies,
//! redirect chains and scripted failures.
//!
//! [`pickle`] writes Python values as fail2ban 1.0.2 pickles its replies,
//! byte for byte; [`fake_fail2ban`] (binary `fake-fail2ban`) is a
//! fail2ban that speaks its socket protocol and answers at once, for
//! benchmarks at sizes real fail2ban is too slow for.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub mod fake_fail2ban;
pub mod list_server;
pub mod pickle;
pub mod postgres;

use ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;

/// The build time written into every fixture: 2023-11-14T22:13:20Z.
pub const BUILD_EPOCH: u64 = 1_700_000_000;

/// The facts the fixture databases are built from.
pub mod facts {
    /// A network in the MaxMind/DB-IP nested fixture.
    #[derive(Debug, Clone, Copy)]
    pub struct Nested {
        pub network: &'static str,
        /// `country.iso_code` and its English name; `None` leaves `country` out.
        pub country: Option<(&'static str, &'static str)>,
        pub registered_country: Option<(&'static str, &'static str)>,
        pub continent: (&'static str, &'static str),
    }

    /// `GeoIP2-Country` style (ip_version 6, IPv4 reachable through aliases).
    pub const MAXMIND: &[Nested] = &[
        Nested {
            network: "81.2.69.0/24",
            country: Some(("GB", "United Kingdom")),
            registered_country: Some(("GB", "United Kingdom")),
            continent: ("EU", "Europe"),
        },
        Nested {
            network: "8.8.8.0/24",
            country: Some(("US", "United States")),
            registered_country: Some(("US", "United States")),
            continent: ("NA", "North America"),
        },
        // Only a registered country: the answer falls back to it.
        Nested {
            network: "5.5.5.0/24",
            country: None,
            registered_country: Some(("DE", "Germany")),
            continent: ("EU", "Europe"),
        },
        Nested {
            network: "2001:4860::/32",
            country: Some(("US", "United States")),
            registered_country: Some(("US", "United States")),
            continent: ("NA", "North America"),
        },
        Nested {
            network: "2a02:ff0::/32",
            country: Some(("FR", "France")),
            registered_country: Some(("NL", "Netherlands")),
            continent: ("EU", "Europe"),
        },
    ];

    /// `DBIP-Country-Lite` style: the same nested layout, other networks.
    pub const DBIP: &[Nested] = &[
        Nested {
            network: "1.1.1.0/24",
            country: Some(("AU", "Australia")),
            registered_country: None,
            continent: ("OC", "Oceania"),
        },
        Nested {
            network: "2606:4700::/32",
            country: Some(("US", "United States")),
            registered_country: None,
            continent: ("NA", "North America"),
        },
    ];

    /// ip-location-db flat files: `(network, country_code)`. IPv4 and IPv6
    /// come in separate files, as ip-location-db ships them.
    pub const FLAT_V4: &[(&str, &str)] = &[("9.9.9.0/24", "CH"), ("77.88.8.0/24", "RU")];
    pub const FLAT_V6: &[(&str, &str)] = &[("2620:fe::/48", "CH")];

    /// IPinfo lite: `(network, country_code, country, continent_code, asn, as_name)`.
    pub const IPINFO: &[(&str, &str, &str, &str, &str, &str)] = &[
        ("4.4.4.0/24", "US", "United States", "NA", "AS3356", "Level 3 Parent, LLC"),
        ("2a00:1450::/32", "IE", "Ireland", "EU", "AS15169", "Google LLC"),
    ];

    /// GeoLite2-ASN style: `(network, number, organisation)`.
    pub const ASN: &[(&str, u32, &str)] = &[
        ("8.8.8.0/24", 15169, "GOOGLE"),
        ("1.1.1.0/24", 13335, "CLOUDFLARENET"),
        ("81.2.69.0/24", 20712, "Andrews & Arnold Ltd"),
        ("2001:4860::/32", 15169, "GOOGLE"),
    ];
}

#[derive(Serialize)]
struct Place<'a> {
    iso_code: &'a str,
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct ContinentRecord<'a> {
    code: &'a str,
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct NestedRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Place<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_country: Option<Place<'a>>,
    continent: ContinentRecord<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    autonomous_system_number: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Serialize)]
struct FlatRecord<'a> {
    country_code: &'a str,
}

#[derive(Serialize)]
struct IpinfoRecord<'a> {
    country_code: &'a str,
    country: &'a str,
    continent_code: &'a str,
    asn: &'a str,
    as_name: &'a str,
}

#[derive(Serialize)]
struct AsnRecord<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
}

fn english(name: &str) -> BTreeMap<&str, &str> {
    BTreeMap::from([("en", name)])
}

fn place<'a>(pair: Option<(&'a str, &'a str)>) -> Option<Place<'a>> {
    pair.map(|(iso_code, name)| Place { iso_code, names: english(name) })
}

fn writer(database_type: &str, ip_version: IpVersion, description: &str) -> Writer {
    writer_built_at(database_type, ip_version, description, BUILD_EPOCH)
}

fn writer_built_at(database_type: &str, ip_version: IpVersion, description: &str, epoch: u64) -> Writer {
    Writer::builder(database_type)
        .ip_version(ip_version)
        .description(&[("en", description)])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(epoch))
        .build()
}

fn net(text: &str) -> IpNet {
    // The fixture tables are constants of this crate; a typo is a bug here.
    text.parse().unwrap_or_else(|e| panic!("fixture network {text:?}: {e}"))
}

fn finish(writer: &Writer) -> Vec<u8> {
    writer.to_bytes().unwrap_or_else(|e| panic!("fixture database: {e}"))
}

fn nested_database(database_type: &str, rows: &[facts::Nested]) -> Vec<u8> {
    nested_database_built_at(database_type, rows, BUILD_EPOCH)
}

fn nested_database_built_at(database_type: &str, rows: &[facts::Nested], epoch: u64) -> Vec<u8> {
    let mut w = writer_built_at(database_type, IpVersion::V6, "BanGUI test fixture (nested schema)", epoch);
    for row in rows {
        let record = NestedRecord {
            country: place(row.country),
            registered_country: place(row.registered_country),
            continent: ContinentRecord { code: row.continent.0, names: english(row.continent.1) },
            autonomous_system_number: None,
            autonomous_system_organization: None,
        };
        w.insert(net(row.network), &record).unwrap_or_else(|e| panic!("{}: {e}", row.network));
    }
    finish(&w)
}

/// A `GeoIP2-Country`-style database built from [`facts::MAXMIND`].
pub fn maxmind_country() -> Vec<u8> {
    nested_database("GeoIP2-Country", facts::MAXMIND)
}

/// The build time of [`maxmind_country_next_build`]: a day after [`BUILD_EPOCH`].
pub const NEXT_BUILD_EPOCH: u64 = BUILD_EPOCH + 86_400;

/// The next build of [`maxmind_country`], as an update would bring it: one
/// day newer, and it also knows `3.3.3.0/24` (CA).
pub fn maxmind_country_next_build() -> Vec<u8> {
    let mut rows = facts::MAXMIND.to_vec();
    rows.push(facts::Nested {
        network: "3.3.3.0/24",
        country: Some(("CA", "Canada")),
        registered_country: Some(("CA", "Canada")),
        continent: ("NA", "North America"),
    });
    nested_database_built_at("GeoIP2-Country", &rows, NEXT_BUILD_EPOCH)
}

/// A `DBIP-Country-Lite`-style database built from [`facts::DBIP`].
pub fn dbip_country() -> Vec<u8> {
    nested_database("DBIP-Country-Lite", facts::DBIP)
}

fn flat_database(ip_version: IpVersion, rows: &[(&str, &str)]) -> Vec<u8> {
    let mut w = writer("ip-location-db-country", ip_version, "BanGUI test fixture (flat schema)");
    for (network, country_code) in rows {
        w.insert(net(network), &FlatRecord { country_code }).unwrap_or_else(|e| panic!("{network}: {e}"));
    }
    finish(&w)
}

/// An IPv4-only flat `country_code` database (ip-location-db layout).
pub fn flat_country_v4() -> Vec<u8> {
    flat_database(IpVersion::V4, facts::FLAT_V4)
}

/// An IPv6 flat `country_code` database (ip-location-db layout).
pub fn flat_country_v6() -> Vec<u8> {
    flat_database(IpVersion::V6, facts::FLAT_V6)
}

/// An IPinfo-lite-style database built from [`facts::IPINFO`].
pub fn ipinfo_lite() -> Vec<u8> {
    let mut w = writer("ipinfo_lite.mmdb", IpVersion::V6, "BanGUI test fixture (IPinfo lite)");
    for (network, country_code, country, continent_code, asn, as_name) in facts::IPINFO {
        let record = IpinfoRecord { country_code, country, continent_code, asn, as_name };
        w.insert(net(network), &record).unwrap_or_else(|e| panic!("{network}: {e}"));
    }
    finish(&w)
}

/// A `GeoLite2-ASN`-style database built from [`facts::ASN`].
pub fn asn() -> Vec<u8> {
    let mut w = writer("GeoLite2-ASN", IpVersion::V6, "BanGUI test fixture (ASN)");
    for (network, number, organisation) in facts::ASN {
        let record = AsnRecord { autonomous_system_number: *number, autonomous_system_organization: organisation };
        w.insert(net(network), &record).unwrap_or_else(|e| panic!("{network}: {e}"));
    }
    finish(&w)
}

/// The embedded sample database (`builtin:sample`): a handful of well-known
/// public resolver networks with country and ASN in one nested record. It is
/// made-up sample data for trying the service, not a source of truth.
pub fn sample_database() -> Vec<u8> {
    /// (network, (country code, name), (continent code, name), ASN, AS organisation)
    type Row<'a> = (&'a str, (&'a str, &'a str), (&'a str, &'a str), u32, &'a str);
    let rows: &[Row<'_>] = &[
        ("1.1.1.0/24", ("AU", "Australia"), ("OC", "Oceania"), 13335, "CLOUDFLARENET"),
        ("8.8.8.0/24", ("US", "United States"), ("NA", "North America"), 15169, "GOOGLE"),
        ("9.9.9.0/24", ("CH", "Switzerland"), ("EU", "Europe"), 19281, "QUAD9-AS-1"),
        ("81.2.69.0/24", ("GB", "United Kingdom"), ("EU", "Europe"), 20712, "Andrews & Arnold Ltd"),
        ("2001:4860::/32", ("US", "United States"), ("NA", "North America"), 15169, "GOOGLE"),
        ("2606:4700::/32", ("US", "United States"), ("NA", "North America"), 13335, "CLOUDFLARENET"),
    ];
    let mut w = writer(
        "BanGUI-Sample-Country-ASN",
        IpVersion::V6,
        "BanGUI sample database: made-up sample data for trying the service; not for production",
    );
    for (network, country, continent, number, organisation) in rows {
        let record = NestedRecord {
            country: place(Some(*country)),
            registered_country: place(Some(*country)),
            continent: ContinentRecord { code: continent.0, names: english(continent.1) },
            autonomous_system_number: Some(*number),
            autonomous_system_organization: Some(organisation),
        };
        w.insert(net(network), &record).unwrap_or_else(|e| panic!("{network}: {e}"));
    }
    finish(&w)
}

/// Paths of the fixture files written by [`write_fixtures`].
#[derive(Debug, Clone)]
pub struct FixturePaths {
    pub maxmind_country: PathBuf,
    pub dbip_country: PathBuf,
    pub flat_country_v4: PathBuf,
    pub flat_country_v6: PathBuf,
    pub ipinfo_lite: PathBuf,
    pub asn: PathBuf,
}

/// Writes every fixture database into `dir`.
pub fn write_fixtures(dir: &Path) -> io::Result<FixturePaths> {
    let write = |name: &str, bytes: Vec<u8>| -> io::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        Ok(path)
    };
    Ok(FixturePaths {
        maxmind_country: write("GeoIP2-Country-Test.mmdb", maxmind_country())?,
        dbip_country: write("dbip-country-lite-test.mmdb", dbip_country())?,
        flat_country_v4: write("flat-country-ipv4-test.mmdb", flat_country_v4())?,
        flat_country_v6: write("flat-country-ipv6-test.mmdb", flat_country_v6())?,
        ipinfo_lite: write("ipinfo-lite-test.mmdb", ipinfo_lite())?,
        asn: write("GeoLite2-ASN-Test.mmdb", asn())?,
    })
}

/// The fixture build time as a `SystemTime`.
pub fn build_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(BUILD_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED_SAMPLE: &[u8] = include_bytes!("../../geo-service/data/sample.mmdb");

    #[test]
    fn committed_sample_database_matches_this_code() {
        assert!(
            sample_database() == COMMITTED_SAMPLE,
            "geo-service/data/sample.mmdb drifted from testkit::sample_database(); \
             regenerate it with `cargo run -p bangui-testkit --bin make-sample-db`"
        );
    }

    #[test]
    fn fixtures_are_deterministic() {
        assert_eq!(maxmind_country(), maxmind_country());
        assert_eq!(asn(), asn());
    }
}
