//! keygate's HTTP face: the axum router, problem+json errors, and logging with redaction.
//!
//! [`router`] builds the app from an [`AppState`]; [`serve`] runs it on a listener the
//! caller bound, until the shutdown future resolves. Tests bind port 0 and run many
//! servers side by side.
//!
//! Not for: business rules (they live in `keygate-service`) or SQL (in `keygate-store`).
//! Handlers parse, call one service function, and render.

pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
mod proxy;
mod routes;
pub mod state;
pub mod telemetry;

pub use error::ApiError;
pub use routes::openapi;
pub use state::AppState;

use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    routes::router()
        .route("/proxy/{provider}/{*path}", axum::routing::any(proxy::proxy))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight requests.
/// Accepted connections have Nagle's algorithm off: a streamed chunk goes out as soon as
/// it arrives instead of waiting for the caller's delayed ACK (up to 40 ms).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // The peer address reaches handlers (and the audit log) as `ConnectInfo`.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
