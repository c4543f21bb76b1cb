//! The inbox: a consumer handles each event in a database transaction that also records the
//! event's id for its group; a redelivered event finds its id and is acked without a second
//! effect. A fetched batch is handled in one transaction and acked in one call; when any of
//! it fails, its events are handled again one by one. A failing handler's transaction rolls
//! back; the event is nacked after a backoff (the log redelivers it, and dead-letters it
//! after its last delivery).

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
        let span = self.span(delivery);
        let result = self.handle_in_span(delivery, handler).instrument(span.clone()).await;
        match &result {
            Ok(fresh) => {
                span.record("flotilla.redelivered", !fresh);
                self.observe(delivery, if *fresh { "handled" } else { "duplicate" });
            }
            Err(reason) => {
                crate::telemetry::span::record_error(&span, reason);
                self.observe(delivery, "failed");
            }
        }
        result
    }

    async fn handle_in_span<F, Fut>(&self, delivery: &Delivery, handler: &F) -> Result<bool, String>
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        let mut tx = self.store.pool().begin().await.map_err(|e| e.to_string())?;
        if !self.claim(&mut tx, delivery).await? {
            tx.rollback().await.map_err(|e| e.to_string())?;
            return Ok(false);
        }
        let tx = handler(delivery.clone(), tx).await?;
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Handles a fetched batch in one transaction: every event's inbox row and effect, one
    /// commit (under load a consumer pays one durable commit per batch, not per event).
    /// When a handler fails or the commit does, nothing of the batch stays and each event is
    /// handled again alone, so one bad event holds up only itself. Returns, per delivery,
    /// what [`Consumer::handle_one`] would.
    pub async fn handle_batch<F, Fut>(&self, deliveries: &[Delivery], handler: &F) -> Vec<Result<bool, String>>
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        if deliveries.len() > 1 {
            match self.handle_together(deliveries, handler).await {
                Ok(fresh) => {
                    for (delivery, fresh) in deliveries.iter().zip(&fresh) {
                        self.observe(delivery, if *fresh { "handled" } else { "duplicate" });
                    }
                    return fresh.into_iter().map(Ok).collect();
                }
                Err(reason) => {
                    tracing::warn!(topic = %self.topic, group = %self.group, %reason, events = deliveries.len(), "a batch of events failed; handling them one at a time");
                }
            }
        }
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(self.handle_one(delivery, handler).await);
        }
        outcomes
    }

    /// Every delivery of a batch in one transaction; `Err` (why) if any of it failed, rolled
    /// back.
    async fn handle_together<F, Fut>(&self, deliveries: &[Delivery], handler: &F) -> Result<Vec<bool>, String>
    where
        F: Fn(Delivery, Transaction<'static, Any>) -> Fut,
        Fut: Future<Output = Result<Transaction<'static, Any>, String>>,
    {
        let mut tx = self.store.pool().begin().await.map_err(|e| e.to_string())?;
        let mut fresh = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let span = self.span(delivery);
            let new = self.claim(&mut tx, delivery).instrument(span.clone()).await?;
            span.record("flotilla.redelivered", !new);
            if new {
                tx = match handler(delivery.clone(), tx).instrument(span.clone()).await {
                    Ok(tx) => tx,
                    Err(reason) => {
                        crate::telemetry::span::record_error(&span, &reason);
                        return Err(format!("event `{}`: {reason}", delivery.event.id));
                    }
                };
            }
            fresh.push(new);
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(fresh)
    }

    fn span(&self, delivery: &Delivery) -> tracing::Span {
        let event = &delivery.event;
        crate::telemetry::span::consumer(
            &self.topic,
            &self.group,
            &event.kind,
            &event.id,
            event.traceparent.as_deref(),
        )
    }

    /// Records the event's id for the group in `tx`; false if it was there (a repeat).
    async fn claim(&self, tx: &mut Transaction<'static, Any>, delivery: &Delivery) -> Result<bool, String> {
        let inserted = sqlx::query(
            "INSERT INTO flotilla_inbox (grp, event_id, processed_ms) VALUES ($1, $2, $3) ON CONFLICT (grp, event_id) DO NOTHING",
        )
        .bind(&self.group)
        .bind(&delivery.event.id)
        .bind(now_ms())
        .execute(&mut **tx)
        .await
        .map_err(|e| e.to_string())?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Counts a handled delivery and notes how old its event was.
    fn observe(&self, delivery: &Delivery, outcome: &str) {
        metrics::add(metrics::EVENTS_CONSUMED, &[&self.topic, &self.group, outcome], 1.0);
        if let Some(age) = delivery.event.time.as_deref().and_then(age_of) {
            metrics::set(
                metrics::EVENTS_CONSUMER_LAG,
                &[&self.topic, &self.group],
                age.as_secs_f64(),
            );
        }
    }

    /// Fetches, handles and acks until the process ends: a batch at a time, its handled
    /// events acked in one call.
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
            let outcomes = self.handle_batch(&deliveries, &handler).await;
            let handled: Vec<u64> = deliveries
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| outcome.is_ok())
                .map(|(delivery, _)| delivery.offset)
                .collect();
            if !handled.is_empty() {
                if let Err(err) = self.client.ack(&self.topic, &self.group, &handled).await {
                    tracing::warn!(error = %err, "ack failed; the events will come again and be skipped");
                }
            }
            for (delivery, outcome) in deliveries.iter().zip(outcomes) {
                if let Err(reason) = outcome {
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

/// How long ago an RFC 3339 time was (zero if it is in the future).
fn age_of(time: &str) -> Option<Duration> {
    let at = humantime::parse_rfc3339_weak(time).ok()?;
    Some(std::time::SystemTime::now().duration_since(at).unwrap_or_default())
}
