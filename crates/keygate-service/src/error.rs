//! The service layer's one error type. Each variant has a stable machine code that the
//! HTTP layer and the CLI show; messages say what happened and what to do.

use keygate_store::StoreError;
use keygate_vault::VaultError;

pub type ServiceResult<T> = Result<T, ServiceError>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    MasterKeyMismatch(String),
    #[error("{0}")]
    MasterKeyStillInUse(String),
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidKeyFormat(String),
    #[error("{0}")]
    ProviderRejectedKey(String),
    #[error("{0}")]
    CredentialLimit(String),
    #[error("unknown provider `{0}`: GET /api/v1/providers lists them")]
    UnknownProvider(String),
    #[error("{0}")]
    NoCredential(String),
    #[error("{0}")]
    ByokNotInPlan(String),
    #[error("{detail}")]
    QuotaExhausted { detail: String, retry_after_secs: u64 },
    #[error("{detail}")]
    RateLimited { detail: String, retry_after_secs: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("credential {credential} cannot be decrypted: {reason}")]
    Undecryptable { credential: String, reason: String },
    #[error("the workspace is {status}: its credentials cannot be used until it is active again")]
    WorkspaceInactive { status: String },
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    EndpointNotAllowed(String),
    #[error("{0}")]
    UpstreamAuthFailed(String),
    /// The prompt guard refused the call (the message names kinds and places, never values).
    #[error("{0}")]
    PromptBlocked(String),
    /// A sandbox session's token called a provider outside the session's list.
    #[error("{0}")]
    ProviderNotInSession(String),
    /// A sandbox session's own request or token cap is reached.
    #[error("{0}")]
    SessionCapReached(String),
    #[error("the database cannot be reached: {0}")]
    DatabaseUnreachable(String),
    /// The limits backend (Redis, PostgreSQL) did not answer in time: a call that needs a
    /// limit is refused (fail closed).
    #[error("{0}")]
    LimitsUnavailable(String),
    #[error("interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
}

impl ServiceError {
    /// The stable machine code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MasterKeyMismatch(_) => "master_key_mismatch",
            Self::MasterKeyStillInUse(_) => "master_key_still_in_use",
            Self::NotFound { .. } => "not_found",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::InvalidKeyFormat(_) => "invalid_key_format",
            Self::ProviderRejectedKey(_) => "provider_rejected_key",
            Self::CredentialLimit(_) => "credential_limit_reached",
            Self::UnknownProvider(_) => "unknown_provider",
            Self::NoCredential(_) => "no_credential",
            Self::ByokNotInPlan(_) => "byok_not_in_plan",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::RateLimited { .. } => "rate_limited",
            Self::Conflict(_) => "conflict",
            Self::Invalid { .. } => "invalid_request",
            Self::Undecryptable { .. } => "credential_undecryptable",
            Self::WorkspaceInactive { .. } => "workspace_inactive",
            Self::NotImplemented(_) => "not_implemented",
            Self::EndpointNotAllowed(_) => "endpoint_not_allowed",
            Self::UpstreamAuthFailed(_) => "upstream_auth_failed",
            Self::PromptBlocked(_) => "prompt_blocked",
            Self::ProviderNotInSession(_) => "provider_not_in_session",
            Self::SessionCapReached(_) => "session_cap_reached",
            Self::DatabaseUnreachable(_) => "database_unreachable",
            Self::LimitsUnavailable(_) => "limits_unavailable",
            Self::Interrupted(_) => "interrupted",
            Self::Store(_) => "database_error",
            Self::Vault(_) => "vault_error",
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity, .. } => Self::NotFound { entity },
            StoreError::Conflict(what) => Self::Conflict(what),
            StoreError::Changed { entity, .. } => Self::Conflict(format!(
                "the {entity} was changed by another request while this one ran; nothing was saved: load it again and retry"
            )),
            StoreError::Unreachable { location, reason } => {
                Self::DatabaseUnreachable(format!("{location}: {reason}"))
            }
            other => Self::Store(other),
        }
    }
}
