//! The caller's view of the gateway: the dry run, quotas, usage.

use crate::dto::*;
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::resolution::PaymentPolicy;
use keygate_service::auth::{SCOPE_PROXY, SCOPE_USAGE};
use keygate_store::UsageFilter;
use std::collections::BTreeMap;

/// Which credential would serve your call to a provider, from which source, and why each
/// earlier source was passed over. Changes nothing.
#[utoipa::path(post, path = "/api/v1/resolve", tag = "gateway", request_body = ResolveRequest, security(("bearer" = [])), responses(
    (status = 200, body = Resolution), (status = 422, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn resolve(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<ResolveRequest>,
) -> Result<Json<Resolution>, ApiError> {
    p.require_scope(SCOPE_PROXY)?;
    let policy = match body.policy.as_deref() {
        None => PaymentPolicy::Any,
        Some(text) => PaymentPolicy::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "policy must be any, customer-only or operator-only",
            )
        })?,
    };
    let e = s.services.explain(&p, &body.provider, policy).await?;
    Ok(Json(Resolution {
        provider: e.provider,
        source: e.chosen.as_ref().map(|(source, _)| source.to_string()),
        credential_id: e.chosen.as_ref().map(|(_, c)| c.id.as_uuid()),
        hint: e.chosen.as_ref().map(|(_, c)| c.hint.clone()),
        model: e.model,
        skipped: e
            .skipped
            .into_iter()
            .map(|(source, reason)| SkippedSource { source: source.to_string(), reason })
            .collect(),
    }))
}

/// What is left of your demo allowance and your platform rate limits.
#[utoipa::path(get, path = "/api/v1/quota", tag = "gateway", security(("bearer" = [])), responses((status = 200, body = Quota)))]
#[tracing::instrument(skip_all)]
pub(crate) async fn quota(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Quota>, ApiError> {
    let policy = s.services.policy();
    let (tokens_left, days_left) = s.services.demo_status(&p).await?;
    let (per_minute, left_minute, per_day, left_day) = s.services.platform_status(&p).await?;
    let tomorrow =
        keygate_service::now().date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    Ok(Json(Quota {
        demo: DemoQuota {
            enabled: policy.demo.enabled,
            tokens_per_day: policy.demo.tokens_per_day,
            tokens_remaining_today: if policy.demo.enabled { tokens_left } else { 0 },
            days_remaining: days_left,
            resets_at: tomorrow.unwrap_or_else(keygate_service::now),
        },
        platform: PlatformQuota {
            tier: p.user.tier.clone(),
            byok: policy.tier(&p.user.tier).is_some_and(|t| t.byok),
            requests_per_minute: per_minute,
            remaining_this_minute: left_minute,
            requests_per_day: per_day,
            remaining_today: left_day,
        },
    }))
}

/// Your metered calls, grouped by day, provider, model, credential or key source.
#[utoipa::path(get, path = "/api/v1/usage", tag = "gateway", params(UsageQuery), security(("bearer" = [])), responses(
    (status = 200, body = UsageReport), (status = 422, body = Problem)
))]
#[tracing::instrument(skip_all)]
pub(crate) async fn usage(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    p.require_scope(SCOPE_USAGE)?;
    let group_by = q.group_by.unwrap_or_else(|| "day".into());
    if !["day", "provider", "model", "credential", "source"].contains(&group_by.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "group_by must be day, provider, model, credential or source",
        ));
    }
    let filter = UsageFilter {
        user_id: Some(p.user.id),
        provider: q.provider,
        since: q.since,
        until: q.until,
        limit: Some(100_000),
        ..Default::default()
    };
    let events = s.services.store.usage_events(&filter).await.map_err(keygate_service::ServiceError::from)?;
    let mut groups: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    let mut total = (0i64, 0i64, 0i64, 0i64);
    for e in &events {
        let key = match group_by.as_str() {
            "day" => e.at.format("%Y-%m-%d").to_string(),
            "provider" => e.provider.clone(),
            "model" => e.model.clone().unwrap_or_else(|| "(unknown)".into()),
            "credential" => e.credential_id.map(|c| c.to_string()).unwrap_or_else(|| "(none)".into()),
            _ => e.key_source.clone(),
        };
        let g = groups.entry(key).or_default();
        for acc in [g, &mut total] {
            acc.0 += 1;
            acc.1 += e.input_tokens;
            acc.2 += e.output_tokens;
            acc.3 += e.cost_nano_usd;
        }
    }
    let row = |key: String, (requests, input, output, cost): (i64, i64, i64, i64)| UsageRow {
        key,
        requests,
        input_tokens: input,
        output_tokens: output,
        cost_usd: cost as f64 / 1e9,
    };
    Ok(Json(UsageReport {
        group_by,
        rows: groups.into_iter().map(|(k, v)| row(k, v)).collect(),
        total: row("total".into(), total),
    }))
}
