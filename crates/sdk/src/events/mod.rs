//! Events for services: publish through a transactional **outbox** (the event is written in
//! the same database transaction as the change it announces, then relayed to the log
//! at-least-once and in order), consume through an **inbox** (a redelivered event is
//! recognised by its id and has no second effect; a failing handler is retried with backoff,
//! then dead-lettered by the log). Backend: the control plane's event log, or NATS JetStream
//! when the service is given a `nats://` URL ([`EventsClient::for_service`], [`nats`]).

pub mod client;
pub mod inbox;
mod log;
pub mod nats;
pub mod outbox;

pub use client::{EventsClient, EventsError};
pub use flotilla_api::events::{CloudEvent, Delivery};
pub use inbox::Consumer;
pub use nats::NatsConfig;
pub use outbox::{Outbox, Relay};

use crate::store::Store;

/// The id a replayed dead letter is appended under: new, so consumers' inboxes take it and the
/// log's idempotent append does not, and unique even for two replays of one dead letter in the
/// same millisecond (from one control plane or two), which a timestamp alone was not.
pub fn replay_id(original: &str) -> String {
    format!(
        "{original}~replay-{}-{:08x}",
        crate::store::now_ms(),
        rand::random::<u32>()
    )
}

/// The outbox and inbox tables, in the service's own database (SQLite or PostgreSQL).
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS flotilla_outbox (seq BIGINT PRIMARY KEY, topic TEXT NOT NULL, envelope TEXT NOT NULL, created_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS flotilla_inbox (grp TEXT NOT NULL, event_id TEXT NOT NULL, processed_ms BIGINT NOT NULL, PRIMARY KEY (grp, event_id))",
    "CREATE INDEX IF NOT EXISTS flotilla_inbox_by_time ON flotilla_inbox (processed_ms)",
];

/// Opens a service's database at `url`, migrated, with the outbox and inbox tables: what a
/// service that publishes or consumes events opens at start.
pub async fn open(url: &str, migrator: &sqlx::migrate::Migrator) -> Result<Store, crate::store::StoreError> {
    let store = Store::open(url, migrator).await?;
    prepare(&store)
        .await
        .map_err(|source| crate::store::StoreError::Prepare {
            url: crate::store::redact(url),
            source,
        })?;
    Ok(store)
}

/// Creates the outbox and inbox tables if they are missing.
pub async fn prepare(store: &Store) -> Result<(), sqlx::Error> {
    for statement in SCHEMA {
        sqlx::query(statement).execute(store.pool()).await?;
    }
    Ok(())
}
