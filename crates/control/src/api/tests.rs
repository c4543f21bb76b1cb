use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::*;
use crate::{ControlConfig, RegistryConfig};

const TOKEN: &str = "s3cret-token";

fn app() -> Router {
    let (_tx, rx) = watch::channel(false);
    let config = ControlConfig {
        registry: RegistryConfig::default(),
        token: TOKEN.into(),
        warm_up: Duration::ZERO,
    };
    router(Arc::new(ControlState::new(config, rx)))
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
    let app = app();
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
        .oneshot(Request::get("/v1/registry/instances").body(Body::empty()).unwrap())
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
    let app = app();
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
    let app = app();
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
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(bad_wait).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["invalid-params"][0]["name"], "wait");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = app();
    let response = app
        .clone()
        .oneshot(Request::get("/v1/nope").body(Body::empty()).unwrap())
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
