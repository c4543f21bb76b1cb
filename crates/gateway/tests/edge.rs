//! The gateway's edge on the wire: raw bytes in, what the client and the upstream see out.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use flotilla::config::TomlFile;
use flotilla_gateway::routes::{RouteTable, Upstreams};
use flotilla_gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: records each request head it reads and answers with `answer`.
async fn upstream(answer: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut data = Vec::new();
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    data.extend_from_slice(&buf[..n]);
                    while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&data[..end]).into_owned();
                        // Bodies in these tests are chunked and end with the last chunk.
                        let rest = data.split_off(end + 4);
                        data = match rest.windows(5).position(|w| w == b"0\r\n\r\n") {
                            Some(i) if head.to_ascii_lowercase().contains("transfer-encoding") => {
                                rest[i + 5..].to_vec()
                            }
                            _ => rest,
                        };
                        log.lock().unwrap().push(head);
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

async fn gateway(routes: &str) -> SocketAddr {
    gateway_with(routes, GatewayConfig::default()).await
}

async fn gateway_with(routes: &str, config: GatewayConfig) -> SocketAddr {
    let specs = RouteTable::parse(&TomlFile::from_text("routes.toml", routes)).unwrap();
    let upstreams = Upstreams::new(None, None);
    let gateway = Gateway::new(RouteTable::build(specs, &upstreams).unwrap(), None, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(flotilla_gateway::serve(listener, gateway, std::future::pending()));
    addr
}

/// Sends raw bytes, returns the whole answer (the test requests close the connection).
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A head too big may be answered (and the connection closed) before it is all sent.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_normal_path_for_matching_and_forwarding() {
    let (admin, admin_seen) = upstream(OK).await;
    let (public, public_seen) = upstream(OK).await;
    let gw = gateway(&format!(
        "[[routes]]\nprefix = \"/admin\"\nupstreams = [\"http://{admin}\"]\n\n[[routes]]\nprefix = \"/public\"\nupstreams = [\"http://{public}\"]\n"
    ))
    .await;
    for spelling in [
        "/public/../admin/x",
        "//admin/x",
        "/%61dmin/x",
        "/public/%2e%2e/admin/x",
    ] {
        let answer = raw(
            gw,
            &format!("GET {spelling} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&answer), 200, "{spelling}: {answer}");
    }
    let heads = admin_seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 4, "every spelling reached the admin route");
    assert!(
        heads.iter().all(|h| h.starts_with("GET /admin/x HTTP/1.1")),
        "{heads:?}"
    );
    assert!(public_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refuses_bad_paths_and_headers_before_any_upstream_sees_them() {
    let (up, seen) = upstream(OK).await;
    let gw = gateway(&format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{up}\"]\n")).await;
    let cases = [
        ("GET /a%2Fb HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 400),
        ("GET /a%zz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX_User: admin\r\nConnection: close\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n", 400),
    ];
    for (request, expected) in cases {
        let answer = raw(gw, request).await;
        assert_eq!(status(&answer), expected, "{request:?} → {answer}");
        // Also those hyper refuses itself, before the gateway sees them.
        assert!(answer.contains("application/problem+json"), "{request:?} → {answer}");
    }
    // Beyond hyper's own limits, and what it cannot parse at all: problem+json too.
    let too_many: String = (0..401).map(|i| format!("X-H{i}: v\r\n")).collect();
    let too_big = "a".repeat(600 * 1024);
    for (request, expected) in [
        (
            format!("GET / HTTP/1.1\r\nHost: t\r\n{too_many}Connection: close\r\n\r\n"),
            431,
        ),
        (format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {too_big}\r\n\r\n"), 431),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400),
        ("GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n".to_owned(), 400),
    ] {
        let answer = raw(gw, &request).await;
        assert_eq!(
            status(&answer),
            expected,
            "{} → {answer}",
            &request[..40.min(request.len())]
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains("nosniff"), "{answer}");
    }
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(
        gw,
        &format!("GET / HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&answer), 431, "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    let huge = "a".repeat(70 * 1024);
    let answer = raw(
        gw,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&answer), 431);
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream: {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn content_length_with_chunked_cannot_smuggle_a_second_request() {
    let (up, seen) = upstream(OK).await;
    let gw = gateway(&format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{up}\"]\n")).await;
    let smuggle = "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let _ = raw(gw, smuggle).await;
    let heads = seen.lock().unwrap().clone();
    assert!(heads.iter().all(|h| !h.contains("/smuggled")), "{heads:?}");
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("content-length: 4")),
        "{heads:?}"
    );
}

#[tokio::test]
async fn ambiguous_framing_from_upstream_is_a_502() {
    let (up, _) = upstream("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
    let gw = gateway(&format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{up}\"]\n")).await;
    let answer = raw(gw, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(answer.contains("application/problem+json"));
}

/// An upstream that switches to an echo-in-upper-case protocol after a 101.
async fn upgrading_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") || !head.contains("connection: upgrade") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let upper: Vec<u8> = buf[..n].to_ascii_uppercase();
                    if stream.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrades_become_a_two_way_tunnel() {
    let up = upgrading_upstream().await;
    let gw = gateway(&format!(
        "[[routes]]\nprefix = \"/ws\"\nupstreams = [\"http://{up}\"]\n"
    ))
    .await;
    let mut stream = TcpStream::connect(gw).await.unwrap();
    stream
        .write_all(b"GET /ws/chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "the gateway closed before answering"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for message in ["hello", "tunnel works"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, message.to_ascii_uppercase().as_bytes());
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A client cannot name its own address: by default the gateway drops `X-Forwarded-For`,
/// `Forwarded`, `X-Real-IP` and its own client-address header as sent, and writes the peer;
/// behind a trusted proxy it believes the chain up to the first hop it does not trust.
#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let (up, seen) = upstream(OK).await;
    let routes = format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{up}\"]\n");
    let claims = "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=7.7.7.7\r\nX-Real-IP: 8.8.8.8\r\nX-Flotilla-Client-Address: 9.9.9.9\r\nConnection: close\r\n\r\n";

    let _ = raw(gateway(&routes).await, claims).await;
    let head = seen.lock().unwrap().pop().unwrap();
    assert_eq!(header(&head, "x-forwarded-for"), Some("127.0.0.1"), "{head}");
    assert_eq!(header(&head, "x-flotilla-client-address"), Some("127.0.0.1"), "{head}");
    assert_eq!(
        (header(&head, "forwarded"), header(&head, "x-real-ip")),
        (None, None),
        "{head}"
    );

    let config = GatewayConfig {
        trusted_proxies: "127.0.0.0/8".parse().unwrap(),
        ..GatewayConfig::default()
    };
    let _ = raw(gateway_with(&routes, config).await, claims).await;
    let head = seen.lock().unwrap().pop().unwrap();
    assert_eq!(header(&head, "x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"), "{head}");
    assert_eq!(header(&head, "x-flotilla-client-address"), Some("6.6.6.6"), "{head}");
}

/// Every answer says `nosniff`; one to a request with credentials says `no-store`; the route
/// table and the metrics are not on the public listener.
#[tokio::test]
async fn answers_carry_security_headers_and_admin_endpoints_are_not_public() {
    let (up, _) = upstream(OK).await;
    let gw = gateway(&format!(
        "[[routes]]\nprefix = \"/api\"\nupstreams = [\"http://{up}\"]\n"
    ))
    .await;
    let answer = raw(
        gw,
        "GET /api HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"), "{answer}");
    assert_eq!(header(&answer, "cache-control"), Some("no-store"), "{answer}");
    let answer = raw(gw, "GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"), "{answer}");
    assert_eq!(header(&answer, "cache-control"), None, "{answer}");
    for path in ["/-/routes", "/-/metrics"] {
        let answer = raw(
            gw,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&answer), 404, "{path}: {answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    let answer = raw(gw, "GET /-/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(!answer.contains("discovery"), "no detail in public: {answer}");
}
