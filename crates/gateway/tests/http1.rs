//! The gateway's own HTTP/1 connections on the wire: keep-alive and pipelining, bodies of
//! every framing reaching the upstream whole, `Expect: 100-continue`, HTTP/1.0, and a
//! connection that ends when an answer comes before its body was read.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The answers in `wire`, each as (head, body), framed by Content-Length or chunked.
fn answers(wire: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        rest = &rest[end + 4..];
        if head.starts_with("http/1.1 100") {
            continue;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|n| n.trim().parse::<usize>().unwrap());
        let body = if let Some(n) = length {
            let body = rest[..n].to_vec();
            rest = &rest[n..];
            body
        } else if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
                rest = &rest[line_end + 2..];
                body.extend_from_slice(&rest[..size]);
                rest = &rest[size + 2..];
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            let body = rest.to_vec();
            rest = &[];
            body
        };
        out.push((head, body));
    }
    out
}

/// Writes `request`, reads until the gateway closes the connection (at most 5 s).
async fn exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut wire = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut wire))
        .await
        .is_ok();
    (wire, closed)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

async fn echo_gateway(extra: &str) -> common::Running {
    let upstream = common::echo_upstream().await;
    common::gateway(
        &format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{upstream}\"]\n{extra}"),
        None,
    )
    .await
}

#[tokio::test]
async fn pipelined_requests_of_every_framing_share_one_connection() {
    let gw = echo_gateway("").await;
    let request = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n\
        GET /d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (wire, closed) = exchange(gw.addr, request).await;
    assert!(closed, "the connection ends after the request that asked");
    let answers = answers(&wire);
    assert_eq!(answers.len(), 4, "{}", String::from_utf8_lossy(&wire));
    let seen: Vec<_> = answers.iter().map(|(_, body)| json(body)).collect();
    let paths: Vec<_> = seen.iter().map(|s| s["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(paths, ["/a", "/b", "/c", "/d"]);
    let lengths: Vec<_> = seen.iter().map(|s| s["body_len"].as_u64().unwrap()).collect();
    assert_eq!(lengths, [0, 5, 5, 0]);
    // The chunked body went upstream whole, re-framed; no framing header of the client's
    // travelled with it.
    assert_eq!(seen[2]["body_sum"], b"abcde".iter().map(|&b| u64::from(b)).sum::<u64>());
    assert!(answers[..3].iter().all(|(head, _)| !head.contains("connection: close")));
    assert!(answers[3].0.contains("connection: close"), "{}", answers[3].0);
    assert!(answers.iter().all(|(head, _)| head.contains("\r\ndate: ")));
}

#[tokio::test]
async fn a_large_body_streams_after_100_continue() {
    let gw = echo_gateway("").await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let size = 300_000;
    stream
        .write_all(
            format!("PUT /big HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut go = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut go))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&go, b"HTTP/1.1 100 Continue\r\n\r\n");
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    stream.write_all(&body).await.unwrap();
    stream
        .write_all(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut wire))
        .await
        .unwrap()
        .unwrap();
    let answers = answers(&wire);
    assert_eq!(answers.len(), 2, "{}", String::from_utf8_lossy(&wire));
    let big = json(&answers[0].1);
    assert_eq!(big["body_len"], size);
    assert_eq!(big["body_sum"], body.iter().map(|&b| u64::from(b)).sum::<u64>());
    assert_eq!(
        big["headers"]["content-length"],
        size.to_string(),
        "the length travels on"
    );
    assert_eq!(json(&answers[1].1)["path"], "/after", "the connection was kept");
}

#[tokio::test]
async fn an_http_10_client_gets_its_answer_and_the_close() {
    let gw = echo_gateway("").await;
    let (wire, closed) = exchange(gw.addr, b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n").await;
    assert!(closed);
    let answers = answers(&wire);
    assert_eq!(answers.len(), 1);
    assert!(answers[0].0.contains("connection: close"), "{}", answers[0].0);
    assert_eq!(json(&answers[0].1)["path"], "/old");
}

#[tokio::test]
async fn an_answer_before_the_body_was_read_ends_the_connection() {
    let gw = echo_gateway("max_body = \"100KiB\"\n").await;
    // Over the route's limit: refused on its length, before any of the body is read; the
    // request after it would be read from the body's bytes if the connection went on.
    let mut request = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n".to_vec();
    request.extend_from_slice(&b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n".repeat(10));
    let (wire, closed) = exchange(gw.addr, &request).await;
    assert!(closed);
    let answers = answers(&wire);
    assert_eq!(answers.len(), 1, "{}", String::from_utf8_lossy(&wire));
    assert!(answers[0].0.starts_with("http/1.1 413"), "{}", answers[0].0);
    assert!(answers[0].0.contains("connection: close"), "{}", answers[0].0);
}

#[tokio::test]
async fn a_broken_chunked_body_never_reaches_the_upstream_whole_and_is_the_clients_fault() {
    let gw = echo_gateway("").await;
    // More broken bodies than the breaker's minimum of calls: were they counted against the
    // upstream (as a transport failure once was), its breaker would open on them.
    for _ in 0..20 {
        let (wire, closed) = exchange(
            gw.addr,
            b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX\r\n0\r\n\r\n",
        )
        .await;
        assert!(closed);
        let text = String::from_utf8_lossy(&wire);
        assert!(!text.contains("\"body_len\""), "{text}");
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("bad-request-body"), "{text}");
    }
    let (wire, _) = exchange(gw.addr, b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let text = String::from_utf8_lossy(&wire);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
