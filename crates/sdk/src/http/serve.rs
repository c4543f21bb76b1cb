//! The accept loop every Flotilla server runs: HTTP/1.1 and HTTP/2 on each connection, TLS
//! when given a configuration (the workload's mTLS), the caller's [`Peer`] in every
//! request's extensions, and a graceful close that lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt;

use crate::mtls::Peer;

/// A TLS handshake that takes longer than this is given up (a stalled or hostile caller).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for the connections open to finish their requests (the caller bounds the wait). With
/// `tls`, every connection is TLS and a caller the configuration refuses never reaches HTTP.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before it was taken: go on.
                    tracing::debug!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, watcher, acceptor) =
            (router.clone(), builder.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            let serve = |io, peer: Peer| {
                let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    request.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let connection = builder.serve_connection_with_upgrades(io, service).into_owned();
                watcher.watch(connection)
            };
            let result = match acceptor {
                None => serve(TokioIo::new(Box::new(stream) as Box<dyn Io>), Peer::default()).await,
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%remote, error = %err, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let service = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(crate::mtls::service_of)
                        .map(Arc::<str>::from);
                    serve(
                        TokioIo::new(Box::new(stream) as Box<dyn Io>),
                        Peer { tls: true, service },
                    )
                    .await
                }
            };
            if let Err(err) = result {
                tracing::trace!(%remote, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}
