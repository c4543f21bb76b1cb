//! Stock and reservations. Every operation is idempotent by order id, and stock can never go
//! negative: a reservation takes units with one conditional `UPDATE` per line (`… WHERE
//! on_hand - reserved >= quantity`), which the database applies atomically per row, inside a
//! transaction that writes first (so SQLite takes its write lock at once and PostgreSQL's row
//! locks order racing reservations); the table's checks refuse an oversell even so.

use flotilla::store::{now_ms, Store};
use flotilla::utoipa::{self, ToSchema};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// One product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stock {
    /// The product.
    pub product_id: i64,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held for orders not yet shipped.
    pub reserved: i64,
    /// Units that may still be reserved.
    pub available: i64,
}

/// One line of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The product.
    #[schema(minimum = 1)]
    pub product_id: i64,
    /// Units.
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ReservationState)]
pub enum State {
    /// Units are held.
    Reserved,
    /// Units went back (or were never taken: a release that came first).
    Released,
    /// Units left the warehouse.
    Committed,
    /// Units that had been committed came back: the order was given up after its stock was
    /// committed (its confirmation failed after the commit went through).
    Returned,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Reserved => "reserved",
            State::Released => "released",
            State::Committed => "committed",
            State::Returned => "returned",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "reserved" => Some(State::Reserved),
            "released" => Some(State::Released),
            "committed" => Some(State::Committed),
            "returned" => Some(State::Returned),
            _ => None,
        }
    }
}

/// An order's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    /// The order.
    pub order_id: String,
    /// Where it stands.
    pub state: State,
    /// What it holds (or held).
    pub lines: Vec<Line>,
}

/// A line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    /// The product.
    pub product_id: i64,
    /// Units asked for.
    pub requested: i64,
    /// Units that could be reserved (0 for an unknown product).
    pub available: i64,
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// A field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Not enough stock for these lines; nothing was reserved.
    #[error("not enough stock")]
    Insufficient(Vec<Shortage>),
    /// The order id is taken by a reservation with other lines.
    #[error("order `{0}` already has a reservation with other lines")]
    Mismatch(String),
    /// The operation does not apply in the reservation's state.
    #[error("order `{order_id}` is {state:?}")]
    WrongState {
        /// The order.
        order_id: String,
        /// Its state.
        state: State,
    },
    /// No such order or product.
    #[error("{0}")]
    NotFound(String),
    /// Setting stock below what is reserved.
    #[error("product {product_id} has {reserved} units reserved")]
    BelowReserved {
        /// The product.
        product_id: i64,
        /// Units reserved.
        reserved: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StockError {
    StockError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// An order id: 1 to 64 printable ASCII characters, no `/`.
pub fn check_order_id(order_id: &str) -> Result<(), StockError> {
    let ok = !order_id.is_empty() && order_id.len() <= 64 && order_id.chars().all(|c| c.is_ascii_graphic() && c != '/');
    if ok {
        Ok(())
    } else {
        Err(invalid("order_id", "1 to 64 printable characters without '/'"))
    }
}

fn check_lines(lines: &[Line]) -> Result<Vec<Line>, StockError> {
    if lines.is_empty() || lines.len() > 100 {
        return Err(invalid("lines", "1 to 100 lines"));
    }
    let mut sorted = lines.to_vec();
    // One order of locking for every reservation: racing ones cannot deadlock.
    sorted.sort_by_key(|l| l.product_id);
    if sorted.windows(2).any(|w| w[0].product_id == w[1].product_id) {
        return Err(invalid("lines", "each product at most once"));
    }
    if let Some(bad) = sorted.iter().find(|l| l.product_id <= 0) {
        return Err(invalid(
            "lines",
            format!("product_id {} is not a product id", bad.product_id),
        ));
    }
    if let Some(bad) = sorted.iter().find(|l| !(1..=10_000).contains(&l.quantity)) {
        return Err(invalid("lines", format!("quantity {} is not 1 to 10000", bad.quantity)));
    }
    Ok(sorted)
}

/// One product's stock.
pub async fn stock(store: &Store, product_id: i64) -> Result<Stock, StockError> {
    let row = sqlx::query("SELECT product_id, on_hand, reserved FROM stock WHERE product_id = $1")
        .bind(product_id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| StockError::NotFound(format!("no stock is kept for product {product_id}")))?;
    let (on_hand, reserved): (i64, i64) = (row.try_get("on_hand")?, row.try_get("reserved")?);
    Ok(Stock {
        product_id: row.try_get("product_id")?,
        on_hand,
        reserved,
        available: on_hand - reserved,
    })
}

/// Sets a product's units on hand (never below what is reserved).
pub async fn set_on_hand(store: &Store, product_id: i64, on_hand: i64) -> Result<Stock, StockError> {
    if product_id <= 0 {
        return Err(invalid("product_id", "not a product id"));
    }
    if !(0..=1_000_000_000).contains(&on_hand) {
        return Err(invalid("on_hand", "0 to 10^9"));
    }
    let now = now_ms();
    let updated =
        sqlx::query("UPDATE stock SET on_hand = $1, updated_ms = $2 WHERE product_id = $3 AND reserved <= $1")
            .bind(on_hand)
            .bind(now)
            .bind(product_id)
            .execute(store.pool())
            .await?;
    if updated.rows_affected() == 0 {
        match stock(store, product_id).await {
            Ok(current) => {
                return Err(StockError::BelowReserved {
                    product_id,
                    reserved: current.reserved,
                })
            }
            Err(StockError::NotFound(_)) => {
                sqlx::query(
                    "INSERT INTO stock (product_id, on_hand, reserved, updated_ms) VALUES ($1, $2, 0, $3) ON CONFLICT (product_id) DO NOTHING",
                )
                .bind(product_id)
                .bind(on_hand)
                .bind(now)
                .execute(store.pool())
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    stock(store, product_id).await
}

/// An order's reservation.
pub async fn reservation(store: &Store, order_id: &str) -> Result<Reservation, StockError> {
    check_order_id(order_id)?;
    let row = sqlx::query("SELECT state FROM reservations WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(store.pool())
        .await?
        .ok_or_else(|| StockError::NotFound(format!("no reservation for order `{order_id}`")))?;
    let state: String = row.try_get("state")?;
    let lines =
        sqlx::query("SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id")
            .bind(order_id)
            .fetch_all(store.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(Line {
                    product_id: r.try_get("product_id")?,
                    quantity: r.try_get("quantity")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Reservation {
        order_id: order_id.to_owned(),
        state: State::parse(&state).unwrap_or(State::Released),
        lines,
    })
}

/// Reserves every line for the order, or none. Asked again with the same lines, answers as
/// the first time; with other lines, refuses.
pub async fn reserve(store: &Store, order_id: &str, lines: &[Line]) -> Result<Reservation, StockError> {
    check_order_id(order_id)?;
    let lines = check_lines(lines)?;
    let now = now_ms();
    let mut tx = store.begin_grouped().await?;
    let created = sqlx::query(
        "INSERT INTO reservations (order_id, state, created_ms, updated_ms) VALUES ($1, 'reserved', $2, $2) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !created {
        tx.rollback().await?;
        let existing = reservation(store, order_id).await?;
        return match existing.state {
            state @ (State::Released | State::Returned) => Err(StockError::WrongState {
                order_id: order_id.to_owned(),
                state,
            }),
            _ if existing.lines == lines => Ok(existing),
            _ => Err(StockError::Mismatch(order_id.to_owned())),
        };
    }
    let mut short = Vec::new();
    for line in &lines {
        let taken = sqlx::query(
            "UPDATE stock SET reserved = reserved + $1, updated_ms = $2 WHERE product_id = $3 AND on_hand - reserved >= $1",
        )
        .bind(line.quantity)
        .bind(now)
        .bind(line.product_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if taken == 0 {
            short.push(*line);
            continue;
        }
        sqlx::query("INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ($1, $2, $3)")
            .bind(order_id)
            .bind(line.product_id)
            .bind(line.quantity)
            .execute(&mut **tx)
            .await?;
    }
    if !short.is_empty() {
        tx.rollback().await?;
        let mut shortages = Vec::new();
        for line in short {
            let available = stock(store, line.product_id).await.map_or(0, |s| s.available);
            shortages.push(Shortage {
                product_id: line.product_id,
                requested: line.quantity,
                available,
            });
        }
        return Err(StockError::Insufficient(shortages));
    }
    tx.commit().await?;
    Ok(Reservation {
        order_id: order_id.to_owned(),
        state: State::Reserved,
        lines,
    })
}

/// Moves a reservation from `reserved` to `to`, applying `stock_sql` to each line's product
/// (`$1` the quantity, `$2` the time, `$3` the product).
async fn settle(store: &Store, order_id: &str, from: State, to: State, stock_sql: &str) -> Result<bool, StockError> {
    let now = now_ms();
    let mut tx = store.begin_grouped().await?;
    let moved = sqlx::query("UPDATE reservations SET state = $1, updated_ms = $2 WHERE order_id = $3 AND state = $4")
        .bind(to.as_str())
        .bind(now)
        .bind(order_id)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if !moved {
        tx.rollback().await?;
        return Ok(false);
    }
    let lines =
        sqlx::query("SELECT product_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY product_id")
            .bind(order_id)
            .fetch_all(&mut **tx)
            .await?;
    for line in &lines {
        let quantity: i64 = line.try_get("quantity")?;
        let product: i64 = line.try_get("product_id")?;
        sqlx::query(stock_sql)
            .bind(quantity)
            .bind(now)
            .bind(product)
            .execute(&mut **tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Gives the order's units back: held ones are released; committed ones (the order was
/// given up after its commit went through, its answer lost) are returned to stock.
/// Idempotent; a release of an order never reserved is kept, so a reservation arriving after
/// it (a retry that lost a race with a cancel) is refused.
pub async fn release(store: &Store, order_id: &str) -> Result<Reservation, StockError> {
    check_order_id(order_id)?;
    let released = settle(
        store,
        order_id,
        State::Reserved,
        State::Released,
        "UPDATE stock SET reserved = reserved - $1, updated_ms = $2 WHERE product_id = $3",
    )
    .await?
        || settle(
            store,
            order_id,
            State::Committed,
            State::Returned,
            "UPDATE stock SET on_hand = on_hand + $1, updated_ms = $2 WHERE product_id = $3",
        )
        .await?;
    if released {
        tracing::debug!(order_id, "stock given back");
    } else {
        sqlx::query(
            "INSERT INTO reservations (order_id, state, created_ms, updated_ms) VALUES ($1, 'released', $2, $2) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(now_ms())
        .execute(store.pool())
        .await?;
    }
    reservation(store, order_id).await
}

/// The order's units leave the warehouse. Idempotent.
pub async fn commit(store: &Store, order_id: &str) -> Result<Reservation, StockError> {
    check_order_id(order_id)?;
    settle(
        store,
        order_id,
        State::Reserved,
        State::Committed,
        "UPDATE stock SET on_hand = on_hand - $1, reserved = reserved - $1, updated_ms = $2 WHERE product_id = $3",
    )
    .await?;
    let now = reservation(store, order_id).await?;
    match now.state {
        state @ (State::Released | State::Returned) => Err(StockError::WrongState {
            order_id: order_id.to_owned(),
            state,
        }),
        _ => Ok(now),
    }
}

/// Stock for the demo catalog's 50 products, into an empty table.
pub async fn seed_if_empty(store: &Store) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock")
        .fetch_one(store.pool())
        .await?;
    if count > 0 {
        return Ok(0);
    }
    let now = now_ms();
    let mut tx = store.pool().begin().await?;
    for id in 1..=50i64 {
        sqlx::query(
            "INSERT INTO stock (product_id, on_hand, reserved, updated_ms) VALUES ($1, $2, 0, $3) ON CONFLICT (product_id) DO NOTHING",
        )
        .bind(id)
        .bind(20 + (id * 37) % 80)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(50)
}
