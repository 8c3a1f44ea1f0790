//! The route table. One module per area; handlers parse, call one service function and
//! render. Routes are registered through `utoipa-axum`, so the OpenAPI document at
//! `/api/openapi.json` is generated from the same table the server routes by.

mod admin;
mod gateway;
mod health;
mod keys;
mod providers;
mod session;
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

/// The documented routes, and the OpenAPI document describing exactly them.
pub(crate) fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::get, keys::update, keys::delete))
        .routes(routes!(keys::replace_secret))
        .routes(routes!(keys::test))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(providers::list))
        .routes(routes!(session::login))
        .routes(routes!(session::me))
        .routes(routes!(admin::workspaces, admin::create_workspace))
        .routes(routes!(admin::workspace, admin::update_workspace))
        .routes(routes!(admin::add_member))
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
