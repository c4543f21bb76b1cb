//! The connection pool against scripted upstreams on loopback: every byte they send is the
//! test's, so reuse, framing and the failures between requests are seen as they happen.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

/// What the scripted upstream does with each connection's requests.
#[derive(Clone, Copy)]
enum Script {
    /// Answers each request with `Content-Length`, keeping the connection.
    KeepAlive,
    /// Answers one request chunked, then one close-delimited and closes.
    ChunkedThenClose,
    /// Answers one request and closes without saying so.
    OneAndGone,
}

/// An upstream following `script`, counting its connections and sending each request it
/// read (head and body as they arrived) to the returned receiver.
async fn upstream(script: Script) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (seen, requests) = mpsc::unbounded_channel();
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(io, script, seen.clone()));
        }
    });
    (addr, accepted, requests)
}

async fn serve(mut io: TcpStream, script: Script, seen: mpsc::UnboundedSender<Vec<u8>>) {
    let mut answered = 0;
    loop {
        let Some(request) = read_request(&mut io).await else {
            return;
        };
        let _ = seen.send(request);
        answered += 1;
        let answer: &[u8] = match (script, answered) {
            (Script::KeepAlive | Script::OneAndGone, _) => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            (Script::ChunkedThenClose, 1) => {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n"
            }
            (Script::ChunkedThenClose, _) => b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
        };
        if io.write_all(answer).await.is_err() {
            return;
        }
        if matches!(script, Script::OneAndGone) || (matches!(script, Script::ChunkedThenClose) && answered == 2) {
            return;
        }
    }
}

/// One request off the socket: its head, and a body by `Content-Length` or up to the
/// chunked body's last chunk.
async fn read_request(io: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; length];
        io.read_exact(&mut body).await.ok()?;
        got.extend_from_slice(&body);
    } else if head.contains("transfer-encoding: chunked") {
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            if io.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            got.push(byte[0]);
        }
    }
    Some(got)
}

fn get(addr: SocketAddr, path: &str) -> Request<RequestBody> {
    Request::get(format!("http://{addr}{path}"))
        .body(RequestBody::empty())
        .unwrap()
}

async fn text(response: Response<Body>) -> Result<String, H1Error> {
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn pool() -> Arc<Connections> {
    Connections::new(Duration::from_secs(1), 8)
}

#[tokio::test]
async fn reuses_one_connection_for_answers_read_whole() {
    let (addr, accepted, mut requests) = upstream(Script::KeepAlive).await;
    let pool = pool();
    for _ in 0..3 {
        let response = pool.clone().send(get(addr, "/a?b=c")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(text(response).await.unwrap(), "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection served the three");
    assert_eq!(pool.idle_count(), 1);
    let first = String::from_utf8(requests.recv().await.unwrap()).unwrap();
    assert_eq!(first, format!("GET /a?b=c HTTP/1.1\r\nhost: {addr}\r\n\r\n"));

    // An answer dropped half-read takes its connection with it.
    let response = pool.clone().send(get(addr, "/")).await.unwrap();
    assert_eq!(pool.idle_count(), 0);
    drop(response);
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn reads_chunked_and_close_delimited_answers() {
    let (addr, accepted, _requests) = upstream(Script::ChunkedThenClose).await;
    let pool = pool();
    let response = pool.clone().send(get(addr, "/one")).await.unwrap();
    assert_eq!(text(response).await.unwrap(), "hello");
    assert_eq!(
        pool.idle_count(),
        1,
        "a chunked answer read to its end leaves the connection reusable"
    );
    let response = pool.clone().send(get(addr, "/two")).await.unwrap();
    assert_eq!(http_body::Body::size_hint(response.body()).exact(), None);
    assert_eq!(text(response).await.unwrap(), "until the end");
    assert_eq!(pool.idle_count(), 0, "a close-delimited answer ends its connection");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (addr, accepted, _requests) = upstream(Script::OneAndGone).await;
    let pool = pool();
    for _ in 0..3 {
        let response = pool.clone().send(get(addr, "/")).await.unwrap();
        assert_eq!(text(response).await.unwrap(), "hello");
        // Let the upstream's close arrive.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn streams_a_body_of_unknown_length_chunked_and_names_a_failing_one() {
    let (addr, _accepted, mut requests) = upstream(Script::KeepAlive).await;
    let pool = pool();
    let frames: Vec<Result<http_body::Frame<Bytes>, BodyError>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"defgh"))),
    ];
    let body = RequestBody::stream(StreamBody::new(futures_util::stream::iter(frames)));
    let request = Request::post(format!("http://{addr}/up")).body(body).unwrap();
    let response = pool.clone().send(request).await.unwrap();
    assert_eq!(text(response).await.unwrap(), "hello");
    let sent = String::from_utf8(requests.recv().await.unwrap()).unwrap();
    assert!(sent.starts_with("POST /up HTTP/1.1\r\n"), "{sent}");
    assert!(
        sent.ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n"),
        "{sent}"
    );

    let frames: Vec<Result<http_body::Frame<Bytes>, BodyError>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Err("the client went away".into()),
    ];
    let body = RequestBody::stream(StreamBody::new(futures_util::stream::iter(frames)));
    let request = Request::post(format!("http://{addr}/up")).body(body).unwrap();
    assert!(matches!(pool.clone().send(request).await, Err(H1Error::RequestBody(_))));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = pool().send(get(addr, "/")).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
}
