//! TLS termination: HTTP/1.1 and HTTP/2 by ALPN, `X-Forwarded-Proto: https`, and a
//! certificate reloaded from its files while the gateway runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla::config::TomlFile;
use flotilla_gateway::routes::{RouteTable, Upstreams};
use flotilla_gateway::tls::{Tls, TlsFiles};
use flotilla_gateway::{Gateway, GatewayConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

/// A self-signed certificate for `localhost`, written as PEM files; returns its DER.
fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    cert.cert.der().to_vec()
}

/// A TLS handshake with `addr` trusting only `trusted`, offering `alpn`.
async fn handshake(
    addr: SocketAddr,
    trusted: &[u8],
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn connect(
    addr: SocketAddr,
    trusted: &[u8],
    alpn: &[u8],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Vec<u8>) {
    let stream = handshake(addr, trusted, alpn).await.unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (stream, presented)
}

#[tokio::test]
async fn terminates_tls_for_http1_and_h2_and_reloads_the_certificate() {
    let upstream = common::echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let tls = Tls::load(&files).unwrap();
    tokio::spawn(
        tls.clone()
            .watch(files.clone(), Duration::from_millis(50), std::future::pending()),
    );
    let specs = RouteTable::parse(&TomlFile::from_text(
        "r.toml",
        format!("[[routes]]\nprefix = \"/\"\nupstreams = [\"http://{upstream}\"]\n"),
    ))
    .unwrap();
    let upstreams = Upstreams::new(None, None);
    let config = GatewayConfig {
        tls: Some(tls),
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(RouteTable::build(specs, &upstreams).unwrap(), None, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(flotilla_gateway::serve(listener, gateway, std::future::pending()));

    // HTTP/1.1 over TLS.
    let (stream, presented) = connect(addr, &first, b"http/1.1").await;
    assert_eq!(presented, first);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/x")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000");
    let echo: serde_json::Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // HTTP/2 over TLS, chosen by ALPN.
    let (stream, _) = connect(addr, &first, b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("https://localhost/y")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);

    // A new certificate on disk: new handshakes get it, with no restart.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = write_cert(dir.path());
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if handshake(addr, &second, b"http/1.1").await.is_ok() {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new certificate was never presented");
    // The old files' certificate is no longer presented.
    assert!(handshake(addr, &first, b"http/1.1").await.is_err());
}

#[test]
fn bad_pem_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let err = Tls::load(&TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    })
    .unwrap_err();
    assert!(err.to_string().contains("cert.pem"), "{err}");
}
