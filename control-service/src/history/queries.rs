//! The dashboard's questions over the archive (what `HistoryService`
//! answers): windows and explicit ranges checked against the clock, keyset
//! pages and their tokens, the trend's buckets with the empty ones filled
//! in, bans by country with "unknown" as one entry, one address's summary.
//! Every value a caller sends is checked here before any SQL, so no
//! arithmetic on it can overflow.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::is_unknown_country;
pub use crate::store::history::{ArchivedBan, IpCount, IpSummary, JailCount};
use crate::{
    clock::Clock,
    error::{InvalidArgument, StoreError},
    hosts::HostId,
    kinds::Origin,
    store::{
        HistoryStore,
        history::{HistoryFilter, LOCAL_HOST},
    },
};
use bangui_fail2ban::validate::{JailName, parse_ip};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Most buckets one BanTrend answers.
const MAX_BUCKETS: i64 = 10_000;
/// The range of a valid `google.protobuf.Timestamp` (0001-01-01 to
/// 9999-12-31): times outside it are refused before any SQL, so no
/// arithmetic on them can overflow (PostgreSQL: "bigint out of range").
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;
/// Rows per ListBans page: default and most.
const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;
/// Events per GetIpHistory page: default and most.
const IP_PAGE_DEFAULT: u32 = 100;
const IP_PAGE_MAX: u32 = 1000;
/// Addresses per TopIps answer: default and most.
const TOP_DEFAULT: u32 = 10;
const TOP_MAX: u32 = 1000;
/// Longest `ip_prefix` (a full IPv6 address with an IPv4 tail is 45).
const MAX_PREFIX_LEN: usize = 45;
/// Longest page token (ours are under 40 characters).
const MAX_TOKEN_LEN: usize = 64;

/// A window that ends now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Last24h,
    Last7d,
    Last30d,
    Last365d,
    All,
}

/// Which bans a question is about, as the caller put it (empty text: any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterRequest {
    /// `None`: not given (the last 24 hours, unless `from`/`to` are).
    pub window: Option<Window>,
    /// Unix seconds; `from` inclusive, `to` exclusive; both or neither.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub jail: String,
    pub origin: String,
    pub country: String,
    pub ip_prefix: String,
    /// A host id, `local`, or empty (every host).
    pub host: String,
}

/// What went wrong answering a question.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of rows and the token of the next (empty on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next_page_token: String,
}

/// One address: its summary over all events, and a page of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpHistory {
    pub summary: IpSummary,
    pub events: Page<ArchivedBan>,
}

/// Bans of one country; the empty code is every address nobody placed
/// (not looked up yet, or looked up and unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountryBans {
    pub country_code: String,
    pub country_name: String,
    pub bans: u64,
    pub distinct_ips: u64,
}

/// Bans per bucket of `bucket_seconds`, every bucket of the window present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trend {
    pub bucket_seconds: i64,
    /// (start, bans).
    pub buckets: Vec<(i64, u64)>,
}

/// The archive's dashboard queries.
#[derive(Debug, Clone)]
pub struct HistoryQueries {
    store: Arc<dyn HistoryStore>,
    clock: Arc<dyn Clock>,
}

/// `seconds` of a request time, checked to be a valid Timestamp.
fn checked_seconds(field: &'static str, seconds: i64) -> Result<i64, InvalidArgument> {
    if (MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(InvalidArgument::new(field, "outside the valid Timestamp range (years 1 to 9999)"))
    }
}

/// The host a query is limited to: `local` (the control-service's own
/// fail2ban), a host id (a UUID, in any case: stored lower-case), or none
/// for empty text.
pub fn host_filter(field: &'static str, text: &str) -> Result<Option<String>, InvalidArgument> {
    match text {
        "" => Ok(None),
        LOCAL_HOST => Ok(Some(LOCAL_HOST.to_owned())),
        id => HostId::parse(field, id)
            .map(|id| Some(id.as_str().to_owned()))
            .map_err(|_| InvalidArgument::new(field, "a host id (HostService.ListHosts) or `local`")),
    }
}

/// `requested`, or `default` for 0, at most `max`.
fn size(requested: u32, default: u32, max: u32) -> u32 {
    match requested {
        0 => default,
        n => n.min(max),
    }
}

/// A count from SQL.
pub fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn encode_token(at: i64, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}:{id}"))
}

/// The keyset (banned_at, id) in a page token from a previous answer.
pub(crate) fn decode_token(token: &str) -> Result<(i64, i64), InvalidArgument> {
    let bad = || InvalidArgument::new("page_token", "not a token from a previous response");
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad());
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

/// The keyset of a page token; none for the first page.
fn after(token: &str) -> Result<Option<(i64, i64)>, InvalidArgument> {
    if token.is_empty() { Ok(None) } else { decode_token(token).map(Some) }
}

/// The first `size` of `rows` (fetched one longer, to know whether there is
/// a next page) and the token of the next page.
fn page(mut rows: Vec<ArchivedBan>, size: u32) -> Page<ArchivedBan> {
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next_page_token = match rows.last() {
        Some(last) if more => encode_token(last.banned_at, last.id),
        _ => String::new(),
    };
    Page { rows, next_page_token }
}

/// The bucket for a window: about 24 to 60 buckets.
fn default_bucket(span: Option<i64>) -> i64 {
    match span {
        Some(s) if s <= DAY => HOUR,
        Some(s) if s <= 7 * DAY => 6 * HOUR,
        Some(s) if s <= 31 * DAY => DAY,
        Some(s) if s <= 366 * DAY => 7 * DAY,
        _ => 30 * DAY,
    }
}

impl HistoryQueries {
    pub fn new(store: Arc<dyn HistoryStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The store's filter, and the window's length in seconds (for
    /// buckets; `None` for all time).
    fn filter(&self, f: FilterRequest) -> Result<(HistoryFilter, Option<i64>), InvalidArgument> {
        let now = self.clock.now();
        let text = |s: String| (!s.is_empty()).then_some(s);
        let (from, to, span) = match (f.from, f.to) {
            (Some(from), Some(to)) => {
                if f.window.is_some() {
                    return Err(InvalidArgument::new("filter.window", "give a window or from/to, not both"));
                }
                let (from, to) = (checked_seconds("filter.from", from)?, checked_seconds("filter.to", to)?);
                if from >= to {
                    return Err(InvalidArgument::new("filter.to", "must be after filter.from"));
                }
                (Some(from), Some(to), Some(to - from))
            }
            (None, None) => match f.window.unwrap_or(Window::Last24h) {
                Window::Last24h => (Some(now - DAY), None, Some(DAY)),
                Window::Last7d => (Some(now - 7 * DAY), None, Some(7 * DAY)),
                Window::Last30d => (Some(now - 30 * DAY), None, Some(30 * DAY)),
                Window::Last365d => (Some(now - 365 * DAY), None, Some(365 * DAY)),
                Window::All => (None, None, None),
            },
            _ => return Err(InvalidArgument::new("filter.from", "from and to go together")),
        };
        let country = text(f.country).map(|c| c.to_ascii_uppercase());
        if let Some(c) = &country
            && (c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
        {
            return Err(InvalidArgument::new("filter.country", "an ISO 3166-1 alpha-2 code, e.g. DE"));
        }
        let origin = match text(f.origin) {
            Some(o) => Some(
                o.parse::<Origin>()
                    .map_err(|_| InvalidArgument::new("filter.origin", "fail2ban, manual or blocklist"))?,
            ),
            None => None,
        };
        let prefix = text(f.ip_prefix).map(|p| p.to_ascii_lowercase());
        if let Some(p) = &prefix {
            if p.len() > MAX_PREFIX_LEN {
                return Err(InvalidArgument::new(
                    "filter.ip_prefix",
                    format!("longer than {MAX_PREFIX_LEN} characters"),
                ));
            }
            if !p.chars().all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':') {
                return Err(InvalidArgument::new("filter.ip_prefix", "digits, hex letters, '.' and ':' only"));
            }
        }
        let jail = match text(f.jail) {
            Some(j) => Some(JailName::parse("filter.jail", &j)?.as_str().to_owned()),
            None => None,
        };
        let host = host_filter("filter.host", &f.host)?;
        Ok((HistoryFilter { host, from, to, jail, origin, country, ip_prefix: prefix }, span))
    }

    /// Bans newest first, a page at a time.
    pub async fn list_bans(
        &self,
        filter: FilterRequest,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<ArchivedBan>, QueryError> {
        let (filter, _) = self.filter(filter)?;
        let size = size(page_size, PAGE_DEFAULT, PAGE_MAX);
        let after = after(page_token)?;
        // One extra row says whether there is a next page.
        Ok(page(self.store.page(&filter, after, size + 1).await?, size))
    }

    /// One address (on `host`, or every host for empty text): its
    /// summary, and its events oldest first, a page at a time.
    pub async fn ip_history(
        &self,
        ip: &str,
        host: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<IpHistory, QueryError> {
        let ip = parse_ip("ip", ip)?.to_string();
        let host = host_filter("host", host)?;
        let size = size(page_size, IP_PAGE_DEFAULT, IP_PAGE_MAX);
        let after = after(page_token)?;
        // One extra row says whether there is a next page.
        let events = page(self.store.ip_events_page(&ip, host.as_deref(), after, size + 1).await?, size);
        let summary = self.store.ip_summary(&ip, host.as_deref()).await?;
        Ok(IpHistory { summary, events })
    }

    /// Bans per country, most first; every address nobody placed in one
    /// "unknown" entry (empty code) at the end.
    pub async fn bans_by_country(&self, filter: FilterRequest) -> Result<Vec<CountryBans>, QueryError> {
        let (filter, _) = self.filter(filter)?;
        let rows = self.store.by_country(&filter).await?;
        let mut countries: Vec<CountryBans> = Vec::with_capacity(rows.len());
        let mut unknown = CountryBans::default();
        for row in rows {
            if is_unknown_country(row.country_code.as_deref()) {
                unknown.bans += count(row.bans);
                unknown.distinct_ips += count(row.distinct_ips);
            } else {
                countries.push(CountryBans {
                    country_code: row.country_code.unwrap_or_default(),
                    country_name: row.country_name.unwrap_or_default(),
                    bans: count(row.bans),
                    distinct_ips: count(row.distinct_ips),
                });
            }
        }
        if unknown.bans > 0 {
            countries.push(unknown);
        }
        Ok(countries)
    }

    /// Bans per bucket over the window, empty buckets included; the
    /// bucket is `bucket_seconds`, or one that suits the window for 0.
    pub async fn ban_trend(&self, filter: FilterRequest, bucket_seconds: u32) -> Result<Trend, QueryError> {
        let (filter, span) = self.filter(filter)?;
        let (bucket, field) = match bucket_seconds {
            0 => (default_bucket(span), "filter"),
            n => (i64::from(n), "bucket_seconds"),
        };
        let end = filter.to.unwrap_or_else(|| self.clock.now() + 1);
        // All time starts at the epoch; the answer starts at the first ban.
        let origin = filter.from.unwrap_or(0);
        // The bucket count is checked before the grouping query: the times
        // are valid Timestamps (checked above), so none of this overflows.
        let first = match filter.from {
            Some(_) => 0,
            None => match self.store.earliest(&filter).await? {
                Some(at) => (at - origin) / bucket,
                None => (end - origin) / bucket,
            },
        };
        let last = (end - 1 - origin).div_euclid(bucket);
        if last - first + 1 > MAX_BUCKETS {
            return Err(InvalidArgument::new(
                field,
                format!("the window would have more than {MAX_BUCKETS} buckets; choose longer ones"),
            )
            .into());
        }
        let counts = self.store.trend(&filter, origin, bucket).await?;
        let mut counts = counts.into_iter().peekable();
        let mut buckets = Vec::new();
        for index in first..=last {
            let mut bans = 0;
            while let Some((i, n)) = counts.peek().copied() {
                if i > index {
                    break;
                }
                if i == index {
                    bans = count(n);
                }
                counts.next();
            }
            buckets.push((origin + index * bucket, bans));
        }
        Ok(Trend { bucket_seconds: bucket, buckets })
    }

    /// Bans per jail, most first.
    pub async fn bans_by_jail(&self, filter: FilterRequest) -> Result<Vec<JailCount>, QueryError> {
        let (filter, _) = self.filter(filter)?;
        Ok(self.store.by_jail(&filter).await?)
    }

    /// The most banned addresses, `limit` of them (10 for 0, at most 1000).
    pub async fn top_ips(&self, filter: FilterRequest, limit: u32) -> Result<Vec<IpCount>, QueryError> {
        let (filter, _) = self.filter(filter)?;
        Ok(self.store.top_ips(&filter, size(limit, TOP_DEFAULT, TOP_MAX)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_window() {
        assert_eq!(default_bucket(Some(DAY)), HOUR);
        assert_eq!(default_bucket(Some(7 * DAY)), 6 * HOUR);
        assert_eq!(default_bucket(Some(30 * DAY)), DAY);
        assert_eq!(default_bucket(Some(365 * DAY)), 7 * DAY);
        assert_eq!(default_bucket(None), 30 * DAY);
    }

    #[test]
    fn a_host_filter_is_local_or_a_host_id() {
        assert_eq!(host_filter("filter.host", "").unwrap(), None);
        assert_eq!(host_filter("filter.host", "local").unwrap().as_deref(), Some("local"));
        assert_eq!(
            host_filter("filter.host", "0A000000-0000-4000-8000-00000000000A").unwrap().as_deref(),
            Some("0a000000-0000-4000-8000-00000000000a")
        );
        for bad in ["web-1", "LOCAL", "x".repeat(100).as_str(), "' OR 1=1 --"] {
            assert_eq!(host_filter("filter.host", bad).unwrap_err().field, "filter.host", "{bad}");
        }
    }
}
