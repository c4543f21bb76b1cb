//! The shop's shipping service: one shipment per order, with a status timeline (created →
//! packed → shipped → delivered, or cancelled before it leaves) that advances over time, step
//! durations from central config; it follows the order events (a held shipment starts when
//! its order is confirmed, and is cancelled with its order).

mod api;
pub mod config;
mod order_events;
pub mod shipments;

use std::time::Duration;

use flotilla::config::LiveConfig;
use flotilla::runtime::ServiceEnv;
use flotilla::store::{Store, StoreError};

pub use api::{router, CREATE_SCOPE};
pub use config::ShippingConfig;
pub use order_events::{on_order_event, spawn_order_events, OrderEventError};

/// The service's name in the registry.
pub const SERVICE: &str = "shipping";

/// The services that may call this one over mTLS: the gateway (customers reading their shipments)
/// and orders (shipments for confirmed orders). The key `callers` in its config scope replaces the
/// list live.
pub const CALLERS: &[&str] = &["gateway", "orders"];

/// Shipping's schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens shipping's database where the environment says, migrated, with the event inbox.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    open_url(&Store::url_for(SERVICE, &env.data_dir)?).await
}

/// Opens shipping's database at `url`, migrated, with the event inbox.
pub async fn open_url(url: &str) -> Result<Store, StoreError> {
    flotilla::events::open(url, &MIGRATOR).await
}

/// Moves shipments along their timeline once a second, for the life of the process.
pub fn spawn_ticker(tasks: &flotilla::app::Tasks, store: Store, config: LiveConfig<ShippingConfig>) {
    tasks.spawn("shipment ticker", async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            match shipments::advance(&store, &config.current(), now).await {
                Ok(0) => {}
                Ok(moved) => tracing::info!(moved, "shipments moved on"),
                Err(err) => tracing::error!(error = %err, "moving shipments on failed"),
            }
        }
    });
}

/// Shipping as a Flotilla app: `flotilla service shipping`.
pub struct Shipping;

impl flotilla::app::App for Shipping {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = ShippingConfig;

    async fn start(setup: &flotilla::app::Setup<ShippingConfig>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let config = setup.config().clone();
        let tokens = setup.verifier(&config.current().tokens, &[], &[]);
        spawn_ticker(setup.tasks(), store.clone(), config);
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
        "Shipments, one per order, with a timeline: created → packed → shipped → delivered, or \
         cancelled before it leaves. A shipment created on hold starts when its order is confirmed \
         (event `shop.order.confirmed` on topic `orders`); an order's cancellation \
         (`shop.order.cancelled`) cancels its shipment.",
    )
}

#[cfg(test)]
mod tests;
