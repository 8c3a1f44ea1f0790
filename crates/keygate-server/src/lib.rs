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
mod serve;
pub mod state;
pub mod telemetry;

pub use error::ApiError;
pub use routes::openapi;
pub use state::AppState;

use axum::Router;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    routes::router()
        .route("/proxy/{provider}/{*path}", axum::routing::any(proxy::proxy))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

pub use proxy::BodyBudget;
pub use serve::{effective_max_connections, raise_fd_limit, serve, ConnectionLimits};
