//! `/api/v1/admin/...`: super-admin operations. The service checks the caller's rights.

use crate::dto::*;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::guard::PromptGuard;
use keygate_core::policy::Policy;
use keygate_core::*;
use keygate_service::admin::AuditQuery as AuditFilter;
use keygate_service::credentials::ListScope;
use keygate_service::guard::WorkspaceGuard;
use uuid::Uuid;

/// Every workspace.
#[utoipa::path(get, path = "/api/v1/admin/workspaces", tag = "admin", security(("bearer" = [])), responses((status = 200, body = WorkspaceList), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn workspaces(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<WorkspaceList>, ApiError> {
    let all = s.services.admin_workspaces(&p).await?;
    Ok(Json(WorkspaceList { workspaces: all.iter().map(WorkspaceInfo::from).collect() }))
}

/// Creates a workspace.
#[utoipa::path(post, path = "/api/v1/admin/workspaces", tag = "admin", request_body = CreateWorkspace, security(("bearer" = [])), responses((status = 201, body = WorkspaceInfo), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_workspace(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceInfo>), ApiError> {
    let ws = s.services.admin_create_workspace(&p, &body.name).await?;
    Ok((StatusCode::CREATED, Json(WorkspaceInfo::from(&ws))))
}

/// One workspace.
#[utoipa::path(get, path = "/api/v1/admin/workspaces/{id}", tag = "admin", params(("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = WorkspaceInfo), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn workspace(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    let ws = s.services.admin_workspace(&p, WorkspaceId::from_uuid(id)).await?;
    Ok(Json(WorkspaceInfo::from(&ws)))
}

/// Changes a workspace's status. Anything but `active` revokes its keys at once;
/// `deleted` destroys its data key, so its keys can never be opened again.
#[utoipa::path(patch, path = "/api/v1/admin/workspaces/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = PatchWorkspace, security(("bearer" = [])), responses(
    (status = 200, body = WorkspaceInfo), (status = 404, body = Problem), (status = 409, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn update_workspace(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchWorkspace>,
) -> Result<Json<WorkspaceInfo>, ApiError> {
    let ws = s.services.admin_set_workspace_status(&p, WorkspaceId::from_uuid(id), body.status).await?;
    Ok(Json(WorkspaceInfo::from(&ws)))
}

/// Adds a user to a workspace, or changes their role there.
#[utoipa::path(post, path = "/api/v1/admin/workspaces/{id}/members", tag = "admin", params(("id" = Uuid, Path)), request_body = AddMember, security(("bearer" = [])), responses(
    (status = 200, body = MemberInfo), (status = 404, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn add_member(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<Json<MemberInfo>, ApiError> {
    let m =
        s.services.admin_add_member(&p, WorkspaceId::from_uuid(id), UserId::from_uuid(body.user_id), body.role).await?;
    Ok(Json(MemberInfo { workspace_id: m.workspace_id.as_uuid(), user_id: m.user_id.as_uuid(), role: m.role }))
}

/// Every user.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])), responses((status = 200, body = UserList), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn users(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<UserList>, ApiError> {
    let all = s.services.admin_users(&p).await?;
    Ok(Json(UserList { users: all.iter().map(UserInfo::from).collect() }))
}

/// Sets a user's tier or super-admin flag.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", params(("id" = Uuid, Path)), request_body = PatchUser, security(("bearer" = [])), responses(
    (status = 200, body = UserInfo), (status = 404, body = Problem), (status = 422, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn update_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PatchUser>,
) -> Result<Json<UserInfo>, ApiError> {
    let user = s.services.admin_update_user(&p, UserId::from_uuid(id), body.tier, body.super_admin).await?;
    Ok(Json(UserInfo::from(&user)))
}

/// The operator's own keys (create them with `POST /api/v1/keys` and `"scope": "operator"`).
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])), responses((status = 200, body = KeyList), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn operator_keys(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<KeyList>, ApiError> {
    let keys = s.services.list_credentials(&p, ListScope::Only(CredentialScope::Operator)).await?;
    Ok(Json(KeyList { keys: keys.iter().map(KeyObject::from).collect() }))
}

/// The policy: tiers and limits, demo allowance, provider priority, key limits.
#[utoipa::path(get, path = "/api/v1/admin/settings", tag = "admin", security(("bearer" = [])), responses((status = 200, body = Object), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn settings(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Policy>, ApiError> {
    Ok(Json(s.services.admin_policy(&p)?.as_ref().clone()))
}

/// Replaces the policy (send the whole document, as `GET` returns it).
#[utoipa::path(put, path = "/api/v1/admin/settings", tag = "admin", request_body = Object, security(("bearer" = [])), responses(
    (status = 200, body = Object), (status = 422, body = Problem), (status = 403, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn update_settings(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    Ok(Json(s.services.admin_set_policy(&p, body).await?.as_ref().clone()))
}

/// A workspace's prompt guard: its override of the operator's default (`null` if none)
/// and the setting in force.
#[utoipa::path(get, path = "/api/v1/admin/workspaces/{id}/prompt-guard", tag = "admin", params(("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = Object), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn workspace_prompt_guard(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WorkspaceGuard>, ApiError> {
    Ok(Json(s.services.admin_workspace_prompt_guard(&p, WorkspaceId::from_uuid(id)).await?))
}

/// Overrides the operator's prompt guard for one workspace
/// (`{"mode": "block" | "redact" | "off", "kinds": [...]}`).
#[utoipa::path(put, path = "/api/v1/admin/workspaces/{id}/prompt-guard", tag = "admin", params(("id" = Uuid, Path)), request_body = Object, security(("bearer" = [])), responses(
    (status = 200, body = Object), (status = 404, body = Problem), (status = 422, body = Problem)
))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn set_workspace_prompt_guard(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<PromptGuard>,
) -> Result<Json<WorkspaceGuard>, ApiError> {
    Ok(Json(s.services.admin_set_workspace_prompt_guard(&p, WorkspaceId::from_uuid(id), Some(body)).await?))
}

/// Removes a workspace's prompt guard override: the operator's default applies again.
#[utoipa::path(delete, path = "/api/v1/admin/workspaces/{id}/prompt-guard", tag = "admin", params(("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = Object), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(id = %id))]
pub(crate) async fn clear_workspace_prompt_guard(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WorkspaceGuard>, ApiError> {
    Ok(Json(s.services.admin_set_workspace_prompt_guard(&p, WorkspaceId::from_uuid(id), None).await?))
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(AuditQuery), security(("bearer" = [])), responses((status = 200, body = AuditList), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn audit(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = AuditFilter {
        actor_user_id: q.actor_user_id.map(UserId::from_uuid),
        action: q.action.as_deref().map(str::parse).transpose().map_err(|e: keygate_core::UnknownVariant| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.to_string())
        })?,
        target_type: q.target_type,
        target_id: q.target_id,
        workspace_id: q.workspace_id.map(WorkspaceId::from_uuid),
        since: q.since,
        until: q.until,
        limit: Some(q.limit.unwrap_or(100)),
    };
    let events = s.services.admin_audit(&p, filter).await?;
    Ok(Json(AuditList { events: events.iter().map(AuditEventInfo::from).collect() }))
}
