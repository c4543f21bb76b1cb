use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::TrustedIssuer;
use flotilla::config::LiveConfig;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::config::PaymentsConfig;

fn token(scope: &str, roles: &[&str]) -> String {
    shop_issuer().shop_token("orders", scope, roles)
}

async fn app(config: PaymentsConfig) -> (Router, Store, TestDatabase) {
    let db = TestDatabase::create("payments").await;
    let store = Store::open(&db.url, &crate::MIGRATOR).await.unwrap();
    let tokens = TrustedIssuer::default().verifier_over(shop_issuer().key_set(), &[], &[]);
    let router =
        flotilla::http::with_problem_fallbacks(crate::router(store.clone(), LiveConfig::fixed(config), tokens));
    (router, store, db)
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri).header(
        "authorization",
        format!("Bearer {}", token("payments.charge", &["service"])),
    );
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => request.body(Body::empty()).unwrap(),
    };
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn authorize(order: &str, amount: i64) -> Value {
    json!({"order_id": order, "amount": {"amount_minor": amount, "currency": "EUR"}})
}

#[tokio::test]
async fn authorize_capture_refund_and_a_retried_key_gets_the_first_answer() {
    let (app, _store, db) = app(PaymentsConfig::default()).await;
    let (status, headers, first) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("k-1"),
        Some(authorize("o-1", 4999)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    let (status, headers, again) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("k-1"),
        Some(authorize("o-1", 4999)),
    )
    .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, reused) = send(&app, "POST", "/api/v1/payments", Some("k-1"), Some(authorize("o-1", 1))).await;
    assert_eq!(
        (status, reused["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("urn:flotilla:problem:idempotency-key-reused")
        )
    );
    let (status, _, missing) = send(&app, "POST", "/api/v1/payments", None, Some(authorize("o-1", 1))).await;
    assert_eq!(
        (status, missing["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Idempotency-Key"))
    );

    let id = first["id"].as_str().unwrap();
    let (status, _, captured) = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{id}/capture"),
        Some("k-2"),
        None,
    )
    .await;
    assert_eq!((status, captured["state"].as_str()), (StatusCode::OK, Some("captured")));
    let (status, _, _) = send(&app, "POST", &format!("/api/v1/payments/{id}/void"), Some("k-3"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a captured payment cannot be voided");
    let (status, _, part) = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        Some("k-4"),
        Some(json!({"amount_minor": 999})),
    )
    .await;
    assert_eq!(
        (status, part["refunded_minor"].as_i64(), part["state"].as_str()),
        (StatusCode::OK, Some(999), Some("captured"))
    );
    let (_, _, same) = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        Some("k-4"),
        Some(json!({"amount_minor": 999})),
    )
    .await;
    assert_eq!(same["refunded_minor"], 999, "a retried refund refunds once");
    let (status, _, rest) = send(
        &app,
        "POST",
        &format!("/api/v1/payments/{id}/refund"),
        Some("k-5"),
        None,
    )
    .await;
    assert_eq!((status, rest["state"].as_str()), (StatusCode::OK, Some("refunded")));
    let (status, _, list) = send(&app, "GET", "/api/v1/payments?order_id=o-1", None, None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    db.remove().await;
}

#[tokio::test]
async fn parallel_retries_with_one_key_charge_once() {
    let (app, store, db) = app(PaymentsConfig {
        provider_latency_ms: 50,
        ..PaymentsConfig::default()
    })
    .await;
    let tries: Vec<_> = (0..12)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                send(
                    &app,
                    "POST",
                    "/api/v1/payments",
                    Some("same-key"),
                    Some(authorize("o-7", 2500)),
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.unwrap().0);
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let charged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE order_id = 'o-7'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(charged, 1, "{statuses:?}");
    // Once the first is done, every retry gets its answer.
    let (status, headers, _) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("same-key"),
        Some(authorize("o-7", 2500)),
    )
    .await;
    assert_eq!(
        (status, headers["idempotent-replayed"].to_str().unwrap()),
        (StatusCode::CREATED, "true")
    );
    db.remove().await;
}

#[tokio::test]
async fn a_provider_outage_is_not_remembered_and_a_decline_is() {
    let (down, store, db) = app(PaymentsConfig {
        provider_failure_rate: 1.0,
        ..PaymentsConfig::default()
    })
    .await;
    let (status, _, body) = send(
        &down,
        "POST",
        "/api/v1/payments",
        Some("k-9"),
        Some(authorize("o-9", 100)),
    )
    .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("urn:flotilla:problem:provider-unavailable")
        )
    );
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 0, "a transient failure leaves the key free for the retry");
    let (up, _, db2) = app(PaymentsConfig::default()).await;
    let (status, _, declined) = send(
        &up,
        "POST",
        "/api/v1/payments",
        Some("k-10"),
        Some(authorize("o-10", 2_000_000)),
    )
    .await;
    assert_eq!(
        (status, declined["type"].as_str()),
        (
            StatusCode::PAYMENT_REQUIRED,
            Some("urn:flotilla:problem:payment-declined")
        )
    );
    let (status, headers, _) = send(
        &up,
        "POST",
        "/api/v1/payments",
        Some("k-10"),
        Some(authorize("o-10", 2_000_000)),
    )
    .await;
    assert_eq!(
        (status, headers.contains_key("idempotent-replayed")),
        (StatusCode::PAYMENT_REQUIRED, true)
    );
    db.remove().await;
    db2.remove().await;
}

#[tokio::test]
async fn callers_need_the_charge_scope_and_the_document_names_every_route() {
    let (app, _store, db) = app(PaymentsConfig::default()).await;
    let customer = token("shop", &["customer"]);
    let request = Request::post("/api/v1/payments")
        .header("authorization", format!("Bearer {customer}"))
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(Body::from(authorize("o-1", 100).to_string()))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(request).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let anonymous = Request::get("/api/v1/payments?order_id=o-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(anonymous).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let (_, _, doc) = send(&app, "GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/v1/payments", "post"),
        ("/api/v1/payments", "get"),
        ("/api/v1/payments/{id}", "get"),
        ("/api/v1/payments/{id}/capture", "post"),
        ("/api/v1/payments/{id}/void", "post"),
        ("/api/v1/payments/{id}/refund", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let (status, _, _) = send(
            &app,
            &method.to_uppercase(),
            &path.replace("{id}", "x"),
            Some("doc"),
            None,
        )
        .await;
        assert!(
            status != StatusCode::NOT_FOUND || path.contains("{id}"),
            "{method} {path}: {status}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    db.remove().await;
}
