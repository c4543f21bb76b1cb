//! The orders' event store and its read model. Appending an order's events, refreshing its
//! row in the read model and putting what other services must hear of into the outbox happen
//! in one transaction: the three never disagree, and a crash loses none of them.

use flotilla::events::{CloudEvent, Outbox};
use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use flotilla_shop_contracts::orders as contract;
use sqlx::{Any, Row, Transaction};

use crate::order::{Money, Order, OrderEvent, OrderLine, Recorded, Status};

/// Moves an order's row in the read model (`$1`) to the status an event gives it (`$2`, or
/// none) at `$3`, only while the order is open ([`Status::OPEN`], as the fold has it).
static MOVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE orders_view SET status = CASE WHEN status IN ({}) THEN COALESCE($2, status) ELSE status END, \
         version = version + 1, updated_ms = $3 WHERE id = $1 RETURNING status",
        Status::open_sql()
    )
});

/// The orders' events, with the outbox the integration events go through.
#[derive(Clone, Debug)]
pub struct Journal {
    store: Store,
    /// The same database without an fsync per commit, for events recorded outside the saga's
    /// own transactions (an order waiting for payments): lost to a power failure, the step
    /// runs again and records the same event.
    progress: Store,
    outbox: Outbox,
}

/// A row of the read model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema)]
#[schema(as = OrderSummary)]
pub struct Summary {
    /// The order.
    pub id: String,
    /// Where it is.
    pub status: Status,
    /// How many items.
    pub items: i64,
    /// Its total.
    #[schema(value_type = crate::openapi::Money)]
    pub total: contract::Money,
    /// When it was placed.
    pub created_ms: i64,
    /// When it last changed.
    pub updated_ms: i64,
}

fn decode(row: &sqlx::any::AnyRow) -> Result<Recorded, sqlx::Error> {
    let data: String = row.try_get("data")?;
    Ok(Recorded {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        event: serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// What an order's integration events carry besides its id and status: known to whoever
/// records an event (the placement, the saga's state), so recording need not fold the order.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The customer.
    pub user_id: &'a str,
    /// What was ordered.
    pub lines: &'a [OrderLine],
    /// What it costs.
    pub total: &'a Money,
}

/// The type others know an event by, and the reason it carries, if others hear of it.
fn integration_kind(event: &OrderEvent) -> Option<(&'static str, String)> {
    match event {
        OrderEvent::Placed { .. } => Some((contract::PLACED, String::new())),
        OrderEvent::Confirmed => Some((contract::CONFIRMED, String::new())),
        OrderEvent::Cancelled { reason } => Some((contract::CANCELLED, reason.clone())),
        _ => None,
    }
}

/// The event other services hear of, if this is one they care about.
fn integration_event(order_id: &str, status: Status, facts: Facts<'_>, event: &OrderEvent) -> Option<CloudEvent> {
    let (kind, reason) = integration_kind(event)?;
    let data = contract::OrderEventData {
        order_id: order_id.to_owned(),
        user_id: facts.user_id.to_owned(),
        status: status.as_str().to_owned(),
        total: facts.total.clone(),
        lines: facts.lines.to_vec(),
        reason,
    };
    Some(CloudEvent {
        specversion: "1.0".into(),
        // One id per order and kind: a step that runs again publishes the same event, which
        // the log drops.
        id: format!("{order_id}:{}", event.kind()),
        source: contract::SOURCE.into(),
        kind: kind.into(),
        subject: Some(order_id.to_owned()),
        time: Some(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        traceparent: None,
        data: serde_json::to_value(data).ok()?,
        deadletterreason: None,
    })
}

impl Journal {
    /// The journal in `store`; integration events go through `outbox`.
    pub fn new(store: Store, outbox: Outbox) -> Self {
        Self {
            progress: store.relaxed(),
            store,
            outbox,
        }
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// An order's events, oldest first.
    pub async fn events(&self, order_id: &str) -> Result<Vec<Recorded>, sqlx::Error> {
        events_of(self.store.pool(), order_id).await
    }

    /// One order, folded from its events.
    pub async fn order(&self, order_id: &str) -> Result<Option<(Order, Vec<Recorded>)>, sqlx::Error> {
        let events = self.events(order_id).await?;
        Ok(Order::fold(order_id, &events).map(|order| (order, events)))
    }

    /// Appends `event` to the order in its own transaction (a step's wait); an event of a
    /// kind the order already has is not added again.
    pub async fn record(&self, order_id: &str, event: OrderEvent) -> Result<(), sqlx::Error> {
        let mut tx = self.progress.begin_write().await?;
        self.record_in(&mut tx, order_id, event, None).await?;
        tx.commit().await?;
        self.outbox.committed();
        Ok(())
    }

    /// Appends `event` inside `tx`, moves the read model's row along and queues the
    /// integration event; false if the order already has an event of this kind (a step
    /// repeated after a crash: nothing is written). Without `facts`, an event others hear of
    /// is recorded by folding the order first. Call [`Journal::committed`] after the commit.
    pub async fn record_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        order_id: &str,
        event: OrderEvent,
        facts: Option<Facts<'_>>,
    ) -> Result<bool, sqlx::Error> {
        let facts = match (&event, facts) {
            (
                OrderEvent::Placed {
                    user_id, lines, total, ..
                },
                _,
            ) => Some(Facts { user_id, lines, total }),
            (_, facts) => facts,
        };
        if facts.is_none() && integration_kind(&event).is_some() {
            return self.record_folded(tx, order_id, event).await;
        }
        self.append(tx, order_id, &event, facts).await
    }

    /// The event, numbered after the order's last, and the read model moved by it, without
    /// reading the order: the unique (order, kind) index turns a repeat into no row.
    async fn append(
        &self,
        tx: &mut Transaction<'static, Any>,
        order_id: &str,
        event: &OrderEvent,
        facts: Option<Facts<'_>>,
    ) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let data = serde_json::to_string(event).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let added = sqlx::query(
            "INSERT INTO order_events (order_id, seq, type, data, at_ms) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM order_events WHERE order_id = $1 \
             ON CONFLICT (order_id, type) DO NOTHING",
        )
        .bind(order_id)
        .bind(event.kind())
        .bind(data)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !added {
            return Ok(false);
        }
        // The order's status after the event, as the read model has it.
        let status = if let OrderEvent::Placed { .. } = event {
            // The first event: the order is what it says.
            let placed = Recorded {
                seq: 1,
                at_ms: now,
                event: event.clone(),
            };
            let order = Order::fold(order_id, &[placed]).ok_or_else(|| missing(order_id))?;
            project(tx, &order).await?;
            order.status
        } else {
            let moved: Option<String> = sqlx::query_scalar(&MOVE)
                .bind(order_id)
                .bind(event.moves_open_order_to().map(Status::as_str))
                .bind(now)
                .fetch_optional(&mut **tx)
                .await?;
            match moved.as_deref().and_then(Status::parse) {
                Some(status) => status,
                // No row (lost, or an unknown status in it): fold the order and write it again.
                None => {
                    let order = fold_in(tx, order_id).await?;
                    project(tx, &order).await?;
                    order.status
                }
            }
        };
        // Others hear of an event that moved the order (not of a late one a finished order
        // ignored).
        if let Some(facts) = facts.filter(|_| event.moves_open_order_to() == Some(status)) {
            if let Some(envelope) = integration_event(order_id, status, facts, event) {
                self.outbox.add(tx, contract::TOPIC, &envelope).await?;
            }
        }
        Ok(true)
    }

    /// [`Journal::record_in`] for an event others hear of when the facts are not at hand
    /// (a saga started before its state carried them): folds the order, then appends.
    async fn record_folded(
        &self,
        tx: &mut Transaction<'static, Any>,
        order_id: &str,
        event: OrderEvent,
    ) -> Result<bool, sqlx::Error> {
        let order = fold_in(tx, order_id).await?;
        let facts = Facts {
            user_id: &order.user_id,
            lines: &order.lines,
            total: &order.total,
        };
        self.append(tx, order_id, &event, Some(facts)).await
    }

    /// Wakes the outbox relay after a commit.
    pub fn committed(&self) {
        self.outbox.committed();
    }

    /// The customer's orders from the read model, newest first.
    pub async fn list(&self, user_id: &str, status: Option<Status>, limit: i64) -> Result<Vec<Summary>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, status, items, total_minor, currency, created_ms, updated_ms FROM orders_view \
             WHERE user_id = $1 AND ($2 = '' OR status = $2) ORDER BY created_ms DESC, id LIMIT $3",
        )
        .bind(user_id)
        .bind(status.map_or("", Status::as_str))
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok(Summary {
                    id: row.try_get("id")?,
                    status: Status::parse(&status).unwrap_or(Status::Pending),
                    items: row.try_get("items")?,
                    total: contract::Money {
                        amount_minor: row.try_get("total_minor")?,
                        currency: row.try_get("currency")?,
                    },
                    created_ms: row.try_get("created_ms")?,
                    updated_ms: row.try_get("updated_ms")?,
                })
            })
            .collect()
    }

    /// Throws the read model away and folds it again from every event; returns how many
    /// orders it holds. Runs in one transaction: readers see the old model or the new one.
    pub async fn rebuild(&self) -> Result<u64, sqlx::Error> {
        let mut tx = self.store.begin_write().await?;
        sqlx::query("DELETE FROM orders_view").execute(&mut *tx).await?;
        let rows = sqlx::query("SELECT order_id, seq, at_ms, data FROM order_events ORDER BY order_id, seq")
            .fetch_all(&mut *tx)
            .await?;
        let mut count = 0;
        let mut current: Option<(String, Vec<Recorded>)> = None;
        for row in &rows {
            let id: String = row.try_get("order_id")?;
            if current.as_ref().is_some_and(|(c, _)| *c != id) {
                if let Some((done, events)) = current.take() {
                    count += project_events(&mut tx, &done, &events).await?;
                }
            }
            current.get_or_insert_with(|| (id, Vec::new())).1.push(decode(row)?);
        }
        if let Some((done, events)) = current.take() {
            count += project_events(&mut tx, &done, &events).await?;
        }
        tx.commit().await?;
        Ok(count)
    }
}

/// An order's events, oldest first, through `conn` (the pool, or a transaction).
async fn events_of<'c, E>(conn: E, order_id: &str) -> Result<Vec<Recorded>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let rows = sqlx::query("SELECT seq, at_ms, data FROM order_events WHERE order_id = $1 ORDER BY seq")
        .bind(order_id)
        .fetch_all(conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// The order folded from its events as `tx` sees them.
async fn fold_in(tx: &mut Transaction<'static, Any>, order_id: &str) -> Result<Order, sqlx::Error> {
    let events = events_of(&mut **tx, order_id).await?;
    Order::fold(order_id, &events).ok_or_else(|| missing(order_id))
}

fn missing(order_id: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!("order `{order_id}` has no placement event"))
}

async fn project_events(tx: &mut Transaction<'static, Any>, id: &str, events: &[Recorded]) -> Result<u64, sqlx::Error> {
    match Order::fold(id, events) {
        Some(order) => {
            project(tx, &order).await?;
            Ok(1)
        }
        None => Ok(0),
    }
}

/// Writes the order's row of the read model.
async fn project(conn: &mut sqlx::AnyConnection, order: &Order) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders_view (id, user_id, status, items, total_minor, currency, version, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, version = excluded.version, updated_ms = excluded.updated_ms",
    )
    .bind(&order.id)
    .bind(&order.user_id)
    .bind(order.status.as_str())
    .bind(order.items())
    .bind(order.total.amount_minor)
    .bind(&order.total.currency)
    .bind(order.version)
    .bind(order.created_ms)
    .bind(order.updated_ms)
    .execute(conn)
    .await?;
    Ok(())
}
