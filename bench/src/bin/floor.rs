//! The least an HTTP/1.1 reverse proxy can do, as a yardstick for `bench/gateway`: parse a
//! request head, forward it over a pooled keep-alive connection with `X-Forwarded-For` and
//! `X-Request-Id` added, read the response (Content-Length bodies only) and copy it back. No
//! routing, no policies, no checks, no streaming, no timeouts — not a proxy anyone should run,
//! only a measure of what the kernel and the runtime cost before any proxy logic. One thread.
//!
//! Usage: floor LISTEN UPSTREAM
use std::cell::RefCell;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

thread_local! {
    /// Idle keep-alive connections to the upstream.
    static POOL: RefCell<Vec<TcpStream>> = const { RefCell::new(Vec::new()) };
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(Ok(listen)), Some(Ok(upstream))) = (
        args.next().map(|a| a.parse::<SocketAddr>()),
        args.next().map(|a| a.parse::<SocketAddr>()),
    ) else {
        eprintln!("usage: floor LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("floor: no runtime");
        std::process::exit(1);
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("floor: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::task::spawn_local(async move {
                let _ = connection(stream, peer, upstream).await;
            });
        }
    });
}

fn invalid(what: &str) -> Error {
    Error::new(ErrorKind::InvalidData, what.to_owned())
}

fn skip_hop_by_hop(name: &str) -> bool {
    name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive")
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

async fn connection(mut client: TcpStream, peer: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let peer_ip = peer.ip().to_string();
    let mut request = Vec::with_capacity(4096);
    let mut response = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut id: u64 = 0;
    loop {
        let mut close = false;
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&request).map_err(|_| invalid("request head"))? {
                httparse::Status::Complete(n) => {
                    out.clear();
                    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    for h in req.headers.iter() {
                        if skip_hop_by_hop(h.name) {
                            close |=
                                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close");
                        } else {
                            push_header(&mut out, h.name, h.value);
                        }
                    }
                    id += 1;
                    push_header(&mut out, "x-forwarded-for", peer_ip.as_bytes());
                    push_header(&mut out, "x-request-id", format!("{id:016x}").as_bytes());
                    out.extend_from_slice(b"\r\n");
                    break n;
                }
                httparse::Status::Partial => {
                    request.reserve(1024);
                    if client.read_buf(&mut request).await? == 0 {
                        return Ok(());
                    }
                }
            }
        };
        request.drain(..head_len);
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        let mut up = match pooled {
            Some(up) => up,
            None => {
                let up = TcpStream::connect(upstream).await?;
                up.set_nodelay(true)?;
                up
            }
        };
        up.write_all(&out).await?;
        response.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&response).map_err(|_| invalid("response head"))? {
                httparse::Status::Complete(n) => {
                    let mut length = 0usize;
                    out.clear();
                    out.extend_from_slice(b"HTTP/1.1 ");
                    out.extend_from_slice(res.code.unwrap_or(502).to_string().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
                    out.extend_from_slice(b"\r\n");
                    for h in res.headers.iter().filter(|h| !skip_hop_by_hop(h.name)) {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .ok_or_else(|| invalid("content-length"))?;
                        }
                        push_header(&mut out, h.name, h.value);
                    }
                    out.extend_from_slice(b"\r\n");
                    while response.len() < n + length {
                        if up.read_buf(&mut response).await? == 0 {
                            return Err(invalid("upstream closed mid-body"));
                        }
                    }
                    out.extend_from_slice(&response[n..n + length]);
                    break;
                }
                httparse::Status::Partial => {
                    response.reserve(1024);
                    if up.read_buf(&mut response).await? == 0 {
                        return Err(invalid("upstream closed"));
                    }
                }
            }
        }
        POOL.with(|p| p.borrow_mut().push(up));
        client.write_all(&out).await?;
        if close {
            return Ok(());
        }
    }
}
