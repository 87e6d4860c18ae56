//! Downloading a blocklist: a conditional GET that only ever reaches
//! public addresses, with a cap on the body and retries, read as a list
//! while it streams.
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
//! decoding, so a small compressed body cannot inflate past it. The body
//! is never held whole: each chunk goes, through a short bounded queue, to
//! a blocking thread that hashes it and feeds it to a [`ListReader`], so
//! a download costs the list's entries, not its bytes, and the parsing
//! runs off the async runtime. A list the reader refuses (too many
//! entries) ends the download there. Each attempt reads with a new reader:
//! a retried body starts again. An HTML page (`Content-Type: text/html`)
//! is refused before its body is read. An attempt's timeout counts the
//! time spent waiting for the server only: the download slows to the
//! reader's pace, and that time is this side's.
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
use tokio::sync::mpsc;

use super::parse::{ListReader, ParseError, ParseLimits, Parsed};

/// Redirects followed before the download fails.
pub const MAX_REDIRECTS: usize = 3;
/// The longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Body chunks on their way to the reading thread: the queue bounds what
/// a download holds beyond the reader's entries (a chunk is at most a few
/// tens of KiB).
const CHUNKS_QUEUED: usize = 8;

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Time to open the connection (default 10 s).
    pub connect_timeout: Duration,
    /// Time an attempt may wait for the server, from the request to the
    /// body's end (default 120 s). Time the body waits for this side's
    /// reader is not counted: it is ours, not the server's.
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

/// A downloaded body, read as a list.
#[derive(Debug)]
pub struct Download {
    /// The final HTTP status (2xx).
    pub status: u16,
    /// Bytes of the body, gzip decoded.
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the (decoded) body.
    pub sha256: String,
    /// `ETag` / `Last-Modified` of the response.
    pub validators: Validators,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The list.
    pub parsed: Parsed,
}

/// What a download brought.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the list did not change since the validators.
    NotModified {
        /// Always 304.
        status: u16,
    },
    /// A new body (boxed: it is large beside a 304).
    Body(Box<Download>),
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
    /// The server sent an HTML page (an error page, a login portal), not a
    /// list; its body was not read.
    #[error("the server sent an HTML page ({content_type}), not a list")]
    Html {
        /// The `Content-Type` header.
        content_type: String,
    },
    /// The body is not a usable list. `NotAList` carries its counts and
    /// first bad line for the run's record.
    #[error("not a usable list: {error}")]
    Parse {
        /// The HTTP status (2xx).
        status: u16,
        /// Bytes read: the whole body, or up to where the reader refused it.
        bytes: u64,
        /// Hex SHA-256 of the body when it was read in full.
        sha256: Option<String>,
        /// What the reader found.
        error: ParseError,
    },
}

impl FetchError {
    /// The HTTP status behind the error, when a server gave one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Status { status } | Self::Parse { status, .. } => Some(*status),
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

    /// Downloads `url` and reads it as a list with `limits`: conditional
    /// GET with `validators`, gzip accepted, at most 3 redirects, at most
    /// `max_bytes` of (decompressed) body enforced while streaming (and at
    /// once from Content-Length). The body is parsed as it arrives and
    /// never held whole; a list the reader refuses is
    /// [`FetchError::Parse`].
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: u64,
        validators: &Validators,
        limits: &ParseLimits,
    ) -> Result<Fetched, FetchError> {
        let url = self.parse(url)?;
        let attempts = self.settings.attempts.max(1);
        let mut backoff = self.settings.backoff;
        let mut attempt = 1;
        loop {
            let (result, retry_after) = self.attempt(&url, max_bytes, validators, limits).await;
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
        limits: &ParseLimits,
    ) -> (Result<Fetched, FetchError>, Option<Duration>) {
        let mut request = self.client.get(url.clone());
        if let Some(etag) = &validators.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(since) = &validators.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, since);
        }
        let mut patience = Patience(self.settings.timeout);
        let response = match patience.wait(request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return (Err(classify(error)), None),
            Err(timeout) => return (Err(timeout), None),
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return (Ok(Fetched::NotModified { status: status.as_u16() }), None);
        }
        if !status.is_success() {
            return (Err(FetchError::Status { status: status.as_u16() }), retry_after(response.headers()));
        }
        (
            read_body(response, max_bytes, *limits, &mut patience)
                .await
                .map(|download| Fetched::Body(Box::new(download))),
            None,
        )
    }
}

/// What is left of an attempt's time for the server: spent only while
/// waiting for it, so that the time the body waits for the list reader
/// (the download slows to the reader's pace) is not the server's.
struct Patience(Duration);

impl Patience {
    async fn wait<F: std::future::Future>(&mut self, server: F) -> Result<F::Output, FetchError> {
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(self.0, server).await.map_err(|_| FetchError::Timeout)?;
        self.0 = self.0.saturating_sub(started.elapsed());
        Ok(answer)
    }
}

/// What the download hands the reading thread.
enum Piece<C> {
    /// The next chunk of the body.
    Chunk(C),
    /// The body ended: finish the list.
    End,
}

/// What the reading thread made of the body.
enum Read {
    /// The body ended: its hash and the list (or why it is none).
    Whole { sha256: String, parsed: Result<Parsed, ParseError> },
    /// The reader refused the list before the body ended.
    Refused(ParseError),
    /// The download stopped before the body ended.
    Abandoned,
}

/// Reads the body in chunks, failing as soon as it passes `max_bytes`;
/// each chunk is hashed and parsed on a blocking thread.
async fn read_body(
    mut response: reqwest::Response,
    max_bytes: u64,
    limits: ParseLimits,
    patience: &mut Patience,
) -> Result<Download, FetchError> {
    let too_large = FetchError::TooLarge { limit: max_bytes };
    // With gzip, reqwest drops the header: this is the encoded length only
    // when there is no encoding.
    if response.content_length().is_some_and(|length| length > max_bytes) {
        return Err(too_large);
    }
    let status = response.status().as_u16();
    let validators = Validators {
        etag: header_text(response.headers(), header::ETAG),
        last_modified: header_text(response.headers(), header::LAST_MODIFIED),
    };
    let content_type = header_text(response.headers(), header::CONTENT_TYPE);
    if let Some(html) = content_type.as_deref().filter(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
    {
        return Err(FetchError::Html { content_type: html.to_owned() });
    }
    let (chunks, queue) = mpsc::channel(CHUNKS_QUEUED);
    let reader = tokio::task::spawn_blocking(move || read_list(queue, limits));
    let mut bytes = 0u64;
    let streamed: Result<(), FetchError> = async {
        while let Some(chunk) = patience.wait(response.chunk()).await?.map_err(classify)? {
            bytes += chunk.len() as u64;
            if bytes > max_bytes {
                return Err(too_large);
            }
            if chunks.send(Piece::Chunk(chunk)).await.is_err() {
                // The reader refused the list: what it says is the answer.
                return Ok(());
            }
        }
        // Refused at the last chunk, the reader is gone: also its answer.
        let _ = chunks.send(Piece::End).await;
        Ok(())
    }
    .await;
    drop(chunks);
    // Awaited even after a failure, so that a retry never reads beside
    // the reader of the attempt before (it stops at the closed queue).
    let read = reader.await.map_err(|e| FetchError::Body(format!("the list reader stopped: {e}")))?;
    streamed?;
    match read {
        Read::Whole { sha256, parsed: Ok(parsed) } => {
            Ok(Download { status, bytes, sha256, validators, content_type, parsed })
        }
        Read::Whole { sha256, parsed: Err(error) } => {
            Err(FetchError::Parse { status, bytes, sha256: Some(sha256), error })
        }
        Read::Refused(error) => Err(FetchError::Parse { status, bytes, sha256: None, error }),
        Read::Abandoned => Err(FetchError::Body("the list reader stopped before the body ended".into())),
    }
}

/// The reading thread: hashes and parses the chunks as they come.
fn read_list<C: AsRef<[u8]>>(mut queue: mpsc::Receiver<Piece<C>>, limits: ParseLimits) -> Read {
    let mut reader = ListReader::new(limits);
    let mut hasher = Sha256::new();
    while let Some(piece) = queue.blocking_recv() {
        match piece {
            Piece::Chunk(chunk) => {
                hasher.update(chunk.as_ref());
                if let Err(error) = reader.feed(chunk.as_ref()) {
                    return Read::Refused(error);
                }
            }
            Piece::End => {
                let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
                return Read::Whole { sha256, parsed: reader.finish() };
            }
        }
    }
    Read::Abandoned
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
    use crate::{blocklist::parse::entry_text, kinds::CidrPolicy};

    const LIST: &str = "1.2.3.4\n5.6.7.0/24\n";
    const MB: u64 = 1024 * 1024;
    const LIMITS: ParseLimits = ParseLimits::new(CidrPolicy::Ban, 1_000);

    /// The entries of a download, as text.
    fn listed(download: &Download) -> Vec<String> {
        download.parsed.entries.iter().map(entry_text).collect()
    }

    /// What LIST reads as.
    fn list_entries() -> Vec<String> {
        vec!["1.2.3.4".to_owned(), "5.6.7.0/24".to_owned()]
    }

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
            Fetched::Body(download) => *download,
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
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(download.status, 200);
        assert_eq!(listed(&download), list_entries());
        assert_eq!(download.bytes, LIST.len() as u64);
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
        let first = body(fetcher.fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        let etag_only = Validators { etag: first.validators.etag.clone(), last_modified: None };
        let second = fetcher.fetch(&server.url("list"), MB, &etag_only, &LIMITS).await.unwrap();
        assert!(matches!(second, Fetched::NotModified { status: 304 }), "{second:?}");
        assert_eq!(server.requests("list")[1].if_none_match, first.validators.etag);

        server.set("list", "9.9.9.9\n");
        let third = body(fetcher.fetch(&server.url("list"), MB, &etag_only, &LIMITS).await.unwrap());
        assert_eq!(listed(&third), ["9.9.9.9"]);
        assert_ne!(third.validators, first.validators);
    }

    #[tokio::test]
    async fn last_modified_is_sent_back_as_if_modified_since() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let fetcher = fetcher();
        let first = body(fetcher.fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        let date_only = Validators { etag: None, last_modified: first.validators.last_modified.clone() };
        let second = fetcher.fetch(&server.url("list"), MB, &date_only, &LIMITS).await.unwrap();
        assert!(matches!(second, Fetched::NotModified { status: 304 }), "{second:?}");
        let seen = server.requests("list");
        assert_eq!(seen[1].if_modified_since, first.validators.last_modified);
        assert_eq!(seen[1].if_none_match, None);
    }

    #[tokio::test]
    async fn gzip_body_is_decoded_and_hashed_decoded() {
        let server = ListServer::start().await;
        server.set_gzip("list.gz", LIST);
        let download =
            body(fetcher().fetch(&server.url("list.gz"), MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(listed(&download), list_entries());
        assert_eq!(download.bytes, LIST.len() as u64);
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
        let error = fetcher().fetch(&server.url("bomb"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: MB }), "{error:?}");
        assert_eq!(server.hits("bomb"), 1, "too large is not retried");
    }

    #[tokio::test]
    async fn an_announced_oversize_body_fails_at_once() {
        let server = ListServer::start().await;
        server.set_oversize("huge", 10 * 1024 * MB, true);
        let started = Instant::now();
        let error = fetcher().fetch(&server.url("huge"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
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
        let error = fetcher().fetch(&server.url("endless"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::TooLarge { limit: MB }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(server.hits("endless"), 1);
    }

    #[tokio::test]
    async fn an_html_page_is_refused_before_its_body() {
        let server = ListServer::start().await;
        server.set_html("page");
        let error = fetcher().fetch(&server.url("page"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(
            matches!(&error, FetchError::Html { content_type } if content_type.starts_with("text/html")),
            "{error:?}"
        );
        assert!(error.to_string().contains("HTML"), "{error}");
        assert_eq!(server.hits("page"), 1, "not retried");
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_list_is_a_parse_error_with_its_counts() {
        let server = ListServer::start().await;
        let body = "1.2.3.4\nerror\nnot found\n";
        server.set("junk", body);
        let error = fetcher().fetch(&server.url("junk"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        let FetchError::Parse { status, bytes, sha256, error } = error else { panic!("{error:?}") };
        assert_eq!((status, bytes, sha256), (200, body.len() as u64, Some(hex_sha256(body.as_bytes()))));
        assert!(matches!(error, ParseError::NotAList { valid: 1, invalid: 2, first_bad: Some(_) }), "{error:?}");
        assert_eq!(server.hits("junk"), 1, "not retried");
    }

    #[tokio::test]
    async fn too_many_entries_ends_the_download_early() {
        let server = ListServer::start().await;
        // 16 MB of distinct addresses; the reader refuses after 1 000.
        let body: String =
            (0..1_200_000u32).map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0B00_0000 + i))).collect();
        server.set("long", body.clone());
        let error = fetcher().fetch(&server.url("long"), 64 * MB, &Validators::default(), &LIMITS).await.unwrap_err();
        let FetchError::Parse { status, bytes, sha256, error } = error else { panic!("{error:?}") };
        assert_eq!((status, sha256), (200, None));
        assert_eq!(error, ParseError::TooManyEntries { limit: 1_000 });
        assert!(bytes < body.len() as u64 / 4, "{bytes} of {} bytes read", body.len());
        assert_eq!(error.to_string(), "the list has more than 1000 entries");
        assert_eq!(server.hits("long"), 1, "not retried");
    }

    /// A server on loopback that sends half of `body` on its first
    /// connection and then stalls, and all of it on the next ones. Returns
    /// its URL and the count of connections it took.
    async fn cut_then_whole(body: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/list", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let sent = if first { &body[..body.len() / 2] } else { body };
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(sent.as_bytes()).await;
                    let _ = socket.flush().await;
                    if first {
                        // Never more: the fetcher's timeout ends the attempt.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                });
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn a_retry_after_a_body_cut_short_reads_the_list_from_the_start() {
        const BODY: &str = "1.1.1.1\n2.2.2.2\n3.3.3.3\n4.4.4.4\n5.5.5.5\n6.6.6.6\n7.7.7.7\n8.8.8.8\n";
        let (url, connections) = cut_then_whole(BODY).await;
        let settings = FetchSettings { timeout: Duration::from_millis(500), attempts: 2, ..settings() };
        let download =
            body(Fetcher::new(settings).unwrap().fetch(&url, MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Nothing of the first attempt's half: no duplicates, one count each.
        assert_eq!(download.parsed.counts.valid, 8);
        assert_eq!(download.parsed.counts.duplicate, 0);
        assert_eq!(download.parsed.lines, 8);
        assert_eq!(download.bytes, BODY.len() as u64);
        assert_eq!(download.sha256, hex_sha256(BODY.as_bytes()));
    }

    #[tokio::test]
    async fn three_redirects_are_followed_and_four_are_refused() {
        let server = ListServer::start().await;
        server.set("target", LIST);
        server.set_redirects("three", 3, "target");
        server.set_redirects("four", 4, "target");
        let fetcher = fetcher();
        let download = body(fetcher.fetch(&server.url("three"), MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(listed(&download), list_entries());
        assert_eq!(server.hits("target"), 1);

        let error = fetcher.fetch(&server.url("four"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::TooManyRedirects { limit: 3 }), "{error:?}");
        assert_eq!(server.hits("target"), 1, "the fourth hop is not followed");
        assert_eq!(server.hits("four/3"), 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_an_answer() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        server.set_failures("list", vec![500, 500]);
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(listed(&download), list_entries());
        assert_eq!(server.hits("list"), 3);
    }

    #[tokio::test]
    async fn server_errors_past_the_attempts_give_the_last_status() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        server.set_failures("list", vec![503, 502, 500]);
        let error = fetcher().fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::Status { status: 500 }), "{error:?}");
        assert_eq!(error.http_status(), Some(500));
        assert_eq!(server.hits("list"), 3);
    }

    #[tokio::test]
    async fn not_found_is_not_retried() {
        let server = ListServer::start().await;
        let error = fetcher().fetch(&server.url("missing"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
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
        let download = body(fetcher().fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        assert_eq!(listed(&download), list_entries());
        assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(server.hits("list"), 2);
    }

    #[tokio::test]
    async fn a_stalled_server_times_out_after_every_attempt() {
        let server = ListServer::start().await;
        server.set_stall("stall");
        let settings = FetchSettings { timeout: Duration::from_millis(300), attempts: 2, ..settings() };
        let fetcher = Fetcher::new(settings).unwrap();
        let error = fetcher.fetch(&server.url("stall"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::Timeout), "{error:?}");
        assert_eq!(server.hits("stall"), 2);
    }

    #[tokio::test]
    async fn private_targets_are_refused_before_any_request() {
        let server = ListServer::start().await;
        server.set("list", LIST);
        let fetcher = Fetcher::new(FetchSettings { allow_private: false, ..settings() }).unwrap();
        let literal = fetcher.fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(
            matches!(literal, FetchError::Forbidden { addr, .. } if addr == IpAddr::from([127, 0, 0, 1])),
            "{literal:?}"
        );
        // A name goes through the resolver, which refuses it at connect time.
        let name = format!("http://localhost:{}/list", server.addr().port());
        let named = fetcher.fetch(&name, MB, &Validators::default(), &LIMITS).await.unwrap_err();
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
        body(fetcher.fetch(&server.url("list"), MB, &Validators::default(), &LIMITS).await.unwrap());
        // … and the guard stops the next one.
        let error = fetcher.fetch(&server.url("hop"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(
            matches!(error, FetchError::Forbidden { addr, .. } if addr == IpAddr::from([127, 0, 0, 2])),
            "{error:?}"
        );
        let error = fetcher.fetch(&server.url("ftp-hop"), MB, &Validators::default(), &LIMITS).await.unwrap_err();
        assert!(matches!(error, FetchError::BadUrl(_)), "{error:?}");
        assert_eq!(server.hits("list"), 1);
        assert_eq!(server.hits("hop"), 1);
    }

    #[tokio::test]
    async fn other_schemes_and_credentials_are_bad_urls() {
        let fetcher = fetcher();
        for url in ["ftp://example.com/list", "http://user:pw@example.com/list", "not a url", "file:///etc/passwd"] {
            let error = fetcher.fetch(url, MB, &Validators::default(), &LIMITS).await.unwrap_err();
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
