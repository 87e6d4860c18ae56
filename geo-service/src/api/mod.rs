//! The gRPC handlers: validation and the proto ↔ domain conversions only.
//!
//! Every lookup goes through [`Lookups`] (the resolution order lives in
//! the domain); this module checks what the domain cannot (batch size,
//! limits, required fields), hands `to_proto` over so each result is built
//! once, and maps errors to status codes.

mod convert;

use std::pin::Pin;

use bangui_proto::geo::v1 as pb;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::instrument;

pub use self::convert::to_proto;
use self::convert::{database_info, info_to_proto};
use crate::{
    lookup::{LookupError, Lookups},
    metrics::Metrics,
    mmdb::LoadError,
    reload::Reloader,
};

/// Results buffered per LookupStream call before the server stops reading
/// the client's next addresses: the stream's memory stays bounded however
/// fast the client sends.
const STREAM_BUFFER: usize = 64;
/// Most negatives one ReResolve retries.
const MAX_RERESOLVE: u32 = 100_000;
/// ReResolve's limit when the request gives none.
const DEFAULT_RERESOLVE: u32 = 1_000;

/// Errors a geo RPC can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {description}")]
    InvalidArgument { field: &'static str, description: String },
    #[error("database reload refused: {0}")]
    BadDatabase(#[from] LoadError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
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
            ApiError::Lookup(LookupError::Unavailable(source)) => {
                tracing::warn!(error = %source, "cache database unavailable");
                Status::unavailable("cache database unavailable; try again later")
            }
            ApiError::Lookup(error @ LookupError::WorkerPanicked) => {
                tracing::error!(%error, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// The `bangui.geo.v1.GeoService` implementation.
#[derive(Debug, Clone)]
pub struct GeoApi {
    lookups: Lookups,
    reloader: Reloader,
    metrics: Metrics,
    max_batch: usize,
}

impl GeoApi {
    pub fn new(lookups: Lookups, reloader: Reloader, metrics: Metrics, max_batch: usize) -> Self {
        Self { lookups, reloader, metrics, max_batch }
    }

    async fn answer_one(&self, ip: String, allow_remote: bool) -> Result<pb::LookupResult, ApiError> {
        Ok(self.lookups.resolve(vec![ip], allow_remote, to_proto).await?.pop().unwrap_or_default())
    }
}

type LookupStream = Pin<Box<dyn Stream<Item = Result<pb::LookupStreamResponse, Status>> + Send>>;

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
        self.metrics.observe_batch(ips.len());
        let results = self.lookups.resolve(ips, allow_remote, to_proto).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::LookupBatchResponse { results }))
    }

    type LookupStreamStream = LookupStream;

    /// One address a message, answered in order, each with its own status
    /// (as in a batch); a message over the size limit ends the stream.
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
                    Err(status) => Err(oversized_as_exhausted(status, ONE_ADDRESS_HINT)),
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
        let snapshot = self.lookups.snapshot().await;
        Ok(Response::new(info_to_proto(snapshot, self.max_batch)))
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
        let deleted = self.lookups.purge(older_than).await.map_err(ApiError::from)?;
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
        let done = self.lookups.re_resolve(limit).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ReResolveResponse { attempted: done.attempted, resolved: done.resolved }))
    }
}

/// What a request of one address over its decode limit is told.
pub const ONE_ADDRESS_HINT: &str = "a request carries one address of at most 64 bytes";

/// tonic's OUT_OF_RANGE for a message over its decode limit, as
/// RESOURCE_EXHAUSTED (what gRPC's status table says for a received message
/// larger than the limit) with `hint`; any other status as it is. Unary
/// requests reach it through `transport` (their error is the response),
/// streamed ones here in the handler (their error is an item).
pub fn oversized_as_exhausted(status: Status, hint: &str) -> Status {
    if status.code() == Code::OutOfRange {
        Status::resource_exhausted(format!("{}; {hint}", status.message()))
    } else {
        status
    }
}
