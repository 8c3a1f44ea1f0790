//! keygate's HTTP face: the axum router, problem+json errors, and logging with redaction.
//!
//! [`router`] builds the app from an [`AppState`] ([`metrics_router`], `/metrics` alone
//! for a listener of its own); [`serve`] runs it on a listener the caller bound, until
//! the shutdown future resolves. Tests bind port 0 and run many servers side by side.
//!
//! Not for: business rules (they live in `keygate-service`) or SQL (in `keygate-store`).
//! Handlers parse, call one service function, and render.

pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
mod pages;
mod proxy;
mod routes;
mod serve;
pub mod state;
pub mod telemetry;
mod unified;

pub use error::ApiError;
pub use routes::openapi;
pub use state::AppState;

use axum::Router;

/// The whole HTTP application. `/metrics` is here for a super-admin's credential with the
/// `metrics` scope, unless the state says it is served apart ([`metrics_router`]): then
/// it is absent, a 404 like any unknown path.
pub fn router(state: AppState) -> Router {
    let app = routes::router().merge(pages::router()).merge(unified::router());
    let app = if state.metrics_apart { app } else { app.route("/metrics", axum::routing::get(metrics::scoped)) };
    // Every answer keygate writes itself (pages, API, errors) carries the security
    // headers; a provider's relayed answer (routed after the layer) is left as it came.
    app.fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::map_response(pages::security_headers))
        .route("/proxy/{provider}/{*path}", axum::routing::any(proxy::proxy))
        .with_state(state)
}

/// `/metrics` alone, without authentication, for a listener of its own (`metrics_listen`)
/// that only the monitoring network reaches. Every other path is a 404.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

pub use pages::PagesOptions;
pub use proxy::BodyBudget;
pub use serve::{effective_max_connections, raise_fd_limit, serve, App, ConnectionLimits};
