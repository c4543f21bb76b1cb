//! The outbox: an event is inserted in the caller's transaction, so it exists exactly when
//! the change it announces was committed (a rolled-back transaction leaves none); a relay
//! sends the rows to the log in insertion order and deletes them once the log has them, so a
//! crash between commit and publish only delays the event (the log drops the repeat a crash
//! after publish and before delete causes, by event id).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_api::events::CloudEvent;
use sqlx::{Any, Row, Transaction};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::telemetry::metrics;

use super::client::EventsClient;
use crate::store::{now_ms, Store};

/// A process-wide sequence: milliseconds shifted, plus a counter, so rows keep insertion order.
fn next_seq() -> i64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    now_ms() * 1_000_000 + n as i64
}

/// Writes events into the outbox.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    wake: std::sync::Arc<Notify>,
}

impl Outbox {
    /// An outbox; give the same to the [`Relay`], so a commit wakes it at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `event` for `topic` inside `tx`: published only if `tx` commits.
    /// The event carries the context of a producer span (child of the current one) in its
    /// `traceparent`, unless it has one already, so its consumers join the same trace.
    pub async fn add(&self, tx: &mut Transaction<'_, Any>, topic: &str, event: &CloudEvent) -> Result<(), sqlx::Error> {
        let producer = crate::telemetry::span::producer(topic, &event.kind, &event.id);
        let traced;
        let event = match crate::telemetry::propagation::traceparent(&producer) {
            Some(traceparent) if event.traceparent.is_none() => {
                traced = CloudEvent {
                    traceparent: Some(traceparent),
                    ..event.clone()
                };
                &traced
            }
            _ => event,
        };
        let envelope = serde_json::to_string(event).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        sqlx::query("INSERT INTO flotilla_outbox (seq, topic, envelope, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(next_seq())
            .bind(topic)
            .bind(envelope)
            .bind(now_ms())
            .execute(&mut **tx)
            .instrument(producer)
            .await?;
        Ok(())
    }

    /// Tells the relay something was committed.
    pub fn committed(&self) {
        self.wake.notify_one();
    }
}

/// Sends the outbox to the log.
pub struct Relay {
    store: Store,
    client: EventsClient,
    outbox: Outbox,
}

impl Relay {
    /// A relay of `store`'s outbox to the log behind `client`.
    pub fn new(store: Store, client: EventsClient, outbox: Outbox) -> Self {
        Self { store, client, outbox }
    }

    /// Publishes what is in the outbox now, oldest first; returns how many events went.
    pub async fn drain(&self) -> Result<u64, String> {
        const PAGE: usize = 100;
        let mut sent = 0;
        let mut first = true;
        loop {
            let rows = sqlx::query("SELECT seq, topic, envelope FROM flotilla_outbox ORDER BY seq LIMIT $1")
                .bind(PAGE as i64)
                .fetch_all(self.store.pool())
                .await
                .map_err(|e| e.to_string())?;
            if std::mem::take(&mut first) {
                // What waits as the drain begins: the first page, unless it is full (a
                // backlog, which the count measures) — no extra statement after each commit.
                let pending = if rows.len() < PAGE {
                    rows.len() as i64
                } else {
                    sqlx::query_scalar("SELECT COUNT(*) FROM flotilla_outbox")
                        .fetch_one(self.store.pool())
                        .await
                        .map_err(|e| e.to_string())?
                };
                metrics::set(metrics::EVENTS_OUTBOX_PENDING, &[], pending as f64);
            }
            if rows.is_empty() {
                metrics::set(metrics::EVENTS_OUTBOX_PENDING, &[], 0.0);
                return Ok(sent);
            }
            // Consecutive rows of one topic go in one append; order is kept.
            let mut batch: Vec<(i64, String, CloudEvent)> = Vec::new();
            for row in &rows {
                let seq: i64 = row.try_get("seq").map_err(|e| e.to_string())?;
                let topic: String = row.try_get("topic").map_err(|e| e.to_string())?;
                let envelope: String = row.try_get("envelope").map_err(|e| e.to_string())?;
                let event: CloudEvent = serde_json::from_str(&envelope).map_err(|e| e.to_string())?;
                if batch.last().is_some_and(|(_, t, _)| *t != topic) {
                    break;
                }
                batch.push((seq, topic, event));
            }
            let topic = batch[0].1.clone();
            let events: Vec<CloudEvent> = batch.iter().map(|(_, _, e)| e.clone()).collect();
            self.client.append(&topic, &events).await.map_err(|e| e.to_string())?;
            metrics::add(metrics::EVENTS_PUBLISHED, &[&topic], events.len() as f64);
            let last = batch.last().map_or(0, |(s, _, _)| *s);
            sqlx::query("DELETE FROM flotilla_outbox WHERE seq <= $1 AND topic = $2")
                .bind(last)
                .bind(&topic)
                .execute(self.store.pool())
                .await
                .map_err(|e| e.to_string())?;
            sent += batch.len() as u64;
        }
    }

    /// Relays until the process ends: at once after a commit, at least every second, and
    /// with backoff while the log is away (nothing is lost meanwhile: the rows wait).
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.drain().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.outbox.wake.notified()).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay: the event log is not taking events; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
