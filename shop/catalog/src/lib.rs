//! The shop's catalog service: products in the service's own database, served under
//! `/api/v1/products`.

mod api;
pub mod config;
mod search;
mod seed;

use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::{router, Price, Product, ProductInput, ProductPage};
pub use config::CatalogConfig;

/// The service's name in the registry.
pub const SERVICE: &str = "catalog";

/// The services that may call this one over mTLS: the gateway (the storefront) and orders (prices
/// at checkout). The key `callers` in its config scope replaces the list live.
pub const CALLERS: &[&str] = &["gateway", "orders"];

/// The catalog's schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the catalog's database where the environment says (`DATABASE_URL`, else SQLite in
/// the data dir); see [`open`].
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    open(&Store::url_for(SERVICE, &env.data_dir)?).await
}

/// Opens (creating and migrating as needed) the catalog's database at `url`, and seeds the
/// demo products into an empty one unless `CATALOG_SEED=false`.
pub async fn open(url: &str) -> Result<Store, StoreError> {
    let store = Store::open(url, &MIGRATOR).await?;
    search::prepare(&store).await.map_err(|source| StoreError::Connect {
        url: "catalog search index".into(),
        source,
    })?;
    let seed = std::env::var("CATALOG_SEED").map_or(true, |v| v != "false" && v != "0");
    if seed {
        let added = seed::seed_if_empty(&store)
            .await
            .map_err(|source| StoreError::Connect {
                url: "catalog seed".into(),
                source,
            })?;
        if added > 0 {
            tracing::info!(products = added, "seeded the demo catalog");
        }
    }
    Ok(store)
}

/// The catalog as a Flotilla app: `flotilla service catalog`.
pub struct Catalog;

impl flotilla::app::App for Catalog {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = CatalogConfig;

    async fn start(setup: &flotilla::app::Setup<CatalogConfig>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let admin = setup.verifier(&setup.config().current().tokens, &[], &["admin"]);
        Ok(router(store, setup.config().clone(), admin))
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "Products, categories and full-text search.",
    )
}
