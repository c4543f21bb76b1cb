//! The shop's inventory service: stock per product, and reservations by order — reserve,
//! release, commit — each idempotent by order id, never overselling, also under concurrent
//! reservations.

mod api;
pub mod grpc;
pub mod stock;

use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::{router, RESERVE_SCOPE};

/// The service's name in the registry.
pub const SERVICE: &str = "inventory";

/// The services that may call this one over mTLS: the gateway (admins) and orders (reservations).
/// The key `callers` in its config scope replaces the list live.
pub const CALLERS: &[&str] = &["gateway", "orders"];

/// Inventory's schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens inventory's database where the environment says, migrated, with stock for the demo
/// catalog in an empty one unless `INVENTORY_SEED=false`.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    open(&Store::url_for(SERVICE, &env.data_dir)?).await
}

/// Opens (creating and migrating as needed) inventory's database at `url`.
pub async fn open(url: &str) -> Result<Store, StoreError> {
    let store = Store::open(url, &MIGRATOR).await?;
    let seed = std::env::var("INVENTORY_SEED").map_or(true, |v| v != "false" && v != "0");
    if seed {
        let added = stock::seed_if_empty(&store)
            .await
            .map_err(|source| StoreError::Connect {
                url: "inventory seed".into(),
                source,
            })?;
        if added > 0 {
            tracing::info!(products = added, "seeded demo stock");
        }
    }
    Ok(store)
}

/// Inventory as a Flotilla app: `flotilla service inventory`.
pub struct Inventory;

impl flotilla::app::App for Inventory {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = flotilla::app::NoConfig;

    async fn start(setup: &flotilla::app::Setup<Self::Config>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let tokens = setup.verifier(&flotilla::auth::TrustedIssuer::default(), &[], &[]);
        let stock = grpc::server(store.clone(), tokens.clone());
        Ok(flotilla::grpc::route(router(store, tokens), stock))
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "Stock per product and reservations by order: idempotent by order id, never oversold.",
    )
}

#[cfg(test)]
mod tests;
