//! The geo-service client: countries for addresses, with a deadline on
//! every call, over TLS (and a client certificate) and with a bearer token
//! when configured.
//!
//! `--geo-endpoint` names one or more URLs. Calls go through one balanced
//! channel with an endpoint per address: each URL's host is re-resolved
//! every `--geo-resolve-interval` (a headless Service name yields every
//! ready pod; addresses that disappear are removed) and each address is
//! asked for its health, so a geo-service that is draining or gone leaves
//! the set before its listener closes or soon after. Lookups are idempotent:
//! UNAVAILABLE and transport failures are retried twice within the call's
//! deadline, after a re-check of the set. Connections are made lazily and
//! remade by themselves, so a geo-service that starts after this one (or
//! restarts) is picked up.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bangui_proto::geo::v1::{
    LookupBatchRequest, LookupStatus, PurgeStaleRequest, ReResolveRequest, geo_service_client::GeoServiceClient,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::{
    sync::{Notify, mpsc::Sender},
    time::Instant,
};
use tonic::{
    Code,
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint, channel::Change},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Most addresses in one LookupBatch (the geo-service's default limit).
const CHUNK: usize = 10_000;

/// Waits before the second and the third attempt of an idempotent call.
const BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(200)];

/// Least time between two checks of the set that failed calls asked for.
const MIN_RECHECK_GAP: Duration = Duration::from_millis(20);

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

/// One URL of `--geo-endpoint`: its scheme, host and port, and the TLS
/// settings every address it resolves to is reached with.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    scheme: String,
    host: String,
    port: u16,
    tls: Option<ClientTlsConfig>,
}

impl Target {
    /// The URLs of `endpoints` (comma-separated), all of one scheme.
    fn parse_list(endpoints: &str, tls: Option<&ClientTlsConfig>) -> Result<Vec<Self>, GeoError> {
        let bad = |why: String| GeoError::BadEndpoint(endpoints.to_owned(), why);
        let mut targets: Vec<Self> = Vec::new();
        for url in endpoints.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(bad("an empty URL in the list".into()));
            }
            // Validated as tonic would, then taken apart.
            Endpoint::from_shared(url.to_owned()).map_err(|e| bad(format!("{url}: {e}")))?;
            let uri: http::Uri = url.parse().map_err(|e| bad(format!("{url}: {e}")))?;
            let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(bad(format!("{url}: the scheme must be http or https")));
            }
            let host = uri.host().ok_or_else(|| bad(format!("{url}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
            if let Some(first) = targets.first()
                && first.scheme != scheme
            {
                return Err(bad(format!("{url}: every URL must use the same scheme as {}", first.url)));
            }
            // A resolved address is dialled, but the certificate is checked
            // against the name in the URL.
            let tls = tls
                .map(|tls| if host.parse::<IpAddr>().is_ok() { tls.clone() } else { tls.clone().domain_name(&host) });
            targets.push(Self { url: url.to_owned(), scheme, host, port, tls });
        }
        Ok(targets)
    }

    /// The addresses the host stands for now (a literal IP is itself).
    async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port)).await?.collect())
    }

    /// The channel settings for one address of this target.
    fn endpoint(&self, addr: SocketAddr, timeout: Duration) -> Result<Endpoint, GeoError> {
        let endpoint = GeoClient::endpoint(&format!("{}://{addr}", self.scheme), timeout)?;
        match &self.tls {
            Some(tls) => {
                endpoint.tls_config(tls.clone()).map_err(|e| GeoError::BadEndpoint(self.url.clone(), e.to_string()))
            }
            None => Ok(endpoint),
        }
    }
}

/// The balanced channel and what keeps its set of endpoints current.
#[derive(Clone)]
struct Balanced {
    channel: Channel,
    timeout: Duration,
    /// Asks the resolver for a re-check now (after a failed call).
    recheck: Arc<Notify>,
}

/// A client of the geo-service, or none when it is not configured.
#[derive(Clone)]
pub struct GeoClient {
    balanced: Option<Balanced>,
    bearer: Bearer,
}

impl std::fmt::Debug for GeoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("GeoClient").field("configured", &self.balanced.is_some()).finish_non_exhaustive()
    }
}

impl GeoClient {
    /// `endpoint` like `http://geo-service:50051` (`https://` with `tls`),
    /// or several such URLs separated by commas; their hosts are resolved
    /// again every `resolve_interval`. Nothing connects yet; must be called
    /// within a Tokio runtime when `endpoint` is set.
    pub fn new(
        endpoint: Option<&str>,
        timeout: Duration,
        resolve_interval: Duration,
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
        let Some(endpoint) = endpoint else { return Ok(Self { balanced: None, bearer }) };
        let targets = Target::parse_list(endpoint, tls.as_ref())?;
        // Every TLS setting is tried once here, so a bad one fails startup.
        for target in &targets {
            target.endpoint(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), target.port), timeout)?;
        }
        let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
        let recheck = Arc::new(Notify::new());
        let resolver = Resolver { targets, timeout, interval: resolve_interval, changes, known: HashMap::new() };
        tokio::spawn(resolver.run(recheck.clone()));
        Ok(Self { balanced: Some(Balanced { channel, timeout, recheck }), bearer })
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
        self.balanced.is_some()
    }

    /// Runs `call` until it succeeds, fails for good, or the deadline
    /// (`--geo-timeout` from the first attempt) passes; only for idempotent
    /// calls.
    async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, GeoError>
    where
        F: FnMut(GeoServiceClient<InterceptedService<Channel, Bearer>>) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let balanced = self.balanced.as_ref().ok_or(GeoError::NotConfigured)?;
        let deadline = Instant::now() + balanced.timeout;
        let mut backoff = BACKOFF.iter();
        loop {
            let client = GeoServiceClient::with_interceptor(balanced.channel.clone(), self.bearer.clone());
            let status = match tokio::time::timeout_at(deadline, call(client)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(tonic::Status::deadline_exceeded(format!(
                        "no answer from the geo-service within {:?}",
                        balanced.timeout
                    ))
                    .into());
                }
            };
            if !is_retryable(&status) {
                return Err(status.into());
            }
            balanced.recheck.notify_one();
            match backoff.next() {
                Some(wait) if Instant::now() + *wait < deadline => {
                    tracing::debug!(code = ?status.code(), message = status.message(), ?wait, "geo-service call retried");
                    tokio::time::sleep(*wait).await;
                }
                _ => return Err(status.into()),
            }
        }
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
        if self.balanced.is_none() {
            return Err(GeoError::NotConfigured);
        }
        let mut found = HashMap::new();
        for chunk in ips.chunks(CHUNK) {
            let results = self
                .idempotent(|mut client| {
                    let request = LookupBatchRequest { ips: chunk.to_vec(), allow_remote: true };
                    async move { Ok(client.lookup_batch(request).await?.into_inner().results) }
                })
                .await?;
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
    /// returns how many went. Idempotent: retried.
    pub async fn purge_stale(&self, older_than: Duration) -> Result<u64, GeoError> {
        let older_than = bangui_proto::prost_types::Duration {
            seconds: i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        };
        self.idempotent(|mut client| async move {
            Ok(client.purge_stale(PurgeStaleRequest { older_than: Some(older_than) }).await?.into_inner().deleted)
        })
        .await
    }

    /// Asks the geo-service to retry up to `limit` negatives; returns
    /// (attempted, resolved). Idempotent (a second run finds what the first
    /// left): retried.
    pub async fn re_resolve(&self, limit: u32) -> Result<(u32, u32), GeoError> {
        self.idempotent(|mut client| async move {
            let reply = client.re_resolve(ReResolveRequest { limit }).await?.into_inner();
            Ok((reply.attempted, reply.resolved))
        })
        .await
    }

    /// The geo-service's own health (open: no token needed): SERVING from
    /// any endpoint of the set.
    pub async fn is_serving(&self) -> Result<bool, GeoError> {
        let balanced = self.balanced.as_ref().ok_or(GeoError::NotConfigured)?;
        let mut health = HealthClient::new(balanced.channel.clone());
        let check = health.check(HealthCheckRequest { service: String::new() });
        let reply = tokio::time::timeout(balanced.timeout, check)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("no health answer from the geo-service"))??;
        Ok(reply.into_inner().status() == ServingStatus::Serving)
    }
}

/// UNAVAILABLE (no connection, GOAWAY's refused streams), or a transport
/// failure the client turned into a status itself (it has a source; a
/// status the server sent has none). Never INVALID_ARGUMENT and the like.
fn is_retryable(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown => status.source().is_some(),
        _ => false,
    }
}

/// One address in the balanced set: how it is dialled, and a channel of
/// its own for the health check.
struct Known {
    target: usize,
    endpoint: Endpoint,
    probe: Channel,
    in_set: bool,
}

/// Keeps the balanced channel's set: every resolved address that answers
/// its health check SERVING, or every resolved address when none does (the
/// calls then fail with the real reason instead of waiting for an empty
/// set).
struct Resolver {
    targets: Vec<Target>,
    timeout: Duration,
    interval: Duration,
    changes: Sender<Change<SocketAddr, Endpoint>>,
    known: HashMap<SocketAddr, Known>,
}

impl Resolver {
    /// Until every clone of the channel is gone.
    async fn run(mut self, recheck: Arc<Notify>) {
        loop {
            let started = Instant::now();
            if self.refresh().await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                // Failed calls ask for a check; a burst of them gets one
                // every MIN_RECHECK_GAP at most.
                () = recheck.notified() => tokio::time::sleep_until(started + MIN_RECHECK_GAP).await,
                () = self.changes.closed() => return,
            }
        }
    }

    /// One round: resolve, check health, apply the difference. Err when
    /// the channel is gone.
    async fn refresh(&mut self) -> Result<(), ()> {
        let mut resolved: HashMap<SocketAddr, usize> = HashMap::new();
        for (index, target) in self.targets.iter().enumerate() {
            match target.resolve().await {
                Ok(addrs) => {
                    if addrs.is_empty() {
                        tracing::warn!(url = %target.url, "the geo-service name resolved to no address");
                    }
                    resolved.extend(addrs.into_iter().map(|addr| (addr, index)));
                }
                Err(error) => {
                    // A failed lookup keeps what the last one found.
                    tracing::warn!(url = %target.url, %error, "cannot resolve the geo-service name; keeping its last addresses");
                    resolved.extend(self.known.iter().filter(|(_, k)| k.target == index).map(|(a, _)| (*a, index)));
                }
            }
        }
        for (addr, known) in self.known.extract_if(|addr, _| !resolved.contains_key(addr)) {
            if known.in_set {
                tracing::info!(%addr, "geo-service address gone: removed");
                self.changes.send(Change::Remove(addr)).await.map_err(drop)?;
            }
        }
        for (&addr, &index) in &resolved {
            if !self.known.contains_key(&addr) {
                let Ok(endpoint) = self.targets[index].endpoint(addr, self.timeout) else { continue };
                let probe = endpoint.connect_lazy();
                self.known.insert(addr, Known { target: index, endpoint, probe, in_set: false });
            }
        }
        let mut probes = tokio::task::JoinSet::new();
        for (&addr, known) in &self.known {
            let mut health = HealthClient::new(known.probe.clone());
            let timeout = self.timeout;
            probes.spawn(async move {
                let check = health.check(HealthCheckRequest { service: String::new() });
                let serving = matches!(
                    tokio::time::timeout(timeout, check).await,
                    Ok(Ok(reply)) if reply.get_ref().status() == ServingStatus::Serving
                );
                (addr, serving)
            });
        }
        let serving: HashSet<SocketAddr> =
            probes.join_all().await.into_iter().filter_map(|(addr, serving)| serving.then_some(addr)).collect();
        let wanted = if serving.is_empty() { self.known.keys().copied().collect() } else { serving };
        for (&addr, known) in &mut self.known {
            let want = wanted.contains(&addr);
            if want && !known.in_set {
                tracing::info!(%addr, "geo-service address added to the set");
                self.changes.send(Change::Insert(addr, known.endpoint.clone())).await.map_err(drop)?;
            } else if !want && known.in_set {
                tracing::info!(%addr, "geo-service address not serving: removed from the set");
                self.changes.send(Change::Remove(addr)).await.map_err(drop)?;
            }
            known.in_set = want;
        }
        Ok(())
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

    #[test]
    fn the_endpoint_list_is_split_and_checked() {
        let targets =
            Target::parse_list("http://127.0.0.2:50051, http://geo-service-headless:50052,http://[::1]", None).unwrap();
        let parts: Vec<(&str, u16)> = targets.iter().map(|t| (t.host.as_str(), t.port)).collect();
        assert_eq!(parts, [("127.0.0.2", 50051), ("geo-service-headless", 50052), ("::1", 80)]);
        let mixed = Target::parse_list("http://a:1,https://b:2", None).unwrap_err().to_string();
        assert!(mixed.contains("same scheme"), "{mixed}");
        assert!(Target::parse_list("http://a:1,,http://b:2", None).is_err());
        assert!(Target::parse_list("not a url", None).is_err());
        assert!(Target::parse_list("ftp://a:1", None).is_err());
    }

    #[test]
    fn only_unavailable_and_client_side_transport_failures_are_retried() {
        assert!(is_retryable(&tonic::Status::unavailable("connection refused")));
        assert!(!is_retryable(&tonic::Status::invalid_argument("not an address")));
        assert!(!is_retryable(&tonic::Status::unauthenticated("token")));
        assert!(!is_retryable(&tonic::Status::unknown("sent by the server")));
        let transport = tonic::Status::from_error(Box::new(std::io::Error::other("connection closed")));
        assert_eq!(transport.code(), Code::Unknown);
        assert!(is_retryable(&transport));
    }

    #[tokio::test]
    async fn a_dead_endpoint_fails_within_the_deadline_after_retries() {
        // A port nothing listens on: refused at once, retried, then UNAVAILABLE.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let timeout = Duration::from_secs(2);
        let client = GeoClient::new(Some(&url), timeout, Duration::from_millis(100), None, None).unwrap();
        let started = std::time::Instant::now();
        let error = client.countries(["8.8.8.8"]).await.unwrap_err();
        let elapsed = started.elapsed();
        match error {
            GeoError::Call(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            other => panic!("{other:?}"),
        }
        // Both backoffs were waited (250 ms), the deadline was not.
        assert!(elapsed >= Duration::from_millis(250) && elapsed < timeout, "{elapsed:?}");
    }
}
