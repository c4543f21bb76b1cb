//! The catalog's HTTP API.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use flotilla::config::LiveConfig;
use flotilla::http::{Json, Query};
use flotilla::store::Store;
use flotilla::Problem;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::config::CatalogConfig;

/// What the handlers share: the database and the live knobs.
#[derive(Clone)]
struct AppState {
    store: Store,
    config: LiveConfig<CatalogConfig>,
}

/// A price in integer minor units (cents), never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Amount in minor units (1999 = 19.99).
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: i64,
    /// Stock keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category slug.
    pub category: String,
    /// Price.
    pub price: Price,
    /// Image URL.
    pub image_url: String,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items on this page.
    pub items: Vec<T>,
    /// 1-based page number.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Items over all pages.
    pub total: i64,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
}

/// The catalog's routes over its store.
pub fn router(store: Store, config: LiveConfig<CatalogConfig>) -> Router {
    Router::new()
        .route("/api/v1/products", get(list_products))
        .route("/api/v1/products/{id}", get(get_product))
        .with_state(AppState { store, config })
}

fn internal(err: sqlx::Error) -> Problem {
    tracing::error!(error = %err, "catalog database error");
    Problem::internal()
}

fn product(row: &sqlx::any::AnyRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        category: row.try_get("category")?,
        price: Price {
            amount_minor: row.try_get("price_minor")?,
            currency: row.try_get("currency")?,
        },
        image_url: row.try_get("image_url")?,
    })
}

const COLUMNS: &str = "id, sku, name, description, category, price_minor, currency, image_url";

async fn list_products(
    State(AppState { store, config }): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<Product>>, Problem> {
    let page = q.page.unwrap_or(1);
    if page == 0 {
        return Err(Problem::invalid_field("page", "pages count from 1"));
    }
    let config = config.current();
    let per_page = q.per_page.unwrap_or(config.page_size);
    if per_page == 0 || per_page > config.max_page_size {
        return Err(Problem::invalid_field(
            "per_page",
            format!("must be 1 to {}", config.max_page_size),
        ));
    }
    let offset = i64::from(page - 1) * i64::from(per_page);
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(store.pool())
        .await
        .map_err(internal)?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM products ORDER BY id LIMIT $1 OFFSET $2"
    ))
    .bind(i64::from(per_page))
    .bind(offset)
    .fetch_all(store.pool())
    .await
    .map_err(internal)?;
    let items = rows.iter().map(product).collect::<Result<_, _>>().map_err(internal)?;
    Ok(Json(Page {
        items,
        page,
        per_page,
        total,
    }))
}

async fn get_product(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, Problem> {
    let id: i64 = id
        .parse()
        .map_err(|_| Problem::invalid_field("id", format!("`{id}` is not a product id (a positive integer)")))?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await
        .map_err(internal)?;
    match row {
        Some(row) => Ok(Json(product(&row).map_err(internal)?)),
        None => Err(Problem::not_found(format!("no product with id {id}"))),
    }
}

#[cfg(test)]
mod tests;
