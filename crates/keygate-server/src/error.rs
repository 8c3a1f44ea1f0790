//! [`ApiError`]: the one error every handler returns. It owns the HTTP status, renders
//! RFC 9457 `application/problem+json` with a stable machine `code`, and logs internal
//! causes instead of showing them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_service::ServiceError;
use keygate_vault::redact::scrub;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Seconds, for `Retry-After` on 429s.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), retry_after: None }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// A failure the caller cannot fix: logged in full, shown as a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "keygate hit an internal error; the operator can find it in the logs",
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let status = match &err {
            ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
            ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::InvalidKeyFormat(_)
            | ServiceError::ProviderRejectedKey(_)
            | ServiceError::UnknownProvider(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::CredentialLimit(_) => StatusCode::CONFLICT,
            ServiceError::NoCredential(_) | ServiceError::ByokNotInPlan(_) => StatusCode::FORBIDDEN,
            ServiceError::QuotaExhausted { retry_after_secs, .. }
            | ServiceError::RateLimited { retry_after_secs, .. } => {
                let retry = *retry_after_secs;
                let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, err.code(), err.to_string());
                e.retry_after = Some(retry);
                return e;
            }
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::WorkspaceInactive { .. } => StatusCode::FORBIDDEN,
            ServiceError::DatabaseUnreachable(_) => {
                tracing::warn!(error = %err, "the database is unreachable");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    err.code(),
                    "the database does not answer; try again shortly",
                );
            }
            ServiceError::LimitsUnavailable(_) => {
                tracing::warn!(error = %err, "the limits backend is unreachable: refusing a call that needs a limit");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    err.code(),
                    "the limits backend does not answer, so calls on shared keys are refused for now; calls with \
                     your own key still work; try again shortly",
                );
            }
            ServiceError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ServiceError::EndpointNotAllowed(_) => StatusCode::FORBIDDEN,
            ServiceError::UpstreamAuthFailed(_) => StatusCode::BAD_GATEWAY,
            ServiceError::PromptBlocked(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::ProviderNotInSession(_) => StatusCode::FORBIDDEN,
            // A session's caps last its life: there is no time to retry after.
            ServiceError::SessionCapReached(_) => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::MasterKeyMismatch(_)
            | ServiceError::MasterKeyStillInUse(_)
            | ServiceError::Undecryptable { .. }
            | ServiceError::Interrupted(_)
            | ServiceError::Store(_)
            | ServiceError::Vault(_) => return Self::internal(&err),
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = scrub(&self.detail);
        let title = self.status.canonical_reason().unwrap_or("Error");
        let problem = Problem {
            kind: format!("https://keygate.dev/problems/{}", self.code),
            title,
            status: self.status.as_u16(),
            code: self.code,
            detail: &detail,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
