//! How the GeoService goes on the wire with bounded memory.
//!
//! tonic has one decode limit per service; the geo-service needs two. A
//! LookupBatch may carry `--max-batch` addresses, so its limit follows from
//! that ([`batch_message_limit`]); every other request carries at most one
//! address and gets [`SMALL_MESSAGE_BYTES`]. [`GeoRoutes`] serves the same
//! handlers through two tonic services, one per limit, and routes by path.
//! Batches also pass a gate: at most `--max-concurrent-batches` are decoded
//! and answered at once, up to `--max-queued-batches` more wait for a turn
//! (not decoded; HTTP/2 may hold their bytes, at most the decode limit
//! each), and one beyond that is shed with RESOURCE_EXHAUSTED. A message over its limit is refused from its length
//! prefix, before it is buffered, with RESOURCE_EXHAUSTED (tonic says
//! OUT_OF_RANGE; gRPC's status code table says RESOURCE_EXHAUSTED for a
//! received message larger than the limit).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bangui_proto::geo::v1::geo_service_server::GeoServiceServer;
use bangui_runtime::grpc::{InFlightLimit, InFlightLimitLayer};
use tonic::{Code, Status, body::Body, server::NamedService};
use tower::{Layer, Service};

use crate::{
    api::{GeoApi, ONE_ADDRESS_HINT, oversized_as_exhausted},
    resolve::MAX_INPUT_BYTES,
};

/// Decode limit of every request but LookupBatch: one address (refused
/// past [`MAX_INPUT_BYTES`] with a clear message) and a flag fit many times.
pub const SMALL_MESSAGE_BYTES: usize = 4 * 1024;
/// Encoded size of one LookupBatch item at most: the field tag, a one- or
/// two-byte length and the longest accepted input.
const BATCH_ITEM_BYTES: usize = MAX_INPUT_BYTES + 3;
/// Room for the rest of a batch request (the flag) and a margin.
const BATCH_HEADROOM: usize = 16 * 1024;
/// The largest response: a batch of 10 000 results is about 1.5 MB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

const BATCH_PATH: &str = "/bangui.geo.v1.GeoService/LookupBatch";

/// The decode limit of a LookupBatch of `max_batch` addresses: 10 000 (the
/// default) gives 686 KiB.
pub fn batch_message_limit(max_batch: usize) -> usize {
    max_batch.saturating_mul(BATCH_ITEM_BYTES).saturating_add(BATCH_HEADROOM)
}

/// The GeoService with a decode limit per method and a gate on batches.
#[derive(Debug, Clone)]
pub struct GeoRoutes {
    batch: InFlightLimit<GeoServiceServer<GeoApi>>,
    other: GeoServiceServer<GeoApi>,
    /// What an oversized batch is told.
    batch_hint: Arc<str>,
}

impl GeoRoutes {
    pub fn new(api: GeoApi, max_batch: usize, max_concurrent_batches: usize, max_queued_batches: usize) -> Self {
        let batch_hint = format!(
            "the ips of one LookupBatch are at most {max_batch} addresses of at most {MAX_INPUT_BYTES} bytes \
             (--max-batch): split the batch or use LookupStream"
        );
        let batch = GeoServiceServer::new(api.clone())
            .max_decoding_message_size(batch_message_limit(max_batch))
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        let gate =
            InFlightLimitLayer::named(max_concurrent_batches, "LookupBatch calls in flight and the waiting line full")
                .with_queue(max_queued_batches);
        let other = GeoServiceServer::new(api)
            .max_decoding_message_size(SMALL_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        Self { batch: gate.layer(batch), other, batch_hint: batch_hint.into() }
    }
}

impl NamedService for GeoRoutes {
    const NAME: &'static str = <GeoServiceServer<GeoApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for GeoRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both inner services are always ready (tonic's and the gate's
        // poll_ready only pass readiness through).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (response, hint) = if request.uri().path() == BATCH_PATH {
            (self.batch.call(request), self.batch_hint.clone())
        } else {
            (self.other.call(request), Arc::from(ONE_ADDRESS_HINT))
        };
        Box::pin(async move {
            let response = response.await?;
            // A unary request over its limit ends in a trailers-only
            // response: its status is in the headers.
            match Status::from_header_map(response.headers()) {
                Some(status) if status.code() == Code::OutOfRange => {
                    Ok(oversized_as_exhausted(status, &hint).into_http())
                }
                _ => Ok(response),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_limit_fits_a_full_batch_of_the_longest_addresses_and_little_more() {
        use prost::Message;
        let longest = "0000:0000:0000:0000:0000:ffff:255.255.255.255".to_string();
        let request = bangui_proto::geo::v1::LookupBatchRequest { ips: vec![longest; 10_000], allow_remote: true };
        let limit = batch_message_limit(10_000);
        assert!(request.encoded_len() < limit, "{} >= {limit}", request.encoded_len());
        assert!(limit < 1024 * 1024, "{limit}");
    }
}
