//! `/api/v1/sessions`: sandbox sessions, short-lived `proxy`-only tokens limited to some
//! providers and to their own caps (the rules are keygate-service's `sandbox`).

use crate::dto::{CreateSession, CreatedSession, Problem, SessionInfo, SessionList};
use crate::extract::{ApiJson, ApiPath, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::TokenId;
use keygate_service::sandbox::SessionRequest;
use uuid::Uuid;

/// Mints a session for a sandbox (needs the `keys` scope). The `token` in the answer is
/// shown this once; it works only on `/proxy/{provider}/...` and `/v1/...`, for the
/// providers named, until `expires_at` or until revoked, within the caps.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "sessions", request_body = CreateSession, security(("bearer" = [])), responses(
    (status = 201, body = CreatedSession),
    (status = 403, description = "forbidden (no `keys` scope, or a session's own token)", body = Problem),
    (status = 422, description = "invalid_request (name, providers, ttl_seconds, caps), unknown_provider", body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<CreatedSession>), ApiError> {
    let request = SessionRequest {
        name: body.name,
        providers: body.providers,
        ttl_seconds: body.ttl_seconds,
        max_requests: body.max_requests,
        max_tokens: body.max_tokens,
    };
    let issued = s.services.create_session(&p, request).await?;
    let (token, grant) = (&issued.session.token, &issued.session.grant);
    let created = CreatedSession {
        id: token.id.as_uuid(),
        name: token.name.clone(),
        token: issued.secret.expose().to_owned(),
        providers: grant.providers.clone(),
        expires_at: token.expires_at.unwrap_or(token.created_at),
        max_requests: grant.max_requests,
        max_tokens: grant.max_tokens,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Your live sessions, with what each has spent.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, body = SessionList), (status = 401, body = Problem), (status = 403, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<SessionList>, ApiError> {
    let sessions = s.services.list_sessions(&p).await?;
    Ok(Json(SessionList { sessions: sessions.iter().map(SessionInfo::from).collect() }))
}

/// Ends one of your sessions at once, on every replica.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Revoked"), (status = 404, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn revoke(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    s.services.revoke_session(&p, TokenId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
