//! `/api/v1/tokens`: the caller's keygate API tokens.

use crate::dto::{CreateToken, CreatedToken, Problem, TokenInfo, TokenList};
use crate::extract::{ApiJson, ApiPath, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::Scope;
use keygate_core::{TokenId, WorkspaceId};
use keygate_service::auth::TokenRequest;
use uuid::Uuid;

/// Your tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", security(("bearer" = [])), responses((status = 200, body = TokenList), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<TokenList>, ApiError> {
    let tokens = s.services.list_tokens(&p).await?;
    Ok(Json(TokenList { tokens: tokens.iter().map(TokenInfo::from).collect() }))
}

/// Creates a token. The `token` in the answer is shown this once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken, security(("bearer" = [])), responses(
    (status = 201, body = CreatedToken), (status = 422, body = Problem), (status = 403, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let request = TokenRequest {
        name: body.name,
        scopes: body.scopes.map(|names| names.iter().map(|n| parse_scope(n)).collect()).transpose()?,
        expires_at: body.expires_at,
        workspace_id: body.workspace_id.map(WorkspaceId::from_uuid).or(Some(p.workspace.id)),
    };
    let issued = s.services.create_token(&p, request).await?;
    let created = CreatedToken {
        id: issued.token.id.as_uuid(),
        name: issued.token.name.clone(),
        token: issued.secret.expose().to_owned(),
        scopes: issued.token.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        expires_at: issued.token.expires_at,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes one of your tokens at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Revoked"), (status = 404, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn revoke(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    s.services.revoke_token(&p, TokenId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_scope(name: &str) -> Result<Scope, ApiError> {
    name.parse().map_err(|_| {
        let all: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("scopes: `{name}` is not one of {}", all.join(", ")),
        )
    })
}
