//! The shop's orders service. An order's events are its source of truth (event sourcing);
//! a read model of one row per order serves the lists and is rebuilt from the events on
//! demand (CQRS). Placing an order records it and starts its saga in one transaction and
//! answers 202 at once; the saga reserves stock, authorizes payment, creates the shipment and
//! confirms — or undoes what it did and cancels. Confirmed and cancelled orders are published
//! through the outbox for shipping and notifications to react to (choreography).

mod api;
pub mod config;
pub mod downstream;
pub mod journal;
mod openapi;
pub mod order;
pub mod saga;

use std::sync::Arc;
use std::time::Duration;

use flotilla::auth::{ClientCredentials, Verifier};
use flotilla::config::LiveConfig;
use flotilla::events::{EventsClient, Outbox, Relay};
use flotilla::runtime::{Context, ServiceEnv};
use flotilla::saga::{SagaRunner, SagaStore};
use flotilla::store::{Store, StoreError};

pub use api::{router, Orders};
pub use config::OrdersConfig;

/// The service's name in the registry.
pub const SERVICE: &str = "orders";

/// The services that may call this one over mTLS: the gateway only. The key `callers` in its config
/// scope replaces the list live.
pub const CALLERS: &[&str] = &["gateway"];

/// The scopes orders' own token asks for: reserve stock, charge, create shipments.
pub const SCOPES: &str = "inventory.reserve payments.charge payments.read shipping.create shipping.read";

/// Orders' schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens orders' database where the environment says, migrated.
pub async fn open_store(env: &ServiceEnv) -> Result<Store, StoreError> {
    Store::open(&Store::url_for(SERVICE, &env.data_dir)?, &MIGRATOR).await
}

/// The clients orders calls with, from the service's context: its own token from identity.
pub fn downstream(context: &Context, config: &OrdersConfig) -> downstream::Downstream {
    let credentials = ClientCredentials::new(
        context.client("identity"),
        "/oauth2/token",
        &config.client.id,
        &config.client.secret,
        SCOPES,
    );
    downstream::Downstream::new(
        context.client("catalog"),
        context.client("inventory"),
        context.client("payments"),
        context.client("shipping"),
        Arc::new(credentials),
    )
}

/// Everything orders runs: the handlers' state, with the saga runner and the outbox relay
/// spawned on `tasks`.
pub async fn start(
    tasks: &flotilla::app::Tasks,
    store: Store,
    downstream: downstream::Downstream,
    events: EventsClient,
    config: LiveConfig<OrdersConfig>,
    tokens: Verifier,
) -> Result<Orders, sqlx::Error> {
    // The SDK's tables beside orders' own: outbox and inbox, idempotency keys, sagas (below).
    flotilla::events::prepare(&store).await?;
    flotilla::http::idempotency::prepare(&store).await?;
    let outbox = Outbox::new();
    let journal = journal::Journal::new(store.clone(), outbox.clone());
    // Saga progress and relay bookkeeping are redone safely after a crash: no fsync each.
    let sagas = SagaStore::prepare(store.relaxed()).await?;
    let runner = SagaRunner::new(saga::definition(downstream.clone(), journal.clone()), sagas);
    tasks.spawn("outbox relay", Relay::new(store.relaxed(), events, outbox).run());
    tasks.spawn("saga runner", runner.clone().run(Duration::from_millis(200)));
    Ok(Orders {
        journal,
        runner,
        downstream,
        config,
        tokens,
    })
}

/// Orders as a Flotilla app: `flotilla service orders`.
pub struct OrdersApp;

/// How long a starting instance waits for its OAuth client to be written.
const CLIENT_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

impl flotilla::app::App for OrdersApp {
    const NAME: &'static str = SERVICE;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const CALLERS: &'static [&'static str] = CALLERS;
    type Config = OrdersConfig;

    async fn start(setup: &flotilla::app::Setup<OrdersConfig>) -> Result<axum::Router, flotilla::app::AppError> {
        let store = open_store(setup.env()).await?;
        let config = setup.config().clone();
        if config.current().client.secret.is_empty() {
            // Started beside what seeds the store (a Kubernetes Job): its client comes soon.
            tracing::warn!("orders has no client secret yet (orders/default/client): waiting for it to be set");
            if !config.wait_for(CLIENT_WITHIN, |c| !c.client.secret.is_empty()).await {
                tracing::error!(
                    "still no client secret after {CLIENT_WITHIN:?}: orders runs, but its saga cannot call inventory, payments or shipping until it restarts with one"
                );
            }
        }
        let tokens = setup.verifier(&config.current().tokens, &[], &[]);
        let downstream =
            downstream(setup.context(), &config.current()).with_availability(setup.context().grpc("inventory"));
        let orders = start(setup.tasks(), store, downstream, setup.events().await?, config, tokens).await?;
        // The dashboard's view of the order sagas, read by the control plane over mTLS.
        setup.serve_sagas(&orders.runner);
        // Requests beyond what keeps latency level wait a little, then are refused (503).
        let limit = flotilla::admission::ConcurrencyLimit::new(Default::default());
        Ok(flotilla::admission::limited(router(orders), limit))
    }
}

/// The service's OpenAPI document, made from its handlers and types (served at `/openapi.json`;
/// the contract tests read it too).
pub fn openapi_document() -> serde_json::Value {
    flotilla::openapi::document::<api::Api>(
        SERVICE,
        env!("CARGO_PKG_VERSION"),
        "Event-sourced orders placed through a saga across inventory, payments and shipping.",
    )
}

#[cfg(test)]
mod tests;
