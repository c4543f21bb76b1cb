//! Per-route policies, end to end through a gateway on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, echo_upstream, gateway, get, send};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};

async fn route(extra: &str) -> common::Running {
    let upstream = echo_upstream().await;
    gateway(
        &format!("[[routes]]\nname = \"r\"\nprefix = \"/\"\nupstreams = [\"http://{upstream}\"]\n{extra}"),
        None,
    )
    .await
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let gw = route("rate_limit = { requests = 2, per = \"10s\", burst = 2 }\n").await;
    for left in ["1", "0"] {
        let (status, headers, _) = send(get(gw.addr, "/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-policy"], "2;w=10");
        assert_eq!(headers["ratelimit"], format!("limit=2, remaining={left}"));
    }
    let (status, headers, problem) = send(get(gw.addr, "/x")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(problem["type"], "urn:flotilla:problem:rate-limited");
    assert_eq!(headers["retry-after"], "5");
    assert!(headers["ratelimit"].to_str().unwrap().contains("remaining=0"));
    let metrics = client().request(get(gw.admin, "/-/metrics")).await.unwrap();
    let text = String::from_utf8(metrics.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("flotilla_gateway_rate_limited_total{route=\"r\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_sized_or_chunked() {
    let gw = route("max_body = \"16B\"\n").await;
    let post = |body: &'static [u8]| {
        Request::post(format!("http://{}/x", gw.addr))
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let (status, _, echo) = send(post(b"small")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 5);
    let (status, _, problem) = send(post(b"this body is far too long")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["type"], "urn:flotilla:problem:body-too-large");

    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = (0..4)
        .map(|_| Ok(http_body::Frame::data(Bytes::from_static(b"0123456789"))))
        .collect();
    let streamed = Request::post(format!("http://{}/x", gw.addr))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client.request(streamed).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn header_rules_change_requests_and_responses() {
    let gw = route(
        "request_headers = { set = { \"x-from\" = \"gateway\" }, remove = [\"x-debug\"] }\n\
         response_headers = { set = { \"x-served-by\" = \"flotilla\" }, remove = [\"x-upstream-secret\"] }\n",
    )
    .await;
    let req = Request::get(format!("http://{}/x", gw.addr))
        .header("x-debug", "1")
        .body(Full::default())
        .unwrap();
    let (status, headers, echo) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["x-from"], "gateway");
    assert!(echo["headers"].get("x-debug").is_none());
    assert_eq!(headers["x-served-by"], "flotilla");
}

#[tokio::test]
async fn fault_injection_aborts_or_delays() {
    let aborting = route("fault = { abort_percent = 100, abort_status = 503 }\n").await;
    let (status, _, problem) = send(get(aborting.addr, "/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "urn:flotilla:problem:fault-injected");

    let delaying = route("fault = { delay = \"150ms\", delay_percent = 100 }\n").await;
    let started = Instant::now();
    let (status, _, _) = send(get(delaying.addr, "/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn cors_preflight_and_response_headers() {
    let gw = route(
        "cors = { origins = [\"https://shop.example\"], methods = [\"GET\", \"POST\"], headers = [\"content-type\"], max_age = \"5m\", credentials = true }\n",
    )
    .await;
    let preflight = |origin: &str| {
        Request::options(format!("http://{}/x", gw.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(Full::default())
            .unwrap()
    };
    let (status, headers, _) = send(preflight("https://shop.example")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "300");
    let (status, _, _) = send(preflight("https://evil.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let req = Request::get(format!("http://{}/x", gw.addr))
        .header("origin", "https://shop.example")
        .body(Full::default())
        .unwrap();
    let (_, headers, _) = send(req).await;
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert_eq!(headers["vary"], "Origin");
}

#[tokio::test]
async fn deprecated_routes_say_so() {
    let gw = route("deprecated = { since = \"2026-06-01T00:00:00Z\", sunset = \"2027-01-01T00:00:00Z\", link = \"https://docs.example/migrate\" }\n").await;
    let (_, headers, _) = send(get(gw.addr, "/x")).await;
    assert_eq!(headers["deprecation"], "@1780272000");
    assert_eq!(headers["sunset"], "Fri, 01 Jan 2027 00:00:00 GMT");
    assert_eq!(headers["link"], "<https://docs.example/migrate>; rel=\"deprecation\"");
}

/// A JWKS endpoint serving one issuer's key.
async fn jwks(issuer: &flotilla::auth::test_util::TestIssuer) -> String {
    let set = serde_json::json!({ "keys": [issuer.jwk()] });
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(set) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

#[tokio::test]
async fn auth_verifies_bearer_tokens_and_passes_the_identity_upstream() {
    let issuer = flotilla::auth::test_util::TestIssuer::new("k1");
    let url = jwks(&issuer).await;
    let gw = route(&format!(
        "auth = {{ jwks = \"{url}\", issuer = \"https://id.test\", audiences = [\"shop\"], roles = [\"customer\", \"admin\"] }}\n\
         rate_limit = {{ requests = 100, per = \"1s\", key = \"subject\" }}\n"
    ))
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let claims = |roles: &[&str]| serde_json::json!({"sub": "user-7", "iss": "https://id.test", "aud": "shop", "exp": exp, "scope": "orders:read", "roles": roles});
    let with = |token: Option<String>, extra: Option<(&str, &str)>| {
        let mut req = Request::get(format!("http://{}/x", gw.addr));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.body(Full::default()).unwrap()
    };

    let (status, headers, problem) = send(with(None, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"flotilla\"");
    assert_eq!(problem["type"], "urn:flotilla:problem:unauthorized");

    let (status, headers, _) = send(with(Some("not.a.token".into()), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    let (status, _, echo) = send(with(
        Some(issuer.token(claims(&["customer"]))),
        Some(("x-auth-subject", "admin")),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        echo["headers"]["x-auth-subject"], "user-7",
        "the verified subject, not the client's claim"
    );
    assert_eq!(echo["headers"]["x-auth-roles"], "customer");
    assert_eq!(echo["headers"]["x-auth-scopes"], "orders:read");

    let (status, headers, _) = send(with(Some(issuer.token(claims(&["guest"]))), None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
}

#[tokio::test]
async fn identity_headers_from_clients_are_stripped_on_every_route() {
    let gw = route("").await;
    let req = Request::get(format!("http://{}/x", gw.addr))
        .header("x-auth-subject", "admin")
        .header("x-auth-roles", "admin")
        .body(Full::default())
        .unwrap();
    let (_, _, echo) = send(req).await;
    assert!(echo["headers"].get("x-auth-subject").is_none());
    assert!(echo["headers"].get("x-auth-roles").is_none());
}

#[tokio::test]
async fn api_keys_by_digest_name_the_client_upstream() {
    let digest = flotilla_gateway::policy::digest_text("partner-secret");
    let gw = route(&format!("api_keys = {{ keys = {{ \"partner-a\" = \"{digest}\" }} }}\n")).await;
    let with_key = |key: Option<&str>| {
        let mut req = Request::get(format!("http://{}/x", gw.addr));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.body(Full::default()).unwrap()
    };
    assert_eq!(send(with_key(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(with_key(Some("guess"))).await.0, StatusCode::UNAUTHORIZED);
    let (status, _, echo) = send(with_key(Some("partner-secret"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["headers"]["x-auth-subject"], "partner-a");
    assert!(
        echo["headers"].get("x-api-key").is_some(),
        "the key itself is the upstream's business too"
    );
}
