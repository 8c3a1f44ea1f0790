//! `/api/v1/auth/login` and `/api/v1/me`.

use crate::dto::{LoggedIn, Login, Me, Problem, UserInfo, WorkspaceInfo};
use crate::extract::{source_addr, ApiJson, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::request::Parts;
use axum::Json;
use keygate_vault::SecretText;
use secrecy::ExposeSecret;

/// Email and password for a short-lived keygate token (12 hours). Attempts are throttled
/// per account and per source address.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "session", request_body = Login, responses(
    (status = 200, body = LoggedIn), (status = 401, description = "unauthenticated", body = Problem),
    (status = 429, description = "rate_limited: too many attempts for the account or from the address (Retry-After)", body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn login(
    State(s): State<AppState>,
    parts: Parts,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<LoggedIn>, ApiError> {
    let password = SecretText::new(body.password.expose_secret().to_owned());
    let (user, issued) = s.services.login(&body.email, &password, source_addr(&parts)).await?;
    Ok(Json(LoggedIn {
        token: issued.secret.expose().to_owned(),
        expires_at: issued.token.expires_at,
        user: UserInfo::from(&user),
    }))
}

/// Who you are and which workspace you act in.
#[utoipa::path(get, path = "/api/v1/me", tag = "session", security(("bearer" = [])), responses((status = 200, body = Me), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn me(Auth(p): Auth) -> Json<Me> {
    Json(Me { user: UserInfo::from(&*p.user), workspace: WorkspaceInfo::from(&*p.workspace), role: p.role })
}
