//! Errors on `/v1/*` in OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`,
//! with keygate's stable code in `code`, so the OpenAI SDKs raise them with it.

use crate::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate_core::translate::openai_error;
use keygate_vault::redact::scrub;

/// An [`ApiError`] rendered the way OpenAI renders its errors.
#[derive(Debug)]
pub(crate) struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

/// OpenAI's error `type` for a status.
fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 405 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let body = openai_error(&scrub(&e.detail), kind(e.status), e.code);
        let mut response = (e.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if e.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = e.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
