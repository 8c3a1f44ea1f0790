//! Liveness and readiness. `/healthz` says the process serves; `/readyz` says it can do
//! its job, which needs the database and the limits backend (Redis or PostgreSQL when one
//! is configured): when either does not answer it is 503 naming which one. With
//! `limits.fail_open` a limits backend that is down does not make keygate unready (calls
//! are served anyway); the answer then says `"limits": "<backend> (down, failing open)"`.

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

/// The process can serve requests: the database and the limits backend answer.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready: `{\"status\": \"ready\", \"database\": \"postgres\", \"limits\": \"redis\"}`", body = Object),
    (status = 503, description = "The database (`database_unreachable`) or the limits backend (`limits_unavailable`) does not answer", body = crate::dto::Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let services = &state.services;
    let database = match services.readiness().await {
        Ok(database) => database,
        Err(err) => {
            tracing::warn!(%err, "readiness check: database unreachable");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unreachable",
                "the database does not answer",
            ));
        }
    };
    let limits = match services.limits_readiness().await {
        Ok(backend) => backend.to_owned(),
        Err(err) if services.limits_fail_open() => {
            tracing::warn!(%err, "readiness check: limits backend unreachable (failing open)");
            format!("{} (down, failing open)", services.limits_backend())
        }
        Err(err) => {
            tracing::warn!(%err, "readiness check: limits backend unreachable");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "limits_unavailable",
                format!(
                    "the limits backend ({}) does not answer; the database ({database}) does",
                    services.limits_backend()
                ),
            ));
        }
    };
    Ok(Json(json!({ "status": "ready", "database": database, "limits": limits })))
}
