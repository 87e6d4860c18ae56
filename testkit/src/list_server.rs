//! An HTTP server that serves blocklists to download tests.
//!
//! [`ListServer::start`] binds `127.0.0.1:0` on the caller's tokio runtime
//! and serves whatever the test put at each path: a list with a strong ETag
//! and a Last-Modified (answering conditional requests with 304), the same
//! gzip-encoded, an HTML error page, an endless-looking body with or without
//! a Content-Length, a redirect chain, a path that never answers, and
//! scripted failures (5xx, 429 with Retry-After) before the real answer.
//! Every request is recorded per path, whatever it was answered with.
//! Dropping the server stops it, stalled requests included.

use std::{
    collections::{HashMap, VecDeque},
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The Last-Modified of the first body set; each new body is a minute later.
const FIRST_MODIFIED_EPOCH: u64 = 1_700_000_000;
/// The line oversized bodies repeat.
const OVERSIZE_LINE: &[u8] = b"1.2.3.4\n";
/// Bytes per chunk of an oversized body.
const OVERSIZE_CHUNK: usize = 64 * 1024;

/// What the server saw of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenRequest {
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header.
    pub if_modified_since: Option<String>,
    /// The `Accept-Encoding` header.
    pub accept_encoding: Option<String>,
}

/// A scripted answer given before the path's real one.
#[derive(Debug, Clone, Copy)]
struct Failure {
    status: u16,
    retry_after: Option<u64>,
}

#[derive(Debug, Clone)]
enum Entry {
    List { body: Bytes, etag: String, modified: SystemTime, gzip: bool },
    Html,
    Oversize { bytes: u64, with_length: bool },
    Redirect { location: String },
    Stall,
}

#[derive(Debug, Default)]
struct Paths {
    entries: HashMap<String, Entry>,
    failures: HashMap<String, VecDeque<Failure>>,
    seen: HashMap<String, Vec<SeenRequest>>,
    /// Bodies set so far: each new one gets a later Last-Modified.
    versions: u64,
}

#[derive(Debug)]
struct Shared {
    paths: Mutex<Paths>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn paths(&self) -> MutexGuard<'_, Paths> {
        // A test that panicked while holding the lock leaves usable data.
        self.paths.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The test list server. See the module docs.
#[derive(Debug)]
pub struct ListServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl ListServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime until dropped.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub async fn start() -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared { paths: Mutex::new(Paths::default()), stop: stop_rx.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("list server: bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("list server: local address: {e}"));
        let app = Router::new().fallback(answer).with_state(Arc::clone(&shared));
        let mut shutdown = stop_rx;
        tokio::spawn(async move {
            let signal = async move {
                let _ = shutdown.wait_for(|stopped| *stopped).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(signal).await;
        });
        Self { addr, shared, stop }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/<path>` (`path` with or without a leading `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, normalize(path))
    }

    /// Serves `body` at `path` (text/plain) with a strong ETag (a hash of the
    /// body) and a Last-Modified that changes when the body does; answers
    /// `If-None-Match` and `If-Modified-Since` with 304.
    pub fn set(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.set_list(path, body.into(), false);
    }

    /// Like [`set`](Self::set), but the body goes out gzip-encoded
    /// (`Content-Encoding: gzip`) whatever the request accepts.
    pub fn set_gzip(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.set_list(path, body.into(), true);
    }

    fn set_list(&self, path: &str, body: Vec<u8>, gzip: bool) {
        let digest = Sha256::digest(&body);
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let etag = if gzip { format!("\"{hex}-gz\"") } else { format!("\"{hex}\"") };
        let body = if gzip { gzip_bytes(&body) } else { body };
        let mut paths = self.shared.paths();
        let unchanged = match paths.entries.get(&normalize(path)) {
            Some(Entry::List { etag: old, modified, .. }) if *old == etag => Some(*modified),
            _ => None,
        };
        let modified = unchanged.unwrap_or_else(|| {
            paths.versions += 1;
            UNIX_EPOCH + Duration::from_secs(FIRST_MODIFIED_EPOCH + 60 * paths.versions)
        });
        paths.entries.insert(normalize(path), Entry::List { body: body.into(), etag, modified, gzip });
    }

    /// Serves an HTML error page at `path`, with 200 and `text/html`, as a
    /// misconfigured upstream or a captive portal would.
    pub fn set_html(&self, path: &str) {
        self.insert(path, Entry::Html);
    }

    /// Serves `bytes` bytes of `1.2.3.4\n` lines at `path`, streamed; with a
    /// Content-Length when `with_length`, chunked otherwise.
    pub fn set_oversize(&self, path: &str, bytes: u64, with_length: bool) {
        self.insert(path, Entry::Oversize { bytes, with_length });
    }

    /// `path` -> `path/1` -> … -> `target_path`, `hops` redirects (302) in
    /// all. With `hops == 0` nothing is set.
    pub fn set_redirects(&self, path: &str, hops: usize, target_path: &str) {
        let base = normalize(path);
        for hop in 0..hops {
            let from = if hop == 0 { base.clone() } else { format!("{base}/{hop}") };
            let to = if hop + 1 == hops { self.url(target_path) } else { self.url(&format!("{base}/{}", hop + 1)) };
            self.insert(&from, Entry::Redirect { location: to });
        }
    }

    /// One redirect (302) from `path` to `location`, any URL at all.
    pub fn set_redirect_to(&self, path: &str, location: &str) {
        self.insert(path, Entry::Redirect { location: location.to_owned() });
    }

    /// Answers `path` with these statuses first, one per request (e.g.
    /// `[500, 500]`), then as set.
    pub fn set_failures(&self, path: &str, statuses: Vec<u16>) {
        let failures = statuses.into_iter().map(|status| Failure { status, retry_after: None });
        self.shared.paths().failures.entry(normalize(path)).or_default().extend(failures);
    }

    /// Answers the next request to `path` with 429 and `Retry-After: seconds`.
    pub fn set_retry_after(&self, path: &str, seconds: u64) {
        let failure = Failure { status: 429, retry_after: Some(seconds) };
        self.shared.paths().failures.entry(normalize(path)).or_default().push_back(failure);
    }

    /// Accepts requests to `path` and never answers them (until the server stops).
    pub fn set_stall(&self, path: &str) {
        self.insert(path, Entry::Stall);
    }

    fn insert(&self, path: &str, entry: Entry) {
        self.shared.paths().entries.insert(normalize(path), entry);
    }

    /// Requests seen for `path`, whatever they were answered with.
    pub fn hits(&self, path: &str) -> usize {
        self.shared.paths().seen.get(&normalize(path)).map_or(0, Vec::len)
    }

    /// The requests seen for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<SeenRequest> {
        self.shared.paths().seen.get(&normalize(path)).cloned().unwrap_or_default()
    }

    /// Requests seen on every path, unknown ones included.
    pub fn total_hits(&self) -> usize {
        self.shared.paths().seen.values().map(Vec::len).sum()
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn normalize(path: &str) -> String {
    if path.starts_with('/') { path.to_owned() } else { format!("/{path}") }
}

fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    encoder.write_all(body).unwrap_or_else(|e| panic!("gzip: {e}"));
    encoder.finish().unwrap_or_else(|e| panic!("gzip: {e}"))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    let seen = SeenRequest {
        if_none_match: header_text(headers, header::IF_NONE_MATCH),
        if_modified_since: header_text(headers, header::IF_MODIFIED_SINCE),
        accept_encoding: header_text(headers, header::ACCEPT_ENCODING),
    };
    let (failure, entry) = {
        let mut paths = shared.paths();
        paths.seen.entry(path.clone()).or_default().push(seen.clone());
        let failure = paths.failures.get_mut(&path).and_then(VecDeque::pop_front);
        (failure, paths.entries.get(&path).cloned())
    };
    if let Some(failure) = failure {
        return failed(failure);
    }
    match entry {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Entry::List { body, etag, modified, gzip }) => list(&seen, body, &etag, modified, gzip),
        Some(Entry::Html) => html(),
        Some(Entry::Oversize { bytes, with_length }) => oversize(bytes, with_length),
        Some(Entry::Redirect { location }) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Some(Entry::Stall) => {
            let mut stop = shared.stop.clone();
            let _ = stop.wait_for(|stopped| *stopped).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn failed(failure: Failure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, "scripted failure\n").into_response();
    if let Some(seconds) = failure.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn not_modified(seen: &SeenRequest, etag: &str, modified: SystemTime) -> bool {
    // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
    if let Some(tags) = &seen.if_none_match {
        return tags.split(',').map(str::trim).any(|tag| tag == etag || tag == "*");
    }
    seen.if_modified_since
        .as_deref()
        .and_then(|since| httpdate::parse_http_date(since).ok())
        .is_some_and(|since| modified <= since)
}

fn list(seen: &SeenRequest, body: Bytes, etag: &str, modified: SystemTime, gzip: bool) -> Response {
    let last_modified = httpdate::fmt_http_date(modified);
    let mut response = if not_modified(seen, etag, modified) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if gzip {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&last_modified) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    response
}

fn html() -> Response {
    let page =
        "<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Service unavailable</h1></body></html>\n";
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

fn oversize(bytes: u64, with_length: bool) -> Response {
    let chunk: Bytes = OVERSIZE_LINE.iter().copied().cycle().take(OVERSIZE_CHUNK).collect::<Vec<u8>>().into();
    let stream = futures_util::stream::unfold(bytes, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let size = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
            let next = left - size as u64;
            Some((Ok::<_, std::io::Error>(chunk.slice(..size)), next))
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if with_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_since_compares_dates() {
        let modified = UNIX_EPOCH + Duration::from_secs(FIRST_MODIFIED_EPOCH);
        let at =
            |t: SystemTime| SeenRequest { if_modified_since: Some(httpdate::fmt_http_date(t)), ..Default::default() };
        assert!(not_modified(&at(modified), "\"x\"", modified));
        assert!(!not_modified(&at(modified - Duration::from_secs(60)), "\"x\"", modified));
        let tag = SeenRequest { if_none_match: Some("\"y\", \"x\"".into()), ..Default::default() };
        assert!(not_modified(&tag, "\"x\"", modified));
    }
}
