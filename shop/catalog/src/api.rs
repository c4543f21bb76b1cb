//! The catalog's HTTP API.

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use flotilla::auth::{Caller, Verifier};
use flotilla::config::LiveConfig;
use flotilla::http::{Json, Query};
use flotilla::store::Store;
use flotilla::utoipa::{self, IntoParams, OpenApi, ToSchema};
use flotilla::Problem;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::config::CatalogConfig;

/// What the handlers share: the database, the live knobs, and the check of admin tokens.
#[derive(Clone)]
struct AppState {
    store: Store,
    config: LiveConfig<CatalogConfig>,
    admin: Verifier,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.admin.clone()
    }
}

/// A price in integer minor units (cents), never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// Amount in minor units (1999 = 19.99).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

/// A product as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    #[schema(format = "uri")]
    pub image_url: String,
}

/// One page of products.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    /// The products on this page.
    pub items: Vec<Product>,
    /// 1-based page number.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Items over all pages.
    pub total: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Page size (default and most: the service's config).
    #[param(minimum = 1)]
    per_page: Option<u32>,
    /// Full-text search over name, description and category (words, prefix-matched).
    q: Option<String>,
    /// Only this category.
    #[param(pattern = "^[a-z0-9-]{1,40}$")]
    category: Option<String>,
}

/// What an admin sends to create or replace a product.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// Stock keeping unit: upper-case letters, digits and '-', 1 to 32.
    #[schema(pattern = "^[A-Z0-9-]{1,32}$")]
    pub sku: String,
    /// Display name, 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Description, at most 4000 characters.
    #[serde(default)]
    #[schema(max_length = 4000)]
    pub description: String,
    /// Category slug.
    #[schema(pattern = "^[a-z0-9-]{1,40}$")]
    pub category: String,
    /// Price.
    pub price: Price,
    /// Image URL (http or https).
    #[schema(format = "uri", max_length = 2048)]
    pub image_url: String,
}

fn check_category(category: &str) -> Result<(), Problem> {
    let ok = !category.is_empty()
        && category.len() <= 40
        && category
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid_field(
            "category",
            "a slug: lowercase letters, digits and '-', 1 to 40",
        ))
    }
}

impl ProductInput {
    /// The product this input makes under `id` (the name trimmed, as it is stored).
    fn into_product(self, id: i64) -> Product {
        Product {
            id,
            sku: self.sku,
            name: self.name.trim().to_owned(),
            description: self.description,
            category: self.category,
            price: self.price,
            image_url: self.image_url,
        }
    }

    fn validate(&self) -> Result<(), Problem> {
        let sku_ok = !self.sku.is_empty()
            && self.sku.len() <= 32
            && self
                .sku
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        if !sku_ok {
            return Err(Problem::invalid_field(
                "sku",
                "upper-case letters, digits and '-', 1 to 32",
            ));
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Problem::invalid_field("name", "1 to 200 characters"));
        }
        if self.description.chars().count() > 4000 {
            return Err(Problem::invalid_field("description", "at most 4000 characters"));
        }
        check_category(&self.category)?;
        if !(0..=1_000_000_000_000).contains(&self.price.amount_minor) {
            return Err(Problem::invalid_field("price.amount_minor", "0 to 10^12 minor units"));
        }
        if self.price.currency.len() != 3 || !self.price.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(Problem::invalid_field("price.currency", "an ISO 4217 code like EUR"));
        }
        let url_ok = (self.image_url.starts_with("https://") || self.image_url.starts_with("http://"))
            && self.image_url.len() <= 2048
            && !self.image_url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !url_ok {
            return Err(Problem::invalid_field(
                "image_url",
                "an http(s) URL of at most 2048 characters",
            ));
        }
        Ok(())
    }
}

/// The catalog's routes over its store.
///
/// Writes need a token with the `admin` role, checked by `admin` (the gateway checks it too).
pub fn router(store: Store, config: LiveConfig<CatalogConfig>, admin: Verifier) -> Router {
    Router::new()
        .route("/api/v1/products", get(list_products).post(create_product))
        .route(
            "/api/v1/products/{id}",
            get(get_product).put(replace_product).delete(delete_product),
        )
        .merge(flotilla::openapi::route(crate::openapi_document()))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(AppState { store, config, admin })
}

/// The routes above as the OpenAPI document tells them.
#[derive(OpenApi)]
#[openapi(paths(list_products, create_product, get_product, replace_product, delete_product))]
pub(crate) struct Api;

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

/// A page of products, optionally searched and filtered.
#[utoipa::path(get, path = "/api/v1/products", operation_id = "listProducts", params(ListQuery),
    responses(
        (status = 200, description = "A page", body = ProductPage),
        (status = 400, description = "A bad page, page size, category or search",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_products(
    State(AppState { store, config, .. }): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ProductPage>, Problem> {
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
    if let Some(category) = &q.category {
        check_category(category)?;
    }
    let (from_where, order, query) = match &q.q {
        Some(text) => {
            let words = crate::search::words(text).map_err(|reason| Problem::invalid_field("q", reason))?;
            let s = crate::search::search(store.engine(), &words, q.category.is_some());
            (s.from_where, s.order, Some(s.query))
        }
        None if q.category.is_some() => ("FROM products WHERE category = $1", "ORDER BY id", None),
        None => ("FROM products", "ORDER BY id", None),
    };
    // Parameters in order: the search text (if any), the category (if any), then the page.
    let params: Vec<String> = query.into_iter().chain(q.category.clone()).collect();
    let n = params.len();
    let count_sql = format!("SELECT COUNT(*) {from_where}");
    let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
    for p in &params {
        count = count.bind(p.clone());
    }
    let total = count.fetch_one(store.pool()).await.map_err(internal)?;
    let list_sql = format!(
        "SELECT {} {from_where} {order} LIMIT ${} OFFSET ${}",
        COLUMNS
            .split(", ")
            .map(|c| format!("products.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        n + 1,
        n + 2
    );
    let mut list = sqlx::query(&list_sql);
    for p in &params {
        list = list.bind(p.clone());
    }
    let rows = list
        .bind(i64::from(per_page))
        .bind(offset)
        .fetch_all(store.pool())
        .await
        .map_err(internal)?;
    let items = rows.iter().map(product).collect::<Result<_, _>>().map_err(internal)?;
    Ok(Json(ProductPage {
        items,
        page,
        per_page,
        total,
    }))
}

/// One product.
#[utoipa::path(get, path = "/api/v1/products/{id}", operation_id = "getProduct",
    params(("id" = i64, Path, minimum = 1, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_product(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, Problem> {
    let id = product_id(&id)?;
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

fn sku_taken() -> Problem {
    Problem::new(409, "sku-taken", "SKU taken").with_detail("another product has this sku")
}

fn write_error(err: sqlx::Error) -> Problem {
    match &err {
        sqlx::Error::Database(e) if e.is_unique_violation() => sku_taken(),
        _ => internal(err),
    }
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/v1/products", operation_id = "createProduct", security(("bearer" = [])),
    request_body = ProductInput,
    responses(
        (status = 201, description = "Created", body = Product,
            headers(("Location" = String, description = "The new product's path"))),
        (status = 400, description = "A field is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another product has this sku",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many products created at once; try again",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_product(
    State(AppState { store, .. }): State<AppState>,
    who: Caller,
    Json(input): Json<ProductInput>,
) -> Result<Response, Problem> {
    who.require(None)?;
    input.validate()?;
    // Ids are the next free integer; two creates racing for one retry with the next.
    for _ in 0..5 {
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM products")
            .fetch_one(store.pool())
            .await
            .map_err(internal)?;
        let inserted = sqlx::query(
            "INSERT INTO products (id, sku, name, description, category, price_minor, currency, image_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&input.sku)
        .bind(input.name.trim())
        .bind(&input.description)
        .bind(&input.category)
        .bind(input.price.amount_minor)
        .bind(&input.price.currency)
        .bind(&input.image_url)
        .execute(store.pool())
        .await;
        match inserted {
            Ok(_) => {
                tracing::info!(product = id, sku = %input.sku, by = %who.subject(), "product created");
                let mut response = (StatusCode::CREATED, Json(input.into_product(id))).into_response();
                if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/products/{id}")) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return Ok(response);
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products WHERE sku = $1")
                    .bind(&input.sku)
                    .fetch_one(store.pool())
                    .await
                    .map_err(internal)?;
                if taken > 0 {
                    return Err(sku_taken());
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Err(Problem::new(503, "busy", "Busy").with_detail("too many products created at once; try again"))
}

fn product_id(id: &str) -> Result<i64, Problem> {
    id.parse()
        .map_err(|_| Problem::invalid_field("id", format!("`{id}` is not a product id (a positive integer)")))
}

/// Replace a product (admin).
#[utoipa::path(put, path = "/api/v1/products/{id}", operation_id = "replaceProduct", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The product's id")), request_body = ProductInput,
    responses(
        (status = 200, description = "Replaced", body = Product),
        (status = 400, description = "Not a product id, or a field is malformed",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another product has this sku",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn replace_product(
    State(AppState { store, .. }): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(input): Json<ProductInput>,
) -> Result<Json<Product>, Problem> {
    who.require(None)?;
    let id = product_id(&id)?;
    input.validate()?;
    let done = sqlx::query(
        "UPDATE products SET sku = $1, name = $2, description = $3, category = $4, price_minor = $5, currency = $6, image_url = $7 WHERE id = $8",
    )
    .bind(&input.sku)
    .bind(input.name.trim())
    .bind(&input.description)
    .bind(&input.category)
    .bind(input.price.amount_minor)
    .bind(&input.price.currency)
    .bind(&input.image_url)
    .bind(id)
    .execute(store.pool())
    .await
    .map_err(write_error)?;
    if done.rows_affected() == 0 {
        return Err(Problem::not_found(format!("no product with id {id}")));
    }
    tracing::info!(product = id, by = %who.subject(), "product replaced");
    Ok(Json(input.into_product(id)))
}

/// Delete a product (admin).
#[utoipa::path(delete, path = "/api/v1/products/{id}", operation_id = "deleteProduct", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The product's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Not a product id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_product(
    State(AppState { store, .. }): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    who.require(None)?;
    let id = product_id(&id)?;
    let done = sqlx::query("DELETE FROM products WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .map_err(internal)?;
    if done.rows_affected() == 0 {
        return Err(Problem::not_found(format!("no product with id {id}")));
    }
    tracing::info!(product = id, by = %who.subject(), "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests;
