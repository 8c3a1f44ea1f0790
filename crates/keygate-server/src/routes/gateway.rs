//! The caller's view of the gateway: the dry run, quotas, usage.

use crate::dto::*;
use crate::extract::{ApiJson, ApiQuery, Auth};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use keygate_core::resolution::PaymentPolicy;
use keygate_core::Scope;
use keygate_service::usage::{GroupBy, UsageTotals};

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
    p.require_scope(Scope::Proxy)?;
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
    let demo = s.services.demo_status(&p).await?;
    let platform = s.services.platform_status(&p).await?;
    let tomorrow =
        keygate_service::now().date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    Ok(Json(Quota {
        demo: DemoQuota {
            enabled: policy.demo.enabled,
            tokens_per_day: policy.demo.tokens_per_day,
            tokens_remaining_today: if policy.demo.enabled { demo.tokens_left } else { 0 },
            days_remaining: demo.days_left,
            resets_at: tomorrow.unwrap_or_else(keygate_service::now),
        },
        platform: PlatformQuota {
            tier: p.user.tier.clone(),
            byok: policy.tier(&p.user.tier).is_some_and(|t| t.byok),
            requests_per_minute: platform.per_minute,
            remaining_this_minute: platform.left_this_minute,
            requests_per_day: platform.per_day,
            remaining_today: platform.left_today,
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
    let group_by: GroupBy = q.group_by.as_deref().unwrap_or("day").parse()?;
    let query = keygate_service::usage::UsageQuery { provider: q.provider, since: q.since, until: q.until };
    let report = s.services.usage_report(&p, query, group_by).await?;
    let row = |t: UsageTotals| UsageRow {
        key: t.key,
        requests: t.requests,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        cost_usd: t.cost_nano_usd as f64 / 1e9,
    };
    Ok(Json(UsageReport {
        group_by: report.group_by.as_str().to_owned(),
        rows: report.rows.into_iter().map(row).collect(),
        total: row(report.total),
    }))
}
