//! The set of loaded MaxMind-format databases and lookups across it.
//!
//! A [`DatabaseSet`] holds one or more databases in the order the operator
//! gave them (e.g. a country file and an ASN file, or separate IPv4 and IPv6
//! files). A lookup asks each database in turn and merges the answers: the
//! first database that knows a field wins it. Each file is opened, its
//! metadata checked and a few canary lookups decoded before it is accepted,
//! so a corrupt file fails at load time with its path in the error, not at
//! the first request.

mod record;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use rustc_hash::FxBuildHasher;

use self::record::RawRecord;

/// The embedded sample database, answered for the source `builtin:sample`.
pub const SAMPLE_DATABASE: &[u8] = include_bytes!("../../data/sample.mmdb");
/// How the operator names the embedded sample database.
pub const SAMPLE_SOURCE: &str = "builtin:sample";

/// Where a database comes from: a file, or the embedded sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSource {
    File(PathBuf),
    Sample,
}

impl DatabaseSource {
    /// Parses a `--mmdb` value: a path, or `builtin:sample`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("empty database path".into());
        }
        if value == SAMPLE_SOURCE {
            return Ok(Self::Sample);
        }
        if let Some(other) = value.strip_prefix("builtin:") {
            return Err(format!("unknown built-in database {other:?} (only {SAMPLE_SOURCE:?})"));
        }
        Ok(Self::File(PathBuf::from(value)))
    }
}

impl fmt::Display for DatabaseSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Sample => f.write_str(SAMPLE_SOURCE),
        }
    }
}

/// Which record layout a database uses, detected from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// MaxMind GeoIP2/GeoLite2 and DB-IP lite: nested `country`.
    MaxMind,
    /// ip-location-db: flat `country_code`.
    FlatCountry,
    /// IPinfo lite: flat `country_code` and `asn` as a string.
    IpinfoLite,
    /// GeoLite2-ASN: `autonomous_system_number`.
    Asn,
    /// None of the above fields in the sampled records.
    Unknown,
}

/// Why a database could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read MMDB file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid MaxMind DB file: {source}")]
    Invalid {
        path: String,
        #[source]
        source: MaxMindDbError,
    },
    #[error("{path} has no country or ASN data in the records sampled (database type {database_type:?})")]
    NoUsableData { path: String, database_type: String },
}

/// A lookup failure inside a database (a corrupt record).
#[derive(Debug, thiserror::Error)]
#[error("database {database}: {source}")]
pub struct LookupError {
    database: Arc<str>,
    #[source]
    source: MaxMindDbError,
}

/// What the operator and `GetInfo` see of a loaded database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The file path, or `builtin:sample`.
    pub name: Arc<str>,
    pub database_type: String,
    pub description: String,
    pub build_time: SystemTime,
    pub ip_version: u16,
    pub node_count: u32,
    pub record_size: u16,
    pub schema: Schema,
    pub has_country: bool,
    pub has_asn: bool,
    pub size_bytes: u64,
}

/// One opened and verified database.
pub struct Database {
    info: DatabaseInfo,
    /// The file's bytes, shared with the reader; cached spans point into it.
    bytes: Arc<[u8]>,
    reader: Reader<Arc<[u8]>>,
    /// Decoded records by data-section offset. Many addresses share one
    /// record (a country database has a few hundred), so most lookups skip
    /// decoding. Lock-free for readers; bounded by [`RECORD_CACHE_MAX`].
    records: papaya::HashMap<usize, Spans, FxBuildHasher>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Addresses looked up once at load time: their records must decode.
const CANARIES: &[&str] = &["1.1.1.1", "8.8.8.8", "81.2.69.160", "2001:4860:4860::8888", "2a00:1450::1"];
/// How many records to sample when detecting the schema.
const SCHEMA_SAMPLE: usize = 64;
/// Most decoded records cached per database. A country database never gets
/// near it; an ASN or city database caches its most looked-up records and
/// decodes the rest each time.
const RECORD_CACHE_MAX: usize = 32_768;

impl Database {
    /// Opens, verifies and describes a database. Blocking: call it off the
    /// async runtime.
    pub fn load(source: &DatabaseSource) -> Result<Self, LoadError> {
        let name: Arc<str> = source.to_string().into();
        let bytes = match source {
            DatabaseSource::Sample => SAMPLE_DATABASE.to_vec(),
            DatabaseSource::File(path) => read_file(path, &name)?,
        };
        Self::from_bytes(name, bytes)
    }

    /// Verifies and describes a database held in memory.
    pub fn from_bytes(name: Arc<str>, bytes: Vec<u8>) -> Result<Self, LoadError> {
        let invalid = |source| LoadError::Invalid { path: name.to_string(), source };
        let size_bytes = bytes.len() as u64;
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let reader = Reader::from_source(bytes.clone()).map_err(invalid)?;
        let metadata = reader.metadata();
        let build_time = UNIX_EPOCH + Duration::from_secs(metadata.build_epoch);

        for canary in CANARIES {
            let Ok(ip) = canary.parse::<IpAddr>() else {
                continue;
            };
            if ip.is_ipv6() && metadata.ip_version == 4 {
                continue;
            }
            let found = reader.lookup(ip).map_err(invalid)?;
            found.decode::<RawRecord<'_>>().map_err(invalid)?;
        }

        let (schema, has_country, has_asn) = detect_schema(&reader).map_err(invalid)?;
        let database_type = metadata.database_type.clone();
        if !has_country && !has_asn {
            return Err(LoadError::NoUsableData { path: name.to_string(), database_type });
        }
        let info = DatabaseInfo {
            name,
            database_type,
            description: metadata.description.get("en").cloned().unwrap_or_default(),
            build_time,
            ip_version: metadata.ip_version,
            node_count: metadata.node_count,
            record_size: metadata.record_size,
            schema,
            has_country,
            has_asn,
            size_bytes,
        };
        Ok(Self { info, bytes, reader, records: papaya::HashMap::default() })
    }

    /// What this database is.
    pub fn info(&self) -> &DatabaseInfo {
        &self.info
    }
}

fn read_file(path: &Path, name: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read { path: name.to_string(), source })
}

/// Samples the first records of the tree and says which layout they use.
fn detect_schema(reader: &Reader<Arc<[u8]>>) -> Result<(Schema, bool, bool), MaxMindDbError> {
    let mut schema = Schema::Unknown;
    let (mut has_country, mut has_asn) = (false, false);
    for (seen, item) in reader.networks(WithinOptions::default())?.enumerate() {
        if seen >= SCHEMA_SAMPLE {
            break;
        }
        let Some(record) = item?.decode::<RawRecord<'_>>()? else {
            continue;
        };
        has_country |= record.country().is_some();
        has_asn |= record.asn().0.is_some();
        let this = if record.country.is_some_and(|p| p.code.is_some()) || record.registered_country.is_some() {
            Schema::MaxMind
        } else if record.country_code.is_some() && record.asn.is_some() {
            Schema::IpinfoLite
        } else if record.country_code.is_some() {
            Schema::FlatCountry
        } else if record.autonomous_system_number.is_some() {
            Schema::Asn
        } else {
            Schema::Unknown
        };
        if schema == Schema::Unknown {
            schema = this;
        }
    }
    Ok((schema, has_country, has_asn))
}

/// A merged answer across the loaded databases. Strings borrow from the
/// databases, so building one allocates nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Location<'a> {
    pub country_code: Option<&'a str>,
    pub country_name: Option<&'a str>,
    pub continent_code: Option<&'a str>,
    pub continent_name: Option<&'a str>,
    pub registered_country_code: Option<&'a str>,
    pub asn: Option<u32>,
    pub as_org: Option<&'a str>,
    /// The network that placed the answer, and its prefix length.
    pub network: Option<(IpAddr, u8)>,
    /// The database that placed the answer.
    pub database: Option<&'a DatabaseInfo>,
}

/// The databases in lookup order. Immutable once built: a reload builds a
/// new set and swaps it in.
#[derive(Debug)]
pub struct DatabaseSet {
    databases: Vec<Database>,
}

impl DatabaseSet {
    /// Loads every source, failing on the first that cannot be loaded.
    pub fn load(sources: &[DatabaseSource]) -> Result<Self, LoadError> {
        let databases = sources.iter().map(Database::load).collect::<Result<_, _>>()?;
        Ok(Self { databases })
    }

    /// A set of already-loaded databases.
    pub fn from_databases(databases: Vec<Database>) -> Self {
        Self { databases }
    }

    /// The databases in lookup order.
    pub fn databases(&self) -> impl ExactSizeIterator<Item = &DatabaseInfo> {
        self.databases.iter().map(Database::info)
    }

    /// Looks `ip` up in every database and merges the answers. `Ok(None)`
    /// when no database has data for it. An IPv6 address is simply not found
    /// in an IPv4-only database.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<Location<'_>>, LookupError> {
        let mut merged: Option<Location<'_>> = None;
        for db in &self.databases {
            if ip.is_ipv6() && db.info.ip_version == 4 {
                continue;
            }
            let error = |source| LookupError { database: db.info.name.clone(), source };
            let found = db.reader.lookup(ip).map_err(error)?;
            let Some(fields) = db.fields(&found).map_err(error)? else {
                continue;
            };
            let location = merged.get_or_insert_with(Location::default);
            // The first database with a country places the answer; failing
            // that, the first with anything.
            let places = location.country_code.is_none() && fields.country_code.is_some();
            if places || location.database.is_none() {
                location.database = Some(&db.info);
                let network = found.network().map_err(error)?;
                location.network = Some((network.network(), network.prefix()));
            }
            location.merge(&fields);
        }
        Ok(merged)
    }
}

/// The fields of one record, whatever its layout, with its strings as `T`:
/// `&str` ([`Fields`]) or positions in the file ([`Spans`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RecordFields<T> {
    country_code: Option<T>,
    country_name: Option<T>,
    continent_code: Option<T>,
    continent_name: Option<T>,
    registered_country_code: Option<T>,
    asn: Option<u32>,
    as_org: Option<T>,
}

impl<T: Copy> RecordFields<T> {
    /// Converts every string; `None` if one does not convert.
    fn try_map<U>(&self, mut f: impl FnMut(T) -> Option<U>) -> Option<RecordFields<U>> {
        // `None`: the conversion failed; `Some(None)`: there was nothing to convert.
        let mut each = |value: Option<T>| match value {
            None => Some(None),
            Some(value) => f(value).map(Some),
        };
        Some(RecordFields {
            country_code: each(self.country_code)?,
            country_name: each(self.country_name)?,
            continent_code: each(self.continent_code)?,
            continent_name: each(self.continent_name)?,
            registered_country_code: each(self.registered_country_code)?,
            asn: self.asn,
            as_org: each(self.as_org)?,
        })
    }
}

/// A record's fields borrowed from the database.
type Fields<'a> = RecordFields<&'a str>;
/// A record's fields as positions in the database file: plain data, cached
/// per record.
type Spans = RecordFields<Span>;

impl<'a> From<&RawRecord<'a>> for Fields<'a> {
    fn from(record: &RawRecord<'a>) -> Self {
        let country = record.country().unwrap_or_default();
        let continent = record.continent().unwrap_or_default();
        let (asn, as_org) = record.asn();
        Fields {
            country_code: country.code,
            country_name: country.name,
            continent_code: continent.code,
            continent_name: continent.name,
            registered_country_code: record.registered_country.and_then(|p| p.code),
            asn,
            as_org,
        }
    }
}

impl<'a> Location<'a> {
    /// Takes from `fields` what this answer does not know yet.
    fn merge(&mut self, fields: &Fields<'a>) {
        if self.country_code.is_none() && fields.country_code.is_some() {
            self.country_code = fields.country_code;
            self.country_name = fields.country_name;
        }
        if self.continent_code.is_none() && fields.continent_code.is_some() {
            self.continent_code = fields.continent_code;
            self.continent_name = fields.continent_name;
        }
        if self.registered_country_code.is_none() {
            self.registered_country_code = fields.registered_country_code;
        }
        if self.asn.is_none() && fields.asn.is_some() {
            self.asn = fields.asn;
            self.as_org = fields.as_org;
        }
    }
}

/// Where a string of a record sits in the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Database {
    /// The fields of the record `found` points at, from the cache or decoded.
    fn fields<'a>(
        &'a self,
        found: &maxminddb::LookupResult<'a, Arc<[u8]>>,
    ) -> Result<Option<Fields<'a>>, MaxMindDbError> {
        let Some(offset) = found.offset() else {
            return Ok(None);
        };
        let records = self.records.pin();
        if let Some(spans) = records.get(&offset)
            && let Some(fields) = self.resolve_spans(spans)
        {
            return Ok(Some(fields));
        }
        let Some(record) = found.decode::<RawRecord<'a>>()? else {
            return Ok(None);
        };
        let fields = Fields::from(&record);
        if records.len() < RECORD_CACHE_MAX
            && let Some(spans) = self.spans(&fields)
        {
            records.insert(offset, spans);
        }
        Ok(Some(fields))
    }

    /// Positions of the strings of `fields` in the file; `None` if one of
    /// them does not point into it (then the record is not cached).
    fn spans(&self, fields: &Fields<'_>) -> Option<Spans> {
        let base = self.bytes.as_ptr() as usize;
        let end = base + self.bytes.len();
        fields.try_map(|text| {
            let at = text.as_ptr() as usize;
            if at < base || at + text.len() > end {
                return None;
            }
            Some(Span { start: u32::try_from(at - base).ok()?, len: u32::try_from(text.len()).ok()? })
        })
    }

    /// The strings behind cached positions. They were UTF-8 when decoded;
    /// checking again costs a few nanoseconds and keeps this safe code.
    fn resolve_spans(&self, spans: &Spans) -> Option<Fields<'_>> {
        spans.try_map(|Span { start, len }| {
            let (start, len) = (start as usize, len as usize);
            std::str::from_utf8(self.bytes.get(start..start + len)?).ok()
        })
    }
}

#[cfg(test)]
mod tests;
