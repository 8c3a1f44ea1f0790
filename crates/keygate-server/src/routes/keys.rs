//! `/api/v1/keys`: the caller's stored credentials.

use crate::dto::{CreateKey, KeyDeleteQuery, KeyList, KeyListQuery, KeyObject, PatchKey, Problem, PutSecret};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::*;
use keygate_service::credentials::{CredentialPatch, ListScope, NewCredential};
use uuid::Uuid;

/// Your keys and your workspace's shared keys (or one scope of them).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(KeyListQuery), security(("bearer" = [])), responses(
    (status = 200, body = KeyList), (status = 401, body = Problem), (status = 403, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<KeyListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let which = q.scope.map_or(ListScope::Mine, ListScope::Only);
    let keys = s.services.list_credentials(&p, which).await?;
    Ok(Json(KeyList { keys: keys.iter().map(KeyObject::from).collect() }))
}

/// Stores a key: trimmed, format-checked, validated live, sealed. Adding a key for a
/// provider you already have a key for replaces it.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = CreateKey, security(("bearer" = [])), responses(
    (status = 201, body = KeyObject),
    (status = 409, description = "credential_limit_reached", body = Problem),
    (status = 422, description = "invalid_key_format, provider_rejected_key, unknown_provider", body = Problem),
    (status = 403, description = "forbidden, workspace_inactive", body = Problem)
))]
#[tracing::instrument(skip_all, fields(provider))]
pub(crate) async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<KeyObject>), ApiError> {
    tracing::Span::current().record("provider", body.provider.as_str());
    let input = NewCredential {
        provider: body.provider,
        name: body.name,
        secret: body.secret.into(),
        model: body.model,
        scope: body.scope,
        workspace_id: body.workspace_id.map(WorkspaceId::from_uuid),
        operator_shared: body.operator_shared,
    };
    let credential = s.services.create_credential(&p, input).await?;
    Ok((StatusCode::CREATED, Json(KeyObject::from(&credential))))
}

/// One key.
#[utoipa::path(get, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 200, body = KeyObject), (status = 404, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn get(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<KeyObject>, ApiError> {
    let credential = s.services.get_credential(&p, CredentialId::from_uuid(id)).await?;
    Ok(Json(KeyObject::from(&credential)))
}

/// Renames a key, sets or clears its model override, enables or disables it.
#[utoipa::path(patch, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = Uuid, Path)), request_body = PatchKey, security(("bearer" = [])), responses(
    (status = 200, body = KeyObject), (status = 404, body = Problem), (status = 409, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn update(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchKey>,
) -> Result<Json<KeyObject>, ApiError> {
    let patch = CredentialPatch {
        name: body.name,
        model: body.model,
        status: body.status,
        operator_shared: body.operator_shared,
    };
    let credential = s.services.update_credential(&p, CredentialId::from_uuid(id), patch).await?;
    Ok(Json(KeyObject::from(&credential)))
}

/// Deletes a key. The audit log keeps its history.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Deleted"), (status = 404, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    s.services.delete_credential(&p, CredentialId::from_uuid(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a provider's key: yours (`scope=user`, the default) or your workspace's shared
/// one (`scope=workspace`, for its owners and admins). Audited like a delete by id.
#[utoipa::path(delete, path = "/api/v1/keys", tag = "keys", params(KeyDeleteQuery), security(("bearer" = [])), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "invalid_request (no provider, or a scope other than user or workspace), unknown_provider", body = Problem),
    (status = 403, description = "forbidden (a workspace key without the owner or admin role)", body = Problem),
    (status = 404, description = "not_found: there is no such key", body = Problem)
))]
#[tracing::instrument(skip_all, fields(provider))]
pub(crate) async fn delete_by_provider(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<KeyDeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let bad = |detail: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", detail);
    let provider = q.provider.filter(|p| !p.trim().is_empty()).ok_or_else(|| {
        bad("name the provider whose key to remove: DELETE /api/v1/keys?provider=openai (or DELETE /api/v1/keys/{id})")
    })?;
    tracing::Span::current().record("provider", provider.as_str());
    let scope = match q.scope.as_deref() {
        None | Some("user") => CredentialScope::User,
        Some("workspace") => CredentialScope::Workspace,
        Some(_) => return Err(bad("scope: use `user` (your key, the default) or `workspace` (your workspace's)")),
    };
    match s.services.delete_credentials_of_provider(&p, &provider, scope).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e @ keygate_service::ServiceError::UnknownProvider(_)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces a key's secret, keeping its id, settings and usage.
#[utoipa::path(put, path = "/api/v1/keys/{id}/secret", tag = "keys", params(("id" = Uuid, Path)), request_body = PutSecret, security(("bearer" = [])), responses(
    (status = 200, body = KeyObject), (status = 404, body = Problem), (status = 422, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn replace_secret(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PutSecret>,
) -> Result<Json<KeyObject>, ApiError> {
    let credential = s.services.replace_secret(&p, CredentialId::from_uuid(id), body.secret.into()).await?;
    Ok(Json(KeyObject::from(&credential)))
}

/// Validates a stored key against its provider again and records the result.
#[utoipa::path(post, path = "/api/v1/keys/{id}/test", tag = "keys", params(("id" = Uuid, Path)), security(("bearer" = [])), responses(
    (status = 200, body = KeyObject), (status = 404, body = Problem), (status = 403, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn test(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<KeyObject>, ApiError> {
    let credential = s.services.test_credential(&p, CredentialId::from_uuid(id)).await?;
    Ok(Json(KeyObject::from(&credential)))
}
