//! Liveness and readiness. `/healthz` says the process serves; `/readyz` says it can do
//! its job, which needs the database.

use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Serving", body = Object)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve requests: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready", body = Object),
    (status = 503, description = "The database does not answer", body = crate::dto::Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.services.readiness().await {
        Ok(database) => Ok(Json(json!({ "status": "ready", "database": database }))),
        Err(err) => {
            tracing::warn!(%err, "readiness check: database unreachable");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unreachable", "the database does not answer"))
        }
    }
}
