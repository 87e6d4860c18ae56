//! The online fallback: ip-api.com's free tier, off by default.
//!
//! Asked only for addresses the local databases and the cache could not
//! place, only when the request allows remote lookups, never for reserved
//! ranges (those never get this far). The free tier is plain HTTP, so
//! enabling it sends addresses off the host unencrypted; the service warns
//! at start.
//!
//! It keeps to ip-api's limits on its own: a token bucket per endpoint
//! (`POST /batch`, at most 100 addresses a request, 15 requests a minute;
//! `GET /json/{ip}`, 45 a minute), honours `X-Rl`/`X-Ttl` (no requests left
//! in the window: wait for it), and a circuit breaker opens on HTTP 429 for
//! `X-Ttl` seconds and after repeated failures. Requests time out and are
//! retried with jittered backoff. An address it cannot answer comes back as
//! [`FallbackAnswer::Failed`]; a batch never fails whole.
//!
//! The upstream is not trusted: `X-Ttl` and `Retry-After` are capped at
//! [`MAX_PAUSE`], a reply body over [`MAX_BODY_BYTES`] fails the request
//! (read in chunks, never buffered past the cap), and redirects are not
//! followed. With `--fallback-api-key` the key goes in the query string, as
//! ip-api's paid endpoint (`https://pro.ip-api.com`) expects, so addresses
//! and key travel over TLS.

mod limits;

use std::{net::IpAddr, sync::Mutex, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

pub use self::limits::{Breaker, TokenBucket};
use crate::metrics::Metrics;
pub use crate::resolve::Placed;

/// Most addresses ip-api takes in one batch request.
pub const MAX_BATCH: usize = 100;
const FIELDS: &str = "status,message,query,countryCode,country,continentCode,as,org";
/// Consecutive failures that open the breaker, and for how long.
const FAILURES_TO_OPEN: u32 = 5;
const OPEN_AFTER_FAILURES: Duration = Duration::from_secs(30);
/// How long the breaker stays open after a 429 without an X-Ttl header.
const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// The longest pause an `X-Ttl` or `Retry-After` header can impose: a
/// larger value (or one near `u64::MAX`) is taken as this.
pub const MAX_PAUSE: Duration = Duration::from_secs(3_600);
/// The largest reply body read: a full batch reply of 100 addresses is
/// about 20 KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Fallback settings.
#[derive(Debug, Clone)]
pub struct FallbackConfig {
    /// e.g. `http://ip-api.com`, or `https://pro.ip-api.com` with a key.
    pub base_url: String,
    /// ip-api's paid-plan key, sent as `key=` in the query string.
    pub api_key: Option<SecretString>,
    pub batch_per_minute: u32,
    pub single_per_minute: u32,
    pub timeout: Duration,
    /// Attempts per request after the first, for timeouts, connection
    /// errors and 5xx.
    pub retries: u32,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            base_url: "http://ip-api.com".into(),
            api_key: None,
            batch_per_minute: 15,
            single_per_minute: 45,
            timeout: Duration::from_secs(3),
            retries: 2,
        }
    }
}

/// What the fallback said about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FallbackAnswer {
    Found(Placed),
    /// ip-api answered that it cannot place it (reserved, private, invalid).
    NotFound,
    /// No answer: budget, breaker, timeout, bad reply.
    Failed(String),
}

/// One element of ip-api's reply.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    continent_code: Option<String>,
    /// "AS15169 Google LLC"
    #[serde(default, rename = "as")]
    as_field: Option<String>,
    #[serde(default)]
    org: Option<String>,
}

impl Reply {
    fn answer(self) -> FallbackAnswer {
        if self.status != "success" {
            let message = self.message.unwrap_or_default();
            return match message.as_str() {
                "private range" | "reserved range" | "invalid query" => FallbackAnswer::NotFound,
                other => FallbackAnswer::Failed(format!("ip-api: {other}")),
            };
        }
        let Some(country_code) = self.country_code.filter(|c| c.len() == 2) else {
            return FallbackAnswer::NotFound;
        };
        let (asn, as_name) = match self.as_field.as_deref().and_then(|a| a.strip_prefix("AS")) {
            Some(rest) => {
                let (number, name) = rest.split_once(' ').unwrap_or((rest, ""));
                (number.parse().ok(), (!name.is_empty()).then(|| name.to_owned()))
            }
            None => (None, None),
        };
        FallbackAnswer::Found(Placed {
            country_code,
            country_name: self.country.filter(|c| !c.is_empty()),
            continent_code: self.continent_code.filter(|c| !c.is_empty()),
            asn,
            as_org: as_name.or(self.org.filter(|o| !o.is_empty())),
        })
    }
}

#[derive(Debug)]
struct State {
    batch: TokenBucket,
    single: TokenBucket,
    breaker: Breaker,
    requests: u64,
    failures: u64,
}

/// What `GetInfo` shows of the fallback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FallbackSnapshot {
    pub batch_tokens: f64,
    pub single_tokens: f64,
    pub breaker_open_for: Duration,
    pub requests: u64,
    pub failures: u64,
}

/// The ip-api client.
#[derive(Debug)]
pub struct Fallback {
    client: reqwest::Client,
    config: FallbackConfig,
    state: Mutex<State>,
    metrics: Metrics,
}

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("rate limited by ip-api (429); pausing {0:?}")]
    RateLimited(Duration),
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
}

impl Fallback {
    /// Builds the client. Errors only if the TLS stack cannot start.
    pub fn new(config: FallbackConfig, metrics: Metrics) -> Result<Self, reqwest::Error> {
        // One process-wide TLS provider; a second install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("bangui-geo-service/", env!("CARGO_PKG_VERSION")))
            // A redirect could send the addresses (and the key) anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let now = Instant::now();
        let state = State {
            batch: TokenBucket::per_minute(config.batch_per_minute, now),
            single: TokenBucket::per_minute(config.single_per_minute, now),
            breaker: Breaker::default(),
            requests: 0,
            failures: 0,
        };
        Ok(Self { client, config, state: Mutex::new(state), metrics })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn snapshot(&self) -> FallbackSnapshot {
        let now = Instant::now();
        let mut state = self.state();
        FallbackSnapshot {
            batch_tokens: state.batch.available(now),
            single_tokens: state.single.available(now),
            breaker_open_for: state.breaker.open_for(now),
            requests: state.requests,
            failures: state.failures,
        }
    }

    /// Answers for `ips`, in order. Splits into requests of at most
    /// [`MAX_BATCH`]; what the budget or the breaker does not allow now is
    /// `Failed`, not waited for.
    pub async fn lookup(&self, ips: &[IpAddr]) -> Vec<FallbackAnswer> {
        let mut out = Vec::with_capacity(ips.len());
        if let [ip] = ips {
            out.push(self.single(*ip).await);
            return out;
        }
        for chunk in ips.chunks(MAX_BATCH) {
            out.extend(self.batch(chunk).await);
        }
        out
    }

    /// Takes a token from the chosen bucket unless the breaker is open.
    fn admit(&self, batch: bool) -> Result<(), String> {
        let now = Instant::now();
        let mut state = self.state();
        let open_for = state.breaker.open_for(now);
        if !open_for.is_zero() {
            return Err(format!("fallback paused for {}s (ip-api rate limit or failures)", open_for.as_secs() + 1));
        }
        let bucket = if batch { &mut state.batch } else { &mut state.single };
        if !bucket.try_take(now) {
            return Err("fallback budget for this minute is used up".into());
        }
        state.requests += 1;
        Ok(())
    }

    async fn single(&self, ip: IpAddr) -> FallbackAnswer {
        if let Err(reason) = self.admit(false) {
            return FallbackAnswer::Failed(reason);
        }
        let url = self.url(&format!("json/{ip}"));
        match self.send(|| self.client.get(url.expose_secret())).await {
            Ok(body) => match serde_json::from_slice::<Reply>(&body) {
                Ok(reply) => reply.answer(),
                Err(error) => self.failed(format!("malformed reply from ip-api: {error}")),
            },
            Err(error) => FallbackAnswer::Failed(error.to_string()),
        }
    }

    async fn batch(&self, ips: &[IpAddr]) -> Vec<FallbackAnswer> {
        if let Err(reason) = self.admit(true) {
            return vec![FallbackAnswer::Failed(reason); ips.len()];
        }
        let url = self.url("batch");
        let body: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let replies = match self.send(|| self.client.post(url.expose_secret()).json(&body)).await {
            Ok(bytes) => match serde_json::from_slice::<Vec<Reply>>(&bytes) {
                Ok(replies) => replies,
                Err(error) => {
                    let failed = self.failed(format!("malformed reply from ip-api: {error}"));
                    return vec![failed; ips.len()];
                }
            },
            Err(error) => return vec![FallbackAnswer::Failed(error.to_string()); ips.len()],
        };
        // Match replies to addresses by `query`, not by position: a reply
        // that leaves one out must not shift the rest.
        let mut by_query: std::collections::HashMap<IpAddr, Reply> = replies
            .into_iter()
            .filter_map(|r| {
                let ip = r.query.as_deref()?.parse::<IpAddr>().ok()?.to_canonical();
                Some((ip, r))
            })
            .collect();
        ips.iter()
            .map(|ip| match by_query.remove(ip) {
                Some(reply) => reply.answer(),
                None => FallbackAnswer::Failed("ip-api's reply left this address out".into()),
            })
            .collect()
    }

    /// The URL of `path`, with the key when there is one (a secret: it is
    /// never logged).
    fn url(&self, path: &str) -> SecretString {
        let base = self.config.base_url.trim_end_matches('/');
        let key = match &self.config.api_key {
            Some(key) => format!("&key={}", key.expose_secret()),
            None => String::new(),
        };
        SecretString::from(format!("{base}/{path}?fields={FIELDS}{key}"))
    }

    fn failed(&self, reason: String) -> FallbackAnswer {
        let now = Instant::now();
        let mut state = self.state();
        state.failures += 1;
        state.breaker.failure(now, FAILURES_TO_OPEN, OPEN_AFTER_FAILURES);
        self.metrics.set_breaker_open_for(state.breaker.open_for(now));
        drop(state);
        tracing::warn!(%reason, "fallback request failed");
        FallbackAnswer::Failed(reason)
    }

    /// Sends with retries; returns the body of a 200 reply.
    async fn send(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Vec<u8>, RequestError> {
        let mut attempt = 0;
        loop {
            let outcome = self.send_once(request()).await;
            self.metrics.count_fallback_request(outcome.is_ok());
            match outcome {
                Ok(body) => {
                    let mut state = self.state();
                    state.breaker.success();
                    self.metrics.set_breaker_open_for(state.breaker.open_for(Instant::now()));
                    drop(state);
                    return Ok(body);
                }
                Err(RequestError::Retryable(reason)) if attempt < self.config.retries => {
                    attempt += 1;
                    // 100 ms, 200 ms, … with up to 50 % jitter.
                    let base = Duration::from_millis(100 * u64::from(attempt));
                    let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                    tracing::debug!(%reason, attempt, "retrying the fallback request");
                    tokio::time::sleep(base + jitter).await;
                }
                Err(error) => {
                    let now = Instant::now();
                    let mut state = self.state();
                    state.failures += 1;
                    match &error {
                        RequestError::RateLimited(ttl) => state.breaker.open(now, *ttl),
                        _ => state.breaker.failure(now, FAILURES_TO_OPEN, OPEN_AFTER_FAILURES),
                    }
                    self.metrics.set_breaker_open_for(state.breaker.open_for(now));
                    drop(state);
                    tracing::warn!(%error, "fallback request failed");
                    return Err(error);
                }
            }
        }
    }

    async fn send_once(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, RequestError> {
        let mut response = request.send().await.map_err(|e| {
            // Without the URL: it may hold the key.
            let e = e.without_url();
            if e.is_timeout() {
                RequestError::Retryable(format!("ip-api did not answer within {:?}", self.config.timeout))
            } else {
                RequestError::Retryable(format!("cannot reach ip-api: {e}"))
            }
        })?;
        let header = |name: &str| -> Option<u64> { response.headers().get(name)?.to_str().ok()?.trim().parse().ok() };
        let ttl = header("X-Ttl").or_else(|| header("Retry-After")).map(pause);
        let remaining = header("X-Rl");
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(RequestError::RateLimited(ttl.unwrap_or(DEFAULT_TTL)));
        }
        if remaining == Some(0) {
            // This reply is fine, but the window is spent: wait it out.
            let pause = ttl.unwrap_or(DEFAULT_TTL);
            let now = Instant::now();
            let mut state = self.state();
            state.breaker.open(now, pause);
            self.metrics.set_breaker_open_for(state.breaker.open_for(now));
            drop(state);
            tracing::info!(pause_secs = pause.as_secs(), "ip-api window used up (X-Rl: 0); pausing the fallback");
        }
        if status.is_server_error() {
            return Err(RequestError::Retryable(format!("ip-api answered {status}")));
        }
        if !status.is_success() {
            // Redirects land here too: they are not followed.
            return Err(RequestError::Fatal(format!("ip-api answered {status}")));
        }
        let too_big = || RequestError::Fatal(format!("ip-api's reply is larger than {MAX_BODY_BYTES} bytes"));
        if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RequestError::Retryable(format!("reading ip-api's reply: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A pause of `seconds` from an upstream header, at most [`MAX_PAUSE`].
fn pause(seconds: u64) -> Duration {
    Duration::from_secs(seconds).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> FallbackAnswer {
        serde_json::from_str::<Reply>(json).unwrap().answer()
    }

    #[test]
    fn upstream_pauses_are_capped() {
        assert_eq!(pause(30), Duration::from_secs(30));
        assert_eq!(pause(u64::MAX), MAX_PAUSE);
        // The capped pause can be added to any instant without overflow.
        let mut breaker = Breaker::default();
        breaker.open(Instant::now(), pause(u64::MAX));
        assert!(breaker.open_for(Instant::now()) <= MAX_PAUSE);
    }

    #[test]
    fn replies_map_to_answers() {
        let found = reply(
            r#"{"status":"success","query":"8.8.8.8","countryCode":"US","country":"United States","continentCode":"NA","as":"AS15169 Google LLC","org":"Google Public DNS"}"#,
        );
        assert_eq!(
            found,
            FallbackAnswer::Found(Placed {
                country_code: "US".into(),
                country_name: Some("United States".into()),
                continent_code: Some("NA".into()),
                asn: Some(15169),
                as_org: Some("Google LLC".into()),
            })
        );
        assert_eq!(
            reply(r#"{"status":"fail","message":"reserved range","query":"10.0.0.1"}"#),
            FallbackAnswer::NotFound
        );
        assert_eq!(reply(r#"{"status":"fail","message":"invalid query","query":"x"}"#), FallbackAnswer::NotFound);
        assert!(
            matches!(reply(r#"{"status":"fail","message":"quota"}"#), FallbackAnswer::Failed(m) if m.contains("quota"))
        );
        // Success without a country: nobody knows.
        assert_eq!(reply(r#"{"status":"success","query":"1.2.3.4","countryCode":""}"#), FallbackAnswer::NotFound);
    }
}
