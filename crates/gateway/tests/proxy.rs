//! The gateway against real upstreams on loopback: routing, rewriting, streaming, and the
//! problem+json answers when there is nowhere to send a request.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{client, echo_upstream, gateway, get, send};
use flotilla::discovery::Discovery;
use flotilla_api::InstanceList;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

#[tokio::test]
async fn forwards_with_rewritten_path_and_proxy_headers() {
    let upstream = echo_upstream().await;
    let gw = gateway(
        &format!("[[routes]]\nprefix = \"/legacy\"\nupstreams = [\"http://{upstream}/base\"]\nstrip_prefix = true\n"),
        None,
    )
    .await;
    let req = Request::get(format!("http://{}/legacy/a/b?x=1", gw.addr))
        .header("connection", "keep-alive, x-client-secret")
        .header("x-client-secret", "hop")
        .header("x-request-id", "abc-123")
        .body(Full::default())
        .unwrap();
    let (status, headers, echo) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["path"], "/base/a/b?x=1");
    assert_eq!(
        echo["headers"]["x-request-id"], "abc-123",
        "a client's request id is kept"
    );
    assert_eq!(headers["x-request-id"], "abc-123");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(
        echo["headers"].get("x-client-secret").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert!(headers.get("x-upstream-secret").is_none(), "also on the way back");
}

#[tokio::test]
async fn makes_up_a_request_id_and_streams_large_bodies() {
    let upstream = echo_upstream().await;
    let gw = gateway(
        &format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{upstream}\"]\n"),
        None,
    )
    .await;
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|b| *b as u64).sum();
    let req = Request::post(format!("http://{}/upload", gw.addr))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, headers, echo) = send(req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 4 * 1024 * 1024);
    assert_eq!(echo["body_sum"], sum);
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(echo["headers"]["x-request-id"], id);
}

#[tokio::test]
async fn routes_to_registry_instances_in_turn() {
    let (a, b) = (echo_upstream().await, echo_upstream().await);
    let instances: Vec<serde_json::Value> = [a, b]
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            serde_json::json!({
                "service": "catalog", "instance_id": format!("catalog-{i}"), "address": addr.to_string(),
                "version": "1", "metadata": {}, "health": "passing", "uptime_ms": 1, "last_heartbeat_ms": 1
            })
        })
        .collect();
    let list: InstanceList = serde_json::from_value(serde_json::json!({ "index": 5, "instances": instances })).unwrap();
    let gw = gateway(
        "[[routes]]\nprefix = \"/api/v1/products\"\nservice = \"catalog\"\nbalance = \"round_robin\"\n",
        Some(Discovery::fixed(list)),
    )
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let (status, _, echo) = send(get(gw.addr, "/api/v1/products/1")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo["path"], "/api/v1/products/1");
        *seen.entry(echo["upstream"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both instances served: {seen:?}");
    assert!(seen.values().all(|n| *n == 2), "in turn: {seen:?}");
    let (status, _, routes) = send(get(gw.admin, "/-/routes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(routes["routes"][0]["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(routes["routes"][0]["endpoints"][0]["ejected"], false);
    assert_eq!(routes["routes"][0]["breaker"], "closed");
}

#[tokio::test]
async fn answers_problems_when_there_is_nowhere_to_go() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let empty = Discovery::fixed(InstanceList {
        index: 1,
        ..Default::default()
    });
    let gw = gateway(
        &format!("[[routes]]\nprefix = \"/down\"\nupstreams = [\"http://{closed}\"]\n\n[[routes]]\nprefix = \"/svc\"\nservice = \"nobody\"\n"),
        Some(empty),
    )
    .await;

    let (status, headers, problem) = send(get(gw.addr, "/nothing-here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["type"], "urn:flotilla:problem:not-found");
    assert!(headers.contains_key("x-request-id"));

    let (status, headers, problem) = send(get(gw.addr, "/down/x")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(problem["type"], "urn:flotilla:problem:upstream-unavailable");

    let (status, _, problem) = send(get(gw.addr, "/svc")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem["type"], "urn:flotilla:problem:no-instance");
    assert!(problem["detail"].as_str().unwrap().contains("nobody"));

    let (status, _, ready) = send(get(gw.addr, "/-/ready")).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_status_and_failure() {
    let upstream = echo_upstream().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let closed_too = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gw = gateway(
        &format!("[[routes]]\nname = \"up\"\nprefix = \"/up\"\nupstreams = [\"http://{upstream}\"]\n\n[[routes]]\nname = \"down\"\nprefix = \"/down\"\nupstreams = [\"http://{closed}\", \"http://{closed_too}\"]\n"),
        None,
    )
    .await;
    for _ in 0..3 {
        send(get(gw.addr, "/up/x")).await;
    }
    send(get(gw.addr, "/down")).await;
    send(get(gw.addr, "/nowhere")).await;
    let response = client().request(get(gw.admin, "/-/metrics")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4");
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("flotilla_gateway_requests_total{route=\"up\",status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_gateway_requests_total{route=\"down\",status=\"502\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_gateway_upstream_errors_total{route=\"down\",kind=\"connect\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_gateway_requests_total{route=\"\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_gateway_request_duration_seconds_count{route=\"up\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_gateway_ejections_total{route=\"down\"} 1"),
        "one of two, never both: {text}"
    );
    assert!(
        text.contains("flotilla_gateway_retries_total{route=\"down\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn canary_split_by_registered_version_and_a_pinning_header() {
    let (stable, canary) = (echo_upstream().await, echo_upstream().await);
    let instances: Vec<serde_json::Value> = [(stable, "1.0"), (canary, "2.0")]
        .iter()
        .map(|(addr, version)| {
            serde_json::json!({
                "service": "orders", "instance_id": format!("orders-{version}"), "address": addr.to_string(),
                "version": version, "metadata": {}, "health": "passing", "uptime_ms": 1, "last_heartbeat_ms": 1
            })
        })
        .collect();
    let list: InstanceList = serde_json::from_value(serde_json::json!({ "index": 3, "instances": instances })).unwrap();
    let gw = gateway(
        "[[routes]]\nprefix = \"/api/v1/orders\"\nservice = \"orders\"\nversions = { \"1.0\" = 90, \"2.0\" = 10 }\nversion_header = \"x-version\"\n",
        Some(Discovery::fixed(list)),
    )
    .await;
    let mut to_canary = 0;
    for _ in 0..400 {
        let (_, _, echo) = send(get(gw.addr, "/api/v1/orders")).await;
        if echo["upstream"] == canary.to_string() {
            to_canary += 1;
        }
    }
    assert!(
        (16..=72).contains(&to_canary),
        "about 10% to the canary: {to_canary}/400"
    );
    for _ in 0..20 {
        let pinned = Request::get(format!("http://{}/api/v1/orders", gw.addr))
            .header("x-version", "2.0")
            .body(Full::default())
            .unwrap();
        let (_, _, echo) = send(pinned).await;
        assert_eq!(echo["upstream"], canary.to_string(), "the header pins the version");
    }
    let (_, _, routes) = send(get(gw.admin, "/-/routes")).await;
    assert_eq!(routes["routes"][0]["versions"][1]["version"], "2.0");
    assert_eq!(routes["routes"][0]["versions"][1]["endpoints"], 1);
}

/// An h2c upstream answering like a gRPC server: the request body back, then trailers.
async fn grpc_like_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let seen_version = req.version();
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    trailers.insert("grpc-message", format!("{seen_version:?}").parse().unwrap());
                    let frames = vec![
                        Ok::<_, std::convert::Infallible>(http_body::Frame::data(body)),
                        Ok(http_body::Frame::trailers(trailers)),
                    ];
                    let response = hyper::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
                        .unwrap();
                    Ok::<_, hyper::Error>(response)
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2c_both_ways_with_bodies_of_unknown_length_and_trailers() {
    let upstream = grpc_like_upstream().await;
    let gw = gateway(
        &format!(
            "[[routes]]\nprefix = \"/pkg.Service\"\nupstreams = [\"http://{upstream}\"]\nupstream_protocol = \"h2c\"\n"
        ),
        None,
    )
    .await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // A streamed body: HTTP/2 gives it no Content-Length.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![Ok(http_body::Frame::data(
        Bytes::from_static(b"\x00\x00\x00\x00\x05hello"),
    ))];
    let request = Request::post(format!("http://{}/pkg.Service/Method", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers["grpc-message"], "HTTP/2.0",
        "the upstream was spoken to in HTTP/2"
    );
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"\x00\x00\x00\x00\x05hello"),
        "the body went through whole"
    );
}
