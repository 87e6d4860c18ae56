//! Request gates in front of a gRPC service: the service is wrapped, so
//! health and reflection (separate services) are never gated, and a new
//! RPC of a gated service is gated without anyone remembering to.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::{Status, body::Body, server::NamedService};
use tower::Service;

/// Decides whether a request may reach the service. It may add request
/// extensions (e.g. the caller's session) for the handlers.
pub trait Gate: Clone + Send + Sync + 'static {
    fn admit(&self, request: &mut http::Request<Body>) -> impl Future<Output = Result<(), Status>> + Send;
}

/// `inner` behind `gate`.
#[derive(Debug, Clone)]
pub struct Gated<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> Gated<S, G> {
    pub fn new(inner: S, gate: G) -> Self {
        Self { inner, gate }
    }
}

impl<S: NamedService, G> NamedService for Gated<S, G> {
    const NAME: &'static str = S::NAME;
}

impl<S, G> Service<http::Request<Body>> for Gated<S, G>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The ready inner service goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            match gate.admit(&mut request).await {
                Ok(()) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer_token(request: &http::Request<Body>) -> Option<&str> {
    let value = request.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// One shared secret, compared in constant time (service-to-service).
#[derive(Debug, Clone)]
pub struct SharedToken(std::sync::Arc<SecretString>);

impl SharedToken {
    pub fn new(token: SecretString) -> Self {
        Self(std::sync::Arc::new(token))
    }
}

impl Gate for SharedToken {
    async fn admit(&self, request: &mut http::Request<Body>) -> Result<(), Status> {
        let Some(presented) = bearer_token(request) else {
            return Err(Status::unauthenticated("missing `authorization: Bearer <token>` metadata"));
        };
        if bool::from(presented.as_bytes().ct_eq(self.0.expose_secret().as_bytes())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}
