//! What the gateway's integration tests share: an echo upstream and a gateway on loopback.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use flotilla::config::TomlFile;
use flotilla::discovery::Discovery;
use flotilla_gateway::routes::{RouteTable, Upstreams};
use flotilla_gateway::{Gateway, GatewayConfig};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An upstream that answers with what it received: method, path, headers and body length.
pub async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await?.to_bytes();
                    let headers: serde_json::Map<String, serde_json::Value> = parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let answer = serde_json::json!({
                        "upstream": addr.to_string(),
                        "method": parts.method.as_str(),
                        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
                        "headers": headers,
                        "body_len": body.len(),
                        "body_sum": body.iter().map(|b| *b as u64).sum::<u64>(),
                    });
                    Ok::<_, hyper::Error>(
                        hyper::Response::builder()
                            .header("connection", "keep-alive, x-upstream-secret")
                            .header("x-upstream-secret", "hop")
                            .body(Full::new(Bytes::from(answer.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub struct Running {
    pub addr: SocketAddr,
    /// The admin listener (`/-/routes`, `/-/metrics`).
    pub admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn gateway(routes: &str, discovery: Option<Discovery>) -> Running {
    let specs = RouteTable::parse(&TomlFile::from_text("routes.toml", routes)).unwrap();
    let upstreams = Upstreams::new(discovery.clone(), None);
    let table = RouteTable::build(specs, &upstreams).unwrap();
    let gateway = Gateway::new(table, discovery, GatewayConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    tokio::spawn(flotilla_gateway::serve_admin(
        admin_listener,
        Arc::clone(&gateway),
        std::future::pending(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(flotilla_gateway::serve(listener, Arc::clone(&gateway), async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin,
        _stop: stop,
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = client().request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

pub fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}
