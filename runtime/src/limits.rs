//! Caps that hold for every port whatever the callers do: connections open
//! at once on one listener ([`LimitedIncoming`], [`LimitedListener`]), and
//! streaming calls open at once in the process ([`StreamingCallLimitLayer`]).
//!
//! Both answer at once instead of waiting. A connection beyond the cap is
//! accepted and closed (a reset): it costs no buffer, no TLS handshake and
//! no task, the kernel's backlog never fills with connections that would be
//! served long after their client gave up, and the client learns at once
//! (its balancer tries another replica) instead of hanging until its connect
//! timeout. The kubelet's probe is not behind the gRPC port's cap: the
//! health-only port is a listener with a cap of its own, reachable from the
//! node only, so a flood of the gRPC port never fails a probe. A streaming
//! call beyond its cap is answered RESOURCE_EXHAUSTED with RetryInfo, as
//! every shed request is.

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tokio_stream::Stream;
use tonic::{
    Status,
    body::Body,
    transport::server::{Connected, TcpConnectInfo, TcpIncoming},
};

/// A connection must send this many bytes (an HTTP/2 preface is 24, a TLS
/// ClientHello more, an HTTP/1 request line about as many) within
/// [`HANDSHAKE_TIMEOUT`], or it is closed: a connection that says nothing
/// would otherwise hold its place under the cap for ever (HTTP/2 keepalive
/// starts only after the preface).
const HANDSHAKE_BYTES: usize = 24;

/// See [`HANDSHAKE_BYTES`]; also the TLS handshake's deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a listener at its cap says so in the log.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The places of one listener: at most `limit` connections open at once.
#[derive(Debug)]
struct Places {
    permits: Arc<Semaphore>,
    limit: usize,
    /// The port's name in the log, e.g. "gRPC".
    port: &'static str,
    /// [`HANDSHAKE_TIMEOUT`] (shorter in tests).
    handshake: Duration,
    last_warned: Option<Instant>,
    refused_since_warned: u64,
}

impl Places {
    fn new(limit: usize, port: &'static str) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            port,
            handshake: HANDSHAKE_TIMEOUT,
            last_warned: None,
            refused_since_warned: 0,
        }
    }

    /// The accepted `stream` with its place, or `None` after closing it
    /// (with a reset, so no TIME_WAIT is left behind) when none is free.
    fn admit(&mut self, stream: TcpStream) -> Option<Limited<TcpStream>> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(Limited::new(stream, permit, self.handshake));
        }
        let _ = stream.set_zero_linger();
        drop(stream);
        self.refused_since_warned += 1;
        let now = Instant::now();
        if self.last_warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            tracing::warn!(
                port = self.port,
                limit = self.limit,
                refused = self.refused_since_warned,
                "connections refused: the port has --max-connections open"
            );
            self.last_warned = Some(now);
            self.refused_since_warned = 0;
        }
        None
    }
}

/// The accepted connections of a gRPC listener, at most `limit` open at
/// once; beyond it each is closed as it is accepted (see the module doc).
#[derive(Debug)]
pub struct LimitedIncoming {
    inner: TcpIncoming,
    places: Places,
}

impl LimitedIncoming {
    /// `port` names the listener in the log ("gRPC", "health").
    pub fn new(inner: TcpIncoming, limit: usize, port: &'static str) -> Self {
        Self { inner, places: Places::new(limit, port) }
    }
}

impl Stream for LimitedIncoming {
    type Item = io::Result<Limited<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if let Some(admitted) = this.places.admit(stream) {
                        return Poll::Ready(Some(Ok(admitted)));
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A listener for `axum::serve` (the metrics port) with the same cap.
#[derive(Debug)]
pub struct LimitedListener {
    inner: TcpListener,
    places: Places,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, limit: usize, port: &'static str) -> Self {
        Self { inner, places: Places::new(limit, port) }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if let Some(admitted) = self.places.admit(stream) {
                return (admitted, addr);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its place under the cap until it is
/// dropped; closed if it has not sent [`HANDSHAKE_BYTES`] within
/// [`HANDSHAKE_TIMEOUT`].
#[derive(Debug)]
pub struct Limited<IO> {
    io: IO,
    _place: OwnedSemaphorePermit,
    /// Until the handshake bytes have arrived: their deadline.
    handshake: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl<IO> Limited<IO> {
    fn new(io: IO, place: OwnedSemaphorePermit, handshake: Duration) -> Self {
        Self { io, _place: place, handshake: Some(Box::pin(tokio::time::sleep(handshake))), received: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(deadline) = this.handshake.as_mut() else { return polled };
        match polled {
            Poll::Ready(Ok(())) => {
                this.received += buf.filled().len() - before;
                if this.received >= HANDSHAKE_BYTES {
                    this.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection sent no handshake within its deadline",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The caller's address stays visible to the handlers (per-client
/// throttling reads it), with or without TLS.
impl Connected for Limited<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

/// A streaming call's age limit (`--grpc-streaming-call-max-age`): a
/// duration of at least one second, so a stream carries something before it
/// ends.
pub fn parse_max_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if age < Duration::from_secs(1) {
        return Err(format!("{text:?} is too short: at least 1s"));
    }
    Ok(age)
}

/// The gRPC paths (`/package.Service/Method`) of every method that streams
/// in either direction, from encoded `FileDescriptorSet`s.
pub fn streaming_methods(sets: &[&[u8]]) -> Result<HashSet<String>, prost::DecodeError> {
    use prost::Message as _;
    let mut methods = HashSet::new();
    for set in sets {
        for file in prost_types::FileDescriptorSet::decode(*set)?.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                let qualified = if package.is_empty() { service_name } else { format!("{package}.{service_name}") };
                for method in service.method {
                    if method.client_streaming() || method.server_streaming() {
                        methods.insert(format!("/{qualified}/{}", method.name()));
                    }
                }
            }
        }
    }
    Ok(methods)
}

/// Bounds the streaming calls open at once in the process (Health/Watch,
/// reflection, and any streaming RPC of a service): one more is answered
/// RESOURCE_EXHAUSTED with RetryInfo at once. A call holds its place until
/// its response ends or the client goes away. A stream is also ended with
/// UNAVAILABLE after `max_age`, so the client re-opens it: the request
/// deadline covers only the wait for a response's first bytes, not a
/// stream's life.
///
/// One layer (cloned) serves every port of the process, so the cap is
/// shared by them.
#[derive(Debug, Clone)]
pub struct StreamingCallLimitLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    methods: Arc<HashSet<String>>,
    max_age: Duration,
}

impl StreamingCallLimitLayer {
    /// `methods` from [`streaming_methods`].
    pub fn new(limit: usize, max_age: Duration, methods: HashSet<String>) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)), limit, methods: Arc::new(methods), max_age }
    }
}

impl<S> tower::Layer<S> for StreamingCallLimitLayer {
    type Service = StreamingCallLimit<S>;

    fn layer(&self, inner: S) -> StreamingCallLimit<S> {
        StreamingCallLimit { inner, layer: self.clone() }
    }
}

/// See [`StreamingCallLimitLayer`].
#[derive(Debug, Clone)]
pub struct StreamingCallLimit<S> {
    inner: S,
    layer: StreamingCallLimitLayer,
}

impl<S> tower::Service<http::Request<Body>> for StreamingCallLimit<S>
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.layer.methods.contains(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let Ok(place) = self.layer.permits.clone().try_acquire_owned() else {
            let status = crate::grpc::shed_status(self.layer.limit, "streaming calls open (the process limit)");
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let max_age = self.layer.max_age;
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| Body::new(Counted::new(body, place, max_age))))
        })
    }
}

/// A streaming response holding its place until it ends or is dropped,
/// and ended with UNAVAILABLE at its age limit.
struct Counted {
    /// `None` once ended: the place is then given back.
    inner: Option<(Body, OwnedSemaphorePermit)>,
    age_limit: Pin<Box<Sleep>>,
    max_age: Duration,
}

impl Counted {
    fn new(body: Body, place: OwnedSemaphorePermit, max_age: Duration) -> Self {
        Self { inner: Some((body, place)), age_limit: Box::pin(tokio::time::sleep(max_age)), max_age }
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some((body, _)) = this.inner.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(frame) = Pin::new(body).poll_frame(cx) {
            if frame.is_none() {
                this.inner = None;
            }
            return Poll::Ready(frame);
        }
        if this.age_limit.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.inner = None;
        let status = Status::unavailable(format!(
            "the stream has been open for {:?}, the limit (--grpc-streaming-call-max-age); open it again",
            this.max_age
        ));
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|(body, _)| body.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };
    use tokio_stream::StreamExt;
    use tonic::body::Body;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    #[test]
    fn streaming_methods_come_from_the_schemas() {
        let methods = streaming_methods(&[
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        let mut found: Vec<&str> = methods.iter().map(String::as_str).collect();
        found.sort_unstable();
        assert_eq!(
            found,
            [
                "/grpc.health.v1.Health/Watch",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ]
        );
    }

    /// A handler whose responses stream for ever (one frame, then nothing).
    fn endless() -> tower::util::BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible> {
        tower::util::BoxCloneService::new(tower::service_fn(|_request: http::Request<Body>| async {
            let frames = tokio_stream::iter([Ok::<_, Status>(http_body::Frame::data(bytes::Bytes::from_static(b"x")))])
                .chain(tokio_stream::pending());
            Ok::<_, Infallible>(http::Response::new(Body::new(http_body_util::StreamBody::new(frames))))
        }))
    }

    fn request(path: &str) -> http::Request<Body> {
        http::Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
        headers.get("grpc-status").and_then(|v| v.to_str().ok())
    }

    const WATCH: &str = "/grpc.health.v1.Health/Watch";

    #[tokio::test]
    async fn streams_beyond_the_cap_are_refused_until_one_ends() {
        let layer =
            StreamingCallLimitLayer::new(2, Duration::from_secs(3600), [WATCH.to_owned()].into_iter().collect());
        let mut service = layer.layer(endless());
        let first = service.ready().await.unwrap().call(request(WATCH)).await.unwrap();
        let second = service.ready().await.unwrap().call(request(WATCH)).await.unwrap();
        assert_eq!(grpc_status(first.headers()), None);
        assert_eq!(grpc_status(second.headers()), None);
        // Two open: the third is refused at once, with RetryInfo.
        let refused = service.ready().await.unwrap().call(request(WATCH)).await.unwrap();
        assert_eq!(grpc_status(refused.headers()), Some("8"));
        let status = Status::from_header_map(refused.headers()).unwrap();
        use tonic_types::StatusExt as _;
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
        // Other calls pass whatever the count.
        let unary = service.ready().await.unwrap().call(request("/grpc.health.v1.Health/Check")).await.unwrap();
        assert_eq!(grpc_status(unary.headers()), None);
        // A stream that ends (its body dropped: the client went away) gives its place back.
        drop(first);
        let again = service.ready().await.unwrap().call(request(WATCH)).await.unwrap();
        assert_eq!(grpc_status(again.headers()), None);
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_with_unavailable_at_its_age_limit() {
        use http_body_util::BodyExt as _;
        let layer = StreamingCallLimitLayer::new(1, Duration::from_secs(60), [WATCH.to_owned()].into_iter().collect());
        let mut service = layer.layer(endless());
        let mut body = service.ready().await.unwrap().call(request(WATCH)).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "x");
        let started = tokio::time::Instant::now();
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(grpc_status(&trailers), Some("14"));
        assert!(body.frame().await.is_none());
        // Its place is free again.
        let next = service.ready().await.unwrap().call(request(WATCH)).await.unwrap();
        assert_eq!(grpc_status(next.headers()), None);
    }

    async fn closed_by_the_server(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = LimitedIncoming::new(crate::grpc::incoming(listener), 2, "test");
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let second = incoming.next().await.unwrap().unwrap();
        // The third is accepted and reset while the stream waits for a fourth.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
        assert!(waiting.is_err(), "a connection beyond the cap was handed to the server");
        assert!(closed_by_the_server(&mut third).await);
        // The caller's address is still visible to handlers.
        assert_eq!(first.connect_info().local_addr(), Some(addr));
        // A place comes back when a connection closes.
        drop(first);
        let _d = TcpStream::connect(addr).await.unwrap();
        assert!(incoming.next().await.unwrap().is_ok());
        drop(second);
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_handshake_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = LimitedIncoming::new(crate::grpc::incoming(listener), 4, "test");
        incoming.places.handshake = Duration::from_millis(200);
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut server_side = incoming.next().await.unwrap().unwrap();
        let mut buf = [0u8; 64];
        let error = server_side.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        drop(server_side);
        assert!(closed_by_the_server(&mut silent).await);

        // One that sends its 24 bytes in time is read on without a deadline.
        let mut talking = TcpStream::connect(addr).await.unwrap();
        let mut server_side = incoming.next().await.unwrap().unwrap();
        talking.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut got = 0;
        while got < 24 {
            got += server_side.read(&mut buf[got..]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        talking.write_all(b"more").await.unwrap();
        assert_eq!(server_side.read(&mut buf).await.unwrap(), 4);
    }
}
