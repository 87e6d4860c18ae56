//! Downloading a blocklist: a conditional GET that only ever reaches
//! public addresses, with a cap on the body and retries.
//!
//! The SSRF guard sits where it cannot be skipped: a resolver that refuses
//! a name when any of its addresses is not public (so a name that rebinds
//! between check and connect is caught at connect time), a redirect policy
//! that refuses literal non-public addresses, other schemes and long chains
//! at every hop, and the same checks on the first URL (literal addresses do
//! not go through the resolver). Proxies are off: a proxy would connect on
//! our behalf and skip the check. The operator can allow private targets
//! (`--blocklist-allow-private`).
//!
//! The body is read in chunks and the download fails as soon as it passes
//! the cap (at once when Content-Length says it will), measured after gzip
//! decoding, so a small compressed body cannot inflate past it.
//!
//! URLs are logged by host and path only: a query string can carry a key.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    StatusCode, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{self, HeaderMap},
    redirect,
};
use sha2::{Digest, Sha256};

/// Redirects followed before the download fails.
pub const MAX_REDIRECTS: usize = 3;
/// The longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The most memory reserved up front from a Content-Length.
const MAX_PREALLOCATE: u64 = 1024 * 1024;

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Time to open the connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time for a whole attempt, body included (default 120 s).
    pub timeout: Duration,
    /// Attempts, the first included (default 3).
    pub attempts: u32,
    /// First pause between attempts, doubling, at most 30 s (default 1 s). A
    /// `Retry-After` in seconds replaces it, up to 60 s.
    pub backoff: Duration,
    /// Allow targets that resolve to non-public addresses
    /// (`--blocklist-allow-private`).
    pub allow_private: bool,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
            attempts: 3,
            backoff: Duration::from_secs(1),
            allow_private: false,
        }
    }
}

/// The cache validators of a list as last downloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag` header, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The `Last-Modified` header, sent back as `If-Modified-Since`.
    pub last_modified: Option<String>,
}

/// A downloaded body.
#[derive(Debug)]
pub struct Download {
    /// The final HTTP status (2xx).
    pub status: u16,
    /// The body, gzip decoded.
    pub body: Vec<u8>,
    /// Lowercase hex SHA-256 of `body`.
    pub sha256: String,
    /// `ETag` / `Last-Modified` of the response.
    pub validators: Validators,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
}

/// What a download brought.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the list did not change since the validators.
    NotModified {
        /// Always 304.
        status: u16,
    },
    /// A new body.
    Body(Download),
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not an http(s) URL with a host, or it carries credentials.
    #[error("bad list URL: {0}")]
    BadUrl(String),
    /// The target is not a public address and private targets are not allowed.
    #[error("{host} is {addr}, not a public address (see --blocklist-allow-private)")]
    Forbidden {
        /// The host as written in the URL.
        host: String,
        /// The first non-public address it resolved to.
        addr: IpAddr,
    },
    /// The body is larger than the source's limit.
    #[error("the list is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in (decoded) bytes.
        limit: u64,
    },
    /// A final answer other than 2xx or 304.
    #[error("the server answered HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The redirect chain is longer than allowed.
    #[error("more than {limit} redirects")]
    TooManyRedirects {
        /// Redirects allowed.
        limit: usize,
    },
    /// The attempt took longer than the timeout.
    #[error("timed out")]
    Timeout,
    /// No connection (DNS, refused, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The body could not be read or decoded.
    #[error("cannot read the body: {0}")]
    Body(String),
}

impl FetchError {
    /// The HTTP status behind the error, when a server gave one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status } => Some(*status),
            _ => None,
        }
    }

    /// Worth another attempt: the server or the network may do better.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status } => *status == 429 || (500..600).contains(status),
            Self::Timeout | Self::Connect(_) => true,
            _ => false,
        }
    }
}

/// Refusals raised inside reqwest (resolver, redirect policy), found again
/// in the error's source chain.
#[derive(Debug, Clone)]
enum Refusal {
    Forbidden { host: String, addr: IpAddr },
    TooManyRedirects,
    BadUrl(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forbidden { host, addr } => write!(f, "{host} is {addr}, not a public address"),
            Self::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Self::BadUrl(why) => write!(f, "bad redirect target: {why}"),
        }
    }
}

impl StdError for Refusal {}

impl From<Refusal> for FetchError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Forbidden { host, addr } => Self::Forbidden { host, addr },
            Refusal::TooManyRedirects => Self::TooManyRedirects { limit: MAX_REDIRECTS },
            Refusal::BadUrl(why) => Self::BadUrl(why),
        }
    }
}

/// Which addresses may be reached.
#[derive(Debug, Clone)]
struct Guard {
    allow_private: bool,
    /// Test seam: every address reachable in tests is loopback, so a test
    /// names the one that counts as public to see a later hop refused.
    #[cfg(test)]
    also_public: Option<IpAddr>,
}

impl Guard {
    fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            #[cfg(test)]
            also_public: None,
        }
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        #[cfg(test)]
        if self.also_public == Some(ip) {
            return true;
        }
        self.allow_private || bangui_runtime::reserved::reserved_range(ip).is_none()
    }

    fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self.is_allowed(ip) { Ok(()) } else { Err(Refusal::Forbidden { host: host.to_owned(), addr: ip }) }
    }

    /// Scheme, host, no credentials; a literal address must be allowed.
    fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::BadUrl(format!("scheme {:?} is not http or https", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::BadUrl("credentials in the URL are not accepted (they would be logged)".into()));
        }
        match url.host() {
            None => Err(Refusal::BadUrl("no host".into())),
            Some(url::Host::Domain(_)) => Ok(()),
            Some(url::Host::Ipv4(ip)) => self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(&ip.to_string(), IpAddr::V6(ip)),
        }
    }
}

/// Resolves with the system resolver and refuses names with any
/// non-public address: reqwest connects only to what this returns.
#[derive(Debug)]
struct GuardedResolver(Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&guard, &host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

async fn resolve_checked(guard: &Guard, host: &str) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address").into());
    }
    for addr in &addrs {
        guard.check(host, addr.ip())?;
    }
    Ok(addrs)
}

fn redirect_policy(guard: Arc<Guard>) -> redirect::Policy {
    redirect::Policy::custom(move |attempt| {
        // `previous` holds the first URL too: hop n sees n entries.
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(Refusal::TooManyRedirects);
        }
        match guard.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    })
}

/// Host and path of a URL, for logs: the query may carry a key.
fn loggable(url: &Url) -> String {
    format!("{}{}", url.host_str().unwrap_or_default(), url.path())
}

/// Downloads lists. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    settings: FetchSettings,
}

impl Fetcher {
    /// Builds the HTTP client. Fails only if the TLS stack cannot start.
    pub fn new(settings: FetchSettings) -> Result<Self, FetchError> {
        let guard = Guard::new(settings.allow_private);
        Self::with_guard(settings, guard)
    }

    fn with_guard(settings: FetchSettings, guard: Guard) -> Result<Self, FetchError> {
        // One process-wide TLS provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .user_agent(concat!("bangui-control/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(&guard))))
            .redirect(redirect_policy(Arc::clone(&guard)))
            .gzip(true)
            .build()
            .map_err(|e| FetchError::Connect(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, guard, settings })
    }

    /// Checks a URL an operator gives for a source: scheme, host, and (unless
    /// private targets are allowed) that the host resolves to public
    /// addresses only.
    pub async fn check_target(&self, url: &str) -> Result<Url, FetchError> {
        let url = self.parse(url)?;
        if self.guard.allow_private {
            return Ok(url);
        }
        if let Some(url::Host::Domain(host)) = url.host() {
            resolve_checked(&self.guard, host).await.map_err(|error| match error.downcast::<Refusal>() {
                Ok(refusal) => FetchError::from(*refusal),
                Err(other) => FetchError::Connect(format!("cannot resolve {host}: {other}")),
            })?;
        }
        Ok(url)
    }

    fn parse(&self, url: &str) -> Result<Url, FetchError> {
        let url = Url::parse(url).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        self.guard.check_url(&url)?;
        Ok(url)
    }

    /// Downloads `url`: conditional GET with `validators`, gzip accepted, at
    /// most 3 redirects, at most `max_bytes` of (decompressed) body enforced
    /// while streaming (and at once from Content-Length).
    pub async fn fetch(&self, url: &str, max_bytes: u64, validators: &Validators) -> Result<Fetched, FetchError> {
        let url = self.parse(url)?;
        let attempts = self.settings.attempts.max(1);
        let mut backoff = self.settings.backoff;
        let mut attempt = 1;
        loop {
            let (result, retry_after) = self.attempt(&url, max_bytes, validators).await;
            let error = match result {
                Ok(fetched) => return Ok(fetched),
                Err(error) if attempt < attempts && error.is_retryable() => error,
                Err(error) => {
                    tracing::debug!(target = %loggable(&url), attempt, %error, "list download failed");
                    return Err(error);
                }
            };
            let pause = retry_after.map_or(backoff, |wait| wait.min(MAX_RETRY_AFTER));
            tracing::debug!(target = %loggable(&url), attempt, %error, ?pause, "list download failed; retrying");
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// One attempt, and the `Retry-After` the server asked for, if any.
    async fn attempt(
        &self,
        url: &Url,
        max_bytes: u64,
        validators: &Validators,
    ) -> (Result<Fetched, FetchError>, Option<Duration>) {
        let mut request = self.client.get(url.clone());
        if let Some(etag) = &validators.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(since) = &validators.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, since);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (Err(classify(error)), None),
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return (Ok(Fetched::NotModified { status: status.as_u16() }), None);
        }
        if !status.is_success() {
            return (Err(FetchError::Status { status: status.as_u16() }), retry_after(response.headers()));
        }
        (read_body(response, max_bytes).await.map(Fetched::Body), None)
    }
}

/// Reads the body in chunks, failing as soon as it passes `max_bytes`.
async fn read_body(mut response: reqwest::Response, max_bytes: u64) -> Result<Download, FetchError> {
    let too_large = FetchError::TooLarge { limit: max_bytes };
    // With gzip, reqwest drops the header: this is the encoded length only
    // when there is no encoding.
    let announced = response.content_length();
    if announced.is_some_and(|length| length > max_bytes) {
        return Err(too_large);
    }
    let capacity = announced.unwrap_or(0).min(max_bytes).min(MAX_PREALLOCATE);
    let mut body = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let status = response.status().as_u16();
    let validators = Validators {
        etag: header_text(response.headers(), header::ETAG),
        last_modified: header_text(response.headers(), header::LAST_MODIFIED),
    };
    let content_type = header_text(response.headers(), header::CONTENT_TYPE);
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() as u64 + chunk.len() as u64 > max_bytes {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    let sha256 = Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    Ok(Download { status, body, sha256, validators, content_type })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Our own refusals first (found in the source chain), then reqwest's kinds.
fn classify(error: reqwest::Error) -> FetchError {
    let error = error.without_url();
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return refusal.clone().into();
        }
        source = cause.source();
    }
    if error.is_timeout() {
        FetchError::Timeout
    } else if error.is_redirect() {
        FetchError::TooManyRedirects { limit: MAX_REDIRECTS }
    } else if error.is_connect() {
        FetchError::Connect(chain(&error))
    } else if error.is_body() || error.is_decode() {
        FetchError::Body(chain(&error))
    } else {
        FetchError::Connect(chain(&error))
    }
}

/// The error and its causes on one line.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bangui_testkit::list_server::ListServer;

    use super::*;

    const LIST: &str = "1.2.3.4\n5.6.7.0/24\n";
    const MB: u64 = 1024 * 1024;

    fn settings() -> FetchSettings {
        FetchSettings {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(10),
            allow_private: true,
        }
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(settings()).unwrap()
    }

    fn body(fetched: Fetched) -> Download {
        match fetched {
            Fetched::Body(download) => download,
            other => panic!("expected a body, got {other:?}"),
        }
    }

    fn hex_sha256(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[tokio::test]
    async fn plain_body_comes_with_its_hash_and_validators() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        assert_eq!(download.status, 200);
        assert_eq!(download.body, LIST.as_bytes());
        assert_eq!(download.sha256, hex_sha256(LIST.as_bytes()));
        assert!(download.validators.etag.is_some());
        assert!(download.validators.last_modified.is_some());
        assert_eq!(download.content_type.as_deref(), Some("text/plain; charset=utf-8"));
        let seen = server.requests("list");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].if_none_match, None);
    }

    #[tokio::test]
    async fn etag_is_sent_back_and_an_unchanged_list_is_not_modified() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let fetcher = fetcher();
        let first = body(fetcher.fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        let etag_only = Validators { etag: first.validators.etag.clone(), last_modified: None };
        let second = fetcher.fetch(&server.url("list"), MB, &etag_only).await.unwrap();
        assert!(matches!(second, Fetched::NotModified { status: 304 }), "{second:?}");
        assert_eq!(server.requests("list")[1].if_none_match, first.validators.etag);

        server.set("list", "9.9.9.9\n");
        let third = body(fetcher.fetch(&server.url("list"), MB, &etag_only).await.unwrap());
        assert_eq!(third.body, b"9.9.9.9\n");
        assert_ne!(third.validators, first.validators);
    }

    #[tokio::test]
    async fn last_modified_is_sent_back_as_if_modified_since() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let fetcher = fetcher();
        let first = body(fetcher.fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        let date_only = Validators { etag: None, last_modified: first.validators.last_modified.clone() };
        let second = fetcher.fetch(&server.url("list"), MB, &date_only).await.unwrap();
        assert!(matches!(second, Fetched::NotModified { status: 304 }), "{second:?}");
        let seen = server.requests("list");
        assert_eq!(seen[1].if_modified_since, first.validators.last_modified);
        assert_eq!(seen[1].if_none_match, None);
    }

    #[tokio::test]
    async fn gzip_body_is_decoded_and_hashed_decoded() {
        let server = ListServer::start().await;
        server.set_gzip("list.gz", LIST);
        let download = body(fetcher().fetch(&server.url("list.gz"), MB, &Validators::default()).await.unwrap());
        assert_eq!(download.body, LIST.as_bytes());
        assert_eq!(download.sha256, hex_sha256(LIST.as_bytes()));
        let accept = server.requests("list.gz")[0].accept_encoding.clone().unwrap_or_default();
        assert!(accept.contains("gzip"), "{accept}");
    }

    #[tokio::test]
    async fn the_cap_applies_to_the_decoded_size() {
        let server = ListServer::start().await;
        // About 20 KB on the wire, 8 MB decoded.
        let bomb = "1.2.3.4\n".repeat(1024 * 1024);
        server.set_gzip("bomb", bomb);
        let error = fetcher().fetch(&server.url("bomb"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: MB }), "{error:?}");
        assert_eq!(server.hits("bomb"), 1, "too large is not retried");
    }

    #[tokio::test]
    async fn an_announced_oversize_body_fails_at_once() {
        let server = ListServer::start().await;
        server.set_oversize("huge", 10 * 1024 * MB, true);
        let started = Instant::now();
        let error = fetcher().fetch(&server.url("huge"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: MB }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(server.hits("huge"), 1);
    }

    #[tokio::test]
    async fn a_streamed_oversize_body_stops_at_the_cap() {
        let server = ListServer::start().await;
        // 10 GB without a length: only stopping at the cap ends this quickly.
        server.set_oversize("endless", 10 * 1024 * MB, false);
        let started = Instant::now();
        let error = fetcher().fetch(&server.url("endless"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: MB }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(server.hits("endless"), 1);
    }

    #[tokio::test]
    async fn three_redirects_are_followed_and_four_are_refused() {
        let server = ListServer::start().await;
        server.set("target", LIST);
        server.set_redirects("three", 3, "target");
        server.set_redirects("four", 4, "target");
        let fetcher = fetcher();
        let download = body(fetcher.fetch(&server.url("three"), MB, &Validators::default()).await.unwrap());
        assert_eq!(download.body, LIST.as_bytes());
        assert_eq!(server.hits("target"), 1);

        let error = fetcher.fetch(&server.url("four"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::TooManyRedirects { limit: 3 }), "{error:?}");
        assert_eq!(server.hits("target"), 1, "the fourth hop is not followed");
        assert_eq!(server.hits("four/3"), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_an_answer() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        server.set_failures("list", vec![500, 500]);
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        assert_eq!(download.body, LIST.as_bytes());
        assert_eq!(server.hits("list"), 3);
    }

    #[tokio::test]
    async fn server_errors_past_the_attempts_give_the_last_status() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        server.set_failures("list", vec![503, 502, 500]);
        let error = fetcher().fetch(&server.url("list"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::Status { status: 500 }), "{error:?}");
        assert_eq!(error.http_status(), Some(500));
        assert_eq!(server.hits("list"), 3);
    }

    #[tokio::test]
    async fn not_found_is_not_retried() {
        let server = ListServer::start().await;
        let error = fetcher().fetch(&server.url("missing"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::Status { status: 404 }), "{error:?}");
        assert_eq!(error.http_status(), Some(404));
        assert_eq!(server.hits("missing"), 1);
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        server.set_retry_after("list", 1);
        let started = Instant::now();
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        assert_eq!(download.body, LIST.as_bytes());
        assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(server.hits("list"), 2);
    }

    #[tokio::test]
    async fn a_stalled_server_times_out_after_every_attempt() {
        let server = ListServer::start().await;
        server.set_stall("stall");
        let settings = FetchSettings { timeout: Duration::from_millis(300), attempts: 2, ..settings() };
        let fetcher = Fetcher::new(settings).unwrap();
        let error = fetcher.fetch(&server.url("stall"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::Timeout), "{error:?}");
        assert_eq!(server.hits("stall"), 2);
    }

    #[tokio::test]
    async fn private_targets_are_refused_before_any_request() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let fetcher = Fetcher::new(FetchSettings { allow_private: false, ..settings() }).unwrap();
        let literal = fetcher.fetch(&server.url("list"), MB, &Validators::default()).await.unwrap_err();
        assert!(
            matches!(literal, FetchError::Forbidden { addr, .. } if addr == IpAddr::from([127, 0, 0, 1])),
            "{literal:?}"
        );
        // A name goes through the resolver, which refuses it at connect time.
        let name = format!("http://localhost:{}/list", server.addr().port());
        let named = fetcher.fetch(&name, MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(&named, FetchError::Forbidden { host, .. } if host == "localhost"), "{named:?}");
        assert_eq!(server.total_hits(), 0);
    }

    #[tokio::test]
    async fn a_redirect_to_a_private_address_is_refused() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let port = server.addr().port();
        server.set_redirect_to("hop", &format!("http://127.0.0.2:{port}/list"));
        server.set_redirect_to("ftp-hop", "ftp://example.com/list");
        let guard = Guard { allow_private: false, also_public: Some(IpAddr::from([127, 0, 0, 1])) };
        let fetcher = Fetcher::with_guard(FetchSettings { allow_private: false, ..settings() }, guard).unwrap();
        // The seam lets the first hop through …
        body(fetcher.fetch(&server.url("list"), MB, &Validators::default()).await.unwrap());
        // … and the guard stops the next one.
        let error = fetcher.fetch(&server.url("hop"), MB, &Validators::default()).await.unwrap_err();
        assert!(
            matches!(error, FetchError::Forbidden { addr, .. } if addr == IpAddr::from([127, 0, 0, 2])),
            "{error:?}"
        );
        let error = fetcher.fetch(&server.url("ftp-hop"), MB, &Validators::default()).await.unwrap_err();
        assert!(matches!(error, FetchError::BadUrl(_)), "{error:?}");
        assert_eq!(server.hits("list"), 1);
        assert_eq!(server.hits("hop"), 1);
    }

    #[tokio::test]
    async fn other_schemes_and_credentials_are_bad_urls() {
        let fetcher = fetcher();
        for url in ["ftp://example.com/list", "http://user:pw@example.com/list", "not a url", "file:///etc/passwd"] {
            let error = fetcher.fetch(url, MB, &Validators::default()).await.unwrap_err();
            assert!(matches!(error, FetchError::BadUrl(_)), "{url}: {error:?}");
            let error = fetcher.check_target(url).await.unwrap_err();
            assert!(matches!(error, FetchError::BadUrl(_)), "{url}: {error:?}");
        }
    }

    #[tokio::test]
    async fn check_target_refuses_names_of_private_addresses() {
        let strict = Fetcher::new(FetchSettings { allow_private: false, ..settings() }).unwrap();
        let error = strict.check_target("http://localhost:1/").await.unwrap_err();
        assert!(matches!(&error, FetchError::Forbidden { host, .. } if host == "localhost"), "{error:?}");
        // Literal forms, however spelled, are checked as the address they are.
        for url in [
            "http://[::1]/list",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
        ] {
            let error = strict.check_target(url).await.unwrap_err();
            assert!(matches!(error, FetchError::Forbidden { .. }), "{url}: {error:?}");
        }
        assert!(strict.check_target("http://8.8.8.8/list").await.is_ok());
        let url = fetcher().check_target("http://localhost:1/list?key=x").await.unwrap();
        assert_eq!(loggable(&url), "localhost/list");
    }
}
