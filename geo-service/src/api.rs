//! The gRPC handlers and the proto ↔ domain conversions.
//!
//! The databases step is domain code (`resolve`, `mmdb`); this module turns
//! its answers into proto results, chooses where the CPU work runs, and, for
//! the addresses the databases missed, consults the answer cache and the
//! fallback (`consult_cache`). That last step works on proto results; moving
//! it behind a domain type in `resolve` is a known follow-up.

use std::{fmt::Write as _, net::IpAddr, pin::Pin, sync::Arc, time::SystemTime};

use bangui_proto::geo::v1 as pb;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::instrument;

use crate::{
    cache::{AnswerCache, CacheHit, unix_now},
    fallback::{Fallback, FallbackAnswer, Placed},
    metrics::Tally,
    mmdb::{DatabaseInfo, LoadError, Location, Schema},
    reload::Reloader,
    resolve::{Outcome, ReservedRange, Resolution, Resolver},
    store::{AnswerSource, CachedAnswer, StoreError},
};

/// Batches up to this size are answered on the async runtime; larger ones
/// move to rayon's pool so a big batch never stalls other RPCs.
const INLINE_BATCH: usize = 64;
/// Results buffered per LookupStream call before the server waits for the
/// client to read.
const STREAM_BUFFER: usize = 256;

/// Errors a geo RPC can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {description}")]
    InvalidArgument { field: &'static str, description: String },
    #[error("database reload refused: {0}")]
    BadDatabase(#[from] LoadError),
    #[error("cache database unavailable")]
    Unavailable(#[from] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidArgument { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {description}"),
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            ApiError::BadDatabase(source) => Status::failed_precondition(format!(
                "database reload refused, the previous databases keep serving: {source}"
            )),
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %source, "cache database unavailable");
                Status::unavailable("cache database unavailable; try again later")
            }
            ApiError::Internal(source) => {
                tracing::error!(error = %source, cause = ?source, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// The `bangui.geo.v1.GeoService` implementation.
#[derive(Debug, Clone)]
pub struct GeoApi {
    resolver: Resolver,
    cache: Arc<AnswerCache>,
    fallback: Option<Arc<Fallback>>,
    reloader: Reloader,
    max_batch: usize,
}

impl GeoApi {
    pub fn new(
        resolver: Resolver,
        cache: Arc<AnswerCache>,
        fallback: Option<Arc<Fallback>>,
        reloader: Reloader,
        max_batch: usize,
    ) -> Self {
        Self { resolver, cache, fallback, reloader, max_batch }
    }

    /// Answers a batch: local databases first (on rayon's pool when large),
    /// then the cache for what they missed; counts the final statuses.
    async fn answer(&self, inputs: Vec<String>, allow_remote: bool) -> Result<Vec<pb::LookupResult>, ApiError> {
        let mut results = if inputs.len() <= INLINE_BATCH {
            self.resolver.resolve_each(inputs, to_proto)
        } else {
            self.resolve_parallel(inputs).await?
        };
        self.consult_cache(&mut results, allow_remote).await;
        let mut tally = Tally::default();
        for result in &results {
            tally.add(outcome_of(result));
        }
        self.resolver.metrics().count_lookups(&tally);
        Ok(results)
    }

    async fn answer_one(&self, input: String, allow_remote: bool) -> Result<pb::LookupResult, ApiError> {
        Ok(self.answer(vec![input], allow_remote).await?.pop().unwrap_or_default())
    }

    /// Resolves a large batch on rayon's pool (CPU work, one thread per
    /// core) while this task waits without blocking the runtime.
    async fn resolve_parallel(&self, inputs: Vec<String>) -> Result<Vec<pb::LookupResult>, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let resolver = self.resolver.clone();
        rayon::spawn(move || {
            // A panic must not abort the process (rayon's default); it
            // becomes an internal error for this request.
            let results =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| resolver.resolve_par(inputs, to_proto)));
            let _ = tx.send(results);
        });
        match rx.await {
            Ok(Ok(results)) => Ok(results),
            Ok(Err(_panic)) => Err(ApiError::Internal("lookup worker panicked".into())),
            Err(closed) => Err(ApiError::Internal(Box::new(closed))),
        }
    }

    /// For the addresses the databases missed: earlier answers from the
    /// cache, then the online fallback when it is enabled and the request
    /// allows it; what nobody can place is remembered as a negative.
    async fn consult_cache(&self, results: &mut [pb::LookupResult], allow_remote: bool) {
        let missed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == pb::LookupStatus::NotFound as i32)
            .map(|(i, _)| i)
            .collect();
        if missed.is_empty() {
            return;
        }
        // Borrow the addresses out of the results (no copies) and put them back.
        let ips: Vec<String> = missed.iter().map(|&i| std::mem::take(&mut results[i].ip)).collect();
        let hits = self.cache.lookup(&ips).await;
        let mut unknown: Vec<(usize, String)> = Vec::new();
        for ((&i, ip), hit) in missed.iter().zip(ips).zip(hits) {
            match hit {
                Some(CacheHit::Answer(answer)) => fill_cached(&mut results[i], &answer, pb::ResultSource::Cache),
                Some(CacheHit::Negative) => {}
                None => unknown.push((i, ip.clone())),
            }
            results[i].ip = ip;
        }
        if unknown.is_empty() {
            return;
        }
        let now = unix_now();
        let answers =
            if allow_remote { self.ask_fallback(unknown.iter().map(|(_, ip)| ip.as_str())).await } else { None };
        let Some(answers) = answers else {
            self.cache.record(unknown.into_iter().map(|(_, ip)| CachedAnswer::negative(ip, now)).collect());
            return;
        };
        let mut rows = Vec::new();
        for ((i, ip), answer) in unknown.into_iter().zip(answers) {
            match answer {
                FallbackAnswer::Found(placed) => {
                    let row = http_answer(ip, placed, now);
                    fill_cached(&mut results[i], &row, pb::ResultSource::Http);
                    rows.push(row);
                }
                FallbackAnswer::NotFound => rows.push(CachedAnswer::negative(ip, now)),
                FallbackAnswer::Failed(reason) => {
                    results[i].status = pb::LookupStatus::UpstreamError.into();
                    results[i].error = reason;
                }
            }
        }
        self.cache.record(rows);
    }
}

impl GeoApi {
    /// The fallback's answers for `ips` (normalized addresses), in order;
    /// `None` when the fallback is off.
    async fn ask_fallback<'a>(&self, ips: impl Iterator<Item = &'a str>) -> Option<Vec<FallbackAnswer>> {
        let fallback = self.fallback.as_ref()?;
        let addrs: Vec<IpAddr> = ips.map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(fallback.lookup(&addrs).await)
    }
}

/// A cache row for an address the fallback placed.
fn http_answer(ip: String, placed: Placed, now: i64) -> CachedAnswer {
    CachedAnswer {
        country_code: Some(placed.country_code),
        country_name: placed.country_name,
        continent_code: placed.continent_code,
        asn: placed.asn,
        as_org: placed.as_org,
        source: AnswerSource::Http,
        ..CachedAnswer::negative(ip, now)
    }
}

fn outcome_of(result: &pb::LookupResult) -> Outcome {
    match pb::LookupStatus::try_from(result.status) {
        Ok(pb::LookupStatus::Found) => Outcome::Found,
        Ok(pb::LookupStatus::Reserved) => Outcome::Reserved,
        Ok(pb::LookupStatus::Invalid) => Outcome::Invalid,
        Ok(pb::LookupStatus::UpstreamError) => Outcome::UpstreamError,
        _ => Outcome::NotFound,
    }
}

/// A fallback answer (fresh or cached) into a result.
fn fill_cached(out: &mut pb::LookupResult, answer: &CachedAnswer, source: pb::ResultSource) {
    out.status = pb::LookupStatus::Found.into();
    out.source = source.into();
    out.country_code = answer.country_code.clone().unwrap_or_default();
    out.country_name = answer.country_name.clone().unwrap_or_default();
    out.continent_code = answer.continent_code.clone().unwrap_or_default();
    out.asn = answer.asn.unwrap_or_default();
    out.as_org = answer.as_org.clone().unwrap_or_default();
    out.database = answer.source.as_str().to_owned();
    out.database_build_time = Some(prost_types::Timestamp { seconds: answer.resolved_at, nanos: 0 });
}

type LookupStream = Pin<Box<dyn Stream<Item = Result<pb::LookupStreamResponse, Status>> + Send>>;

/// Most negatives one ReResolve retries.
const MAX_RERESOLVE: u32 = 100_000;
/// ReResolve's limit when the request gives none.
const DEFAULT_RERESOLVE: u32 = 1_000;

#[tonic::async_trait]
impl pb::geo_service_server::GeoService for GeoApi {
    #[instrument(skip_all, fields(rpc = "Lookup"))]
    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        let request = request.into_inner();
        let result = self.answer_one(request.ip, request.allow_remote).await?;
        if result.status == pb::LookupStatus::Invalid as i32 {
            return Err(ApiError::InvalidArgument { field: "ip", description: result.error }.into());
        }
        Ok(Response::new(pb::LookupResponse { result: Some(result) }))
    }

    #[instrument(skip_all, fields(rpc = "LookupBatch", items))]
    async fn lookup_batch(
        &self,
        request: Request<pb::LookupBatchRequest>,
    ) -> Result<Response<pb::LookupBatchResponse>, Status> {
        let pb::LookupBatchRequest { ips, allow_remote } = request.into_inner();
        tracing::Span::current().record("items", ips.len());
        if ips.len() > self.max_batch {
            return Err(ApiError::InvalidArgument {
                field: "ips",
                description: format!(
                    "{} addresses is more than the limit of {} per LookupBatch; split the batch or use LookupStream",
                    ips.len(),
                    self.max_batch
                ),
            }
            .into());
        }
        self.resolver.metrics().observe_batch(ips.len());
        let results = self.answer(ips, allow_remote).await?;
        Ok(Response::new(pb::LookupBatchResponse { results }))
    }

    type LookupStreamStream = LookupStream;

    #[instrument(skip_all, fields(rpc = "LookupStream"))]
    async fn lookup_stream(
        &self,
        request: Request<Streaming<pb::LookupStreamRequest>>,
    ) -> Result<Response<Self::LookupStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let api = self.clone();
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let reply = match item {
                    Ok(req) => api
                        .answer_one(req.ip, req.allow_remote)
                        .await
                        .map(|result| pb::LookupStreamResponse { result: Some(result) })
                        .map_err(Status::from),
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(rpc = "GetInfo"))]
    async fn get_info(&self, _request: Request<pb::GetInfoRequest>) -> Result<Response<pb::GetInfoResponse>, Status> {
        let set = self.resolver.databases();
        let metrics = self.resolver.metrics();
        let cache = self.cache.snapshot().await;
        Ok(Response::new(pb::GetInfoResponse {
            databases: set.databases().map(database_info).collect(),
            counters: Some(pb::LookupCounters {
                found: metrics.lookups(Outcome::Found),
                not_found: metrics.lookups(Outcome::NotFound),
                reserved: metrics.lookups(Outcome::Reserved),
                invalid: metrics.lookups(Outcome::Invalid),
                upstream_error: metrics.lookups(Outcome::UpstreamError),
            }),
            max_batch_size: u32::try_from(self.max_batch).unwrap_or(u32::MAX),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cache: Some(pb::CacheInfo {
                persistent_rows: cache.store.rows,
                persistent_negatives: cache.store.negatives,
                memory_answers: cache.memory_answers,
                memory_negatives: cache.memory_negatives,
                hits: cache.hits,
                negative_hits: cache.negative_hits,
                misses: cache.misses,
                pending_writes: cache.pending_writes,
                backend: cache.backend.to_owned(),
            }),
            fallback: Some(match &self.fallback {
                None => pb::FallbackInfo::default(),
                Some(fallback) => {
                    let f = fallback.snapshot();
                    pb::FallbackInfo {
                        enabled: true,
                        batch_tokens: f.batch_tokens,
                        single_tokens: f.single_tokens,
                        breaker_open_seconds: f.breaker_open_for.as_secs_f64(),
                        requests: f.requests,
                        failures: f.failures,
                    }
                }
            }),
        }))
    }

    #[instrument(skip_all, fields(rpc = "PurgeStale"))]
    async fn purge_stale(
        &self,
        request: Request<pb::PurgeStaleRequest>,
    ) -> Result<Response<pb::PurgeStaleResponse>, Status> {
        let older_than = request.into_inner().older_than.ok_or_else(|| ApiError::InvalidArgument {
            field: "older_than",
            description: "required: how long a row may go unseen, e.g. \"2592000s\" for 30 days".into(),
        })?;
        let older_than = std::time::Duration::try_from(older_than).map_err(|_| ApiError::InvalidArgument {
            field: "older_than",
            description: "must not be negative".into(),
        })?;
        let deleted = self.cache.purge(older_than).await.map_err(ApiError::from)?;
        tracing::info!(deleted, older_than_secs = older_than.as_secs(), "purged stale cache rows");
        Ok(Response::new(pb::PurgeStaleResponse { deleted }))
    }

    #[instrument(skip_all, fields(rpc = "ReloadDatabases"))]
    async fn reload_databases(
        &self,
        _request: Request<pb::ReloadDatabasesRequest>,
    ) -> Result<Response<pb::ReloadDatabasesResponse>, Status> {
        let loaded = self.reloader.reload().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ReloadDatabasesResponse { databases: loaded.iter().map(database_info).collect() }))
    }

    #[instrument(skip_all, fields(rpc = "ReResolve"))]
    async fn re_resolve(
        &self,
        request: Request<pb::ReResolveRequest>,
    ) -> Result<Response<pb::ReResolveResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_RERESOLVE,
            n if n > MAX_RERESOLVE => {
                return Err(ApiError::InvalidArgument {
                    field: "limit",
                    description: format!("at most {MAX_RERESOLVE} per call"),
                }
                .into());
            }
            n => n,
        };
        let negatives = self.cache.negatives(limit).await.map_err(ApiError::from)?;
        let attempted = u32::try_from(negatives.len()).unwrap_or(u32::MAX);
        let placed: Vec<bool> =
            self.resolver.resolve_each(negatives.iter(), |_, r| matches!(r, Resolution::Found { .. }));
        let (found, still): (Vec<_>, Vec<_>) = negatives.into_iter().zip(placed).partition(|(_, placed)| *placed);
        let found: Vec<String> = found.into_iter().map(|(ip, _)| ip).collect();
        if !found.is_empty() {
            self.cache.forget(&found).await.map_err(ApiError::from)?;
        }
        let now = unix_now();
        let still: Vec<String> = still.into_iter().map(|(ip, _)| ip).collect();
        let mut by_fallback = 0usize;
        let mut answers = self.ask_fallback(still.iter().map(String::as_str)).await.map(Vec::into_iter);
        let mut rows = Vec::new();
        for ip in still {
            let row = match answers.as_mut().and_then(Iterator::next) {
                Some(FallbackAnswer::Found(placed)) => {
                    by_fallback += 1;
                    http_answer(ip, placed, now)
                }
                // Still unknown: resolved_at is now, so the next call reaches others first.
                _ => CachedAnswer::negative(ip, now),
            };
            // `last_seen: 0` keeps the stored one: a retry is not a sighting.
            rows.push(CachedAnswer { last_seen: 0, ..row });
        }
        self.cache.record(rows);
        self.cache.flush().await.map_err(ApiError::from)?;
        let resolved = u32::try_from(found.len() + by_fallback).unwrap_or(u32::MAX);
        tracing::info!(attempted, resolved, "re-resolved negatives");
        Ok(Response::new(pb::ReResolveResponse { attempted, resolved }))
    }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

fn text(value: Option<&str>) -> String {
    value.map(str::to_owned).unwrap_or_default()
}

/// The normalized text of `ip`. An input that parsed as IPv4 and has no
/// ':' (so it was not IPv4-mapped IPv6) and no white space is already
/// canonical (the parser refuses leading zeros): it is copied rather than
/// formatted again.
fn ip_text(input: &str, ip: IpAddr) -> String {
    let canonical_v4 = ip.is_ipv4() && !input.contains(':') && input.trim().len() == input.len();
    if canonical_v4 {
        return input.to_owned();
    }
    let mut text = String::with_capacity(MAX_IP_TEXT);
    // Writing into a String cannot fail.
    let _ = write!(text, "{ip}");
    text
}

/// Longest text of an address ("ffff:ffff:…:ffff") plus "/128": formatting
/// into a string this large never reallocates.
const MAX_IP_TEXT: usize = 39 + 4;

/// The proto form of one resolution; takes the input to move it into the
/// result.
pub fn to_proto(input: String, resolution: Resolution<'_>) -> pb::LookupResult {
    let mut out = pb::LookupResult::default();
    match resolution {
        Resolution::Found { ip, location } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::Found.into();
            out.source = pb::ResultSource::Mmdb.into();
            fill_location(&mut out, &location);
        }
        Resolution::NotFound { ip } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::NotFound.into();
        }
        Resolution::Reserved { ip, range } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::Reserved.into();
            out.source = pb::ResultSource::Local.into();
            out.reserved_range = reserved_to_proto(range).into();
        }
        Resolution::Invalid { reason } => {
            out.status = pb::LookupStatus::Invalid.into();
            out.error = reason;
        }
        Resolution::UpstreamError { ip, error } => {
            out.ip = ip_text(&input, ip);
            out.status = pb::LookupStatus::UpstreamError.into();
            out.error = error;
        }
    }
    out.input = input;
    out
}

fn fill_location(out: &mut pb::LookupResult, location: &Location<'_>) {
    out.country_code = text(location.country_code);
    out.country_name = text(location.country_name);
    out.continent_code = text(location.continent_code);
    out.continent_name = text(location.continent_name);
    out.registered_country_code = text(location.registered_country_code);
    out.asn = location.asn.unwrap_or_default();
    out.as_org = text(location.as_org);
    if let Some((network, prefix)) = location.network {
        let mut text = String::with_capacity(MAX_IP_TEXT);
        // Writing into a String cannot fail.
        let _ = write!(text, "{network}/{prefix}");
        out.network = text;
    }
    if let Some(db) = location.database {
        out.database = db.name.to_string();
        out.database_build_time = Some(timestamp(db.build_time));
    }
}

fn reserved_to_proto(range: ReservedRange) -> pb::ReservedRange {
    match range {
        ReservedRange::Private => pb::ReservedRange::Private,
        ReservedRange::Loopback => pb::ReservedRange::Loopback,
        ReservedRange::LinkLocal => pb::ReservedRange::LinkLocal,
        ReservedRange::Cgnat => pb::ReservedRange::Cgnat,
        ReservedRange::Documentation => pb::ReservedRange::Documentation,
        ReservedRange::Multicast => pb::ReservedRange::Multicast,
        ReservedRange::Unspecified => pb::ReservedRange::UnspecifiedAddress,
        ReservedRange::Other => pb::ReservedRange::Other,
    }
}

fn schema_to_proto(schema: Schema) -> pb::DatabaseSchema {
    match schema {
        Schema::MaxMind => pb::DatabaseSchema::Maxmind,
        Schema::FlatCountry => pb::DatabaseSchema::FlatCountry,
        Schema::IpinfoLite => pb::DatabaseSchema::IpinfoLite,
        Schema::Asn => pb::DatabaseSchema::Asn,
        Schema::Unknown => pb::DatabaseSchema::Unspecified,
    }
}

fn database_info(db: &DatabaseInfo) -> pb::DatabaseInfo {
    pb::DatabaseInfo {
        path: db.name.to_string(),
        database_type: db.database_type.clone(),
        build_time: Some(timestamp(db.build_time)),
        ip_version: db.ip_version.into(),
        node_count: db.node_count,
        record_size: db.record_size.into(),
        schema: schema_to_proto(db.schema).into(),
        description: db.description.clone(),
        has_country: db.has_country,
        has_asn: db.has_asn,
        size_bytes: db.size_bytes,
    }
}
