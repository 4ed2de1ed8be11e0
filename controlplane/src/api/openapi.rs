//! The OpenAPI document, generated from the handler annotations and served at
//! `/api/openapi.json`.

use super::{accounts, agent, artifacts, catalog, machines};
use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln control plane",
        description = "Accounts, images, roles, machines, provisioning runs and the agent protocol v1."
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    paths(
        super::info,
        accounts::list_accounts, accounts::create_account, accounts::list_keys, accounts::create_key,
        accounts::revoke_key, accounts::create_token, accounts::list_token_keys,
        accounts::rotate_token_key, accounts::retire_token_key,
        catalog::get_settings, catalog::put_settings, catalog::list_images, catalog::get_image,
        catalog::create_image, catalog::update_image, catalog::delete_image, catalog::list_creds,
        catalog::create_cred, catalog::delete_cred, catalog::list_roles, catalog::get_role,
        catalog::create_role, catalog::update_role, catalog::delete_role,
        machines::list_machines, machines::get_machine, machines::delete_machine, machines::approve,
        machines::patch_machine, machines::set_roles, machines::revoke_credential,
        machines::create_action, machines::provision, machines::list_runs, machines::get_run,
        agent::register, agent::claim, agent::heartbeat, agent::orders, agent::events,
        agent::ack_action, agent::rotate_credential,
        artifacts::index, artifacts::file, artifacts::install_sh, artifacts::installer_iso,
        artifacts::boot_ipxe,
    )
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
