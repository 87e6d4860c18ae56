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
    extract::{Path, State},
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
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub batch: bool,
    pub ips: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    seen: Vec<Seen>,
}

/// The running fake. Stops when dropped.
#[derive(Debug)]
pub struct FakeIpApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<Inner>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIpApi {
    fn drop(&mut self) {
        self._server.abort();
    }
}

impl FakeIpApi {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(Inner { mode: Mode::Normal, seen: Vec::new() }));
        let app = Router::new().route("/batch", post(batch)).route("/json/{ip}", get(single)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, _server: server }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
}

/// The fake's knowledge: 5.0.0.0/8 is "reserved range" (a negative), 3.x is
/// Canada, other IPv4 the Netherlands, IPv6 Germany.
fn reply_for(ip: &str) -> Value {
    if ip.starts_with("5.") {
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

async fn answer(state: &Mutex<Inner>, seen: Seen, body: impl FnOnce() -> Value) -> Response {
    let mode = {
        let mut inner = state.lock().unwrap();
        inner.seen.push(seen);
        inner.mode
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
        Mode::Normal => {}
    }
    headers.insert("X-Rl", HeaderValue::from_static("14"));
    (StatusCode::OK, headers, body().to_string()).into_response()
}

async fn batch(State(state): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
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
    let seen = Seen { batch: true, ips: ips.clone() };
    answer(&state, seen, || Value::Array(ips.iter().map(|ip| reply_for(ip)).collect())).await
}

async fn single(State(state): State<Arc<Mutex<Inner>>>, Path(ip): Path<String>) -> Response {
    let seen = Seen { batch: false, ips: vec![ip.clone()] };
    answer(&state, seen, || reply_for(&ip)).await
}
