//! What the mock accepts and how it misbehaves.

use serde::{Deserialize, Serialize};

/// An OAuth2 client the token endpoint accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
}

/// A way to fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Answer with this status (429 comes with `retry-after: 1`) and the dialect's error body.
    Status { status: u16 },
    /// Wait this long before answering at all.
    Delay { ms: u64 },
    /// Stream this many chunks, then reset the connection.
    ResetMidStream { after_chunks: u32 },
    /// Stream a chunk whose `data:` is not JSON.
    MalformedSse,
    /// A hostile provider: answer `status` with the credential it received, in
    /// `encoding` (`raw`, `base64`, `base64url`, `hex`, `percent`, `json_u`), in a header
    /// (`x-echo`), in the body, and — for a streamed request — in an SSE event split
    /// across two chunks.
    Echo { encoding: String, status: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// API keys the mock accepts, however they are presented.
    pub valid_keys: Vec<String>,
    pub oauth_clients: Vec<OAuthClient>,
    /// OpenID Connect clients the issuer at `/oidc` accepts (see `oidc`).
    pub oidc_clients: Vec<OAuthClient>,
    /// AWS credentials whose SigV4 signatures Bedrock's endpoints accept.
    pub aws_credentials: Vec<crate::bedrock::AwsCredential>,
    /// Lifetime of issued OAuth2 access tokens.
    pub token_ttl_secs: u64,
    /// Delay before every answer (headers, or the first chunk of a stream).
    pub latency_ms: u64,
    /// Delay between streamed chunks.
    pub chunk_interval_ms: u64,
    /// Content chunks per streamed answer.
    pub chunks: u32,
    /// Usage every answer reports.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub fault: Option<Fault>,
    /// Apply `fault` to this many requests, then clear it; `None`: to every request.
    pub fault_times: Option<u32>,
    /// Record requests (benchmarks turn this off).
    pub record: bool,
    /// A directory of bare repositories (`<owner>/<repo>.git`) that git's smart HTTP
    /// serves (see `git`); `None`: git requests find no repository.
    pub git_root: Option<String>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            valid_keys: Vec::new(),
            oauth_clients: Vec::new(),
            oidc_clients: Vec::new(),
            aws_credentials: Vec::new(),
            token_ttl_secs: 3600,
            latency_ms: 0,
            chunk_interval_ms: 0,
            chunks: 5,
            input_tokens: 11,
            output_tokens: 7,
            fault: None,
            fault_times: None,
            record: true,
            git_root: None,
        }
    }
}

impl MockConfig {
    /// Accepts exactly these keys.
    pub fn with_keys<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> Self {
        Self { valid_keys: keys.into_iter().map(Into::into).collect(), ..Self::default() }
    }
}
