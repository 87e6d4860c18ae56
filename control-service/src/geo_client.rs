//! The geo-service client: countries for addresses, with a deadline on
//! every call, over TLS (and a client certificate) and with a bearer token
//! when configured. The channel connects lazily and reconnects by itself,
//! so a geo-service that starts after this one (or restarts) is picked up.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use bangui_proto::geo::v1::{
    LookupBatchRequest, LookupStatus, PurgeStaleRequest, ReResolveRequest, geo_service_client::GeoServiceClient,
};
use secrecy::{ExposeSecret, SecretString};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Most addresses in one LookupBatch (the geo-service's default limit).
const CHUNK: usize = 10_000;

/// A country, as the geo-service names it, with the AS when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Country {
    pub code: String,
    pub name: String,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("no geo-service configured (--geo-endpoint)")]
    NotConfigured,
    #[error("invalid --geo-endpoint {0:?}: {1}")]
    BadEndpoint(String, String),
    #[error("geo-service call failed: {0}")]
    Call(#[from] tonic::Status),
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client of the geo-service, or none when it is not configured.
#[derive(Clone)]
pub struct GeoClient {
    channel: Option<Channel>,
    bearer: Bearer,
}

impl std::fmt::Debug for GeoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("GeoClient").field("configured", &self.channel.is_some()).finish_non_exhaustive()
    }
}

impl GeoClient {
    /// `endpoint` like `http://geo-service:50051` (`https://` with `tls`).
    /// Nothing connects yet.
    pub fn new(
        endpoint: Option<&str>,
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
        token: Option<&SecretString>,
    ) -> Result<Self, GeoError> {
        let bearer = match token {
            Some(token) => {
                let value = format!("Bearer {}", token.expose_secret()).parse().map_err(|_| {
                    GeoError::BadEndpoint(
                        endpoint.unwrap_or_default().to_owned(),
                        "the token is not valid ASCII".into(),
                    )
                })?;
                Bearer(Some(value))
            }
            None => Bearer(None),
        };
        let Some(endpoint) = endpoint else { return Ok(Self { channel: None, bearer }) };
        let mut builder = Self::endpoint(endpoint, timeout)?;
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(|e| GeoError::BadEndpoint(endpoint.to_owned(), e.to_string()))?;
        }
        Ok(Self { channel: Some(builder.connect_lazy()), bearer })
    }

    /// The channel's settings: deadlines, and `TCP_NODELAY` stated (tonic's
    /// default, but a request written in pieces must never wait for a
    /// delayed ACK) with an HTTP/2 keepalive that notices a dead peer.
    fn endpoint(endpoint: &str, timeout: Duration) -> Result<Endpoint, GeoError> {
        Ok(Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| GeoError::BadEndpoint(endpoint.to_owned(), e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10)))
    }

    pub fn is_configured(&self) -> bool {
        self.channel.is_some()
    }

    fn client(&self) -> Result<GeoServiceClient<InterceptedService<Channel, Bearer>>, GeoError> {
        let channel = self.channel.clone().ok_or(GeoError::NotConfigured)?;
        Ok(GeoServiceClient::with_interceptor(channel, self.bearer.clone()))
    }

    /// Countries of `ips`, each asked once however often it is given;
    /// addresses the geo-service could not place are absent from the map.
    pub async fn countries<I, S>(&self, ips: I) -> Result<HashMap<String, Country>, GeoError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let ips: Vec<String> =
            ips.into_iter().map(|ip| ip.as_ref().to_owned()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut client = self.client()?;
        let mut found = HashMap::new();
        for chunk in ips.chunks(CHUNK) {
            let request = LookupBatchRequest { ips: chunk.to_vec(), allow_remote: true };
            let results = client.lookup_batch(request).await?.into_inner().results;
            for (ip, result) in chunk.iter().zip(results) {
                if result.status() == LookupStatus::Found && !result.country_code.is_empty() {
                    let asn = (result.asn != 0).then_some(result.asn);
                    let as_org = (!result.as_org.is_empty()).then_some(result.as_org);
                    found.insert(
                        ip.clone(),
                        Country { code: result.country_code, name: result.country_name, asn, as_org },
                    );
                }
            }
        }
        Ok(found)
    }

    /// Asks the geo-service to purge cache rows unused for `older_than`;
    /// returns how many went.
    pub async fn purge_stale(&self, older_than: Duration) -> Result<u64, GeoError> {
        let older_than = bangui_proto::prost_types::Duration {
            seconds: i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        };
        let reply = self.client()?.purge_stale(PurgeStaleRequest { older_than: Some(older_than) }).await?;
        Ok(reply.into_inner().deleted)
    }

    /// Asks the geo-service to retry up to `limit` negatives; returns
    /// (attempted, resolved).
    pub async fn re_resolve(&self, limit: u32) -> Result<(u32, u32), GeoError> {
        let reply = self.client()?.re_resolve(ReResolveRequest { limit }).await?.into_inner();
        Ok((reply.attempted, reply.resolved))
    }

    /// The geo-service's own health (open: no token needed).
    pub async fn is_serving(&self) -> Result<bool, GeoError> {
        let mut health = HealthClient::new(self.channel.clone().ok_or(GeoError::NotConfigured)?);
        let reply = health.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
        Ok(reply.status() == ServingStatus::Serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_has_nodelay() {
        let endpoint = GeoClient::endpoint("http://127.0.0.1:50051", Duration::from_secs(2)).unwrap();
        assert!(endpoint.get_tcp_nodelay());
    }
}
