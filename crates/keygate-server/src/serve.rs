//! Serving the app on a listener, hardened against clients that hold connections open:
//!
//! - a **header timeout**: a connection must deliver a request's headers within it, from
//!   the moment it is accepted and again after each response (hyper's HTTP/1 header-read
//!   timer, which also bounds how long an idle keep-alive connection stays open);
//! - a **body timeout**: a request body must arrive whole within it, counted from when
//!   keygate first waits for it (not the time keygate spends before reading it;
//!   [`Deadline`]), so a client announcing 10 GB and trickling bytes cannot hold a
//!   connection forever;
//! - a **cap on open connections**: past it, a connection is still accepted from a small
//!   overflow pool, answers `/healthz` and `/readyz` normally (so health checks keep
//!   working under a flood) and everything else with `503 too_many_connections`, then
//!   closes; past the overflow pool, new connections are closed at once;
//! - the process's open-file soft limit is raised to its hard limit at start
//!   ([`raise_fd_limit`]), and the cap never exceeds what that limit leaves room for.
//!
//! Not for: what a request means (routes) or who may make it (extractors, services).

use crate::{ApiError, AppState};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::future::Either;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

/// Connections accepted past the cap, to answer health checks and refuse the rest.
const OVERFLOW_CONNECTIONS: usize = 64;
/// Descriptors kept free for everything that is not an accepted connection (database
/// pool, upstream connections, files).
const RESERVED_DESCRIPTORS: u64 = 256;

/// How patient the server is with its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Headers of each request must arrive within this; also an idle keep-alive
    /// connection's lifetime.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this, counted from when keygate first
    /// waits for it.
    pub body_timeout: Duration,
    /// Open client connections at most (see [`raise_fd_limit`] for the ceiling).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(20), body_timeout: Duration::from_secs(60), max_connections: 4096 }
    }
}

/// Raises the open-file soft limit to the hard limit; answers the soft limit in force.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// The connection cap in force: the configured one, or less if the open-file limit
/// leaves room for fewer.
pub fn effective_max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    let room = fd_limit
        .map(|l| l.saturating_sub(RESERVED_DESCRIPTORS + OVERFLOW_CONNECTIONS as u64))
        .map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX));
    configured.min(room).max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
/// Accepted connections have Nagle's algorithm off: a streamed chunk goes out as soon as
/// it arrives instead of waiting for the caller's delayed ACK (up to 40 ms).
pub async fn serve(
    listener: TcpListener,
    app: impl Into<App>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let App { router: app, proxy } = app.into();
    let proxy = proxy.map(Arc::new);
    // A plain request map, not axum's `from_fn`: that clones the router's service and
    // boxes a future on every request.
    let body_timeout = limits.body_timeout;
    let app = app.layer(tower::util::MapRequestLayer::new(move |request| body_deadline(request, body_timeout)));
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not fatal.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (permit, full) = match slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => {
                    tracing::warn!(%peer, "connection refused: the connection cap and its overflow are full");
                    continue; // dropped: closed at once
                }
            },
        };
        let service = match make.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let io = TokioIo::new(tcp);
        if full {
            http.keep_alive(false);
            let service =
                TowerToHyperService::new(tower::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { overflowing(service, request.map(Body::new)).await }
                }));
            let connection = graceful.watch(http.serve_connection(io, service));
            tokio::spawn(async move {
                let _ = connection.await;
                drop(permit);
            });
        } else {
            // Proxied calls go straight to the proxy (what the router would do with
            // them, without its matching, parameters and boxed service on every call);
            // everything else through the router.
            let proxy = proxy.clone();
            let service = TowerToHyperService::new(tower::service_fn(move |r: Request<hyper::body::Incoming>| {
                let request = r.map(Body::new);
                match &proxy {
                    Some(state) if crate::proxy::routes_here(request.uri().path()) => {
                        let state = Arc::clone(state);
                        let request = body_deadline(request, body_timeout);
                        Either::Left(async move {
                            Ok::<_, std::convert::Infallible>(crate::proxy::handle(&state, Some(peer), request).await)
                        })
                    }
                    _ => Either::Right(service.clone().oneshot(request)),
                }
            }));
            let connection = graceful.watch(http.serve_connection(io, service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
                drop(permit);
            });
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What [`serve`] serves: a router and, for keygate's own application, the state its
/// proxy route runs with, so that proxied calls skip the router (see [`App::new`]).
#[derive(Debug)]
pub struct App {
    router: Router,
    proxy: Option<AppState>,
}

impl App {
    /// keygate's whole application ([`crate::router`]), its proxy route taken straight
    /// from the connection: the same handler, the same paths
    /// (`/proxy/{provider}/{*path}`), without a router's work on every proxied call.
    pub fn new(state: AppState) -> Self {
        Self { router: crate::router(state.clone()), proxy: Some(state) }
    }

    /// Whether a request for `path` goes straight to the proxy (every other path goes
    /// through the router, whose proxy route takes a few odd ones too).
    pub fn takes(path: &str) -> bool {
        crate::proxy::routes_here(path)
    }
}

impl From<Router> for App {
    /// A router served as it is (the metrics listener, tests).
    fn from(router: Router) -> Self {
        Self { router, proxy: None }
    }
}

/// A request on a connection accepted past the cap: health checks are answered, the rest
/// is refused clearly.
async fn overflowing<S>(service: S, request: Request) -> Result<Response, std::convert::Infallible>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    if matches!(request.uri().path(), "/healthz" | "/readyz") {
        return service.oneshot(request).await;
    }
    let mut refused = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "keygate has as many open connections as it is configured to serve; try again shortly",
    )
    .into_response();
    refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    refused.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(refused)
}

/// Gives every request body a deadline (see [`Deadline`]). A request without a body
/// costs nothing.
fn body_deadline(request: Request, limit: Duration) -> Request {
    use axum::body::HttpBody;
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| Body::new(Deadline { inner: body, limit, sleep: None }))
}

/// A request body that fails once its deadline passes before it has arrived whole. The
/// clock starts the first time the body is waited for: a body that came with its
/// headers (most API calls) never sets a timer.
struct Deadline {
    inner: Body,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a body past its deadline ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimedOut;

impl axum::body::HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let limit = self.limit;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether reading a body failed because of its deadline.
pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTimedOut>() {
            return true;
        }
        source = e.source();
    }
    false
}
