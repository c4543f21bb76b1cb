use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::{ControlConfig, RegistryConfig};

const TOKEN: &str = "s3cret-token";

async fn app() -> Router {
    let (_tx, rx) = watch::channel(false);
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    let storage = crate::Storage::in_memory().await.unwrap();
    router(Arc::new(ControlState::new(config, storage, rx)))
}

fn registration_body() -> String {
    serde_json::json!({
        "service": "catalog",
        "instance_id": "catalog-1-abcd",
        "address": "127.0.0.1:40000",
        "version": "0.1.0",
        "metadata": {"pid": "42"}
    })
    .to_string()
}

fn post(body: String, token: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/v1/registry/instances").header("content-type", "application/json");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Body::from(body)).unwrap()
}

async fn json(response: Response) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn registration_without_token_is_refused() {
    let app = app().await;
    let response = app.clone().oneshot(post(registration_body(), None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(response.headers().contains_key("www-authenticate"));

    let response = app
        .clone()
        .oneshot(post(registration_body(), Some("wrong")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let list = app
        .oneshot(
            Request::get("/v1/registry/instances")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        json(list).await["instances"].as_array().unwrap().len(),
        0,
        "nothing was registered"
    );
}

#[tokio::test]
async fn register_list_heartbeat_deregister() {
    let app = app().await;
    let response = app
        .clone()
        .oneshot(post(registration_body(), Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let lease = json(response).await;
    assert_eq!(lease["heartbeat_ms"], 1000);
    assert_eq!(lease["ttl_ms"], 3000);

    let response = app
        .clone()
        .oneshot(
            Request::get("/v1/registry/services/catalog")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.headers().contains_key(INDEX_HEADER));
    let list = json(response).await;
    assert_eq!(list["instances"][0]["address"], "127.0.0.1:40000");
    assert_eq!(list["instances"][0]["metadata"]["pid"], "42");
    assert_eq!(list["instances"][0]["health"], "passing");

    let beat = Request::put("/v1/registry/instances/catalog-1-abcd/heartbeat")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.clone().oneshot(beat).await.unwrap().status(), StatusCode::OK);

    let delete = || {
        Request::delete("/v1/registry/instances/catalog-1-abcd")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.clone().oneshot(delete()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let again = app.clone().oneshot(delete()).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(again).await["type"], "urn:flotilla:problem:not-found");
}

#[tokio::test]
async fn malformed_registration_names_the_field() {
    let app = app().await;
    let bad_address = registration_body().replace("127.0.0.1:40000", "not-an-address");
    let response = app.clone().oneshot(post(bad_address, Some(TOKEN))).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["invalid-params"][0]["name"], "address");

    let missing = serde_json::json!({"service": "catalog", "address": "127.0.0.1:1"}).to_string();
    let response = app.clone().oneshot(post(missing, Some(TOKEN))).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["invalid-params"][0]["name"], "instance_id");

    let wrong_type = registration_body().replace("\"0.1.0\"", "7");
    let response = app.clone().oneshot(post(wrong_type, Some(TOKEN))).await.unwrap();
    assert_eq!(json(response).await["invalid-params"][0]["name"], "version");

    let response = app.clone().oneshot(post("{".into(), Some(TOKEN))).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let bad_wait = Request::get("/v1/registry/instances?index=1&wait=soon")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(bad_wait).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["invalid-params"][0]["name"], "wait");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = app().await;
    let response = app
        .clone()
        .oneshot(
            Request::get("/v1/nope")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let response = app
        .oneshot(Request::patch("/v1/registry/services").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

fn config_request(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match body {
        Some(body) => req
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    }
}

#[tokio::test]
async fn config_writes_need_the_token_and_compare_and_set_answers_412_with_the_current_revision() {
    let app = app().await;
    let path = "/v1/config/catalog/default/page_size";
    let body = serde_json::json!({"value": 20, "comment": "first"});
    let refused = app
        .clone()
        .oneshot(config_request("PUT", path, None, &[], Some(body.clone())))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let created = app
        .clone()
        .oneshot(config_request(
            "PUT",
            path,
            Some(TOKEN),
            &[("if-none-match", "*"), ("x-flotilla-author", "ana")],
            Some(body.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let etag = created.headers()["etag"].to_str().unwrap().to_owned();
    let entry = json(created).await;
    assert_eq!(entry["author"], "ana");
    assert_eq!(etag, format!("\"{}\"", entry["revision"]));

    let stale = app
        .clone()
        .oneshot(config_request(
            "PUT",
            path,
            Some(TOKEN),
            &[("if-match", "\"999\"")],
            Some(serde_json::json!({"value": 30})),
        ))
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.headers()["content-type"], "application/problem+json");
    let fresh = app
        .clone()
        .oneshot(config_request(
            "PUT",
            path,
            Some(TOKEN),
            &[("if-match", &etag)],
            Some(serde_json::json!({"value": 30})),
        ))
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    let again = app
        .clone()
        .oneshot(config_request(
            "PUT",
            path,
            Some(TOKEN),
            &[("if-match", &etag)],
            Some(serde_json::json!({"value": 40})),
        ))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::PRECONDITION_FAILED);
    let problem = json(again).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("is at revision"),
        "{problem}"
    );

    let bad = app
        .clone()
        .oneshot(config_request(
            "PUT",
            "/v1/config/catalog/default/1bad",
            Some(TOKEN),
            &[],
            Some(body),
        ))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(bad).await["invalid-params"][0]["name"], "key");

    let history = app
        .oneshot(config_request(
            "GET",
            &format!("{path}/history"),
            Some(TOKEN),
            &[],
            None,
        ))
        .await
        .unwrap();
    let history = json(history).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["value"], 30);
}

#[tokio::test]
async fn secrets_are_masked_without_the_token_and_a_wrong_token_is_refused() {
    let app = app().await;
    let keys = crate::acl::Keyring::new(TOKEN);
    let payments = keys.service("payments", "payments-1").unwrap();
    let orders = keys.service("orders", "orders-1").unwrap();
    let reader = keys.reader("prometheus").unwrap();
    let path = "/v1/config/payments/default/provider_key";
    let body = serde_json::json!({"value": "sk_123", "secret": true});
    let written = app
        .clone()
        .oneshot(config_request("PUT", path, Some(TOKEN), &[], Some(body)))
        .await
        .unwrap();
    assert_eq!(json(written).await["value"], flotilla_api::config::SECRET_MASK);
    // The operator and the owning service see the secret; a reader sees it masked; another
    // service may not read the scope at all; no credential is refused.
    for (token, expected) in [
        (Some(TOKEN), Ok(serde_json::json!("sk_123"))),
        (Some(payments.as_str()), Ok(serde_json::json!("sk_123"))),
        (Some(reader.as_str()), Ok(serde_json::json!("******"))),
        (Some(orders.as_str()), Err(StatusCode::FORBIDDEN)),
        (None, Err(StatusCode::UNAUTHORIZED)),
        (Some("nope"), Err(StatusCode::UNAUTHORIZED)),
    ] {
        for uri in [path, "/v1/config/resolve/payments"] {
            let read = app
                .clone()
                .oneshot(config_request("GET", uri, token, &[], None))
                .await
                .unwrap();
            match &expected {
                Ok(value) => {
                    let body = json(read).await;
                    let got = if uri == path {
                        &body["value"]
                    } else {
                        &body["values"]["provider_key"]
                    };
                    assert_eq!(got, value, "{token:?} {uri}");
                }
                Err(status) => assert_eq!(read.status(), *status, "{token:?} {uri}"),
            }
        }
    }
    let listed = app
        .clone()
        .oneshot(config_request("GET", "/v1/config", Some(TOKEN), &[], None))
        .await
        .unwrap();
    assert_eq!(json(listed).await[0]["value"], "******", "listings always mask");
    // Writes are the operator's.
    let write = config_request(
        "PUT",
        path,
        Some(&payments),
        &[],
        Some(serde_json::json!({"value": "x"})),
    );
    assert_eq!(app.oneshot(write).await.unwrap().status(), StatusCode::FORBIDDEN);
}

/// Deny by default: every control-plane endpoint but the health checks refuses a missing or
/// wrong credential; a service's credential refuses another service's registration,
/// heartbeat, topics and groups, and what only the operator and readers see.
#[tokio::test]
async fn every_endpoint_needs_a_credential_and_a_service_speaks_only_for_itself() {
    let app = app().await;
    let keys = crate::acl::Keyring::new(TOKEN);
    let catalog = keys.service("catalog", "catalog-1").unwrap();
    let orders = keys.service("orders", "orders-1").unwrap();
    let reader = keys.reader("prometheus").unwrap();
    let endpoints: &[(&str, &str)] = &[
        ("GET", "/v1/registry/instances"),
        ("GET", "/v1/registry/services"),
        ("GET", "/v1/registry/services/catalog"),
        ("POST", "/v1/registry/instances"),
        ("PUT", "/v1/registry/instances/x/heartbeat"),
        ("DELETE", "/v1/registry/instances/x"),
        ("GET", "/v1/config"),
        ("GET", "/v1/config/resolve/catalog"),
        ("GET", "/v1/config/applied"),
        ("PUT", "/v1/config/applied/x"),
        ("GET", "/v1/config/catalog/default/page_size"),
        ("PUT", "/v1/config/catalog/default/page_size"),
        ("DELETE", "/v1/config/catalog/default/page_size"),
        ("GET", "/v1/config/catalog/default/page_size/history"),
        ("GET", "/v1/config/catalog/default/page_size/diff?from=1"),
        ("POST", "/v1/config/catalog/default/page_size/rollback"),
        ("GET", "/v1/events"),
        ("POST", "/v1/events/orders"),
        ("GET", "/v1/events/orders?group=orders"),
        ("POST", "/v1/events/orders/ack"),
        ("POST", "/v1/events/orders/nack"),
        ("GET", "/v1/events/orders/messages"),
        ("POST", "/v1/events/orders/replay"),
        ("POST", "/v1/traces"),
        ("GET", "/v1/traces"),
        ("GET", "/v1/traces/0123456789abcdef0123456789abcdef"),
        ("GET", "/v1/dependencies"),
        ("GET", "/v1/sd/prometheus"),
        ("GET", "/metrics"),
        ("GET", "/v1/identity/ca"),
        ("POST", "/v1/identity/certificates"),
    ];
    for (method, path) in endpoints {
        for token in [None, Some("wrong"), Some("svc:catalog:catalog-1:00")] {
            let answer = app
                .clone()
                .oneshot(config_request(method, path, token, &[], Some(serde_json::json!({}))))
                .await
                .unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
        }
    }
    for path in ["/health/live", "/health/ready", openapi::PATH] {
        let answer = app
            .clone()
            .oneshot(config_request("GET", path, None, &[], None))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
    }

    // Catalog's credential registers catalog, never orders; orders cannot beat for catalog.
    let answer = app
        .clone()
        .oneshot(post(registration_body(), Some(&orders)))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let answer = app
        .clone()
        .oneshot(post(registration_body(), Some(&catalog)))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let beat = config_request(
        "PUT",
        "/v1/registry/instances/catalog-1-abcd/heartbeat",
        Some(&orders),
        &[],
        None,
    );
    assert_eq!(app.clone().oneshot(beat).await.unwrap().status(), StatusCode::FORBIDDEN);
    let beat = config_request(
        "PUT",
        "/v1/registry/instances/catalog-1-abcd/heartbeat",
        Some(&catalog),
        &[],
        None,
    );
    assert_eq!(app.clone().oneshot(beat).await.unwrap().status(), StatusCode::OK);

    // Topics and groups: orders publishes `orders`, catalog may not; catalog consumes as itself.
    let event = serde_json::json!({"id": "e1", "source": "/t", "type": "t", "specversion": "1.0", "data": {}});
    for (who, topic, expected) in [
        (&orders, "orders", StatusCode::OK),
        (&catalog, "orders", StatusCode::FORBIDDEN),
    ] {
        let publish = config_request(
            "POST",
            &format!("/v1/events/{topic}"),
            Some(who),
            &[],
            Some(event.clone()),
        );
        assert_eq!(
            app.clone().oneshot(publish).await.unwrap().status(),
            expected,
            "{who} → {topic}"
        );
    }
    for (group, expected) in [("catalog", StatusCode::OK), ("payments", StatusCode::FORBIDDEN)] {
        let fetch = config_request(
            "GET",
            &format!("/v1/events/orders?group={group}"),
            Some(&catalog),
            &[],
            None,
        );
        assert_eq!(
            app.clone().oneshot(fetch).await.unwrap().status(),
            expected,
            "group {group}"
        );
    }
    // What the system observed is for the operator and readers, not for services.
    for path in [
        "/v1/traces",
        "/v1/dependencies",
        "/v1/sd/prometheus",
        "/v1/events",
        "/v1/config/applied",
    ] {
        let by_service = config_request("GET", path, Some(&catalog), &[], None);
        assert_eq!(
            app.clone().oneshot(by_service).await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
        let by_reader = config_request("GET", path, Some(&reader), &[], None);
        assert_eq!(
            app.clone().oneshot(by_reader).await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    // A reader writes nothing.
    let answer = app
        .clone()
        .oneshot(post(registration_body(), Some(&reader)))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn diff_and_rollback_over_http() {
    let app = app().await;
    let path = "/v1/config/gateway/default/routes";
    let mut revisions = Vec::new();
    for value in [
        serde_json::json!({"routes": [{"prefix": "/a"}]}),
        serde_json::json!({"routes": [{"prefix": "/b"}]}),
    ] {
        let r = app
            .clone()
            .oneshot(config_request(
                "PUT",
                path,
                Some(TOKEN),
                &[],
                Some(serde_json::json!({"value": value})),
            ))
            .await
            .unwrap();
        revisions.push(json(r).await["revision"].as_u64().unwrap());
    }
    let diff = app
        .clone()
        .oneshot(config_request(
            "GET",
            &format!("{path}/diff?from={}", revisions[0]),
            Some(TOKEN),
            &[],
            None,
        ))
        .await
        .unwrap();
    let diff = json(diff).await;
    assert_eq!(diff["changes"][0]["path"], "/routes/0/prefix");
    assert_eq!(diff["changes"][0]["op"], "changed");
    let back = app
        .clone()
        .oneshot(config_request(
            "POST",
            &format!("{path}/rollback"),
            Some(TOKEN),
            &[],
            Some(serde_json::json!({"revision": revisions[0]})),
        ))
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    let current = app
        .oneshot(config_request("GET", path, Some(TOKEN), &[], None))
        .await
        .unwrap();
    assert_eq!(json(current).await["value"]["routes"][0]["prefix"], "/a");
}

#[tokio::test]
async fn the_event_api_appends_fetches_and_acks_with_the_token_only() {
    let app = app().await;
    let event = serde_json::json!({"id": "e1", "source": "/orders", "type": "shop.order.placed", "subject": "order/1", "data": {"n": 1}});
    let refused = app
        .clone()
        .oneshot(config_request(
            "POST",
            "/v1/events/orders",
            None,
            &[],
            Some(event.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let appended = app
            .clone()
            .oneshot(config_request(
                "POST",
                "/v1/events/orders",
                Some(TOKEN),
                &[],
                Some(event.clone()),
            ))
            .await
            .unwrap();
        assert_eq!(appended.status(), StatusCode::OK);
        assert_eq!(json(appended).await[0]["offset"], 0, "the same id twice is one event");
    }
    let fetched = app
        .clone()
        .oneshot(config_request(
            "GET",
            "/v1/events/orders?group=shipping&max=10",
            Some(TOKEN),
            &[],
            None,
        ))
        .await
        .unwrap();
    let fetched = json(fetched).await;
    assert_eq!(fetched[0]["event"]["type"], "shop.order.placed", "{fetched}");
    assert_eq!(fetched[0]["attempt"], 1);
    let acked = app
        .clone()
        .oneshot(config_request(
            "POST",
            "/v1/events/orders/ack",
            Some(TOKEN),
            &[],
            Some(serde_json::json!({"group": "shipping", "offsets": [0]})),
        ))
        .await
        .unwrap();
    assert_eq!(json(acked).await["acked"], 1);
    let bad = app
        .clone()
        .oneshot(config_request(
            "POST",
            "/v1/events/orders",
            Some(TOKEN),
            &[],
            Some(serde_json::json!({"id": "x"})),
        ))
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    // A batch is an array of events.
    let batch = |second: serde_json::Value| {
        let mut first = event.clone();
        first["id"] = "e2".into();
        config_request(
            "POST",
            "/v1/events/orders",
            Some(TOKEN),
            &[],
            Some(serde_json::json!([first, second])),
        )
    };
    let mut third = event.clone();
    third["id"] = "e3".into();
    let appended = app.clone().oneshot(batch(third)).await.unwrap();
    assert_eq!(appended.status(), StatusCode::OK);
    let appended = json(appended).await;
    assert_eq!(
        (appended[0]["offset"].clone(), appended[1]["offset"].clone()),
        (1.into(), 2.into())
    );
    let refused = app
        .clone()
        .oneshot(batch(serde_json::json!({"id": "e4", "source": 7})))
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::BAD_REQUEST,
        "a bad event in a batch refuses the batch"
    );
    let refused = app.clone().oneshot(batch(serde_json::json!("e4"))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let topics = app
        .oneshot(config_request("GET", "/v1/events", Some(TOKEN), &[], None))
        .await
        .unwrap();
    let topics = json(topics).await;
    assert_eq!(topics[0]["groups"][0]["lag"], 2, "the batch's two are not fetched yet");
}

/// An instance gets a certificate naming its own service only; it cannot have one for another
/// service, a reader none at all, and the CA's certificate needs a credential too.
#[tokio::test]
async fn an_instance_gets_a_certificate_for_its_own_service_only() {
    let app = app().await;
    let keys = crate::acl::Keyring::new(TOKEN);
    let orders = keys.service("orders", "orders-1").unwrap();
    let reader = keys.reader("dash").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["payments".into()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let ask = |token: &str, service: Option<&str>| {
        let mut body = serde_json::json!({"csr": csr});
        if let Some(service) = service {
            body["service"] = service.into();
        }
        config_request("POST", "/v1/identity/certificates", Some(token), &[], Some(body))
    };
    let issued = app.clone().oneshot(ask(&orders, None)).await.unwrap();
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued = json(issued).await;
    assert_eq!(issued["spiffe_id"], "spiffe://flotilla/orders");
    assert!(issued["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    for (token, service, expected) in [
        (orders.as_str(), Some("payments"), StatusCode::FORBIDDEN),
        (reader.as_str(), None, StatusCode::FORBIDDEN),
        (TOKEN, None, StatusCode::BAD_REQUEST),
        (TOKEN, Some("payments"), StatusCode::CREATED),
    ] {
        assert_eq!(
            app.clone().oneshot(ask(token, service)).await.unwrap().status(),
            expected,
            "{token} {service:?}"
        );
    }
    let bad = config_request(
        "POST",
        "/v1/identity/certificates",
        Some(&orders),
        &[],
        Some(serde_json::json!({"csr": "nope"})),
    );
    assert_eq!(
        app.clone().oneshot(bad).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let ca = config_request("GET", "/v1/identity/ca", None, &[], None);
    assert_eq!(
        app.clone().oneshot(ca).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let ca = config_request("GET", "/v1/identity/ca", Some(&orders), &[], None);
    let ca = app.oneshot(ca).await.unwrap();
    assert_eq!(ca.status(), StatusCode::OK);
    let bytes = ca.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), issued["ca"].as_str().unwrap());
}

/// The path templates the router holds, read from its `Debug` output: axum has no other list
/// of a router's routes. Only the routes' own (`path_router`), not the fallbacks'.
fn route_templates(app: &Router) -> Vec<String> {
    let debug = format!("{app:?}");
    let routes = debug.split("fallback_router").next().unwrap_or_default();
    let mut templates = Vec::new();
    let mut rest = routes;
    while let Some(start) = rest.find("\"/") {
        let tail = &rest[start + 1..];
        let end = tail.find('"').expect("a quoted path ends");
        templates.push(tail[..end].to_owned());
        rest = &tail[end + 1..];
    }
    templates.sort();
    templates.dedup();
    templates
}

/// Every method the router answers on every path it holds is an operation of the OpenAPI
/// document, and every operation of the document is routed: the contract cannot drift from
/// the code.
#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let app = app().await;
    let served = app
        .clone()
        .oneshot(config_request("GET", openapi::PATH, None, &[], None))
        .await
        .unwrap();
    assert_eq!(served.status(), StatusCode::OK, "the document is public");
    assert_eq!(served.headers()["content-type"], "application/json");
    let doc = json(served).await;
    assert_eq!(doc["openapi"], "3.1.0");

    let templates = route_templates(&app);
    // A change in axum's `Debug` would leave this list short rather than wrong.
    assert!(templates.len() >= 29, "{templates:?}");
    for known in [
        "/health/live",
        "/v1/registry/instances/{id}/heartbeat",
        "/v1/traces",
        openapi::PATH,
    ] {
        assert!(templates.iter().any(|t| t == known), "{known} in {templates:?}");
    }
    // Routes the document leaves out on purpose, with why: the dashboard's pages (`/ui…`) are
    // HTML for people behind a session, not the API.
    let exceptions: &[(&str, &str)] = &[];
    let templates: Vec<String> = templates.into_iter().filter(|t| !t.starts_with("/ui")).collect();

    const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];
    let mut routed = std::collections::BTreeSet::new();
    for template in &templates {
        let path: String = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { "x" } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            // Without a credential no handler runs: a route answers 401 (200 if public), what
            // the router does not route 404 or 405.
            let answer = app
                .clone()
                .oneshot(config_request(method, &path, None, &[], None))
                .await
                .unwrap();
            if ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&answer.status()) {
                routed.insert((method.to_owned(), template.clone()));
            }
        }
    }
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_ascii_lowercase()).is_some() {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
    }
    assert!(routed.len() >= 34, "{routed:?}");
    let undocumented: Vec<_> = routed
        .difference(&documented)
        .filter(|(m, p)| !exceptions.contains(&(m.as_str(), p.as_str())))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in the document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "in the document but not routed: {unrouted:?}");
}

/// The operations a service in another language starts with say what the prose says.
#[tokio::test]
async fn key_operations_answer_what_docs_control_api_md_says() {
    let doc = openapi::document();
    let op = |method: &str, path: &str| doc["paths"][path][method].clone();
    let problem = |op: &serde_json::Value, status: &str| {
        op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"].clone()
    };
    let schema =
        |op: &serde_json::Value, status: &str| op["responses"][status]["content"]["application/json"]["schema"].clone();

    let heartbeat = op("put", "/v1/registry/instances/{id}/heartbeat");
    assert_eq!(schema(&heartbeat, "200")["$ref"], "#/components/schemas/Lease");
    assert_eq!(problem(&heartbeat, "404"), "#/components/schemas/Problem");
    assert_eq!(problem(&heartbeat, "401"), "#/components/schemas/Problem");
    assert_eq!(heartbeat["security"][0]["bearer"], serde_json::json!([]));
    assert_eq!(heartbeat["parameters"][0]["name"], "id");

    let register = op("post", "/v1/registry/instances");
    assert_eq!(
        register["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Registration"
    );
    assert_eq!(schema(&register, "201")["$ref"], "#/components/schemas/Lease");
    assert_eq!(schema(&register, "200")["$ref"], "#/components/schemas/Lease");
    let registration = &doc["components"]["schemas"]["Registration"];
    assert_eq!(
        registration["additionalProperties"], false,
        "unknown fields are refused"
    );
    assert_eq!(
        registration["required"],
        serde_json::json!(["service", "instance_id", "address"])
    );

    let resolve = op("get", "/v1/config/resolve/{service}");
    assert!(resolve["responses"]["200"]["headers"][INDEX_HEADER].is_object());
    assert_eq!(schema(&resolve, "200")["$ref"], "#/components/schemas/Resolved");
    let params: Vec<&str> = resolve["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["service", "profile", "index", "wait"]);
    let list = op("get", "/v1/registry/instances");
    assert!(list["responses"]["200"]["headers"][INDEX_HEADER].is_object());

    let write = op("put", "/v1/config/{scope}/{profile}/{key}");
    assert_eq!(problem(&write, "412"), "#/components/schemas/Problem");
    assert!(write["responses"]["200"]["headers"]["ETag"].is_object());
    assert!(write["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "If-Match" && p["in"] == "header"));

    let fetch = op("get", "/v1/events/{topic}");
    let group = fetch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "group")
        .unwrap()
        .clone();
    assert_eq!(group["required"], true);
    assert_eq!(schema(&fetch, "200")["items"]["$ref"], "#/components/schemas/Delivery");
    assert!(op("post", "/v1/events/{topic}/nack")["responses"]["204"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["CloudEvent"]["properties"]["type"]["type"],
        "string"
    );

    let export = op("post", "/v1/traces");
    for media in ["application/x-protobuf", "application/json"] {
        assert!(export["requestBody"]["content"][media].is_object(), "{media}");
    }
    assert!(export["responses"]["415"].is_object());

    let certificate = op("post", "/v1/identity/certificates");
    assert_eq!(
        schema(&certificate, "201")["$ref"],
        "#/components/schemas/IssuedCertificate"
    );

    // What needs no credential says so.
    for path in ["/health/live", "/health/ready", openapi::PATH] {
        assert!(op("get", path)["security"].is_null(), "{path}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}
