//! The shop's payments service: authorize, capture, void and refund against a simulated
//! provider whose failure rate and latency are knobs in central config; every write is
//! idempotent by `Idempotency-Key`, and an order has one payment at most, so a client
//! retrying after a timeout never charges twice; a reconciliation sweep voids any
//! authorization left standing without a live order.

mod api;
pub mod config;
pub mod payments;
pub mod reconcile;

use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::{router, CHARGE_SCOPE};
pub use config::PaymentsConfig;
pub use reconcile::spawn as spawn_reconciliation;

/// The service's name in the registry.
pub const SERVICE: &str = "payments";

/// The services that may call this one over mTLS: the gateway (customers reading their payments)
/// and orders (authorize, capture, void). The key `callers` in its config scope replaces the list
/// live.
pub const CALLERS: &[&str] = &["gateway", "orders"];

/// Payments' schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens payments' database where the environment says, migrated, with the event inbox.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    flotilla::events::open(&Store::url_for(SERVICE, &env.data_dir)?, &MIGRATOR).await
}

/// Payments as a Flotilla app: `flotilla service payments`.
pub struct Payments;

impl flotilla::app::App for Payments {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = PaymentsConfig;

    async fn start(setup: &flotilla::app::Setup<PaymentsConfig>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let config = setup.config().clone();
        let tokens = setup.verifier(&config.current().tokens, &[], &[]);
        spawn_reconciliation(setup.tasks(), store.clone(), config.clone(), setup.events().await?);
        Ok(router(store, config, tokens))
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "Authorize, capture, void and refund, each idempotent by Idempotency-Key.",
    )
}

#[cfg(test)]
mod tests;
