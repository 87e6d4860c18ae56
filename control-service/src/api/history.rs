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
    fail2ban::{InvalidArgument, validate::parse_ip},
    store::history::{ArchivedBan, HistoryFilter, HistoryStore},
};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Most buckets one BanTrend answers.
const MAX_BUCKETS: i64 = 10_000;

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
                if from.seconds >= to.seconds {
                    return Err(invalid(InvalidArgument::new("filter.to", "must be after filter.from")));
                }
                (Some(from.seconds), Some(to.seconds), Some(to.seconds - from.seconds))
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
        if let Some(p) = &prefix
            && !p.chars().all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
        {
            return Err(invalid(InvalidArgument::new("filter.ip_prefix", "digits, hex letters, '.' and ':' only")));
        }
        Ok((HistoryFilter { from, to, jail: text(f.jail), origin, country, ip_prefix: prefix }, span))
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn encode_token(at: i64, id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at}:{id}"))
}

fn decode_token(token: &str) -> Result<(i64, i64), Status> {
    let bad = || invalid(InvalidArgument::new("page_token", "not a token from a previous ListBans response"));
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
        let ip = parse_ip("ip", &request.into_inner().ip).map_err(invalid)?.to_string();
        let events = self.store.ip_events(&ip).await.map_err(|e| store_unavailable(&e))?;
        let mut jails: Vec<String> = events.iter().map(|e| e.jail.clone()).collect();
        jails.sort();
        jails.dedup();
        let bans: Vec<&ArchivedBan> = events.iter().filter(|e| e.event == "ban").collect();
        let placed = events.iter().rev().find(|e| e.country_code.as_deref().is_some_and(|c| !c.is_empty()));
        let response = GetIpHistoryResponse {
            bans: bans.len() as u64,
            unbans: (events.len() - bans.len()) as u64,
            jails,
            first_banned_at: bans.first().and_then(|b| ts(b.banned_at)),
            last_banned_at: bans.last().and_then(|b| ts(b.banned_at)),
            country_code: placed.and_then(|e| e.country_code.clone()).unwrap_or_default(),
            country_name: placed.and_then(|e| e.country_name.clone()).unwrap_or_default(),
            asn: placed.and_then(|e| e.asn).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            as_org: placed.and_then(|e| e.as_org.clone()).unwrap_or_default(),
            events: events.into_iter().map(Into::into).collect(),
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
        let bucket = match r.bucket_seconds {
            0 => default_bucket(span),
            n => i64::from(n),
        };
        let end = filter.to.unwrap_or_else(|| self.clock.now() + 1);
        // All time starts at the epoch; the answer starts at the first ban.
        let origin = filter.from.unwrap_or(0);
        let counts = self.store.trend(&filter, origin, bucket).await.map_err(|e| store_unavailable(&e))?;
        let first = if filter.from.is_some() { 0 } else { counts.first().map_or((end - origin) / bucket, |c| c.0) };
        let last = (end - 1 - origin).div_euclid(bucket);
        if last - first + 1 > MAX_BUCKETS {
            return Err(invalid(InvalidArgument::new(
                "bucket_seconds",
                format!("the window would have more than {MAX_BUCKETS} buckets; choose longer ones"),
            )));
        }
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
