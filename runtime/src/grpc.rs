//! The gRPC serving both services share: reflection (v1 and v1alpha, so
//! every grpcurl works, with the `google.rpc` error details so grpcurl
//! shows them), health (also on a plaintext health-only port for the
//! kubelet, see [`serve_health_only`]), a SIGTERM drain with a deadline, and the
//! transport limits ([`ServeLimits`]): `TCP_NODELAY` on every accepted
//! connection, HTTP/2 keepalive, a bound on concurrent streams per
//! connection and on requests in flight in the process (beyond it a request
//! is shed at once with RESOURCE_EXHAUSTED, never queued), a deadline
//! on every request, and the caps of [`crate::limits`]: connections per
//! listener, streaming calls per process (health's Watch included, on both
//! ports) and a streaming call's age.

use std::{
    convert::Infallible,
    future::Future,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use crate::limits::{HANDSHAKE_TIMEOUT, LimitedIncoming, StreamingCallLimitLayer, streaming_methods};
use anyhow::Context;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

/// A service's `grpc.health.v1` name, e.g. `bangui.geo.v1.GeoService`.
pub fn service_name<S: NamedService>() -> &'static str {
    S::NAME
}

/// A gRPC server ready to serve: the service routes plus health and
/// reflection, on a bound listener.
#[derive(Debug)]
pub struct GrpcServer<H> {
    /// The services' own routes.
    pub routes: Routes,
    pub listener: TcpListener,
    /// Encoded descriptor sets for reflection (health's is added).
    pub descriptor_sets: &'static [&'static [u8]],
    pub health: HealthReporter,
    pub health_service: HealthServer<H>,
    /// Health names turned SERVING with `""` (see [`service_name`]).
    pub services: Vec<&'static str>,
    /// How long in-flight RPCs may take after shutdown.
    pub grace: Duration,
    /// TLS (and client-certificate verification); plaintext when `None`.
    pub tls: Option<ServerTlsConfig>,
    /// Transport and concurrency limits.
    pub limits: ServeLimits,
    /// A second listener serving only `grpc.health.v1`, in plaintext and
    /// without auth or reflection (see [`serve_health_only`]); none: off.
    pub health_listener: Option<TcpListener>,
}

/// The transport limits of a gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: RPCs open at once on one
    /// connection (a client queues the rest; one that does not gets them
    /// refused with REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// Requests being handled at once in the whole process (health checks
    /// aside); one more is answered RESOURCE_EXHAUSTED at once.
    pub max_in_flight: usize,
    /// Server HTTP/2 PING interval on an idle connection.
    pub http2_keepalive_interval: Duration,
    /// A connection whose PING is not answered within this is closed.
    pub http2_keepalive_timeout: Duration,
    /// Deadline of every request (the client's `grpc-timeout` when shorter);
    /// a request past it ends with CANCELLED and frees its in-flight slot.
    /// It bounds the wait for a response, not a stream's life: see
    /// `streaming_call_max_age`.
    pub request_timeout: Duration,
    /// Connections open at once on each listener (the gRPC port, the health
    /// port, the metrics port, each its own count); one more is accepted and
    /// closed at once (see [`crate::limits`]).
    pub max_connections: usize,
    /// Streaming calls (Health/Watch, reflection, any streaming RPC) open at
    /// once in the process, every port together; one more is answered
    /// RESOURCE_EXHAUSTED at once. Neither the in-flight limit nor the
    /// request deadline holds a stream once its response has started.
    pub max_streaming_calls: usize,
    /// A streaming call open this long is ended with UNAVAILABLE; the client
    /// opens it again.
    pub streaming_call_max_age: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_in_flight: 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_streaming_calls: 64,
            streaming_call_max_age: Duration::from_secs(30 * 60),
        }
    }
}

/// The accepted connections of `listener`, each with `TCP_NODELAY` on: a
/// gRPC response goes out in several writes (headers, data, trailers), and
/// with Nagle's algorithm the later ones wait for the client's delayed ACK
/// (40 ms on Linux).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The health service's path prefix: never shed, so probes tell an
/// overloaded process from a dead one.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Bounds the requests in flight in the process: a request that finds no
/// free slot is answered RESOURCE_EXHAUSTED (with RetryInfo) at once, never
/// queued. A slot is held until the handler has produced its response.
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    permits: Arc<Semaphore>,
    /// Places in the waiting line (none: shed at once).
    queue: Arc<Semaphore>,
    limit: usize,
    what: &'static str,
}

impl InFlightLimitLayer {
    /// The process-wide limit on requests.
    pub fn new(limit: usize) -> Self {
        Self::named(limit, "requests in flight (the process limit)")
    }

    /// A limit on one kind of request (`what` names it in the shed
    /// message, e.g. "LookupBatch calls in flight").
    pub fn named(limit: usize, what: &'static str) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)), queue: Arc::new(Semaphore::new(0)), limit, what }
    }

    /// Lets up to `waiting` requests wait for a slot (in order, before their
    /// bodies are read) instead of being shed at once; one more is shed.
    /// The wait ends with the request's deadline.
    pub fn with_queue(mut self, waiting: usize) -> Self {
        self.queue = Arc::new(Semaphore::new(waiting));
        self
    }
}

impl<S> tower::Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> InFlightLimit<S> {
        InFlightLimit {
            inner,
            permits: self.permits.clone(),
            queue: self.queue.clone(),
            limit: self.limit,
            what: self.what,
        }
    }
}

/// See [`InFlightLimitLayer`].
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    limit: usize,
    what: &'static str,
}

impl<S> tower::Service<http::Request<Body>> for InFlightLimit<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return Box::pin(inner.call(request));
        }
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Box::pin(async move {
                let response = inner.call(request).await;
                drop(permit);
                response
            });
        }
        match self.queue.clone().try_acquire_owned() {
            Ok(place) => {
                let permits = self.permits.clone();
                Box::pin(async move {
                    // The semaphore is never closed.
                    let Ok(permit) = permits.acquire_owned().await else {
                        return Ok(Status::unavailable("shutting down").into_http());
                    };
                    drop(place);
                    let response = inner.call(request).await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                let status = shed_status(self.limit, self.what);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// RESOURCE_EXHAUSTED for a shed request, with a RetryInfo of one second.
pub(crate) fn shed_status(limit: usize, what: &str) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("server busy: {limit} {what}; retry shortly"),
        ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
    )
}

/// Binds `--health-listen`, if set (the error names the flag).
pub async fn bind_health(addr: Option<std::net::SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (--health-listen)"))?,
        )),
        None => Ok(None),
    }
}

/// `--health-listen` must be a port of its own: the message for the
/// services' config checks (exit 2), `None` when it is.
pub fn health_listen_clash(listen: std::net::SocketAddr, health: Option<std::net::SocketAddr>) -> Option<String> {
    let health = health?;
    (health == listen && health.port() != 0).then(|| {
        format!(
            "--health-listen {health} is the same address as --listen {listen}: the health port must be a port of \
             its own (it serves plaintext beside a main port that may use TLS)"
        )
    })
}

/// Serves only `health` on `listener`, in plaintext, until `stop` is
/// cancelled: the kubelet's gRPC probe speaks plaintext without
/// credentials, so with TLS on the main port it needs a port of its own.
/// `health` shares its reporter with the main server, so NOT_SERVING at
/// shutdown shows here too. Nothing else is routed (no reflection, no
/// service). Checks are never shed: they are cheap and bounded by the same
/// stream limit and deadline as the main server. Watch streams count
/// against `streaming` (the process's cap, shared with the main port), and
/// the port has its own `max_connections`, so a flood of the main port
/// never keeps a probe out.
pub async fn serve_health_only<H: Health>(
    listener: TcpListener,
    health: HealthServer<H>,
    limits: ServeLimits,
    streaming: StreamingCallLimitLayer,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .timeout(limits.request_timeout)
        .layer(streaming)
        .add_service(health)
        .serve_with_incoming_shutdown(
            LimitedIncoming::new(incoming(listener), limits.max_connections, "health"),
            stop.cancelled_owned(),
        )
        .await
}

/// `google.rpc.Status` and the error details (BadRequest, RetryInfo, …)
/// that errors carry, for reflection: without them a reflection client
/// such as grpcurl prints a detail as "google.rpc.BadRequest is not
/// recognized" and raw bytes. tonic-types ships the set but names the files
/// `status.proto` and `error_details.proto`; they are served under their
/// googleapis paths (`google/rpc/…`), the names every other copy uses.
pub fn google_rpc_descriptors() -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
    let canonical = |name: &str| match name {
        "status.proto" | "error_details.proto" => format!("google/rpc/{name}"),
        other => other.to_owned(),
    };
    for file in &mut set.file {
        file.name = file.name.as_deref().map(canonical);
        for dependency in &mut file.dependency {
            *dependency = canonical(dependency);
        }
    }
    Ok(set)
}

/// Server TLS from PEM files: the certificate chain and key, and for mTLS
/// the CA that client certificates must chain to.
pub fn server_tls(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "key")?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client CA")?)).client_auth_optional(false);
    }
    Ok(config)
}

impl<H: Health> GrpcServer<H> {
    /// Serves until `shutdown` resolves. Then health turns NOT_SERVING,
    /// `stopping` is cancelled (background tasks watch it), and in-flight
    /// RPCs get the grace period to finish. The health-only port (if any)
    /// answers NOT_SERVING through the drain and closes after it.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stopping: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut v1 = tonic_reflection::server::Builder::configure();
        let mut v1alpha = tonic_reflection::server::Builder::configure();
        for set in self.descriptor_sets.iter().copied().chain([tonic_health::pb::FILE_DESCRIPTOR_SET]) {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        let google_rpc = google_rpc_descriptors().context("the google.rpc descriptors")?;
        v1 = v1.register_file_descriptor_set(google_rpc.clone());
        v1alpha = v1alpha.register_file_descriptor_set(google_rpc);
        let reflection_v1 = v1.build_v1().context("reflection v1")?;
        let reflection_v1alpha = v1alpha.build_v1alpha().context("reflection v1alpha")?;

        for name in self.services.iter().copied().chain([""]) {
            self.health.set_service_status(name, ServingStatus::Serving).await;
        }
        let on_signal = {
            let reporter = self.health.clone();
            let stopping = stopping.clone();
            let services = self.services.clone();
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: health NOT_SERVING, draining");
                for name in services.into_iter().chain([""]) {
                    reporter.set_service_status(name, ServingStatus::NotServing).await;
                }
                stopping.cancel();
            }
        };
        tokio::spawn(on_signal);

        let limits = self.limits;
        if limits.max_in_flight == 0
            || limits.max_concurrent_streams == 0
            || limits.max_connections == 0
            || limits.max_streaming_calls == 0
            || limits.streaming_call_max_age.is_zero()
        {
            anyhow::bail!(
                "max_in_flight, max_concurrent_streams, max_connections, max_streaming_calls and \
                 streaming_call_max_age must be more than zero"
            );
        }
        // Every streaming method served here, found in the schemas so a new
        // streaming RPC is counted without anyone listing it.
        let schemas: Vec<&[u8]> = self
            .descriptor_sets
            .iter()
            .copied()
            .chain([
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ])
            .collect();
        let streaming = StreamingCallLimitLayer::new(
            limits.max_streaming_calls,
            limits.streaming_call_max_age,
            streaming_methods(&schemas).context("the streaming methods of the descriptor sets")?,
        );
        let mut builder = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
            .timeout(limits.request_timeout);
        if let Some(tls) = self.tls {
            // A handshake that does not finish holds its connection's place.
            builder = builder.tls_config(tls.timeout(HANDSHAKE_TIMEOUT)).context("TLS configuration")?;
        }
        // Its own token: the health port outlives `stopping` until the
        // main server has drained, so probes see NOT_SERVING, not a refusal.
        let health_stop = CancellationToken::new();
        let health_only = self.health_listener.map(|listener| {
            let served = serve_health_only(
                listener,
                self.health_service.clone(),
                limits,
                streaming.clone(),
                health_stop.clone(),
            );
            tokio::spawn(async move {
                if let Err(error) = served.await {
                    tracing::error!(%error, "the health port stopped");
                }
            })
        });
        let routes =
            self.routes.add_service(self.health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
        let server = builder
            .layer(streaming)
            .layer(InFlightLimitLayer::new(limits.max_in_flight))
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                LimitedIncoming::new(incoming(self.listener), limits.max_connections, "gRPC"),
                stopping.clone().cancelled_owned(),
            );
        let grace = self.grace;
        let stopped = stopping.clone();
        let served = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = async move {
                stopped.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace = ?grace, "in-flight RPCs did not finish within the grace period");
                Ok(())
            }
        };
        stopping.cancel();
        health_stop.cancel();
        if let Some(mut task) = health_only {
            // Probe connections close at once on GOAWAY; a client that
            // holds one open is not waited for beyond the grace period.
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
                tracing::warn!("the health port did not close within the grace period");
            }
        }
        served
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::Arc};

    use tokio::{net::TcpListener, sync::watch};
    use tokio_stream::StreamExt;
    use tonic::body::Body;
    use tower::{Layer, Service, ServiceExt};

    use super::{InFlightLimitLayer, incoming};

    #[test]
    fn the_google_rpc_descriptors_are_under_their_googleapis_paths() {
        let set = super::google_rpc_descriptors().unwrap();
        let names: Vec<&str> = set.file.iter().filter_map(|f| f.name.as_deref()).collect();
        for name in ["google/rpc/status.proto", "google/rpc/error_details.proto", "google/protobuf/duration.proto"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let details = set.file.iter().find(|f| f.name.as_deref() == Some("google/rpc/error_details.proto")).unwrap();
        let messages: Vec<&str> = details.message_type.iter().filter_map(|m| m.name.as_deref()).collect();
        assert!(messages.contains(&"BadRequest") && messages.contains(&"RetryInfo"), "{messages:?}");
        // Every import resolves inside the set (a client fetches them by name).
        for file in &set.file {
            for dependency in &file.dependency {
                assert!(names.contains(&dependency.as_str()), "{dependency} imported but not served");
            }
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        // A plain accept leaves Nagle on (what main did): the check can fail.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(plain.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = connections.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off on a served connection");
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    /// A handler that answers once the sender says `true`.
    fn held_handler() -> (watch::Sender<bool>, Handler) {
        let (release, released) = watch::channel(false);
        let released = Arc::new(released);
        let handler = tower::service_fn(move |_request: http::Request<Body>| {
            let mut released = (*released).clone();
            async move {
                let _ = released.wait_for(|go| *go).await;
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            }
        });
        (release, tower::util::BoxCloneService::new(handler))
    }

    type Handler = tower::util::BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible>;

    #[tokio::test]
    async fn requests_beyond_the_limit_are_shed_and_health_passes() {
        let (release, handler) = held_handler();
        let layer = InFlightLimitLayer::new(2);
        let request = |path: &str| http::Request::builder().uri(path).body(Body::empty()).unwrap();
        let mut service = layer.layer(handler);
        let first = tokio::spawn(service.clone().oneshot(request("/a.B/C")));
        let second = tokio::spawn(service.clone().oneshot(request("/a.B/C")));
        tokio::task::yield_now().await;
        // Both slots taken: the third is refused at once.
        let shed = service.ready().await.unwrap().call(request("/a.B/C")).await.unwrap();
        assert_eq!(grpc_status(&shed), Some("8"), "{shed:?}");
        // Health is never shed (it waits for the handler like any request).
        let health = tokio::spawn(service.clone().oneshot(request("/grpc.health.v1.Health/Check")));
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for task in [first, second, health] {
            let response = task.await.unwrap().unwrap();
            assert_eq!(grpc_status(&response), None);
        }
        // Slots come back once answered.
        for _ in 0..3 {
            let again = service.ready().await.unwrap().call(request("/a.B/C")).await.unwrap();
            assert_eq!(grpc_status(&again), None);
        }
    }

    #[tokio::test]
    async fn a_waiting_line_holds_its_places_then_sheds() {
        let (release, handler) = held_handler();
        let mut service = InFlightLimitLayer::named(1, "calls").with_queue(2).layer(handler);
        let request = || http::Request::builder().uri("/a.B/C").body(Body::empty()).unwrap();
        // One runs, two wait, the fourth is shed.
        let admitted: Vec<_> = (0..3).map(|_| tokio::spawn(service.clone().oneshot(request()))).collect();
        tokio::task::yield_now().await;
        let shed = service.ready().await.unwrap().call(request()).await.unwrap();
        assert_eq!(grpc_status(&shed), Some("8"));
        release.send(true).unwrap();
        for task in admitted {
            assert_eq!(grpc_status(&task.await.unwrap().unwrap()), None, "the waiting ones are answered");
        }
    }
}
