//! The shop's notifications service: tells customers what became of their orders (confirmed,
//! cancelled and why), from the order events, and lists each customer's notifications.

mod api;
pub mod notifications;
mod order_events;

use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::router;
pub use order_events::{on_order_event, spawn_order_events, OrderEventError};

/// The service's name in the registry (and its consumer group on topic `orders`).
pub const SERVICE: &str = "notifications";

/// The services that may call this one over mTLS: the gateway only. The key `callers` in its config
/// scope replaces the list live.
pub const CALLERS: &[&str] = &["gateway"];

/// Notifications' schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens the notifications database where the environment says, migrated, with the event inbox.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    open_url(&Store::url_for(SERVICE, &env.data_dir)?).await
}

/// Opens the notifications database at `url`, migrated, with the event inbox.
pub async fn open_url(url: &str) -> Result<Store, StoreError> {
    flotilla::events::open(url, &MIGRATOR).await
}

/// Notifications as a Flotilla app: `flotilla service notifications`.
pub struct Notifications;

impl flotilla::app::App for Notifications {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = flotilla::app::NoConfig;

    async fn start(setup: &flotilla::app::Setup<Self::Config>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let tokens = setup.verifier(&flotilla::auth::TrustedIssuer::default(), &[], &[]);
        spawn_order_events(setup.tasks(), store.clone(), setup.events().await?);
        Ok(router(store, tokens))
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "What customers are told about their orders, from the order events (topic `orders`): one \
         notification per order confirmed or cancelled.",
    )
}

#[cfg(test)]
mod tests;
