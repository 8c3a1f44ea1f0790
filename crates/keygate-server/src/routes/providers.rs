//! `/api/v1/providers`: the catalog, with what the caller has configured.

use crate::dto::{Problem, ProviderInfo, ProviderList};
use crate::extract::Auth;
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::Json;
use keygate_core::Scope;
use keygate_core::{CredentialScope, CredentialStatus};
use keygate_service::credentials::ListScope;

/// Every provider keygate can hold keys for.
#[utoipa::path(get, path = "/api/v1/providers", tag = "providers", security(("bearer" = [])), responses((status = 200, body = ProviderList), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<ProviderList>, ApiError> {
    // The catalog is for everyone; what is configured only for tokens that may see keys.
    let keys = match p.require_scope(Scope::Keys) {
        Ok(()) => s.services.list_credentials(&p, ListScope::Mine).await?,
        Err(_) => Vec::new(),
    };
    let providers = s
        .services
        .catalog()
        .all()
        .iter()
        .map(|provider| {
            let configured = [CredentialScope::User, CredentialScope::Workspace]
                .into_iter()
                .filter(|scope| {
                    keys.iter().any(|k| {
                        k.provider == provider.key_provider()
                            && k.scope == *scope
                            && k.status == CredentialStatus::Active
                    })
                })
                .map(|scope| scope.to_string())
                .collect();
            ProviderInfo {
                id: provider.id.clone(),
                name: provider.name.clone(),
                kind: provider.kind.clone(),
                credential_fields: provider.credential.fields().iter().map(|f| (*f).to_owned()).collect(),
                key_prefixes: provider.key_prefixes.clone(),
                default_model: provider.default_model.clone(),
                key_url: provider.key_url.clone(),
                validated_live: provider.probe.is_some()
                    || matches!(provider.inject, keygate_core::catalog::Injection::Oauth2 { .. }),
                configured,
                shared_endpoints: provider.shared_endpoints.iter().map(ToString::to_string).collect(),
                uses_key_of: provider.uses_key_of.clone(),
                key_scopes: provider.key_scopes.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    Ok(Json(ProviderList { providers }))
}
