//! The inbox: a consumer handles each event in a database transaction that also records the
//! event's id for its group; a redelivered event finds its id and is acked without a second
//! effect. A failing handler's transaction rolls back; the event is nacked after a backoff
//! (the log redelivers it, and dead-letters it after its last delivery).

use std::future::Future;
use std::time::Duration;

use flotilla_api::events::Delivery;
use sqlx::{Any, Transaction};
use tracing::Instrument;

use crate::telemetry::metrics;

use super::client::EventsClient;
use crate::store::{now_ms, Store};

/// A consumer group reading one topic into a service's database.
pub struct Consumer {
    store: Store,
    client: EventsClient,
    topic: String,
    group: String,
}

impl Consumer {
    /// A consumer of `topic` as `group`.
    pub fn new(store: Store, client: EventsClient, topic: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            store,
            client,
            topic: topic.into(),
            group: group.into(),
        }
    }

    /// Handles one delivery: its effect and its inbox row commit together, or neither.
    /// Returns whether the handler ran (false: a repeat, skipped).
    /// It runs in a consumer span whose parent is the producer span the event's
    /// `traceparent` names.
    pub async fn handle_one<F, Fut>(&self, delivery: &Delivery, handler: &F) -> Result<bool, String>
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        let event = &delivery.event;
        let span = crate::telemetry::span::consumer(
            &self.topic,
            &self.group,
            &event.kind,
            &event.id,
            event.traceparent.as_deref(),
        );
        let result = self.handle_in_span(delivery, handler).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(fresh) => {
                span.record("flotilla.redelivered", !fresh);
                if *fresh {
                    "handled"
                } else {
                    "duplicate"
                }
            }
            Err(reason) => {
                crate::telemetry::span::record_error(&span, reason);
                "failed"
            }
        };
        metrics::add(metrics::EVENTS_CONSUMED, &[&self.topic, &self.group, outcome], 1.0);
        if let Some(age) = event.time.as_deref().and_then(age_of) {
            metrics::set(
                metrics::EVENTS_CONSUMER_LAG,
                &[&self.topic, &self.group],
                age.as_secs_f64(),
            );
        }
        result
    }

    async fn handle_in_span<F, Fut>(&self, delivery: &Delivery, handler: &F) -> Result<bool, String>
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        let mut tx = self.store.pool().begin().await.map_err(|e| e.to_string())?;
        let fresh = sqlx::query(
            "INSERT INTO flotilla_inbox (grp, event_id, processed_ms) VALUES ($1, $2, $3) ON CONFLICT (grp, event_id) DO NOTHING",
        )
        .bind(&self.group)
        .bind(&delivery.event.id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await.map_err(|e| e.to_string())?;
            return Ok(false);
        }
        let tx = handler(delivery.clone(), tx).await?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Fetches, handles and acks until the process ends.
    pub async fn run<F, Fut>(self, handler: F)
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        loop {
            let deliveries = match self
                .client
                .fetch(&self.topic, &self.group, 50, Duration::from_secs(20))
                .await
            {
                Ok(deliveries) => deliveries,
                Err(err) => {
                    tracing::warn!(error = %err, topic = %self.topic, "event fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for delivery in deliveries {
                match self.handle_one(&delivery, &handler).await {
                    Ok(_) => {
                        if let Err(err) = self.client.ack(&self.topic, &self.group, &[delivery.offset]).await {
                            tracing::warn!(error = %err, "ack failed; the event will come again and be skipped");
                        }
                    }
                    Err(reason) => {
                        let backoff = Duration::from_millis(100 * (1u64 << delivery.attempt.min(6)));
                        tracing::warn!(topic = %self.topic, offset = delivery.offset, attempt = delivery.attempt, %reason, "event handler failed");
                        tokio::time::sleep(backoff).await;
                        let _ = self
                            .client
                            .nack(&self.topic, &self.group, delivery.offset, &reason)
                            .await;
                    }
                }
            }
        }
    }
}

/// How long ago an RFC 3339 time was (zero if it is in the future).
fn age_of(time: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(time).ok()?;
    Some(std::time::SystemTime::now().duration_since(at).unwrap_or_default())
}
