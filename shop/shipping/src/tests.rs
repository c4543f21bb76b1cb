use axum::http::StatusCode;
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::TrustedIssuer;
use flotilla::http::test_util::call;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use serde_json::{json, Value};

use crate::config::ShippingConfig;
use crate::shipments::{self, Address, ShippingError, Status};

fn token(scope: &str, roles: &[&str]) -> String {
    shop_issuer().shop_token("orders", scope, roles)
}

async fn app() -> (Router, Store, TestDatabase) {
    let db = TestDatabase::create("shipping").await;
    let store = Store::open(&db.url, &crate::MIGRATOR).await.unwrap();
    let tokens = TrustedIssuer::default().verifier_over(shop_issuer().key_set(), &[], &[]);
    let router = flotilla::http::with_problem_fallbacks(crate::router(store.clone(), tokens));
    (router, store, db)
}

fn address() -> Address {
    Address {
        name: "Ana Lima".into(),
        line1: "Hafenstraße 1".into(),
        line2: String::new(),
        city: "Hamburg".into(),
        postal_code: "20457".into(),
        country: "DE".into(),
    }
}

async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let (status, _, body) = call(app, method, uri, token, body).await;
    (status, body)
}

#[tokio::test]
async fn one_shipment_per_order_and_the_timeline_advances_step_by_step() {
    let (_, store, db) = app().await;
    let (first, created) = shipments::create(&store, "order-1", address()).await.unwrap();
    assert!(created);
    let (again, created) = shipments::create(&store, "order-1", address()).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    let mut elsewhere = address();
    elsewhere.city = "Bremen".into();
    assert!(matches!(
        shipments::create(&store, "order-1", elsewhere).await,
        Err(ShippingError::Mismatch(_))
    ));

    let config = ShippingConfig {
        pack_seconds: 10,
        ship_seconds: 20,
        deliver_seconds: 30,
        ..ShippingConfig::default()
    };
    let start = first.timeline[0].at_ms;
    assert_eq!(
        shipments::advance(&store, &config, start + 9_000).await.unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(shipments::advance(&store, &config, start + 10_000).await.unwrap(), 1);
    assert_eq!(shipments::get(&store, &first.id).await.unwrap().status, Status::Packed);
    // Long overdue: it catches up, each event at the time it became due.
    shipments::advance(&store, &config, start + 100_000).await.unwrap();
    shipments::advance(&store, &config, start + 100_000).await.unwrap();
    let done = shipments::get(&store, &first.id).await.unwrap();
    assert_eq!(done.status, Status::Delivered);
    let steps: Vec<(Status, i64)> = done.timeline.iter().map(|e| (e.status, e.at_ms - start)).collect();
    assert_eq!(
        steps,
        vec![
            (Status::Created, 0),
            (Status::Packed, 10_000),
            (Status::Shipped, 30_000),
            (Status::Delivered, 60_000)
        ]
    );
    assert_eq!(shipments::advance(&store, &config, start + 1_000_000).await.unwrap(), 0);
    db.remove().await;
}

#[tokio::test]
async fn creating_needs_the_scope_reading_a_token_and_the_document_names_every_route() {
    let (app, _store, db) = app().await;
    let body = json!({"order_id": "o-1", "address": address()});
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/shipments",
        Some(&token("shop", &["customer"])),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let service = token("shipping.create", &["service"]);
    let (status, created) = send(&app, "POST", "/api/v1/shipments", Some(&service), Some(body.clone())).await;
    assert_eq!(
        (status, created["status"].as_str()),
        (StatusCode::CREATED, Some("created"))
    );
    let (status, _) = send(&app, "POST", "/api/v1/shipments", Some(&service), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "the same shipment again");
    let bad = json!({"order_id": "o-2", "address": {"name": "A", "line1": "B", "city": "C", "postal_code": "1", "country": "Germany"}});
    let (status, problem) = send(&app, "POST", "/api/v1/shipments", Some(&service), Some(bad)).await;
    assert_eq!(
        (status, problem["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("address.country"))
    );
    let customer = token("shop", &["customer"]);
    let (status, list) = send(&app, "GET", "/api/v1/shipments?order_id=o-1", Some(&customer), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let (status, _) = send(&app, "GET", "/api/v1/shipments?order_id=o-1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, doc) = send(&app, "GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/v1/shipments", "post"),
        ("/api/v1/shipments", "get"),
        ("/api/v1/shipments/{id}", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let (status, _) = send(&app, &method.to_uppercase(), &path.replace("{id}", "x"), None, None).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status}"
        );
    }
    db.remove().await;
}
