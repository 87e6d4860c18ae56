//! Domain → proto: lookup results, database descriptions, `GetInfo`.

use std::{fmt::Write as _, net::IpAddr, time::SystemTime};

use bangui_proto::geo::v1 as pb;

use crate::{
    lookup::Snapshot,
    mmdb::{DatabaseInfo, Location, Schema},
    resolve::{Outcome, ReservedRange, Resolution},
};

pub(super) fn info_to_proto(snapshot: Snapshot, max_batch: usize) -> pb::GetInfoResponse {
    let count = |wanted: Outcome| snapshot.lookups.iter().find(|(o, _)| *o == wanted).map_or(0, |(_, n)| *n);
    let cache = snapshot.cache;
    pb::GetInfoResponse {
        databases: snapshot.databases.databases().map(database_info).collect(),
        counters: Some(pb::LookupCounters {
            found: count(Outcome::Found),
            not_found: count(Outcome::NotFound),
            reserved: count(Outcome::Reserved),
            invalid: count(Outcome::Invalid),
            upstream_error: count(Outcome::UpstreamError),
        }),
        max_batch_size: u32::try_from(max_batch).unwrap_or(u32::MAX),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cache: Some(pb::CacheInfo {
            persistent_rows: cache.store.rows,
            persistent_negatives: cache.store.negatives,
            memory_answers: cache.memory_answers,
            memory_negatives: cache.memory_negatives,
            hits: cache.hits,
            negative_hits: cache.negative_hits,
            misses: cache.misses,
            pending_writes: cache.pending_writes,
            backend: cache.backend.to_owned(),
        }),
        fallback: Some(snapshot.fallback.map_or_else(pb::FallbackInfo::default, |f| pb::FallbackInfo {
            enabled: true,
            batch_tokens: f.batch_tokens,
            single_tokens: f.single_tokens,
            breaker_open_seconds: f.breaker_open_for.as_secs_f64(),
            requests: f.requests,
            failures: f.failures,
        })),
    }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

fn text(value: Option<&str>) -> String {
    value.map(str::to_owned).unwrap_or_default()
}

/// The normalized text of `ip`. An input that parsed as IPv4 and has no
/// ':' (so it was not IPv4-mapped IPv6) and no white space is already
/// canonical (the parser refuses leading zeros): it is copied rather than
/// formatted again.
fn ip_text(input: &str, ip: IpAddr) -> String {
    let canonical_v4 = ip.is_ipv4() && !input.contains(':') && input.trim().len() == input.len();
    if canonical_v4 {
        return input.to_owned();
    }
    let mut text = String::with_capacity(MAX_IP_TEXT);
    // Writing into a String cannot fail.
    let _ = write!(text, "{ip}");
    text
}

/// Longest text of an address ("ffff:ffff:…:ffff") plus "/128": formatting
/// into a string this large never reallocates.
const MAX_IP_TEXT: usize = 39 + 4;

/// The proto form of one resolution; takes the input to move it into the
/// result.
pub fn to_proto(input: String, resolution: Resolution<'_>) -> pb::LookupResult {
    let mut out = pb::LookupResult::default();
    match resolution {
        Resolution::Found { ip, location } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::Found.into();
            out.source = pb::ResultSource::Mmdb.into();
            fill_location(&mut out, &location);
        }
        Resolution::Placed { ip, placed, resolved_at, fresh } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::Found.into();
            out.source = if fresh { pb::ResultSource::Http } else { pb::ResultSource::Cache }.into();
            out.country_code.clone_from(&placed.country_code);
            out.country_name = text(placed.country_name.as_deref());
            out.continent_code = text(placed.continent_code.as_deref());
            out.asn = placed.asn.unwrap_or_default();
            out.as_org = text(placed.as_org.as_deref());
            out.database = "http".to_owned();
            out.database_build_time = Some(prost_types::Timestamp { seconds: resolved_at, nanos: 0 });
        }
        Resolution::NotFound { ip } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::NotFound.into();
        }
        Resolution::Reserved { ip, range } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::Reserved.into();
            out.source = pb::ResultSource::Local.into();
            out.reserved_range = reserved_to_proto(range).into();
        }
        Resolution::Invalid { reason } => {
            out.status = pb::LookupStatus::Invalid.into();
            out.error = reason;
        }
        Resolution::UpstreamError { ip, error } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::UpstreamError.into();
            out.error = error;
        }
    }
    out.input = input;
    out
}

fn fill_location(out: &mut pb::LookupResult, location: &Location<'_>) {
    out.country_code = text(location.country_code);
    out.country_name = text(location.country_name);
    out.continent_code = text(location.continent_code);
    out.continent_name = text(location.continent_name);
    out.registered_country_code = text(location.registered_country_code);
    out.asn = location.asn.unwrap_or_default();
    out.as_org = text(location.as_org);
    if let Some((network, prefix)) = location.network {
        let mut text = String::with_capacity(MAX_IP_TEXT);
        // Writing into a String cannot fail.
        let _ = write!(text, "{network}/{prefix}");
        out.network = text;
    }
    if let Some(db) = location.database {
        out.database = db.name.to_string();
        out.database_build_time = Some(timestamp(db.build_time));
    }
}

fn reserved_to_proto(range: ReservedRange) -> pb::ReservedRange {
    match range {
        ReservedRange::Private => pb::ReservedRange::Private,
        ReservedRange::Loopback => pb::ReservedRange::Loopback,
        ReservedRange::LinkLocal => pb::ReservedRange::LinkLocal,
        ReservedRange::Cgnat => pb::ReservedRange::Cgnat,
        ReservedRange::Documentation => pb::ReservedRange::Documentation,
        ReservedRange::Multicast => pb::ReservedRange::Multicast,
        ReservedRange::Unspecified => pb::ReservedRange::UnspecifiedAddress,
        ReservedRange::Other => pb::ReservedRange::Other,
    }
}

fn schema_to_proto(schema: Schema) -> pb::DatabaseSchema {
    match schema {
        Schema::MaxMind => pb::DatabaseSchema::Maxmind,
        Schema::FlatCountry => pb::DatabaseSchema::FlatCountry,
        Schema::IpinfoLite => pb::DatabaseSchema::IpinfoLite,
        Schema::Asn => pb::DatabaseSchema::Asn,
        Schema::Unknown => pb::DatabaseSchema::Unspecified,
    }
}

pub(super) fn database_info(db: &DatabaseInfo) -> pb::DatabaseInfo {
    pb::DatabaseInfo {
        path: db.name.to_string(),
        database_type: db.database_type.clone(),
        build_time: Some(timestamp(db.build_time)),
        ip_version: db.ip_version.into(),
        node_count: db.node_count,
        record_size: db.record_size.into(),
        schema: schema_to_proto(db.schema).into(),
        description: db.description.clone(),
        has_country: db.has_country,
        has_asn: db.has_asn,
        size_bytes: db.size_bytes,
    }
}
