use axum::body::Body;
use axum::http::{Request, StatusCode};
use flotilla::store::test_util::TestDatabase;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// The catalog's router over a fresh database (SQLite, or PostgreSQL when the environment
/// names a server).
async fn app() -> (Router, TestDatabase) {
    let db = TestDatabase::create("catalog").await;
    let store = crate::open(&db.url).await.unwrap();
    let config = LiveConfig::fixed(CatalogConfig::default());
    (flotilla::http::with_problem_fallbacks(router(store, config)), db)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn lists_the_seeded_catalog_in_pages() {
    let (app, db) = app().await;
    let (status, body) = get(&app, "/api/v1/products").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 50);
    assert_eq!(body["items"].as_array().unwrap().len(), 20);
    assert_eq!(body["items"][0]["id"], 1);
    let (_, last) = get(&app, "/api/v1/products?page=3&per_page=20").await;
    assert_eq!(last["items"].as_array().unwrap().len(), 10);
    assert_eq!(last["items"][9]["id"], 50);
    drop(app);
    db.remove().await;
}

#[tokio::test]
async fn one_product_and_problems() {
    let (app, db) = app().await;
    let (status, p) = get(&app, "/api/v1/products/7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["id"], 7);
    assert!(p["price"]["amount_minor"].as_i64().unwrap() > 0);
    assert_eq!(p["price"]["currency"], "EUR");

    let (status, p) = get(&app, "/api/v1/products/9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(p["type"], "urn:flotilla:problem:not-found");

    let (status, p) = get(&app, "/api/v1/products/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["invalid-params"][0]["name"], "id");

    let (status, p) = get(&app, "/api/v1/products?per_page=1000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["invalid-params"][0]["name"], "per_page");

    let (status, p) = get(&app, "/api/v1/products?page=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["invalid-params"][0]["name"], "page");
    drop(app);
    db.remove().await;
}

#[tokio::test]
async fn seeding_happens_once() {
    let db = TestDatabase::create("catalog").await;
    let first = crate::open(&db.url).await.unwrap();
    first.pool().close().await;
    let second = crate::open(&db.url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(second.pool())
        .await
        .unwrap();
    assert_eq!(count, 50, "on {:?}", db.engine());
    second.pool().close().await;
    db.remove().await;
}
