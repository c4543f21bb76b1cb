use axum::http::StatusCode;
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::TrustedIssuer;
use flotilla::events::{CloudEvent, Consumer, Delivery, EventsClient};
use flotilla::http::test_util::call;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::{now_ms, Store};
use flotilla_shop_contracts::orders::{self, Money, OrderEventData, OrderLine};
use serde_json::{json, Value};

use crate::config::ShippingConfig;
use crate::shipments::{self, Address, ShippingError, Status};

fn token(scope: &str, roles: &[&str]) -> String {
    shop_issuer().shop_token("orders", scope, roles)
}

async fn app() -> (Router, Store, TestDatabase) {
    let db = TestDatabase::create("shipping").await;
    let store = crate::open_url(&db.url).await.unwrap();
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
    let (first, created) = shipments::create(&store, "order-1", address(), false, "u1")
        .await
        .unwrap();
    assert!(created);
    let (again, created) = shipments::create(&store, "order-1", address(), false, "u1")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    let mut elsewhere = address();
    elsewhere.city = "Bremen".into();
    assert!(matches!(
        shipments::create(&store, "order-1", elsewhere, false, "u1").await,
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
    let body = json!({"order_id": "o-1", "address": address(), "customer": "customer-1"});
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
    let bad = json!({"order_id": "o-2", "address": {"name": "A", "line1": "B", "city": "C", "postal_code": "1", "country": "Germany"}, "customer": "customer-1"});
    let (status, problem) = send(&app, "POST", "/api/v1/shipments", Some(&service), Some(bad)).await;
    assert_eq!(
        (status, problem["invalid-params"][0]["name"].as_str()),
        (StatusCode::BAD_REQUEST, Some("address.country"))
    );
    // A shipment is its customer's (OWASP API1): another customer gets 404, by order and by
    // id, just as for an order without one; the owner and a reading service see it.
    let customer = shop_issuer().shop_token("customer-1", "shop", &["customer"]);
    let (status, list) = send(&app, "GET", "/api/v1/shipments?order_id=o-1", Some(&customer), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    let one = format!("/api/v1/shipments/{}", list[0]["id"].as_str().unwrap());
    assert_eq!(send(&app, "GET", &one, Some(&customer), None).await.0, StatusCode::OK);
    let reader = token("shipping.read", &["service"]);
    assert_eq!(send(&app, "GET", &one, Some(&reader), None).await.0, StatusCode::OK);
    let stranger = shop_issuer().shop_token("customer-2", "shop", &["customer"]);
    let (status, problem) = send(&app, "GET", &one, Some(&stranger), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, _) = send(&app, "GET", "/api/v1/shipments?order_id=o-1", Some(&stranger), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, "GET", "/api/v1/shipments?order_id=o-none", Some(&stranger), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The token before the body: an anonymous broken body is 401, not 400.
    let (status, _) = send(&app, "POST", "/api/v1/shipments", None, Some(json!({"order_id": 5}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(&app, "GET", "/api/v1/shipments?order_id=o-1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (_, doc) = send(&app, "GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/v1/shipments", "post"),
        ("/api/v1/shipments", "get"),
        ("/api/v1/shipments/{id}", "get"),
        ("/api/v1/shipments/{id}/cancel", "post"),
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
    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    for target in targets {
        let pointer = target.strip_prefix('#').unwrap_or(&target);
        assert!(doc.pointer(pointer).is_some(), "`{target}` leads nowhere");
    }
    db.remove().await;
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    (_, inner) => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// A consumer as the service runs it; `handle_one` never calls the event log.
fn consumer(store: &Store) -> Consumer {
    Consumer::new(
        store.clone(),
        EventsClient::new("127.0.0.1:9", None),
        orders::TOPIC,
        crate::SERVICE,
    )
}

/// An order event as orders publishes it.
fn order_event(event_id: &str, kind: &str, order_id: &str) -> Delivery {
    let status = match kind {
        orders::CONFIRMED => "CONFIRMED",
        orders::CANCELLED => "CANCELLED",
        _ => "PENDING",
    };
    let data = OrderEventData {
        order_id: order_id.into(),
        user_id: "acct-1".into(),
        status: status.into(),
        total: Money {
            amount_minor: 1998,
            currency: "EUR".into(),
        },
        lines: vec![OrderLine {
            product_id: 1,
            quantity: 2,
            name: "Mug".into(),
            unit_price_minor: 999,
        }],
        reason: if kind == orders::CANCELLED {
            "payment declined".into()
        } else {
            String::new()
        },
    };
    Delivery {
        offset: 7,
        attempt: 1,
        event: CloudEvent {
            specversion: "1.0".into(),
            id: event_id.into(),
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

fn config() -> ShippingConfig {
    ShippingConfig {
        pack_seconds: 10,
        ship_seconds: 20,
        deliver_seconds: 30,
        ..ShippingConfig::default()
    }
}

#[tokio::test]
async fn a_held_shipment_waits_until_its_order_is_confirmed() {
    let (app, store, db) = app().await;
    let service = token("shipping.create", &["service"]);
    let body = json!({"order_id": "o-held", "address": address(), "hold": true, "customer": "customer-1"});
    let (status, held) = send(&app, "POST", "/api/v1/shipments", Some(&service), Some(body)).await;
    assert_eq!(
        (status, held["status"].as_str(), held["held"].as_bool()),
        (StatusCode::CREATED, Some("created"), Some(true))
    );
    let id = held["id"].as_str().unwrap().to_owned();
    let start = held["timeline"][0]["at_ms"].as_i64().unwrap();
    assert_eq!(
        shipments::advance(&store, &config(), start + 1_000_000).await.unwrap(),
        0,
        "held: the ticker leaves it alone however long it waits"
    );

    let consumer = consumer(&store);
    // A confirmation for an order without a shipment records nothing and succeeds.
    assert!(consumer
        .handle_one(
            &order_event("e-0", orders::CONFIRMED, "o-other"),
            &crate::on_order_event
        )
        .await
        .unwrap());
    assert!(shipments::by_order(&store, "o-other").await.unwrap().is_none());

    let released_after = now_ms();
    assert!(consumer
        .handle_one(&order_event("e-1", orders::CONFIRMED, "o-held"), &crate::on_order_event)
        .await
        .unwrap());
    let released_by = now_ms();
    let released = shipments::get(&store, &id).await.unwrap();
    assert_eq!((released.status, released.held), (Status::Created, false));
    // The clock started at the release, not at the creation.
    assert_eq!(
        shipments::advance(&store, &config(), released_after + 9_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        shipments::advance(&store, &config(), released_by + 10_000)
            .await
            .unwrap(),
        1
    );
    let packed = shipments::get(&store, &id).await.unwrap();
    assert_eq!(packed.status, Status::Packed);
    assert!(packed.timeline[1].at_ms >= released_after + 10_000);

    // A shipment created without hold is not held, and a confirmation leaves it be.
    let (plain, _) = shipments::create(&store, "o-plain", address(), false, "u1")
        .await
        .unwrap();
    assert!(!plain.held);
    assert!(consumer
        .handle_one(
            &order_event("e-2", orders::CONFIRMED, "o-plain"),
            &crate::on_order_event
        )
        .await
        .unwrap());
    assert_eq!(shipments::get(&store, &plain.id).await.unwrap(), plain);
    db.remove().await;
}

#[tokio::test]
async fn cancelling_needs_the_scope_is_idempotent_and_refused_once_shipped() {
    let (app, store, db) = app().await;
    let service = token("shipping.create", &["service"]);
    let (_, created) = send(
        &app,
        "POST",
        "/api/v1/shipments",
        Some(&service),
        Some(json!({"order_id": "o-1", "address": address(), "customer": "customer-1"})),
    )
    .await;
    let cancel = format!("/api/v1/shipments/{}/cancel", created["id"].as_str().unwrap());
    let (status, _) = send(&app, "POST", &cancel, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, problem) = send(&app, "POST", &cancel, Some(&token("shop", &["customer"])), None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("urn:flotilla:problem:forbidden"))
    );
    let (status, cancelled) = send(&app, "POST", &cancel, Some(&service), None).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, again) = send(&app, "POST", &cancel, Some(&token("shop", &["admin"])), None).await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &cancelled),
        "cancelling twice answers the same"
    );
    let steps: Vec<&str> = again["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    assert_eq!(steps, vec!["created", "cancelled"]);
    assert_eq!(
        shipments::advance(&store, &config(), now_ms() + 1_000_000)
            .await
            .unwrap(),
        0,
        "a cancelled shipment goes nowhere"
    );

    let (status, problem) = send(&app, "POST", "/api/v1/shipments/nope/cancel", Some(&service), None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("urn:flotilla:problem:not-found"))
    );

    let (gone, _) = shipments::create(&store, "o-2", address(), false, "u1").await.unwrap();
    let start = gone.timeline[0].at_ms;
    shipments::advance(&store, &config(), start + 40_000).await.unwrap();
    shipments::advance(&store, &config(), start + 40_000).await.unwrap();
    assert_eq!(shipments::get(&store, &gone.id).await.unwrap().status, Status::Shipped);
    let (status, problem) = send(
        &app,
        "POST",
        &format!("/api/v1/shipments/{}/cancel", gone.id),
        Some(&service),
        None,
    )
    .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::CONFLICT, Some("urn:flotilla:problem:shipment-state"))
    );
    assert_eq!(shipments::get(&store, &gone.id).await.unwrap().status, Status::Shipped);
    db.remove().await;
}

#[tokio::test]
async fn a_cancelled_order_cancels_its_shipment_and_a_redelivery_changes_nothing() {
    let (_, store, db) = app().await;
    let consumer = consumer(&store);
    let (shipment, _) = shipments::create(&store, "o-1", address(), true, "u1").await.unwrap();
    let cancelled = order_event("e-1", orders::CANCELLED, "o-1");
    assert!(consumer.handle_one(&cancelled, &crate::on_order_event).await.unwrap());
    let after = shipments::get(&store, &shipment.id).await.unwrap();
    assert_eq!((after.status, after.held), (Status::Cancelled, false));

    // The same event again (an ack that got lost): the inbox skips it.
    assert!(!consumer.handle_one(&cancelled, &crate::on_order_event).await.unwrap());
    assert_eq!(shipments::get(&store, &shipment.id).await.unwrap(), after);
    let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flotilla_inbox WHERE grp = $1")
        .bind(crate::SERVICE)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(handled, 1);

    // A later confirmation of the cancelled order does not bring the shipment back.
    assert!(consumer
        .handle_one(&order_event("e-2", orders::CONFIRMED, "o-1"), &crate::on_order_event)
        .await
        .unwrap());
    assert_eq!(shipments::get(&store, &shipment.id).await.unwrap(), after);

    // A shipment that has left stays with the carrier; the event is still handled.
    let (gone, _) = shipments::create(&store, "o-2", address(), false, "u1").await.unwrap();
    let start = gone.timeline[0].at_ms;
    shipments::advance(&store, &config(), start + 40_000).await.unwrap();
    shipments::advance(&store, &config(), start + 40_000).await.unwrap();
    assert!(consumer
        .handle_one(&order_event("e-3", orders::CANCELLED, "o-2"), &crate::on_order_event)
        .await
        .unwrap());
    assert_eq!(shipments::get(&store, &gone.id).await.unwrap().status, Status::Shipped);

    // Other types are acknowledged and ignored; malformed data fails and leaves no inbox row,
    // so the log redelivers it (and dead-letters it in the end).
    assert!(consumer
        .handle_one(&order_event("e-4", orders::PLACED, "o-3"), &crate::on_order_event)
        .await
        .unwrap());
    let mut bad = order_event("e-5", orders::CANCELLED, "o-2");
    bad.event.data = json!({"order_id": 5});
    let err = consumer.handle_one(&bad, &crate::on_order_event).await.unwrap_err();
    assert!(err.contains("e-5"), "{err}");
    let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flotilla_inbox WHERE grp = $1")
        .bind(crate::SERVICE)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(handled, 4, "e-1, e-2, e-3 and e-4; not the failed e-5");
    db.remove().await;
}
