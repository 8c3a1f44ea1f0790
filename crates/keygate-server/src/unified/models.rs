//! `GET /v1/models`: the `provider/model` ids the caller can use now: for each provider
//! the unified endpoint serves and for which the chain yields the caller a credential,
//! the catalog's priced models, its default model and that credential's model override.

use super::{authenticate, speaks, OpenAiError};
use crate::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use keygate_core::Scope;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub(super) async fn list(State(state): State<AppState>, request: Request) -> Response {
    match models(&state, request).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => OpenAiError(e).into_response(),
    }
}

async fn models(state: &AppState, request: Request) -> Result<Value, ApiError> {
    let (parts, _) = request.into_parts();
    let principal = authenticate(state, &parts).await?;
    principal.require_scope(Scope::Proxy)?;
    let policy = crate::proxy::request::payment_policy(&parts.headers)?;
    let mut data = Vec::new();
    for provider in state.services.catalog().all().iter().filter(|p| speaks(&p.id).is_some()) {
        let explained = state.services.explain(&principal, &provider.id, policy).await?;
        let Some((_, credential)) = explained.chosen else { continue };
        let ids: BTreeSet<&str> = provider
            .prices
            .keys()
            .map(String::as_str)
            .chain(provider.default_model.as_deref())
            .chain(credential.model.as_deref())
            .collect();
        data.extend(ids.into_iter().map(|model| {
            json!({"id": format!("{}/{model}", provider.id), "object": "model", "created": 0, "owned_by": provider.id})
        }));
    }
    Ok(json!({"object": "list", "data": data}))
}
