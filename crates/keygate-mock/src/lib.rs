//! keygate-mock: a fake upstream provider for keygate's tests and benchmarks, on
//! 127.0.0.1. It speaks enough of each provider's dialect for keygate and the official
//! SDKs to work against it unchanged:
//!
//! - OpenAI: `GET /v1/models`, `POST /v1/chat/completions` (and OpenRouter's
//!   `/api/v1/chat/completions`), streamed or not, with usage in the final chunk when
//!   `stream_options.include_usage` asks; `POST /v1/embeddings` (one deterministic
//!   vector per input, `dimensions`, `encoding_format: "base64"`; Voyage's too);
//! - Anthropic: `GET /v1/models`, `POST /v1/messages`, streamed (`message_start` /
//!   `message_delta` usage) or not; a request offering `tools` gets a text block and one
//!   `tool_use` block per tool (inputs made from their schemas, streamed as
//!   `input_json_delta` pieces), and a request ending in a `tool_result` gets text;
//! - Gemini: `POST /v1beta/models/{model}:generateContent` and
//!   `:streamGenerateContent` (SSE, as with `alt=sse`: one event per piece of text) with
//!   `usageMetadata`; a request declaring functions gets a text part and one
//!   `functionCall` part per function (arguments made from its schema), and a request
//!   ending in `functionResponse` parts gets text; `:batchEmbedContents` and
//!   `:embedContent` (deterministic vectors, `outputDimensionality`, no token counts);
//! - GitHub: `GET /user` (`{"login": …}`, or 401 `{"message": "Bad credentials", …}`)
//!   for calls carrying `x-github-api-version`; git's smart HTTP
//!   (`/<owner>/<repo>.git/info/refs`, `git-upload-pack`, `git-receive-pack`) served by
//!   `git http-backend` over the bare repositories under `git_root`, for a request whose
//!   Basic auth is `x-access-token:<valid key>` (see `git`);
//! - anything else: a generic JSON API that takes its key as a bearer token, a header,
//!   or a `key=` / `access_token=` query parameter (Mapbox, Google Maps, MapTiler, Resend);
//! - AWS Bedrock: Converse, ConverseStream (event-stream frames), InvokeModel (and its
//!   stream), for requests whose SigV4 signature verifies (see `bedrock`);
//! - OAuth2 client credentials: `POST /oauth/token` and
//!   `/auth/realms/main/protocol/openid-connect/token` (Sentinel Hub's path);
//! - an OpenID Connect issuer at `/oidc` (discovery, JWKS, authorize, token) for
//!   keygate's single sign-on, with knobs for every refusal (see `oidc`).
//!
//! Which keys are valid, latency, token counts and faults (status codes, slow answers,
//! a reset mid-stream, malformed SSE) are configurable, also at run time through
//! `/__mock/config`. Every request is recorded with the credential it carried, so tests
//! can prove what keygate injected. Invalid keys get the provider's own error body, which
//! (like OpenAI's) echoes the key, so tests can check keygate scrubs relayed errors.
//!
//! Not for: production, or anything off loopback.

mod bedrock;
mod config;
mod dialects;
mod echo;
mod embeddings;
mod git;
mod oidc;
mod server;

pub use bedrock::AwsCredential;
pub use config::{Fault, MockConfig, OAuthClient};
pub use oidc::{OidcBehaviour, OidcUser};
pub use server::{router, serve, MockProvider, Recorded, Shared};

/// `credential` as a hostile provider would echo it (see `Fault::Echo`), for tests.
pub fn encode_echo(credential: &str, encoding: &str) -> String {
    echo::encode(credential, encoding)
}
