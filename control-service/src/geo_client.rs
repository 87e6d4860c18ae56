//! The geo-service client: countries for addresses, with a deadline on
//! every call. The channel connects lazily and reconnects by itself, so a
//! geo-service that starts after this one (or restarts) is picked up.

use std::{collections::HashMap, time::Duration};

use bangui_proto::geo::v1::{LookupBatchRequest, LookupStatus, geo_service_client::GeoServiceClient};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Most addresses in one LookupBatch (the geo-service's default limit).
const CHUNK: usize = 10_000;

/// A country, as the geo-service names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Country {
    pub code: String,
    pub name: String,
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

/// A client of the geo-service, or none when it is not configured.
#[derive(Debug, Clone)]
pub struct GeoClient {
    channel: Option<Channel>,
}

impl GeoClient {
    /// `endpoint` like `http://geo-service:50051`. Nothing connects yet.
    pub fn new(endpoint: Option<&str>, timeout: Duration) -> Result<Self, GeoError> {
        let Some(endpoint) = endpoint else { return Ok(Self { channel: None }) };
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| GeoError::BadEndpoint(endpoint.to_owned(), e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_lazy();
        Ok(Self { channel: Some(channel) })
    }

    pub fn is_configured(&self) -> bool {
        self.channel.is_some()
    }

    fn channel(&self) -> Result<Channel, GeoError> {
        self.channel.clone().ok_or(GeoError::NotConfigured)
    }

    /// Countries of `ips`; addresses the geo-service could not place are
    /// absent from the map.
    pub async fn countries(&self, ips: &[String]) -> Result<HashMap<String, Country>, GeoError> {
        let mut client = GeoServiceClient::new(self.channel()?);
        let mut found = HashMap::new();
        for chunk in ips.chunks(CHUNK) {
            let request = LookupBatchRequest { ips: chunk.to_vec(), allow_remote: true };
            let results = client.lookup_batch(request).await?.into_inner().results;
            for (ip, result) in chunk.iter().zip(results) {
                if result.status() == LookupStatus::Found && !result.country_code.is_empty() {
                    found.insert(ip.clone(), Country { code: result.country_code, name: result.country_name });
                }
            }
        }
        Ok(found)
    }

    /// The geo-service's own health.
    pub async fn is_serving(&self) -> Result<bool, GeoError> {
        let mut health = HealthClient::new(self.channel()?);
        let reply = health.check(HealthCheckRequest { service: String::new() }).await?.into_inner();
        Ok(reply.status() == ServingStatus::Serving)
    }
}
