use axum::http::StatusCode;
use axum::Router;
use flotilla::auth::test_util::shop_issuer;
use flotilla::auth::TrustedIssuer;
use flotilla::events::{CloudEvent, Consumer, Delivery, EventsClient};
use flotilla::http::test_util::call;
use flotilla::store::test_util::TestDatabase;
use flotilla::store::Store;
use flotilla_shop_contracts::orders::{self, Money, OrderEventData, OrderLine};
use serde_json::{json, Value};

async fn app() -> (Router, Store, TestDatabase) {
    let db = TestDatabase::create("notifications").await;
    let store = crate::open_url(&db.url).await.unwrap();
    let tokens = TrustedIssuer::default().verifier_over(shop_issuer().key_set(), &[], &[]);
    let router = flotilla::http::with_problem_fallbacks(crate::router(store.clone(), tokens));
    (router, store, db)
}

/// A customer's token: the subject is the account id orders puts in `user_id`.
fn customer(account: &str) -> String {
    shop_issuer().shop_token(account, "shop", &["customer"])
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
fn order_event(event_id: &str, kind: &str, order_id: &str, user_id: &str) -> Delivery {
    let cancelled = kind == orders::CANCELLED;
    let data = OrderEventData {
        order_id: order_id.into(),
        user_id: user_id.into(),
        status: if cancelled { "CANCELLED" } else { "CONFIRMED" }.into(),
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
        reason: if cancelled {
            "out of stock".into()
        } else {
            String::new()
        },
    };
    Delivery {
        offset: 3,
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

async fn list(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let (status, _, body) = call(app, "GET", uri, token, None).await;
    (status, body)
}

#[tokio::test]
async fn a_confirmed_order_notifies_its_customer_once_and_no_one_else() {
    let (app, store, db) = app().await;
    let consumer = consumer(&store);
    let confirmed = order_event("e-1", orders::CONFIRMED, "order-1234567890", "acct-ana");
    assert!(consumer.handle_one(&confirmed, &crate::on_order_event).await.unwrap());
    // The same event again (an ack that got lost): the inbox skips it.
    assert!(!consumer.handle_one(&confirmed, &crate::on_order_event).await.unwrap());

    let (status, mine) = list(&app, "/api/v1/notifications", Some(&customer("acct-ana"))).await;
    assert_eq!(status, StatusCode::OK);
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["kind"], "order.confirmed");
    assert_eq!(mine[0]["order_id"], "order-1234567890");
    assert_eq!(mine[0]["user_id"], "acct-ana");
    assert_eq!(
        mine[0]["message"],
        "Your order order-12… is confirmed: 2 items, 19.98 EUR"
    );

    let (status, theirs) = list(&app, "/api/v1/notifications", Some(&customer("acct-bo"))).await;
    assert_eq!((status, theirs), (StatusCode::OK, json!([])));
    db.remove().await;
}

#[tokio::test]
async fn a_repeat_that_passes_the_inbox_still_tells_the_customer_once() {
    let (app, store, db) = app().await;
    let consumer = consumer(&store);
    let ana = customer("acct-ana");
    // A replayed dead letter comes back under a new event id: the inbox cannot know it.
    for id in ["e-1", "e-1-replayed"] {
        assert!(consumer
            .handle_one(
                &order_event(id, orders::CANCELLED, "o-1", "acct-ana"),
                &crate::on_order_event
            )
            .await
            .unwrap());
    }
    // Other types tell nobody anything.
    assert!(consumer
        .handle_one(
            &order_event("e-2", orders::PLACED, "o-2", "acct-ana"),
            &crate::on_order_event
        )
        .await
        .unwrap());
    let (_, mine) = list(&app, "/api/v1/notifications", Some(&ana)).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["kind"], "order.cancelled");
    assert_eq!(mine[0]["message"], "Your order o-1 was cancelled: out of stock");

    // Newest first, and the limit holds.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(consumer
        .handle_one(
            &order_event("e-3", orders::CONFIRMED, "o-3", "acct-ana"),
            &crate::on_order_event
        )
        .await
        .unwrap());
    let (_, mine) = list(&app, "/api/v1/notifications", Some(&ana)).await;
    let orders: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["order_id"].as_str())
        .collect();
    assert_eq!(orders, vec!["o-3", "o-1"]);
    let (status, one) = list(&app, "/api/v1/notifications?limit=1", Some(&ana)).await;
    assert_eq!((status, one.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    assert_eq!(one[0]["order_id"], "o-3");

    // Data that is not an order fails, leaving nothing behind, so the log redelivers it.
    let mut bad = order_event("e-4", orders::CONFIRMED, "o-4", "acct-ana");
    bad.event.data = json!({"order_id": "o-4"});
    let err = consumer.handle_one(&bad, &crate::on_order_event).await.unwrap_err();
    assert!(err.contains("e-4"), "{err}");
    let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM flotilla_inbox WHERE event_id = $1")
        .bind("e-4")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(handled, 0);
    db.remove().await;
}

#[tokio::test]
async fn a_batch_commits_together_and_a_bad_event_in_it_holds_up_only_itself() {
    let (app, store, db) = app().await;
    let consumer = consumer(&store);
    let ana = customer("acct-ana");
    let one = order_event("b-1", orders::CONFIRMED, "o-b1", "acct-ana");
    let two = order_event("b-2", orders::CONFIRMED, "o-b2", "acct-ana");
    // A batch with a repeat inside it: the second copy is a duplicate, not a second notice.
    let outcomes = consumer
        .handle_batch(&[one.clone(), two.clone(), one.clone()], &crate::on_order_event)
        .await;
    assert_eq!(outcomes, vec![Ok(true), Ok(true), Ok(false)]);
    let (_, mine) = list(&app, "/api/v1/notifications", Some(&ana)).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(2), "{mine}");

    // A batch holding an event that fails: the others are handled (one by one), the bad one
    // is reported failed with nothing of it kept, and a repeat of a handled one is skipped.
    let mut bad = order_event("b-3", orders::CONFIRMED, "o-b3", "acct-ana");
    bad.event.data = json!({"order_id": "o-b3"});
    let three = order_event("b-4", orders::CANCELLED, "o-b4", "acct-ana");
    let outcomes = consumer.handle_batch(&[two, bad, three], &crate::on_order_event).await;
    assert_eq!(outcomes[0], Ok(false));
    assert!(outcomes[1].as_ref().is_err_and(|e| e.contains("b-3")), "{outcomes:?}");
    assert_eq!(outcomes[2], Ok(true));
    let (_, mine) = list(&app, "/api/v1/notifications", Some(&ana)).await;
    let kept: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["order_id"].as_str())
        .collect();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(!kept.contains(&"o-b3"));
    let inbox: Vec<String> = sqlx::query_scalar("SELECT event_id FROM flotilla_inbox ORDER BY event_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(inbox, vec!["b-1", "b-2", "b-4"]);
    db.remove().await;
}

#[tokio::test]
async fn listing_needs_a_token_and_a_sane_limit_and_the_document_names_every_route() {
    let (app, _store, db) = app().await;
    let ana = customer("acct-ana");
    let (status, problem) = list(&app, "/api/v1/notifications", None).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("urn:flotilla:problem:unauthorized"))
    );
    let (status, _) = list(&app, "/api/v1/notifications", Some("not.a.token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for bad in ["0", "101", "-1", "ten", ""] {
        let (status, problem) = list(&app, &format!("/api/v1/notifications?limit={bad}"), Some(&ana)).await;
        assert_eq!(
            (status, problem["invalid-params"][0]["name"].as_str()),
            (StatusCode::BAD_REQUEST, Some("limit")),
            "limit={bad}: {problem}"
        );
    }
    for good in ["1", "100"] {
        let (status, _) = list(&app, &format!("/api/v1/notifications?limit={good}"), Some(&ana)).await;
        assert_eq!(status, StatusCode::OK, "limit={good}");
    }

    let (status, doc) = list(&app, "/openapi.json", None).await;
    assert_eq!(
        (status, doc["info"]["title"].as_str()),
        (StatusCode::OK, Some("notifications"))
    );
    assert_eq!(doc, crate::openapi_document());
    let limit = &doc["paths"]["/api/v1/notifications"]["get"]["parameters"][0]["schema"];
    assert_eq!(
        (limit["maximum"].as_u64(), limit["default"].as_u64()),
        (
            Some(u64::from(crate::api::MAX_LIMIT)),
            Some(u64::from(crate::api::DEFAULT_LIMIT))
        )
    );
    for (path, method) in [("/api/v1/notifications", "get"), ("/openapi.json", "get")] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let (status, _, _) = call(&app, &method.to_uppercase(), path, None, None).await;
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
