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
    (
        flotilla::http::with_problem_fallbacks(router(store, config, admin_verifier())),
        db,
    )
}

/// The catalog's admin check, over the test issuer's key.
fn admin_verifier() -> Verifier {
    let issuer = flotilla::auth::test_util::shop_issuer();
    CatalogConfig::default()
        .tokens
        .verifier_over(issuer.key_set(), &[], &["admin"])
}

fn token(roles: &[&str]) -> String {
    flotilla::auth::test_util::shop_issuer().shop_token("admin-1", "", roles)
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = flotilla::http::test_util::call(app, method, uri, token, body).await;
    (status, body)
}

fn input(sku: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "sku": sku, "name": name, "description": "Hand-thrown stoneware, glazed in sea green.",
        "category": "kitchen", "price": {"amount_minor": 2450, "currency": "EUR"},
        "image_url": "https://images.example.com/products/mug.jpg"
    })
}

#[tokio::test]
async fn full_text_search_ranks_matches_filters_by_category_and_refuses_non_words() {
    let (app, db) = app().await;
    let (status, body) = get(&app, "/api/v1/products?q=rust").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["total"].as_i64().unwrap() >= 1, "{body}");
    let first = body["items"][0]["name"].as_str().unwrap().to_lowercase();
    assert!(first.contains("rust"), "{first}");
    // Prefix matching, several words (all must match), any case.
    let (_, body) = get(&app, "/api/v1/products?q=PROGRAM%20rus").await;
    assert!(body["items"].as_array().unwrap().iter().all(|p| {
        let text = format!("{} {}", p["name"], p["description"]).to_lowercase();
        text.contains("program") && text.contains("rus")
    }));
    let (_, books) = get(&app, "/api/v1/products?category=books&per_page=100").await;
    assert!(books["total"].as_i64().unwrap() > 0);
    assert!(books["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["category"] == "books"));
    let (_, both) = get(&app, "/api/v1/products?q=demo&category=books&per_page=100").await;
    assert_eq!(both["total"], books["total"], "every book says `demo product`");
    let (status, body) = get(&app, "/api/v1/products?q=%22%3B%20--").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["invalid-params"][0]["name"], "q");
    let (status, _) = get(&app, "/api/v1/products?category=Not%20A%20Slug").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, none) = get(&app, "/api/v1/products?q=zzzzqqqq").await;
    assert_eq!(none["total"], 0);
    drop(app);
    db.remove().await;
}

#[tokio::test]
async fn admins_create_replace_and_delete_products_and_search_follows() {
    let (app, db) = app().await;
    let admin = token(&["admin"]);
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/products",
        None,
        Some(input("KIT-900", "Sea mug")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/products",
        Some(&token(&["customer"])),
        Some(input("KIT-900", "Sea mug")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, created) = send(
        &app,
        "POST",
        "/api/v1/products",
        Some(&admin),
        Some(input("KIT-900", "Sea mug")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(id, 51);
    let (_, found) = get(&app, "/api/v1/products?q=stoneware").await;
    assert_eq!(found["items"][0]["id"], id);
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/products",
        Some(&admin),
        Some(input("KIT-900", "Another")),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let mut bad = input("kit-901", "Lower-case sku");
    let (status, body) = send(&app, "POST", "/api/v1/products", Some(&admin), Some(bad.clone())).await;
    assert_eq!(
        (status, body["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("sku"))
    );
    bad["sku"] = "KIT-901".into();
    bad["price"]["currency"] = "euro".into();
    let (_, body) = send(&app, "POST", "/api/v1/products", Some(&admin), Some(bad)).await;
    assert_eq!(body["invalid-params"][0]["name"], "price.currency");

    let mut renamed = input("KIT-900", "Sea mug, large");
    renamed["description"] = "Porcelain now.".into();
    let (status, replaced) = send(
        &app,
        "PUT",
        &format!("/api/v1/products/{id}"),
        Some(&admin),
        Some(renamed),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let (_, gone) = get(&app, "/api/v1/products?q=stoneware").await;
    assert_eq!(gone["total"], 0, "the index follows an update");
    let (_, porcelain) = get(&app, "/api/v1/products?q=porcelain").await;
    assert_eq!(porcelain["items"][0]["name"], "Sea mug, large");

    let (status, _) = send(&app, "DELETE", &format!("/api/v1/products/{id}"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = get(&app, &format!("/api/v1/products/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, after) = get(&app, "/api/v1/products?q=porcelain").await;
    assert_eq!(after["total"], 0, "the index follows a delete");
    let (status, _) = send(&app, "DELETE", &format!("/api/v1/products/{id}"), Some(&admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(app);
    db.remove().await;
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let (app, db) = app().await;
    let (status, doc) = get(&app, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for (path, method) in [
        ("/api/v1/products", "get"),
        ("/api/v1/products", "post"),
        ("/api/v1/products/{id}", "get"),
        ("/api/v1/products/{id}", "put"),
        ("/api/v1/products/{id}", "delete"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let uri = path.replace("{id}", "1");
        let (status, _) = send(&app, &method.to_uppercase(), &uri, None, None).await;
        assert_ne!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} is documented but not served"
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not served"
        );
    }
    drop(app);
    db.remove().await;
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
