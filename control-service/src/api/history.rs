//! `bangui.control.v1.HistoryService`.

use bangui_proto::{
    control::v1::{
        self as pb, BanTrendRequest, BanTrendResponse, BansByCountryRequest, BansByCountryResponse, BansByJailRequest,
        BansByJailResponse, GetIpHistoryRequest, GetIpHistoryResponse, ListBansRequest, ListBansResponse,
        TopIpsRequest, TopIpsResponse, Window as PbWindow, history_service_server::HistoryService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::history::queries::{
    ArchivedBan, CountryBans, FilterRequest, HistoryQueries, IpCount, IpHistory, JailCount, Window, count,
};

/// The HistoryService handlers.
#[derive(Debug, Clone)]
pub struct HistoryApi {
    queries: HistoryQueries,
}

impl HistoryApi {
    pub fn new(queries: HistoryQueries) -> Self {
        Self { queries }
    }
}

fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

impl From<Option<pb::HistoryFilter>> for FilterRequest {
    fn from(filter: Option<pb::HistoryFilter>) -> Self {
        let f = filter.unwrap_or_default();
        let window = match f.window() {
            PbWindow::Unspecified => None,
            PbWindow::Window24h => Some(Window::Last24h),
            PbWindow::Window7d => Some(Window::Last7d),
            PbWindow::Window30d => Some(Window::Last30d),
            PbWindow::Window365d => Some(Window::Last365d),
            PbWindow::All => Some(Window::All),
        };
        FilterRequest {
            window,
            from: f.from.map(|t| t.seconds),
            to: f.to.map(|t| t.seconds),
            jail: f.jail,
            origin: f.origin,
            country: f.country,
            ip_prefix: f.ip_prefix,
            host: f.host,
        }
    }
}

impl From<ArchivedBan> for pb::ArchivedBan {
    fn from(b: ArchivedBan) -> Self {
        pb::ArchivedBan {
            jail: b.jail,
            ip: b.ip,
            banned_at: ts(b.banned_at),
            ban_seconds: b.ban_seconds,
            ban_count: b.ban_count,
            origin: b.origin.as_str().to_owned(),
            event: b.event.as_str().to_owned(),
            failures: b.failures,
            matches: serde_json::from_str(&b.matches).unwrap_or_default(),
            country_code: b.country_code.unwrap_or_default(),
            country_name: b.country_name.unwrap_or_default(),
            asn: b.asn.and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            as_org: b.as_org.unwrap_or_default(),
            source: b.source.unwrap_or_default(),
            host: b.host,
        }
    }
}

impl From<IpHistory> for GetIpHistoryResponse {
    fn from(history: IpHistory) -> Self {
        let IpHistory { summary, events } = history;
        let placed = summary.placed;
        GetIpHistoryResponse {
            bans: count(summary.bans),
            unbans: count(summary.unbans),
            jails: summary.jails,
            first_banned_at: summary.first_banned_at.and_then(ts),
            last_banned_at: summary.last_banned_at.and_then(ts),
            country_code: placed.as_ref().map(|p| p.country_code.clone()).unwrap_or_default(),
            country_name: placed.as_ref().and_then(|p| p.country_name.clone()).unwrap_or_default(),
            asn: placed.as_ref().and_then(|p| p.asn).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            as_org: placed.and_then(|p| p.as_org).unwrap_or_default(),
            events: events.rows.into_iter().map(Into::into).collect(),
            next_page_token: events.next_page_token,
            hosts: summary.hosts,
        }
    }
}

impl From<CountryBans> for pb::CountryBans {
    fn from(c: CountryBans) -> Self {
        pb::CountryBans {
            country_code: c.country_code,
            country_name: c.country_name,
            bans: c.bans,
            distinct_ips: c.distinct_ips,
        }
    }
}

impl From<JailCount> for pb::JailBans {
    fn from(j: JailCount) -> Self {
        pb::JailBans { jail: j.jail, bans: count(j.bans), distinct_ips: count(j.distinct_ips) }
    }
}

impl From<IpCount> for pb::IpBans {
    fn from(i: IpCount) -> Self {
        pb::IpBans {
            ip: i.ip,
            bans: count(i.bans),
            last_banned_at: ts(i.last_banned_at),
            country_code: i.country_code.unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl HistoryService for HistoryApi {
    #[instrument(skip_all, fields(rpc = "ListBans"))]
    async fn list_bans(&self, request: Request<ListBansRequest>) -> Result<Response<ListBansResponse>, Status> {
        let r = request.into_inner();
        let page = self.queries.list_bans(r.filter.into(), r.page_size, &r.page_token).await?;
        Ok(Response::new(ListBansResponse {
            bans: page.rows.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    #[instrument(skip_all, fields(rpc = "GetIpHistory"))]
    async fn get_ip_history(
        &self,
        request: Request<GetIpHistoryRequest>,
    ) -> Result<Response<GetIpHistoryResponse>, Status> {
        let r = request.into_inner();
        let history = self.queries.ip_history(&r.ip, &r.host, r.page_size, &r.page_token).await?;
        Ok(Response::new(history.into()))
    }

    #[instrument(skip_all, fields(rpc = "BansByCountry"))]
    async fn bans_by_country(
        &self,
        request: Request<BansByCountryRequest>,
    ) -> Result<Response<BansByCountryResponse>, Status> {
        let countries = self.queries.bans_by_country(request.into_inner().filter.into()).await?;
        Ok(Response::new(BansByCountryResponse { countries: countries.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "BanTrend"))]
    async fn ban_trend(&self, request: Request<BanTrendRequest>) -> Result<Response<BanTrendResponse>, Status> {
        let r = request.into_inner();
        let trend = self.queries.ban_trend(r.filter.into(), r.bucket_seconds).await?;
        Ok(Response::new(BanTrendResponse {
            bucket_seconds: u32::try_from(trend.bucket_seconds).unwrap_or(u32::MAX),
            buckets: trend
                .buckets
                .into_iter()
                .map(|(start, bans)| pb::TrendBucket { start: ts(start), bans })
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(rpc = "BansByJail"))]
    async fn bans_by_jail(&self, request: Request<BansByJailRequest>) -> Result<Response<BansByJailResponse>, Status> {
        let jails = self.queries.bans_by_jail(request.into_inner().filter.into()).await?;
        Ok(Response::new(BansByJailResponse { jails: jails.into_iter().map(Into::into).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "TopIps"))]
    async fn top_ips(&self, request: Request<TopIpsRequest>) -> Result<Response<TopIpsResponse>, Status> {
        let r = request.into_inner();
        let ips = self.queries.top_ips(r.filter.into(), r.limit).await?;
        Ok(Response::new(TopIpsResponse { ips: ips.into_iter().map(Into::into).collect() }))
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;
    use crate::history::queries;

    /// A page token as a handler reads it.
    fn decode_token(token: &str) -> Result<(i64, i64), Status> {
        queries::decode_token(token).map_err(super::super::invalid)
    }

    fn encode_token(at: i64, id: i64) -> String {
        queries::encode_token(at, id)
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_token(&encode_token(1_700_000_000, 42)).unwrap(), (1_700_000_000, 42));
        for bad in ["", "!!", &URL_SAFE_NO_PAD.encode("12"), &URL_SAFE_NO_PAD.encode("a:b")] {
            assert_eq!(decode_token(bad).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
