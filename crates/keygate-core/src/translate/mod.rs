//! Translation between OpenAI's chat-completions wire format (what the unified `/v1`
//! endpoint speaks) and each provider's own, as pure functions over JSON: no I/O.
//!
//! - [`route`]: which provider and model a unified call's `model` names
//!   (`provider/model`, a bare catalog model id, a bare provider id, `auto`);
//! - [`anthropic`]: an OpenAI chat request to an Anthropic Messages request, a Messages
//!   answer to a chat completion, and Messages SSE events to `chat.completion.chunk`s
//!   (a small state machine, [`anthropic::Stream`]);
//! - [`gemini`]: the same for Gemini's `generateContent` / `streamGenerateContent`
//!   ([`gemini::Stream`]); [`gemini_embed`]: OpenAI embeddings to and from Gemini's
//!   `batchEmbedContents`;
//! - [`bedrock`]: the same for AWS Bedrock's Converse / ConverseStream (events decoded
//!   from AWS event-stream frames by the caller, [`bedrock::Stream`]).
//!
//! Parameters a provider cannot honour are dropped or refused by a documented rule
//! (README, "One API for every model"), never silently changed in meaning; a refusal is
//! a [`Refused`] the server answers `400` with.
//!
//! Not for: sending anything, or deciding who pays (the gateway does).

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod gemini_embed;
mod openai;
mod route;

#[cfg(test)]
mod gemini_tests;
#[cfg(test)]
mod tests;

pub use route::{route, Route};

/// A unified request keygate will not translate, with the reason (shown to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "code", "param"}}`.
pub fn openai_error(message: &str, kind: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}
