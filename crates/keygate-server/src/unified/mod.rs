//! The unified endpoint, in OpenAI's wire format: any OpenAI SDK works with
//! `base_url=<keygate>/v1` and a keygate token as its API key.
//!
//! - `POST /v1/chat/completions` ([`chat`]): `model` picks the provider
//!   ([`keygate_core::translate::route`]); the call then runs the passthrough's stages
//!   (`proxy::{body, upstream, relay, sse, settle}`) with the same resolution chain,
//!   limits, metering and `x-keygate-*` headers, plus `x-keygate-provider`. OpenAI and
//!   OpenRouter are passed through (only `model` rewritten); Anthropic and Gemini are
//!   translated ([`keygate_core::translate::anthropic`], [`keygate_core::translate::gemini`],
//!   streams through [`stream::Translating`]); Bedrock through Converse ([`bedrock`],
//!   event streams through [`stream::Frames`]).
//! - `POST /v1/embeddings`: passed through to OpenAI-shaped providers (OpenAI, OpenRouter,
//!   Voyage); Gemini's `batchEmbedContents` translated ([`embed`]).
//! - `GET /v1/models` ([`models`]): the `provider/model` ids the caller can use now.
//! - Every error on `/v1/*` in OpenAI's shape ([`error::OpenAiError`]).
//!
//! Not for: rules (the gateway decides who pays) or translation itself (pure, in core).

mod bedrock;
mod chat;
mod embed;
mod error;
mod models;
mod stream;

use crate::extract::{presented_credential, source_addr};
use crate::{ApiError, AppState};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use keygate_service::Principal;

pub(crate) use error::OpenAiError;

/// What the unified endpoint can do with a provider's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaks {
    /// OpenAI's own format: passed through, `model` rewritten; chat at this path.
    OpenAi { chat: &'static str, embeddings: Option<&'static str> },
    /// Anthropic Messages: translated.
    Anthropic,
    /// AWS Bedrock Converse / ConverseStream: translated, signed with SigV4.
    Bedrock,
    /// Gemini `generateContent` / `streamGenerateContent`: translated.
    Gemini,
}

/// The providers the unified endpoint serves, and how. Others answer
/// `501 not_implemented`.
pub(crate) fn speaks(provider: &str) -> Option<Speaks> {
    match provider {
        "openai" => Some(Speaks::OpenAi { chat: "v1/chat/completions", embeddings: Some("v1/embeddings") }),
        "openrouter" => Some(Speaks::OpenAi { chat: "api/v1/chat/completions", embeddings: Some("api/v1/embeddings") }),
        "voyage" => Some(Speaks::OpenAi { chat: "", embeddings: Some("v1/embeddings") }),
        "anthropic" => Some(Speaks::Anthropic),
        "bedrock" => Some(Speaks::Bedrock),
        "gemini" => Some(Speaks::Gemini),
        _ => None,
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/embeddings", post(chat::embeddings))
        .route("/v1/models", get(models::list))
        .route("/v1/{*rest}", any(not_found))
}

async fn not_found(uri: Uri) -> Response {
    OpenAiError(ApiError::not_found(format!(
        "no route for {}: the unified API has POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models",
        uri.path()
    )))
    .into_response()
}

/// The caller, from the token the OpenAI SDK sends as its API key.
pub(crate) async fn authenticate(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let credential = presented_credential(parts).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send a keygate token as the OpenAI SDK's api_key")
    })?;
    Ok(state.services.authenticate(credential, source_addr(parts)).await?)
}
