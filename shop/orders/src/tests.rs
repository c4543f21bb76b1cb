//! Orders against the real inventory, payments and shipping services (their routers on
//! loopback ports, their own databases), a catalog and a token endpoint standing in for
//! catalog and identity, and the control plane's event log in process. Faults are injected
//! at the HTTP edge of a service, so the saga meets them as it would in production.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::{ClientCredentials, TrustedIssuer};
use flotilla::client::{pool, ClientConfig, ServiceClient, Stack, Target};
use flotilla::config::LiveConfig;
use flotilla::events::EventsClient;
use flotilla::http::test_util::call;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use flotilla::Problem;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::downstream::Downstream;
use crate::OrdersConfig;

/// Requests a service answers with a fault instead: `(method, path suffix)` → status.
#[derive(Clone, Default)]
struct Faults {
    fail: Arc<Mutex<HashMap<(String, String), u16>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Faults {
    fn fail(&self, method: &str, suffix: &str, status: u16) {
        self.fail
            .lock()
            .unwrap()
            .insert((method.to_owned(), suffix.to_owned()), status);
    }

    fn clear(&self, method: &str, suffix: &str) {
        self.fail
            .lock()
            .unwrap()
            .remove(&(method.to_owned(), suffix.to_owned()));
    }

    /// How many requests matched `method` and ended with `suffix`.
    fn count(&self, method: &str, suffix: &str) -> usize {
        let wanted = format!("{method} ");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(&wanted) && r.ends_with(suffix))
            .count()
    }

    fn layer(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            let faults = self.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                faults.seen.lock().unwrap().push(format!("{method} {path}"));
                let status = faults
                    .fail
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|((m, suffix), _)| *m == method && path.ends_with(suffix.as_str()))
                    .map(|(_, status)| *status);
                match status {
                    Some(status) => Problem::new(status, "injected", "Injected fault")
                        .with_detail(format!("injected {status} on {method} {path}"))
                        .into_response(),
                    None => next.run(request).await,
                }
            }
        }))
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn client(name: &str, addr: SocketAddr) -> ServiceClient {
    let uri = format!("http://{addr}").parse().unwrap();
    ServiceClient::new(Stack::new(
        Target::fixed(name, &[uri]),
        &ClientConfig::default(),
        pool(),
    ))
}

/// The stand-in catalog: products 1–3 at 5.00, 7.50 and 20.00 EUR, 9 in USD.
fn catalog() -> Router {
    Router::new().route(
        "/api/v1/products/{id}",
        get(|axum::extract::Path(id): axum::extract::Path<i64>| async move {
            let (price, currency) = match id {
                1 => (500, "EUR"),
                2 => (750, "EUR"),
                3 => (2000, "EUR"),
                9 => (100, "USD"),
                _ => return Problem::not_found(format!("no product {id}")).into_response(),
            };
            axum::Json(json!({"id": id, "name": format!("Product {id}"), "price": {"amount_minor": price, "currency": currency}}))
                .into_response()
        }),
    )
}

/// The stand-in token endpoint: orders' token with its scopes.
fn identity() -> Router {
    Router::new().route(
        "/oauth2/token",
        post(|| async {
            let token = shop_issuer().shop_token("orders", crate::SCOPES, &[]);
            axum::Json(
                json!({"access_token": token, "token_type": "Bearer", "expires_in": 900, "scope": crate::SCOPES}),
            )
        }),
    )
}

async fn control() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = flotilla_control::ControlConfig {
        registry: Default::default(),
        token: "test-token".into(),
        warm_up: Duration::ZERO,
    };
    let storage = flotilla_control::Storage::in_memory().await.unwrap();
    tokio::spawn(flotilla_control::serve(
        listener,
        config,
        storage,
        std::future::pending(),
    ));
    addr
}

struct World {
    orders: Router,
    inventory: Store,
    payments: Store,
    shipping: Store,
    events: EventsClient,
    faults: HashMap<&'static str, Faults>,
    payments_addr: SocketAddr,
    payments_router: Router,
    dbs: Vec<TestDatabase>,
}

impl World {
    /// Everything running; payments too unless `payments_away` (its port then refuses).
    async fn start(payments_away: bool) -> World {
        let tokens = || TrustedIssuer::default().verifier_over(shop_issuer().key_set(), &[], &[]);
        let mut dbs = Vec::new();
        let mut faults = HashMap::new();

        let db = TestDatabase::create("inventory").await;
        let inventory = flotilla_inventory::open(&db.url).await.unwrap();
        dbs.push(db);
        for product in 1..=3 {
            flotilla_inventory::stock::set_on_hand(&inventory, product, 10)
                .await
                .unwrap();
        }
        let f = Faults::default();
        let inventory_addr = serve(f.clone().layer(flotilla_inventory::router(inventory.clone(), tokens()))).await;
        faults.insert("inventory", f);

        let db = TestDatabase::create("payments").await;
        let payments = Store::open(&db.url, &flotilla_payments::MIGRATOR).await.unwrap();
        dbs.push(db);
        let config = flotilla_payments::PaymentsConfig {
            provider_latency_ms: 0,
            decline_over_minor: 10_000,
            ..Default::default()
        };
        let f = Faults::default();
        let payments_router = f.clone().layer(flotilla_payments::router(
            payments.clone(),
            LiveConfig::fixed(config),
            tokens(),
        ));
        faults.insert("payments", f);
        let payments_addr = if payments_away {
            // A port nobody listens on (yet): connections are refused.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        } else {
            serve(payments_router.clone()).await
        };

        let db = TestDatabase::create("shipping").await;
        let shipping = flotilla_shipping::open_url(&db.url).await.unwrap();
        dbs.push(db);
        let f = Faults::default();
        let shipping_addr = serve(f.clone().layer(flotilla_shipping::router(shipping.clone(), tokens()))).await;
        faults.insert("shipping", f);

        let catalog_addr = serve(catalog()).await;
        let identity_addr = serve(identity()).await;
        let credentials = ClientCredentials::new(
            client("identity", identity_addr),
            "/oauth2/token",
            "orders",
            "s",
            crate::SCOPES,
        );
        let downstream = Downstream::new(
            client("catalog", catalog_addr),
            client("inventory", inventory_addr),
            client("payments", payments_addr),
            client("shipping", shipping_addr),
            Arc::new(credentials),
        );
        let events = EventsClient::new(&control().await.to_string(), Some("test-token".into()));

        let db = TestDatabase::create("orders").await;
        let store = Store::open(&db.url, &crate::MIGRATOR).await.unwrap();
        dbs.push(db);
        let orders = crate::start(
            &flotilla::app::Tasks::new(),
            store,
            downstream,
            events.clone(),
            LiveConfig::fixed(OrdersConfig::default()),
            tokens(),
        )
        .await
        .unwrap();
        let orders = flotilla::http::with_problem_fallbacks(crate::router(orders));
        World {
            orders,
            inventory,
            payments,
            shipping,
            events,
            faults,
            payments_addr,
            payments_router,
            dbs,
        }
    }

    async fn place(&self, user: &str, lines: Value, key: Option<&str>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let token = shop_issuer().shop_token(user, "shop", &[]);
        let mut request = axum::http::Request::post("/api/v1/orders")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = json!({"lines": lines, "shipping_address": {"name": "Ana Lima", "line1": "Hafenstraße 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}});
        let request = request.body(axum::body::Body::from(body.to_string())).unwrap();
        let response = tower::ServiceExt::oneshot(self.orders.clone(), request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
    }

    async fn get(&self, user: &str, path: &str) -> (StatusCode, Value) {
        let token = shop_issuer().shop_token(user, "shop", &[]);
        let (status, _, body) = call(&self.orders, "GET", path, Some(&token), None).await;
        (status, body)
    }

    /// Waits for the order to reach `CONFIRMED` or `CANCELLED` (or `want`).
    async fn settled(&self, user: &str, id: &str, want: &[&str]) -> Value {
        let started = Instant::now();
        loop {
            let (status, order) = self.get(user, &format!("/api/v1/orders/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{order}");
            if want.iter().any(|w| order["status"] == *w) {
                return order;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "order stuck: {order:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn remove(self) {
        for db in self.dbs {
            db.remove().await;
        }
    }
}

fn kinds(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn on_hand(store: &Store, product: i64) -> (i64, i64) {
    let stock = flotilla_inventory::stock::stock(store, product).await.unwrap();
    (stock.on_hand, stock.available)
}

#[tokio::test]
async fn an_order_goes_through_every_step_is_confirmed_and_told_to_the_others() {
    let world = World::start(false).await;
    let lines = json!([{"product_id": 1, "quantity": 2}, {"product_id": 3, "quantity": 1}]);
    let (status, accepted, headers) = world.place("ana", lines.clone(), Some("k-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["total"]["amount_minor"], 3000);
    let id = accepted["id"].as_str().unwrap().to_owned();
    assert!(headers.get("idempotent-replayed").is_none());
    let (again, replayed, headers) = world.place("ana", lines, Some("k-1")).await;
    assert_eq!(
        (again, &replayed["id"]),
        (StatusCode::ACCEPTED, &accepted["id"]),
        "a retry is the same order"
    );
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");

    let order = world.settled("ana", &id, &["CONFIRMED", "CANCELLED"]).await;
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    assert_eq!(
        kinds(&order),
        [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "shipment_created",
            "confirmed"
        ]
    );
    assert_eq!(on_hand(&world.inventory, 1).await, (8, 8));
    assert_eq!(on_hand(&world.inventory, 3).await, (9, 9));
    let payments = flotilla_payments::payments::for_order(&world.payments, &id)
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(
        (payments[0].state.as_str(), payments[0].amount.amount_minor),
        ("captured", 3000)
    );
    let shipment = flotilla_shipping::shipments::by_order(&world.shipping, &id)
        .await
        .unwrap();
    assert!(shipment.is_some(), "one shipment");

    // Another customer does not see it; the owner's list (the read model) does.
    assert_eq!(
        world.get("bob", &format!("/api/v1/orders/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = world.get("ana", "/api/v1/orders?status=CONFIRMED").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["items"], 3);
    assert_eq!(world.get("bob", "/api/v1/orders").await.1, json!([]));

    // The read model folds again from the events into the same rows.
    let admin = shop_issuer().shop_token("root", "shop", &["admin"]);
    let (status, _, rebuilt) = call(
        &world.orders,
        "POST",
        "/api/v1/orders/read-model/rebuild",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, rebuilt["orders"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(world.get("ana", "/api/v1/orders?status=CONFIRMED").await.1, list);
    let (_, _, sagas) = call(&world.orders, "GET", "/api/v1/orders/sagas", Some(&admin), None).await;
    assert_eq!(sagas[0]["status"], "completed");

    // Placed and confirmed went out through the outbox, once each.
    let started = Instant::now();
    loop {
        let published: Vec<String> = world
            .events
            .read(flotilla_shop_contracts::orders::TOPIC, 0, 100)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|d| d.event.subject.as_deref() == Some(id.as_str()))
            .map(|d| d.event.kind)
            .collect();
        if published.len() >= 2 {
            assert_eq!(
                published,
                [
                    flotilla_shop_contracts::orders::PLACED,
                    flotilla_shop_contracts::orders::CONFIRMED
                ]
            );
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "published: {published:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.remove().await;
}

#[tokio::test]
async fn a_declined_order_is_cancelled_for_the_decline_even_when_its_compensation_had_to_retry() {
    let world = World::start(false).await;
    world.faults["payments"].fail("POST", "/api/v1/payments", 402);
    world.faults["inventory"].fail("POST", "/release", 503);
    let (_, accepted, _) = world
        .place("ana", json!([{"product_id": 2, "quantity": 1}]), None)
        .await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    // The stock's release is retried while inventory answers 503…
    let started = Instant::now();
    while world.faults["inventory"].count("POST", "/release") < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "release never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.faults["inventory"].clear("POST", "/release");
    // …and the order and its customer are told of the decline, not of that.
    let order = world.settled("ana", &id, &["CANCELLED"]).await;
    let reason = order["cancel_reason"].as_str().unwrap();
    assert!(reason.contains("injected 402"), "{order:#}");
    assert!(!reason.contains("503") && !reason.contains("compensation"), "{reason}");
    world.remove().await;
}

#[test]
fn an_operational_failure_is_told_to_the_customer_only_in_general_terms() {
    use crate::saga::{customer_reason, OPERATIONAL_REASON};
    assert_eq!(customer_reason("payment declined", true), "payment declined");
    assert_eq!(
        customer_reason("payments did not answer within 1s", false),
        OPERATIONAL_REASON
    );
}

#[tokio::test]
async fn a_failure_at_each_step_undoes_the_earlier_steps_in_reverse_once_each() {
    // (service, method, path suffix, status) of the fault; the compensations expected.
    let cases: [(&str, &str, &str, u16, &[&str]); 4] = [
        ("inventory", "POST", "/reservations", 409, &[]),
        ("payments", "POST", "/api/v1/payments", 402, &["stock_released"]),
        (
            "shipping",
            "POST",
            "/api/v1/shipments",
            422,
            &["payment_released", "stock_released"],
        ),
        (
            "payments",
            "POST",
            "/capture",
            409,
            &["shipment_cancelled", "payment_released", "stock_released"],
        ),
    ];
    for (service, method, suffix, status, undone) in cases {
        let world = World::start(false).await;
        world.faults[service].fail(method, suffix, status);
        let (_, accepted, _) = world
            .place("ana", json!([{"product_id": 2, "quantity": 3}]), None)
            .await;
        let id = accepted["id"].as_str().unwrap().to_owned();
        let order = world.settled("ana", &id, &["CONFIRMED", "CANCELLED"]).await;
        assert_eq!(order["status"], "CANCELLED", "fault at {service} {suffix}: {order:#}");
        let history = kinds(&order);
        let tail: Vec<&str> = history[history.len() - 1 - undone.len()..history.len() - 1]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, undone, "fault at {service} {suffix}: {history:?}");
        assert_eq!(history.last().unwrap(), "cancelled");
        assert!(
            order["cancel_reason"].as_str().unwrap().contains("injected"),
            "{order:#}"
        );

        // Every effect undone, each compensation called once.
        assert_eq!(on_hand(&world.inventory, 2).await, (10, 10), "stock back");
        let releases = world.faults["inventory"].count("POST", "/release");
        assert_eq!(releases, usize::from(undone.contains(&"stock_released")));
        for payment in flotilla_payments::payments::for_order(&world.payments, &id)
            .await
            .unwrap()
        {
            assert!(matches!(payment.state.as_str(), "voided" | "declined"), "{payment:?}");
        }
        assert_eq!(
            world.faults["payments"].count("POST", "/void"),
            usize::from(undone.contains(&"payment_released"))
        );
        if let Some(shipment) = flotilla_shipping::shipments::by_order(&world.shipping, &id)
            .await
            .unwrap()
        {
            assert_eq!(serde_json::to_value(shipment.status).unwrap(), "cancelled");
        }
        assert_eq!(
            world.faults["shipping"].count("POST", "/cancel"),
            usize::from(undone.contains(&"shipment_cancelled"))
        );
        world.remove().await;
    }
}

#[tokio::test]
async fn with_payments_away_the_order_waits_and_goes_on_by_itself_when_payments_returns() {
    let world = World::start(true).await;
    let (status, accepted, _) = world
        .place("ana", json!([{"product_id": 1, "quantity": 1}]), Some("wait-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "accepted while payments is away");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let order = world.settled("ana", &id, &["PAYMENT_PENDING"]).await;
    assert_eq!(on_hand(&world.inventory, 1).await, (10, 9), "stock held meanwhile");
    assert!(kinds(&order).contains(&"payment_pending".to_owned()));

    // Payments comes back on its address; nobody touches the order.
    let listener = TcpListener::bind(world.payments_addr).await.unwrap();
    let router = world.payments_router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let order = world.settled("ana", &id, &["CONFIRMED", "CANCELLED"]).await;
    assert_eq!(order["status"], "CONFIRMED", "{order:#}");
    assert_eq!(on_hand(&world.inventory, 1).await, (9, 9));
    world.remove().await;
}

#[tokio::test]
async fn bad_orders_are_refused_with_the_field_named() {
    let world = World::start(false).await;
    let cases = [
        (json!([]), "lines"),
        (json!([{"product_id": 1, "quantity": 0}]), "lines[0].quantity"),
        (
            json!([{"product_id": 1, "quantity": 1}, {"product_id": 77, "quantity": 1}]),
            "lines[1].product_id",
        ),
        (
            json!([{"product_id": 1, "quantity": 1}, {"product_id": 9, "quantity": 1}]),
            "lines[1].product_id",
        ),
    ];
    for (lines, field) in cases {
        let (status, problem, headers) = world.place("ana", lines.clone(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{lines}: {problem}");
        assert_eq!(headers.get("content-type").unwrap(), "application/problem+json");
        assert_eq!(problem["invalid-params"][0]["name"], field, "{problem}");
    }
    let (status, _, _) = call(&world.orders, "GET", "/api/v1/orders", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        world.get("ana", "/api/v1/orders?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        world.get("ana", "/api/v1/orders?status=LOST").await.0,
        StatusCode::BAD_REQUEST
    );
    let user = shop_issuer().shop_token("ana", "shop", &[]);
    let (status, _, _) = call(&world.orders, "GET", "/api/v1/orders/sagas", Some(&user), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "sagas are for admins");
    world.remove().await;
}

#[tokio::test]
async fn a_key_keeps_its_answer_through_races_refusals_and_reuse() {
    let world = World::start(false).await;
    let lines = json!([{"product_id": 1, "quantity": 1}]);
    // Two requests with one key at once: both get the one order, and only one exists.
    let (first, second) = tokio::join!(
        world.place("ana", lines.clone(), Some("race")),
        world.place("ana", lines.clone(), Some("race"))
    );
    assert_eq!(
        (first.0, second.0),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{first:?} {second:?}"
    );
    assert_eq!(first.1["id"], second.1["id"]);
    let (_, mine) = world.get("ana", "/api/v1/orders").await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    // The same key for another request is refused; another customer's same key is theirs.
    let (status, problem, _) = world
        .place("ana", json!([{"product_id": 3, "quantity": 1}]), Some("race"))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("urn:flotilla:problem:idempotency-key-reused")
        ),
        "{problem}"
    );
    let (status, other, _) = world.place("bo", lines, Some("race")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(other["id"], first.1["id"]);
    // A refusal is kept too: the retry gets it again, marked as replayed.
    let unknown = json!([{"product_id": 77, "quantity": 1}]);
    let (status, _, headers) = world.place("ana", unknown.clone(), Some("bad")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, problem, headers) = world.place("ana", unknown, Some("bad")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(problem["invalid-params"][0]["name"], "lines[0].product_id");
    world.remove().await;
}

#[test]
fn the_document_names_every_route() {
    let document = crate::openapi_document();
    for path in [
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/saga",
        "/api/v1/orders/sagas",
        "/api/v1/orders/read-model/rebuild",
        "/openapi.json",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path}");
    }
}

#[tokio::test]
async fn the_journal_appends_without_folding_and_folds_only_when_the_facts_are_missing() {
    use crate::journal::{Facts, Journal};
    use crate::order::{Address, Money, OrderEvent, OrderLine};
    let db = TestDatabase::create("orders").await;
    let store = Store::open(&db.url, &crate::MIGRATOR).await.unwrap();
    flotilla::events::prepare(&store).await.unwrap();
    let journal = Journal::new(store.clone(), flotilla::events::Outbox::new());
    let lines = vec![OrderLine {
        product_id: 1,
        quantity: 2,
        name: "Mug".into(),
        unit_price_minor: 500,
    }];
    let total = Money {
        amount_minor: 1000,
        currency: "EUR".into(),
    };
    let placed = OrderEvent::Placed {
        user_id: "ana".into(),
        lines: lines.clone(),
        total: total.clone(),
        shipping_address: Address {
            name: "Ana".into(),
            line1: "Kai 1".into(),
            line2: String::new(),
            city: "Hamburg".into(),
            postal_code: "20457".into(),
            country: "DE".into(),
        },
    };
    let record = |id: &'static str, event: OrderEvent, facts: Option<Facts<'static>>| {
        let (journal, store) = (journal.clone(), store.clone());
        async move {
            let mut tx = store.begin_write().await.unwrap();
            let added = journal.record_in(&mut tx, id, event, facts).await.unwrap();
            tx.commit().await.unwrap();
            added
        }
    };
    let facts: Facts<'static> = Facts {
        user_id: "ana",
        lines: Box::leak(lines.into_boxed_slice()),
        total: Box::leak(Box::new(total)),
    };
    for id in ["o-1", "o-2"] {
        assert!(record(id, placed.clone(), None).await);
        assert!(record(id, OrderEvent::StockReserved, None).await);
        assert!(
            !record(id, OrderEvent::StockReserved, None).await,
            "a repeat adds nothing"
        );
    }
    // With the facts at hand, and without (an old saga's state): the same confirmed event;
    // o-2's read-model row went missing and is folded back.
    assert!(record("o-1", OrderEvent::Confirmed, Some(facts)).await);
    sqlx::query("DELETE FROM orders_view WHERE id = 'o-2'")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(record("o-2", OrderEvent::Confirmed, None).await);
    // A late cancellation of a confirmed order is history, not news: nobody is told.
    let late = OrderEvent::Cancelled { reason: "late".into() };
    assert!(record("o-1", late, Some(facts)).await);
    assert!(!record("o-2", OrderEvent::Confirmed, None).await);
    let envelopes: Vec<String> = sqlx::query_scalar("SELECT envelope FROM flotilla_outbox ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let confirmed: Vec<Value> = envelopes
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|e| e["type"] == flotilla_shop_contracts::orders::CONFIRMED)
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(confirmed.len(), 2, "{envelopes:?}");
    assert!(
        !envelopes
            .iter()
            .any(|e| e.contains(flotilla_shop_contracts::orders::CANCELLED)),
        "{envelopes:?}"
    );
    for data in &confirmed {
        assert_eq!(
            (data["user_id"].as_str(), data["status"].as_str()),
            (Some("ana"), Some("CONFIRMED"))
        );
        assert_eq!(data["total"]["amount_minor"], 1000);
    }
    // The read model moved with every event, and equals what a rebuild folds.
    let before = journal.list("ana", None, 10).await.unwrap();
    assert!(before
        .iter()
        .all(|o| o.status == crate::order::Status::Confirmed && o.items == 2));
    journal.rebuild().await.unwrap();
    let mut after = journal.list("ana", None, 10).await.unwrap();
    let mut before = before;
    before.sort_by(|a, b| a.id.cmp(&b.id));
    after.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(before, after);
    db.remove().await;
}
