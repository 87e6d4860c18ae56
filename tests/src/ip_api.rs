//! A local stand-in for ip-api.com that speaks its documented protocol:
//! `POST /batch` (a JSON array of addresses, at most 100) and
//! `GET /json/{ip}`, replies with `status`/`message`/`query`/`countryCode`/
//! `country`/`continentCode`/`as`/`org`, and the `X-Rl`/`X-Ttl` headers. It
//! records every request and can be told to rate-limit (429), answer slowly
//! or send malformed JSON. Loopback only.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// 429 with `X-Ttl: ttl`.
    RateLimited {
        ttl: u64,
    },
    /// Waits this long before answering normally.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
    /// 429 with `X-Ttl` and `Retry-After` of `u64::MAX` seconds.
    HugeTtl,
    /// 200 with a 10 MB body (valid JSON: a long string).
    HugeBody,
    /// 302 to the same path on this server (which would answer normally).
    Redirect,
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub batch: bool,
    pub ips: Vec<String>,
    /// The `key` query parameter (ip-api's paid plan), if sent.
    pub key: Option<String>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    seen: Vec<Seen>,
    /// Addresses answered "reserved range" (nobody can place them).
    unplaceable: Vec<String>,
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeIpApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
    tls: bool,
}

/// Accepts TCP connections and completes a TLS handshake on each; one
/// that fails the handshake is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl Drop for FakeIpApi {
    fn drop(&mut self) {
        self._server.abort();
    }
}

impl FakeIpApi {
    pub async fn start() -> Self {
        let (state, app) = Self::app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, _server: server, tls: false }
    }

    /// The same over HTTPS, with `cert`/`key` (PEM files; e.g. the test
    /// PKI's certificate for `localhost`), like ip-api's paid endpoint.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
        let (state, app) = Self::app();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, _server: server, tls: true }
    }

    fn app() -> (Arc<Mutex<Inner>>, Router) {
        let state = Arc::new(Mutex::new(Inner { mode: Mode::Normal, seen: Vec::new(), unplaceable: Vec::new() }));
        let app = Router::new().route("/batch", post(batch)).route("/json/{ip}", get(single)).with_state(state.clone());
        (state, app)
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` over TLS (the
    /// name the test certificate carries; it resolves to loopback).
    pub fn url(&self) -> String {
        if self.tls { format!("https://localhost:{}", self.addr.port()) } else { format!("http://{}", self.addr) }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// From now on, these addresses are answered "reserved range" (a
    /// negative), whatever their prefix.
    pub fn set_unplaceable(&self, ips: &[&str]) {
        self.state.lock().unwrap().unplaceable = ips.iter().map(|ip| ip.to_string()).collect();
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// The fake's knowledge: 5.0.0.0/8 and the unplaceable list are "reserved
/// range" (a negative), 3.x is Canada, other IPv4 the Netherlands, IPv6
/// Germany.
fn reply_for(ip: &str, unplaceable: &[String]) -> Value {
    if ip.starts_with("5.") || unplaceable.iter().any(|u| u == ip) {
        return json!({"status": "fail", "message": "reserved range", "query": ip});
    }
    let (code, country, continent, asn) = if ip.contains(':') {
        ("DE", "Germany", "EU", "AS3320 Deutsche Telekom AG")
    } else if ip.starts_with("3.") {
        ("CA", "Canada", "NA", "AS16509 Amazon.com, Inc.")
    } else {
        ("NL", "Netherlands", "EU", "AS1136 KPN B.V.")
    };
    json!({
        "status": "success", "query": ip, "countryCode": code, "country": country,
        "continentCode": continent, "as": asn, "org": "Example Org"
    })
}

async fn answer(state: &Mutex<Inner>, seen: Seen, path: String, body: impl FnOnce(&[String]) -> Value) -> Response {
    let (mode, unplaceable) = {
        let mut inner = state.lock().unwrap();
        inner.seen.push(seen);
        (inner.mode, inner.unplaceable.clone())
    };
    let mut headers = HeaderMap::new();
    headers.insert("X-Ttl", HeaderValue::from_static("60"));
    match mode {
        Mode::RateLimited { ttl } => {
            headers.insert("X-Ttl", HeaderValue::from_str(&ttl.to_string()).unwrap());
            headers.insert("X-Rl", HeaderValue::from_static("0"));
            return (StatusCode::TOO_MANY_REQUESTS, headers, "").into_response();
        }
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Malformed => return (StatusCode::OK, headers, "{\"status\": \"succ").into_response(),
        Mode::HugeTtl => {
            let max = HeaderValue::from_str(&u64::MAX.to_string()).unwrap();
            headers.insert("X-Ttl", max.clone());
            headers.insert("Retry-After", max);
            return (StatusCode::TOO_MANY_REQUESTS, headers, "").into_response();
        }
        Mode::HugeBody => {
            let huge = format!("\"{}\"", "x".repeat(10 * 1024 * 1024));
            return (StatusCode::OK, headers, huge).into_response();
        }
        Mode::Redirect => {
            headers.insert("Location", HeaderValue::from_str(&path).unwrap());
            return (StatusCode::FOUND, headers, "").into_response();
        }
        Mode::Normal => {}
    }
    headers.insert("X-Rl", HeaderValue::from_static("14"));
    (StatusCode::OK, headers, body(&unplaceable).to_string()).into_response()
}

/// The `key` parameter of a query string.
fn key_of(query: &Option<String>) -> Option<String> {
    query.as_deref()?.split('&').find_map(|pair| pair.strip_prefix("key=")).map(str::to_owned)
}

async fn batch(State(state): State<Arc<Mutex<Inner>>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let Ok(items) = serde_json::from_slice::<Vec<Value>>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    // ip-api takes strings or {"query": ip} objects.
    let ips: Vec<String> = items
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned).or_else(|| v.get("query")?.as_str().map(str::to_owned)))
        .collect();
    if ips.len() > 100 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "too many items").into_response();
    }
    let seen = Seen { batch: true, ips: ips.clone(), key: key_of(&query) };
    let path = "/batch".to_owned();
    answer(&state, seen, path, |unplaceable| Value::Array(ips.iter().map(|ip| reply_for(ip, unplaceable)).collect()))
        .await
}

async fn single(State(state): State<Arc<Mutex<Inner>>>, Path(ip): Path<String>, RawQuery(query): RawQuery) -> Response {
    let seen = Seen { batch: false, ips: vec![ip.clone()], key: key_of(&query) };
    let path = format!("/json/{ip}");
    answer(&state, seen, path, |unplaceable| reply_for(&ip, unplaceable)).await
}
