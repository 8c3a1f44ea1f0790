//! The route table. One module per area; handlers parse, call one service function and
//! render. Routes are registered through `utoipa-axum`, so the OpenAPI document at
//! `/api/openapi.json` is generated from the same table the server routes by.

mod admin;
mod gateway;
mod health;
mod keys;
mod providers;
mod session;
mod sessions;
mod tokens;

use crate::dto::Problem;
use crate::{ApiError, AppState};
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "keygate", description = "Bring-your-own-key vault and gateway. Errors are application/problem+json with a stable `code`."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "keys", description = "Stored provider credentials"),
        (name = "tokens", description = "keygate API tokens"),
        (name = "sessions", description = "Sandbox sessions: short-lived proxy-only tokens for some providers, within their own caps"),
        (name = "providers", description = "The provider catalog"),
        (name = "gateway", description = "Resolution dry run, quotas and usage (the calls themselves go to /proxy/{provider}/...)"),
        (name = "session", description = "Login and the caller's identity"),
        (name = "admin", description = "Super-admin operations"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        document_proxy(openapi);
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A keygate token (kg_...) or a JWT signed by the host application"))
                    .build(),
            ),
        );
    }
}

/// `ANY /proxy/{provider}/{*path}` is routed outside utoipa-axum (its wildcard has no
/// OpenAPI form), so it is described here by hand.
fn document_proxy(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::{Required, ResponseBuilder};
    let parameter = |name: &str, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(description))
            .build()
    };
    let operation = OperationBuilder::new()
        .tag("gateway")
        .summary(Some("Native passthrough to a provider"))
        .description(Some(
            "Authenticate with a keygate token as `Authorization: Bearer` or `x-api-key` (point an SDK's base_url here and \
             give it the token as its API key); for a git host (`github-git`), also as the password of HTTP Basic auth. keygate resolves the credential, injects it, forwards method, path, query and \
             body, and streams the answer back. Optional header `x-keygate-policy: customer-only | operator-only`. Answers carry \
             `x-keygate-key-source` and `x-keygate-credential-id`.",
        ))
        .parameter(parameter("provider", "A provider id, e.g. openai"))
        .parameter(parameter("path", "The provider's own path, e.g. v1/chat/completions"))
        .security(utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()))
        .response("200", ResponseBuilder::new().description("The provider's answer, streamed as it arrives").build())
        .response("401", ResponseBuilder::new().description("unauthenticated (problem+json)").build())
        .response(
            "403",
            ResponseBuilder::new()
                .description("no_credential, byok_not_in_plan, workspace_inactive, provider_not_in_session")
                .build(),
        )
        .response(
            "429",
            ResponseBuilder::new()
                .description("quota_exhausted, rate_limited (with Retry-After), session_cap_reached")
                .build(),
        )
        .response("502", ResponseBuilder::new().description("upstream_unreachable").build())
        .response("504", ResponseBuilder::new().description("upstream_timeout").build())
        .build();
    let methods = vec![HttpMethod::Get, HttpMethod::Post, HttpMethod::Put, HttpMethod::Patch, HttpMethod::Delete];
    openapi.paths.add_path_operation("/proxy/{provider}/{path}", methods, operation);
}

/// The documented routes, and the OpenAPI document describing exactly them.
pub(crate) fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(keys::list, keys::create, keys::delete_by_provider))
        .routes(routes!(keys::get, keys::update, keys::delete))
        .routes(routes!(keys::replace_secret))
        .routes(routes!(keys::test))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(sessions::list, sessions::create))
        .routes(routes!(sessions::revoke))
        .routes(routes!(providers::list))
        .routes(routes!(session::login))
        .routes(routes!(session::me))
        .routes(routes!(admin::workspaces, admin::create_workspace))
        .routes(routes!(admin::workspace, admin::update_workspace))
        .routes(routes!(admin::add_member))
        .routes(routes!(
            admin::workspace_prompt_guard,
            admin::set_workspace_prompt_guard,
            admin::clear_workspace_prompt_guard
        ))
        .routes(routes!(admin::users))
        .routes(routes!(admin::update_user))
        .routes(routes!(admin::operator_keys))
        .routes(routes!(admin::settings, admin::update_settings))
        .routes(routes!(admin::audit))
        .routes(routes!(gateway::resolve))
        .routes(routes!(gateway::quota))
        .routes(routes!(gateway::usage))
        .split_for_parts()
}

pub(crate) fn router() -> Router<AppState> {
    let (router, api) = documented();
    let api = std::sync::Arc::new(api);
    router.route("/api/openapi.json", get(move || async move { Json(api.as_ref().clone()) }))
}

/// The OpenAPI document (for `keygate openapi` and tests).
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
