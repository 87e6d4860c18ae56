//! `bangui.control.v1.HistoryService`.

use std::sync::Arc;

use bangui_proto::{
    control::v1::{
        self as pb, BanTrendRequest, BanTrendResponse, BansByCountryRequest, BansByCountryResponse, BansByJailRequest,
        BansByJailResponse, GetIpHistoryRequest, GetIpHistoryResponse, ListBansRequest, ListBansResponse,
        TopIpsRequest, TopIpsResponse, Window, history_service_server::HistoryService,
    },
    prost_types::Timestamp,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{invalid, store_unavailable};
use crate::{
    clock::Clock,
    fail2ban::{
        InvalidArgument,
        validate::{JailName, parse_ip},
    },
    store::{
        HistoryStore,
        history::{ArchivedBan, HistoryFilter},
    },
};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Most buckets one BanTrend answers.
const MAX_BUCKETS: i64 = 10_000;
/// The range of a valid `google.protobuf.Timestamp` (0001-01-01 to
/// 9999-12-31): times outside it are refused before any SQL, so no
/// arithmetic on them can overflow (PostgreSQL: "bigint out of range").
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;
/// Events per GetIpHistory page: default and most.
const IP_PAGE_DEFAULT: u32 = 100;
const IP_PAGE_MAX: u32 = 1000;
/// Longest `ip_prefix` (a full IPv6 address with an IPv4 tail is 45).
const MAX_PREFIX_LEN: usize = 45;
/// Longest page token (ours are under 40 characters).
const MAX_TOKEN_LEN: usize = 64;

/// `seconds` of a request timestamp, checked to be a valid Timestamp.
fn checked_seconds(field: &'static str, t: &Timestamp) -> Result<i64, Status> {
    if (MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
        Ok(t.seconds)
    } else {
        Err(invalid(InvalidArgument::new(field, "outside the valid Timestamp range (years 1 to 9999)")))
    }
}

/// The HistoryService handlers.
#[derive(Debug, Clone)]
pub struct HistoryApi {
    store: Arc<dyn HistoryStore>,
    clock: Arc<dyn Clock>,
}

impl HistoryApi {
    pub fn new(store: Arc<dyn HistoryStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// The domain filter, and the window's length in seconds (for buckets;
    /// `None` for all time).
    fn filter(&self, filter: Option<pb::HistoryFilter>) -> Result<(HistoryFilter, Option<i64>), Status> {
        let f = filter.unwrap_or_default();
        let now = self.clock.now();
        let text = |s: String| (!s.is_empty()).then_some(s);
        let (from, to, span) = match (f.from, f.to) {
            (Some(from), Some(to)) => {
                if f.window() != Window::Unspecified {
                    return Err(invalid(InvalidArgument::new("filter.window", "give a window or from/to, not both")));
                }
                let (from, to) = (checked_seconds("filter.from", &from)?, checked_seconds("filter.to", &to)?);
                if from >= to {
                    return Err(invalid(InvalidArgument::new("filter.to", "must be after filter.from")));
                }
                (Some(from), Some(to), Some(to - from))
            }
            (None, None) => match f.window() {
                Window::Unspecified | Window::Window24h => (Some(now - DAY), None, Some(DAY)),
                Window::Window7d => (Some(now - 7 * DAY), None, Some(7 * DAY)),
                Window::Window30d => (Some(now - 30 * DAY), None, Some(30 * DAY)),
                Window::Window365d => (Some(now - 365 * DAY), None, Some(365 * DAY)),
                Window::All => (None, None, None),
            },
            _ => return Err(invalid(InvalidArgument::new("filter.from", "from and to go together"))),
        };
        let country = text(f.country).map(|c| c.to_ascii_uppercase());
        if let Some(c) = &country
            && (c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
        {
            return Err(invalid(InvalidArgument::new("filter.country", "an ISO 3166-1 alpha-2 code, e.g. DE")));
        }
        let origin = text(f.origin);
        if let Some(o) = &origin
            && !["fail2ban", "manual", "blocklist"].contains(&o.as_str())
        {
            return Err(invalid(InvalidArgument::new("filter.origin", "fail2ban, manual or blocklist")));
        }
        let prefix = text(f.ip_prefix).map(|p| p.to_ascii_lowercase());
        if let Some(p) = &prefix {
            if p.len() > MAX_PREFIX_LEN {
                return Err(invalid(InvalidArgument::new(
                    "filter.ip_prefix",
                    format!("longer than {MAX_PREFIX_LEN} characters"),
                )));
            }
            if !p.chars().all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':') {
                return Err(invalid(InvalidArgument::new("filter.ip_prefix", "digits, hex letters, '.' and ':' only")));
            }
        }
        let jail = match text(f.jail) {
            Some(j) => Some(JailName::parse("filter.jail", &j).map_err(invalid)?.as_str().to_owned()),
            None => None,
        };
        Ok((HistoryFilter { from, to, jail, origin, country, ip_prefix: prefix }, span))
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn encode_token(at: i64, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}:{id}"))
}

fn decode_token(token: &str) -> Result<(i64, i64), Status> {
    let bad = || invalid(InvalidArgument::new("page_token", "not a token from a previous response"));
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad());
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

impl From<ArchivedBan> for pb::ArchivedBan {
    fn from(b: ArchivedBan) -> Self {
        pb::ArchivedBan {
            jail: b.jail,
            ip: b.ip,
            banned_at: ts(b.banned_at),
            ban_seconds: b.ban_seconds,
            ban_count: b.ban_count,
            origin: b.origin,
            event: b.event,
            failures: b.failures,
            matches: serde_json::from_str(&b.matches).unwrap_or_default(),
            country_code: b.country_code.unwrap_or_default(),
            country_name: b.country_name.unwrap_or_default(),
            asn: b.asn.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            as_org: b.as_org.unwrap_or_default(),
        }
    }
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

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[tonic::async_trait]
impl HistoryService for HistoryApi {
    #[instrument(skip_all, fields(rpc = "ListBans"))]
    async fn list_bans(&self, request: Request<ListBansRequest>) -> Result<Response<ListBansResponse>, Status> {
        let r = request.into_inner();
        let (filter, _) = self.filter(r.filter)?;
        let size = match r.page_size {
            0 => 100,
            n => n.min(1000),
        };
        let after = if r.page_token.is_empty() { None } else { Some(decode_token(&r.page_token)?) };
        // One extra row says whether there is a next page.
        let mut rows = self.store.page(&filter, after, size + 1).await.map_err(|e| store_unavailable(&e))?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(last.banned_at, last.id),
            _ => String::new(),
        };
        Ok(Response::new(ListBansResponse { bans: rows.into_iter().map(Into::into).collect(), next_page_token }))
    }

    #[instrument(skip_all, fields(rpc = "GetIpHistory"))]
    async fn get_ip_history(
        &self,
        request: Request<GetIpHistoryRequest>,
    ) -> Result<Response<GetIpHistoryResponse>, Status> {
        let r = request.into_inner();
        let ip = parse_ip("ip", &r.ip).map_err(invalid)?.to_string();
        let size = match r.page_size {
            0 => IP_PAGE_DEFAULT,
            n => n.min(IP_PAGE_MAX),
        };
        let after = if r.page_token.is_empty() { None } else { Some(decode_token(&r.page_token)?) };
        // One extra row says whether there is a next page.
        let mut events = self.store.ip_events_page(&ip, after, size + 1).await.map_err(|e| store_unavailable(&e))?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        let next_page_token = match events.last() {
            Some(last) if more => encode_token(last.banned_at, last.id),
            _ => String::new(),
        };
        let summary = self.store.ip_summary(&ip).await.map_err(|e| store_unavailable(&e))?;
        let placed = summary.placed;
        let response = GetIpHistoryResponse {
            bans: count(summary.bans),
            unbans: count(summary.unbans),
            jails: summary.jails,
            first_banned_at: summary.first_banned_at.and_then(ts),
            last_banned_at: summary.last_banned_at.and_then(ts),
            country_code: placed.as_ref().map(|p| p.country_code.clone()).unwrap_or_default(),
            country_name: placed.as_ref().and_then(|p| p.country_name.clone()).unwrap_or_default(),
            asn: placed.as_ref().and_then(|p| p.asn).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            as_org: placed.and_then(|p| p.as_org).unwrap_or_default(),
            events: events.into_iter().map(Into::into).collect(),
            next_page_token,
        };
        Ok(Response::new(response))
    }

    #[instrument(skip_all, fields(rpc = "BansByCountry"))]
    async fn bans_by_country(
        &self,
        request: Request<BansByCountryRequest>,
    ) -> Result<Response<BansByCountryResponse>, Status> {
        let (filter, _) = self.filter(request.into_inner().filter)?;
        let rows = self.store.by_country(&filter).await.map_err(|e| store_unavailable(&e))?;
        // Not looked up (NULL) and looked up but unknown ("") are one "unknown".
        let mut countries: Vec<pb::CountryBans> = Vec::with_capacity(rows.len());
        let mut unknown = pb::CountryBans::default();
        for row in rows {
            match row.country_code.filter(|c| !c.is_empty()) {
                Some(code) => countries.push(pb::CountryBans {
                    country_code: code,
                    country_name: row.country_name.unwrap_or_default(),
                    bans: count(row.bans),
                    distinct_ips: count(row.distinct_ips),
                }),
                None => {
                    unknown.bans += count(row.bans);
                    unknown.distinct_ips += count(row.distinct_ips);
                }
            }
        }
        if unknown.bans > 0 {
            countries.push(unknown);
        }
        Ok(Response::new(BansByCountryResponse { countries }))
    }

    #[instrument(skip_all, fields(rpc = "BanTrend"))]
    async fn ban_trend(&self, request: Request<BanTrendRequest>) -> Result<Response<BanTrendResponse>, Status> {
        let r = request.into_inner();
        let (filter, span) = self.filter(r.filter)?;
        let (bucket, field) = match r.bucket_seconds {
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
            None => match self.store.earliest(&filter).await.map_err(|e| store_unavailable(&e))? {
                Some(at) => (at - origin) / bucket,
                None => (end - origin) / bucket,
            },
        };
        let last = (end - 1 - origin).div_euclid(bucket);
        if last - first + 1 > MAX_BUCKETS {
            return Err(invalid(InvalidArgument::new(
                field,
                format!("the window would have more than {MAX_BUCKETS} buckets; choose longer ones"),
            )));
        }
        let counts = self.store.trend(&filter, origin, bucket).await.map_err(|e| store_unavailable(&e))?;
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
            buckets.push(pb::TrendBucket { start: ts(origin + index * bucket), bans });
        }
        Ok(Response::new(BanTrendResponse { bucket_seconds: u32::try_from(bucket).unwrap_or(u32::MAX), buckets }))
    }

    #[instrument(skip_all, fields(rpc = "BansByJail"))]
    async fn bans_by_jail(&self, request: Request<BansByJailRequest>) -> Result<Response<BansByJailResponse>, Status> {
        let (filter, _) = self.filter(request.into_inner().filter)?;
        let rows = self.store.by_jail(&filter).await.map_err(|e| store_unavailable(&e))?;
        let jails = rows
            .into_iter()
            .map(|j| pb::JailBans { jail: j.jail, bans: count(j.bans), distinct_ips: count(j.distinct_ips) })
            .collect();
        Ok(Response::new(BansByJailResponse { jails }))
    }

    #[instrument(skip_all, fields(rpc = "TopIps"))]
    async fn top_ips(&self, request: Request<TopIpsRequest>) -> Result<Response<TopIpsResponse>, Status> {
        let r = request.into_inner();
        let (filter, _) = self.filter(r.filter)?;
        let limit = match r.limit {
            0 => 10,
            n => n.min(1000),
        };
        let rows = self.store.top_ips(&filter, limit).await.map_err(|e| store_unavailable(&e))?;
        let ips = rows
            .into_iter()
            .map(|i| pb::IpBans {
                ip: i.ip,
                bans: count(i.bans),
                last_banned_at: ts(i.last_banned_at),
                country_code: i.country_code.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(TopIpsResponse { ips }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_token(&encode_token(1_700_000_000, 42)).unwrap(), (1_700_000_000, 42));
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode("12"), &URL_SAFE_NO_PAD.encode("a:b")] {
            assert_eq!(decode_token(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn buckets_follow_the_window() {
        assert_eq!(default_bucket(Some(DAY)), HOUR);
        assert_eq!(default_bucket(Some(7 * DAY)), 6 * HOUR);
        assert_eq!(default_bucket(Some(30 * DAY)), DAY);
        assert_eq!(default_bucket(Some(365 * DAY)), 7 * DAY);
        assert_eq!(default_bucket(None), 30 * DAY);
    }
}
