//! Lookups against the fixture databases of every schema.

use std::{net::IpAddr, sync::Arc};

use bangui_testkit as kit;

use super::*;

fn db(name: &str, bytes: Vec<u8>) -> Database {
    Database::from_bytes(Arc::from(name), bytes).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn maxmind_schema_answers_country_continent_and_network() {
    let set = DatabaseSet::from_databases(vec![db("country", kit::maxmind_country())]);
    let found = set.lookup(ip("81.2.69.160")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("GB"));
    assert_eq!(found.country_name, Some("United Kingdom"));
    assert_eq!(found.continent_code, Some("EU"));
    assert_eq!(found.continent_name, Some("Europe"));
    assert_eq!(found.registered_country_code, Some("GB"));
    assert_eq!(found.network, Some((ip("81.2.69.0"), 24)));
    assert_eq!(found.database.unwrap().name.as_ref(), "country");
    assert_eq!(found.asn, None);
    assert_eq!(set.databases().next().unwrap().schema, Schema::MaxMind);
}

#[test]
fn country_falls_back_to_registered_country() {
    let set = DatabaseSet::from_databases(vec![db("country", kit::maxmind_country())]);
    let found = set.lookup(ip("5.5.5.5")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("DE"));
    assert_eq!(found.country_name, Some("Germany"));
    assert_eq!(found.registered_country_code, Some("DE"));
}

#[test]
fn country_wins_over_a_different_registered_country() {
    let set = DatabaseSet::from_databases(vec![db("country", kit::maxmind_country())]);
    let found = set.lookup(ip("2a02:ff0::1")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("FR"));
    assert_eq!(found.registered_country_code, Some("NL"));
    assert_eq!(found.network, Some((ip("2a02:ff0::"), 32)));
}

#[test]
fn dbip_lite_uses_the_nested_schema() {
    let set = DatabaseSet::from_databases(vec![db("dbip", kit::dbip_country())]);
    let found = set.lookup(ip("1.1.1.1")).unwrap().unwrap();
    assert_eq!((found.country_code, found.continent_code), (Some("AU"), Some("OC")));
    assert_eq!(set.databases().next().unwrap().schema, Schema::MaxMind);
}

#[test]
fn flat_schema_and_ipv6_against_ipv4_only_file() {
    let set = DatabaseSet::from_databases(vec![db("v4", kit::flat_country_v4())]);
    let info = set.databases().next().unwrap();
    assert_eq!((info.schema, info.ip_version), (Schema::FlatCountry, 4));
    let found = set.lookup(ip("9.9.9.9")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("CH"));
    assert_eq!(found.country_name, None);
    assert_eq!(found.network, Some((ip("9.9.9.0"), 24)));
    // Not an error: the file simply has no IPv6.
    assert_eq!(set.lookup(ip("2620:fe::fe")).unwrap(), None);
}

#[test]
fn separate_ipv4_and_ipv6_files_cover_both_families() {
    let set = DatabaseSet::from_databases(vec![db("v4", kit::flat_country_v4()), db("v6", kit::flat_country_v6())]);
    let v4 = set.lookup(ip("77.88.8.8")).unwrap().unwrap();
    assert_eq!((v4.country_code, v4.database.unwrap().name.as_ref()), (Some("RU"), "v4"));
    let v6 = set.lookup(ip("2620:fe::fe")).unwrap().unwrap();
    assert_eq!((v6.country_code, v6.database.unwrap().name.as_ref()), (Some("CH"), "v6"));
    assert_eq!(v6.network, Some((ip("2620:fe::"), 48)));
}

#[test]
fn ipinfo_lite_gives_country_name_and_string_asn() {
    let set = DatabaseSet::from_databases(vec![db("ipinfo", kit::ipinfo_lite())]);
    assert_eq!(set.databases().next().unwrap().schema, Schema::IpinfoLite);
    let found = set.lookup(ip("4.4.4.4")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("US"));
    assert_eq!(found.country_name, Some("United States"));
    assert_eq!(found.continent_code, Some("NA"));
    assert_eq!(found.asn, Some(3356));
    assert_eq!(found.as_org, Some("Level 3 Parent, LLC"));
    let v6 = set.lookup(ip("2a00:1450:4001::1")).unwrap().unwrap();
    assert_eq!((v6.country_code, v6.asn), (Some("IE"), Some(15169)));
}

#[test]
fn country_and_asn_databases_merge_into_one_answer() {
    let set = DatabaseSet::from_databases(vec![db("country", kit::maxmind_country()), db("asn", kit::asn())]);
    let found = set.lookup(ip("8.8.8.8")).unwrap().unwrap();
    assert_eq!(found.country_code, Some("US"));
    assert_eq!(found.asn, Some(15169));
    assert_eq!(found.as_org, Some("GOOGLE"));
    // The country database placed the answer.
    assert_eq!(found.database.unwrap().name.as_ref(), "country");

    // Only the ASN database knows 1.1.1.1: it places the answer.
    let asn_only = set.lookup(ip("1.1.1.1")).unwrap().unwrap();
    assert_eq!(asn_only.country_code, None);
    assert_eq!(asn_only.asn, Some(13335));
    assert_eq!(asn_only.database.unwrap().name.as_ref(), "asn");
    assert_eq!(set.databases().nth(1).unwrap().schema, Schema::Asn);
}

#[test]
fn an_earlier_database_wins_a_field_both_answer() {
    let set = DatabaseSet::from_databases(vec![db("asn", kit::asn()), db("country", kit::maxmind_country())]);
    let found = set.lookup(ip("8.8.8.8")).unwrap().unwrap();
    // ASN first in order, but the country still comes from the country file,
    // which therefore names the answer's database.
    assert_eq!((found.country_code, found.asn), (Some("US"), Some(15169)));
    assert_eq!(found.database.unwrap().name.as_ref(), "country");
}

#[test]
fn unknown_address_is_none() {
    let set = DatabaseSet::from_databases(vec![db("country", kit::maxmind_country())]);
    assert_eq!(set.lookup(ip("3.3.3.3")).unwrap(), None);
    assert_eq!(set.lookup(ip("2c0f::1")).unwrap(), None);
}

#[test]
fn metadata_is_described() {
    let database = db("country", kit::maxmind_country());
    let info = database.info();
    assert_eq!(info.database_type, "GeoIP2-Country");
    assert_eq!(info.build_time, kit::build_time());
    assert_eq!(info.ip_version, 6);
    assert!(info.node_count > 0);
    assert!(info.has_country && !info.has_asn);
    assert_eq!(info.description, "BanGUI test fixture (nested schema)");
}

#[test]
fn embedded_sample_loads() {
    let sample = Database::load(&DatabaseSource::Sample).unwrap();
    assert_eq!(sample.info().name.as_ref(), "builtin:sample");
    assert!(sample.info().has_country && sample.info().has_asn);
}

#[test]
fn corrupt_and_missing_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.mmdb");
    let err = Database::load(&DatabaseSource::File(missing.clone())).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()) && err.contains("cannot read"), "{err}");

    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, b"this is not a database").unwrap();
    let err = Database::load(&DatabaseSource::File(garbage.clone())).unwrap_err().to_string();
    assert!(err.contains(&garbage.display().to_string()) && err.contains("not a valid MaxMind DB"), "{err}");

    // A real database cut in half loses its metadata section.
    let bytes = kit::maxmind_country();
    let truncated = dir.path().join("truncated.mmdb");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = Database::load(&DatabaseSource::File(truncated.clone())).unwrap_err().to_string();
    assert!(err.contains("truncated.mmdb"), "{err}");

    // A database whose data section is overwritten fails the canary lookups.
    let mut scrambled = kit::sample_database();
    let tree_bytes = 64;
    for b in scrambled.iter_mut().skip(tree_bytes).take(1200) {
        *b = 0xff;
    }
    let err = Database::from_bytes(Arc::from("scrambled"), scrambled);
    assert!(err.is_err(), "a scrambled database was accepted");
}

#[test]
fn a_database_without_country_or_asn_is_refused() {
    let mut w = mmdb_writer::Writer::new("Empty-Test");
    w.insert("8.8.8.0/24".parse::<ipnet::IpNet>().unwrap(), &std::collections::BTreeMap::from([("city", "x")]))
        .unwrap();
    let err = Database::from_bytes(Arc::from("cityless"), w.to_bytes().unwrap()).unwrap_err();
    assert!(matches!(err, LoadError::NoUsableData { .. }), "{err}");
}

#[test]
fn cached_records_answer_exactly_like_freshly_decoded_ones() {
    let set = DatabaseSet::from_databases(vec![
        db("country", kit::maxmind_country()),
        db("ipinfo", kit::ipinfo_lite()),
        db("asn", kit::asn()),
    ]);
    let fresh = DatabaseSet::from_databases(vec![
        db("country", kit::maxmind_country()),
        db("ipinfo", kit::ipinfo_lite()),
        db("asn", kit::asn()),
    ]);
    for address in ["8.8.8.8", "8.8.4.4", "81.2.69.1", "5.5.5.5", "4.4.4.4", "1.1.1.1", "2001:4860::1", "2a00:1450::9"]
    {
        let first = set.lookup(ip(address)).unwrap();
        let second = set.lookup(ip(address)).unwrap();
        let other = fresh.lookup(ip(address)).unwrap();
        assert_eq!(first, second, "{address}");
        assert_eq!(format!("{first:?}"), format!("{other:?}"), "{address}");
    }
    assert!(set.databases[0].records.pin().len() >= 3, "the country records were cached");
}
