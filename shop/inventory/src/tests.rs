use axum::http::StatusCode;
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::TrustedIssuer;
use flotilla::http::test_util::call;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use serde_json::{json, Value};

use crate::stock::{self, Line, State, StockError};

fn token(scope: &str, roles: &[&str]) -> String {
    shop_issuer().shop_token("orders", scope, roles)
}

async fn app() -> (Router, Store, TestDatabase) {
    let db = TestDatabase::create("inventory").await;
    let store = crate::open(&db.url).await.unwrap();
    let tokens = TrustedIssuer::default().verifier_over(shop_issuer().key_set(), &[], &[]);
    let router = flotilla::http::with_problem_fallbacks(crate::router(store.clone(), tokens));
    (router, store, db)
}

async fn send(app: &Router, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let (status, _, body) = call(app, method, uri, token, body).await;
    (status, body)
}

fn lines(list: &[(i64, i64)]) -> Vec<Line> {
    list.iter()
        .map(|(product_id, quantity)| Line {
            product_id: *product_id,
            quantity: *quantity,
        })
        .collect()
}

#[tokio::test]
async fn reserve_release_and_commit_are_idempotent_by_order_id() {
    let (_, store, db) = app().await;
    stock::set_on_hand(&store, 1, 10).await.unwrap();
    stock::set_on_hand(&store, 2, 5).await.unwrap();
    let order = lines(&[(2, 2), (1, 3)]);
    let first = stock::reserve(&store, "order-1", &order).await.unwrap();
    assert_eq!(first.state, State::Reserved);
    // The same call again (a retry after a timeout) takes nothing more.
    assert_eq!(stock::reserve(&store, "order-1", &order).await.unwrap(), first);
    assert_eq!(stock::stock(&store, 1).await.unwrap().available, 7);
    assert!(matches!(
        stock::reserve(&store, "order-1", &lines(&[(1, 1)])).await,
        Err(StockError::Mismatch(_))
    ));
    // Commit takes the units out; again changes nothing.
    stock::commit(&store, "order-1").await.unwrap();
    stock::commit(&store, "order-1").await.unwrap();
    let one = stock::stock(&store, 1).await.unwrap();
    assert_eq!((one.on_hand, one.reserved, one.available), (7, 0, 7));
    // The order given up after its commit went through: a release returns the units, once,
    // and the commit cannot come back.
    assert_eq!(stock::release(&store, "order-1").await.unwrap().state, State::Returned);
    assert_eq!(stock::release(&store, "order-1").await.unwrap().state, State::Returned);
    let one = stock::stock(&store, 1).await.unwrap();
    assert_eq!((one.on_hand, one.reserved, one.available), (10, 0, 10));
    assert!(matches!(
        stock::commit(&store, "order-1").await,
        Err(StockError::WrongState { .. })
    ));

    // A release gives units back, once.
    stock::reserve(&store, "order-2", &lines(&[(2, 5)])).await.unwrap();
    assert_eq!(stock::stock(&store, 2).await.unwrap().available, 0);
    stock::release(&store, "order-2").await.unwrap();
    stock::release(&store, "order-2").await.unwrap();
    assert_eq!(stock::stock(&store, 2).await.unwrap().available, 5);
    // A release that came before its reservation (a cancel that won a race) is kept.
    let early = stock::release(&store, "order-3").await.unwrap();
    assert_eq!(early.state, State::Released);
    assert!(matches!(
        stock::reserve(&store, "order-3", &lines(&[(1, 1)])).await,
        Err(StockError::WrongState { .. })
    ));
    drop(store);
    db.remove().await;
}

#[tokio::test]
async fn a_reservation_takes_every_line_or_none_and_names_the_shortages() {
    let (_, store, db) = app().await;
    stock::set_on_hand(&store, 1, 10).await.unwrap();
    stock::set_on_hand(&store, 2, 1).await.unwrap();
    match stock::reserve(&store, "order-9", &lines(&[(1, 4), (2, 2), (999, 1)])).await {
        Err(StockError::Insufficient(short)) => {
            let named: Vec<(i64, i64)> = short.iter().map(|s| (s.product_id, s.available)).collect();
            assert_eq!(named, vec![(2, 1), (999, 0)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stock::stock(&store, 1).await.unwrap().available, 10, "nothing was kept");
    // The order id is free again for a smaller order.
    stock::reserve(&store, "order-9", &lines(&[(1, 4)])).await.unwrap();
    assert!(matches!(
        stock::set_on_hand(&store, 1, 3).await,
        Err(StockError::BelowReserved { .. })
    ));
    drop(store);
    db.remove().await;
}

#[tokio::test]
async fn parallel_reservations_never_oversell() {
    let (_, store, db) = app().await;
    stock::set_on_hand(&store, 7, 10).await.unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { stock::reserve(&store, &format!("race-{i}"), &lines(&[(7, 1)])).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StockError::Insufficient(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(won, 10);
    let seven = stock::stock(&store, 7).await.unwrap();
    assert_eq!((seven.reserved, seven.available), (10, 0));
    drop(store);
    db.remove().await;
}

#[tokio::test]
async fn the_api_asks_for_the_reserve_scope_or_admin_and_answers_problems() {
    let (app, _store, db) = app().await;
    let (status, _) = send(&app, "GET", "/api/v1/inventory/1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, stock) = send(
        &app,
        "GET",
        "/api/v1/inventory/1",
        Some(&token("shop", &["customer"])),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "any signed-in caller sees stock");
    assert!(stock["available"].as_i64().unwrap() > 0);
    let body = json!({"order_id": "o-1", "lines": [{"product_id": 1, "quantity": 1}]});
    let (status, _) = send(&app, "POST", "/api/v1/inventory/reservations", None, Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations",
        Some(&token("shop", &["customer"])),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let service = token("inventory.reserve", &["service"]);
    let (status, reserved) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations",
        Some(&service),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reserved}");
    assert_eq!(reserved["state"], "reserved");
    let (status, committed) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations/o-1/commit",
        Some(&service),
        None,
    )
    .await;
    assert_eq!(
        (status, committed["state"].as_str()),
        (StatusCode::OK, Some("committed"))
    );
    // The order is given up after its commit went through (the commit's answer was lost):
    // its release returns the units to stock, once, and the commit cannot come back.
    let customer = token("shop", &["customer"]);
    let on_hand = |stock: &Value| stock["on_hand"].as_i64().unwrap();
    let (_, after_commit) = send(&app, "GET", "/api/v1/inventory/1", Some(&customer), None).await;
    assert_eq!(on_hand(&after_commit), on_hand(&stock) - 1);
    for _ in 0..2 {
        let (status, body) = send(
            &app,
            "POST",
            "/api/v1/inventory/reservations/o-1/release",
            Some(&service),
            None,
        )
        .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (StatusCode::OK, Some("returned")),
            "{body}"
        );
    }
    let (_, after_return) = send(&app, "GET", "/api/v1/inventory/1", Some(&customer), None).await;
    assert_eq!(on_hand(&after_return), on_hand(&stock), "returned once");
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations/o-1/commit",
        Some(&service),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let too_many = json!({"order_id": "o-2", "lines": [{"product_id": 1, "quantity": 10000}]});
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations",
        Some(&service),
        Some(too_many),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:flotilla:problem:insufficient-stock"))
    );
    let bad = json!({"order_id": "o/3", "lines": [{"product_id": 1, "quantity": 1}]});
    let (status, body) = send(
        &app,
        "POST",
        "/api/v1/inventory/reservations",
        Some(&service),
        Some(bad),
    )
    .await;
    assert_eq!(
        (status, body["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("order_id"))
    );
    let (status, _) = send(
        &app,
        "PUT",
        "/api/v1/inventory/1",
        Some(&service),
        Some(json!({"on_hand": 5})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "setting stock is for admins");
    let (status, set) = send(
        &app,
        "PUT",
        "/api/v1/inventory/1",
        Some(&token("", &["admin"])),
        Some(json!({"on_hand": 500})),
    )
    .await;
    assert_eq!((status, set["on_hand"].as_i64()), (StatusCode::OK, Some(500)));

    let (_, doc) = send(&app, "GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/v1/inventory/{product_id}", "get"),
        ("/api/v1/inventory/{product_id}", "put"),
        ("/api/v1/inventory/reservations", "post"),
        ("/api/v1/inventory/reservations/{order_id}", "get"),
        ("/api/v1/inventory/reservations/{order_id}/release", "post"),
        ("/api/v1/inventory/reservations/{order_id}/commit", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let uri = path.replace("{product_id}", "1").replace("{order_id}", "o-1");
        let (status, _) = send(&app, &method.to_uppercase(), &uri, None, None).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {status}"
        );
    }
    db.remove().await;
}
