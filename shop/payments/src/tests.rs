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
    let store = flotilla::events::open(&db.url, &crate::MIGRATOR).await.unwrap();
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
        format!("Bearer {}", token("payments.charge payments.read", &["service"])),
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
    json!({"order_id": order, "amount": {"amount_minor": amount, "currency": "EUR"}, "customer": "customer-1"})
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
        ("/api/v1/payments/reconciliation", "get"),
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

#[tokio::test]
async fn an_order_has_one_payment_whatever_key_its_authorizations_carry() {
    let (app, store, db) = app(PaymentsConfig {
        provider_latency_ms: 30,
        ..PaymentsConfig::default()
    })
    .await;
    let (status, _, first) = send(&app, "POST", "/api/v1/payments", Some("a"), Some(authorize("o-1", 700))).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // A second run under another key (a hold taken over, a client's new key) gets the same
    // payment, answered 200: nothing new was authorized.
    let (status, _, again) = send(&app, "POST", "/api/v1/payments", Some("b"), Some(authorize("o-1", 700))).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]));
    let (status, _, other) = send(&app, "POST", "/api/v1/payments", Some("c"), Some(authorize("o-1", 701))).await;
    assert_eq!(
        (status, other["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:flotilla:problem:order-has-payment"))
    );
    // Racing runs under different keys: one payment.
    let racing: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                send(
                    &app,
                    "POST",
                    "/api/v1/payments",
                    Some(&format!("race-{i}")),
                    Some(authorize("o-2", 900)),
                )
                .await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for run in racing {
        let (status, _, body) = run.await.unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status} {body}"
        );
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every run got the one payment: {ids:?}");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE order_id = 'o-2'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    db.remove().await;
}

/// An order event as orders publishes it, for the reconciliation's consumer.
fn order_event(kind: &str, order_id: &str) -> flotilla::events::Delivery {
    use flotilla_shop_contracts::orders::{self, Money, OrderEventData};
    let data = OrderEventData {
        order_id: order_id.into(),
        user_id: "u-1".into(),
        status: if kind == orders::CANCELLED {
            "CANCELLED"
        } else {
            "CONFIRMED"
        }
        .into(),
        total: Money {
            amount_minor: 500,
            currency: "EUR".into(),
        },
        lines: vec![],
        reason: String::new(),
    };
    flotilla::events::Delivery {
        offset: 1,
        attempt: 1,
        event: flotilla::events::CloudEvent {
            specversion: "1.0".into(),
            id: format!("{kind}-{order_id}"),
            source: orders::SOURCE.into(),
            kind: kind.into(),
            subject: Some(order_id.into()),
            time: None,
            traceparent: None,
            data: serde_json::to_value(data).unwrap(),
            deadletterreason: None,
        },
    }
}

async fn outcome(store: &Store, kind: &str, order_id: &str) {
    let tx = store.pool().begin().await.unwrap();
    let tx = crate::reconcile::on_order_event(order_event(kind, order_id), tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn state(store: &Store, id: &str) -> String {
    crate::payments::get(store, id).await.unwrap().state
}

#[tokio::test]
async fn the_sweep_voids_authorizations_no_live_order_stands_behind_and_nothing_else() {
    use flotilla_shop_contracts::orders::{CANCELLED, CONFIRMED, PLACED};
    let config = PaymentsConfig {
        reconcile_grace_ms: 0,
        ..PaymentsConfig::default()
    };
    let (app, store, db) = app(config.clone()).await;
    let id = |body: &Value| body["id"].as_str().unwrap().to_owned();
    // A cancelled order whose authorization landed after its compensation ran.
    let (_, _, late) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("1"),
        Some(authorize("cancelled", 500)),
    )
    .await;
    // A live order, and a confirmed one with its captured payment.
    let (_, _, live) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("2"),
        Some(authorize("live", 500)),
    )
    .await;
    let (_, _, paid) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("3"),
        Some(authorize("paid", 500)),
    )
    .await;
    send(
        &app,
        "POST",
        &format!("/api/v1/payments/{}/capture", id(&paid)),
        Some("4"),
        None,
    )
    .await;
    // Older data: a confirmed order with a second authorization beside its captured one.
    sqlx::query(
        "INSERT INTO payments (id, order_id, amount_minor, currency, state, refunded_minor, provider_ref, created_ms, updated_ms, nth) \
         VALUES ('legacy-2', 'paid', 500, 'EUR', 'authorized', 0, 'sim', 1, 1, 1)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    outcome(&store, CANCELLED, "cancelled").await;
    outcome(&store, CONFIRMED, "paid").await;
    outcome(&store, PLACED, "live").await;
    outcome(&store, CANCELLED, "cancelled").await;

    let admin = shop_issuer().shop_token("root", "shop", &["admin"]);
    let report = |app: Router| {
        let admin = admin.clone();
        async move {
            let request = Request::get("/api/v1/payments/reconciliation")
                .header("authorization", format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, before) = report(app.clone()).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let standing: Vec<&str> = before["standing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["payment_id"].as_str().unwrap())
        .collect();
    assert_eq!(standing, [id(&late).as_str(), "legacy-2"]);

    let voided = crate::reconcile::sweep(&store, &config).await.unwrap();
    assert_eq!(voided, 2);
    assert_eq!(state(&store, &id(&late)).await, "voided");
    assert_eq!(state(&store, "legacy-2").await, "voided");
    assert_eq!(
        state(&store, &id(&live)).await,
        "authorized",
        "a live order's authorization stays"
    );
    assert_eq!(state(&store, &id(&paid)).await, "captured");
    let (_, after) = report(app.clone()).await;
    assert_eq!(after["standing"], json!([]));
    assert!(after["voided_since_start"].as_u64().unwrap() >= 2);
    assert_eq!(
        crate::reconcile::sweep(&store, &config).await.unwrap(),
        0,
        "nothing twice"
    );

    // The report is an administrator's.
    let request = Request::get("/api/v1/payments/reconciliation")
        .header(
            "authorization",
            format!("Bearer {}", token("payments.charge payments.read", &["service"])),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::FORBIDDEN);
    db.remove().await;
}

#[tokio::test]
async fn the_sweep_leaves_an_authorization_to_the_sagas_compensation_during_its_grace() {
    use flotilla_shop_contracts::orders::CANCELLED;
    let config = PaymentsConfig {
        reconcile_grace_ms: 60_000,
        ..PaymentsConfig::default()
    };
    let (app, store, db) = app(config.clone()).await;
    let (_, _, payment) = send(&app, "POST", "/api/v1/payments", Some("1"), Some(authorize("o", 500))).await;
    outcome(&store, CANCELLED, "o").await;
    assert_eq!(crate::reconcile::sweep(&store, &config).await.unwrap(), 0);
    assert_eq!(state(&store, payment["id"].as_str().unwrap()).await, "authorized");
    db.remove().await;
}

/// OWASP API1: a payment is its customer's. Another customer gets 404 on it, by id and by
/// order, as if it did not exist; its customer, an admin and a service with `payments.read`
/// see it; the token is checked before the body is read.
#[tokio::test]
async fn a_customer_reads_only_their_own_payments() {
    let (app, _store, db) = app(PaymentsConfig::default()).await;
    let (status, _, payment) = send(
        &app,
        "POST",
        "/api/v1/payments",
        Some("k-own"),
        Some(authorize("o-own", 500)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["customer"], "customer-1");
    let id = payment["id"].as_str().unwrap();
    let get = |who: String, uri: String| {
        let app = app.clone();
        async move {
            let request = Request::get(uri)
                .header("authorization", format!("Bearer {who}"))
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let owner = shop_issuer().shop_token("customer-1", "shop", &["customer"]);
    let stranger = shop_issuer().shop_token("customer-2", "shop", &["customer"]);
    let admin = shop_issuer().shop_token("root", "shop", &["admin"]);
    let by_id = format!("/api/v1/payments/{id}");
    let by_order = "/api/v1/payments?order_id=o-own".to_owned();
    for who in [&owner, &admin] {
        assert_eq!(get(who.clone(), by_id.clone()).await.0, StatusCode::OK);
        let (status, list) = get(who.clone(), by_order.clone()).await;
        assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    }
    let (status, problem) = get(stranger.clone(), by_id.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["detail"], format!("no payment `{id}`"));
    // Someone else's order answers exactly as an order with no payment at all.
    let (theirs, theirs_body) = get(stranger.clone(), by_order).await;
    let (none, none_body) = get(stranger, "/api/v1/payments?order_id=o-none".into()).await;
    assert_eq!((theirs, none), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(
        theirs_body["detail"].as_str().map(|d| d.replace("o-own", "o-none")),
        none_body["detail"].as_str().map(str::to_owned)
    );

    // No token and a broken body: 401, not 400 — nothing is read for an anonymous caller.
    let anonymous = Request::post("/api/v1/payments")
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(anonymous).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    db.remove().await;
}
