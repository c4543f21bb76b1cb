//! A tonic service served by the SDK's accept loop beside a JSON route, called through the
//! resilient stack: written by hand as tonic's generated code would be, so the SDK's tests need
//! no code generation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::get;
use tower::Service;

use super::*;
use crate::client::{pool_h2, ClientConfig, Target};

#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(string, tag = "1")]
    greeting: String,
    #[prost(string, tag = "2")]
    grpc_timeout: String,
}

/// `test.Greeter/Greet`: greets, or answers UNAVAILABLE while `down`.
#[derive(Clone)]
struct Greeter {
    name: &'static str,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "test.Greeter";
}

struct Greet(Greeter);

impl tonic::server::UnaryService<Ask> for Greet {
    type Response = Answer;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Answer>, tonic::Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let greeter = self.0.clone();
        Box::pin(async move {
            greeter.calls.fetch_add(1, Ordering::SeqCst);
            if greeter.down.load(Ordering::SeqCst) {
                return Err(tonic::Status::unavailable(format!("{} is down", greeter.name)));
            }
            let grpc_timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let ask = request.into_inner();
            Ok(tonic::Response::new(Answer {
                greeting: format!("hello {} from {}", ask.name, greeter.name),
                grpc_timeout,
            }))
        })
    }
}

impl Service<axum::extract::Request> for Greeter {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let greeter = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Answer, Ask>::default());
            Ok(grpc.unary(Greet(greeter), request).await)
        })
    }
}

/// One instance: the greeter and a JSON route on one listener.
async fn instance(name: &'static str) -> (SocketAddr, Greeter) {
    let greeter = Greeter {
        name,
        down: Arc::new(AtomicBool::new(false)),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let router = crate::grpc::route(
        axum::Router::new().route("/json", get(|| async { "json too" })),
        greeter.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(crate::http::serve(listener, router, None, std::future::pending()));
    (addr, greeter)
}

fn channel(addrs: &[SocketAddr]) -> GrpcChannel {
    let uris: Vec<http::Uri> = addrs.iter().map(|a| format!("http://{a}").parse().unwrap()).collect();
    let config = ClientConfig {
        http2: true,
        ..ClientConfig::default()
    };
    GrpcChannel::new(Stack::new(Target::fixed("greeter", &uris), &config, pool_h2()))
}

async fn greet(channel: GrpcChannel, name: &str) -> Result<Answer, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/test.Greeter/Greet");
    let codec = tonic_prost::ProstCodec::<Ask, Answer>::default();
    let answer = grpc
        .unary(tonic::Request::new(Ask { name: name.to_owned() }), path, codec)
        .await?;
    Ok(answer.into_inner())
}

#[tokio::test]
async fn a_grpc_call_goes_through_the_stack_with_the_deadline_and_json_shares_the_listener() {
    let (addr, greeter) = instance("a").await;
    let answer = crate::resilience::Deadline::after(Duration::from_secs(2))
        .scope(greet(channel(&[addr]), "ana"))
        .await
        .unwrap();
    assert_eq!(answer.greeting, "hello ana from a");
    // The caller's deadline, as gRPC's own header (milliseconds), a little under 2 s.
    let millis: u64 = answer.grpc_timeout.trim_end_matches('m').parse().unwrap();
    assert!((1000..=2000).contains(&millis), "{}", answer.grpc_timeout);
    assert_eq!(greeter.calls.load(Ordering::SeqCst), 1);
    // HTTP/1.1 on the same port.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /json HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("json too"), "{text}");
}

#[tokio::test]
async fn unavailable_is_asked_of_another_instance_only_for_a_method_safe_to_repeat() {
    let (a, down) = instance("a").await;
    let (b, up) = instance("b").await;
    down.down.store(true, Ordering::SeqCst);
    let safe = channel(&[a, b]).retry_safe(["/test.Greeter/Greet"]);
    for _ in 0..6 {
        let answer = greet(safe.clone(), "ana").await.unwrap();
        assert_eq!(answer.greeting, "hello ana from b");
    }
    assert!(up.calls.load(Ordering::SeqCst) >= 6);
    // Not marked: the first answer stands, whichever instance gave it.
    let unsafe_channel = channel(&[a]);
    let err = greet(unsafe_channel, "ana").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn a_failing_service_opens_the_breaker_and_calls_then_fail_fast_as_unavailable() {
    let (a, greeter) = instance("a").await;
    greeter.down.store(true, Ordering::SeqCst);
    let channel = channel(&[a]);
    for _ in 0..12 {
        let err = greet(channel.clone(), "ana").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
    assert_eq!(
        channel.stack().breaker().state(),
        crate::resilience::BreakerState::Open,
        "gRPC UNAVAILABLE answers count as the server's failures"
    );
    let served = greeter.calls.load(Ordering::SeqCst);
    let err = greet(channel.clone(), "ana").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("circuit breaker"), "{err}");
    assert_eq!(greeter.calls.load(Ordering::SeqCst), served, "failed fast, never sent");
    // A caller's own fault says nothing of the server's health.
    assert_eq!(
        status_of(CallError::InvalidRequest("x".into())).code(),
        tonic::Code::Internal
    );
}
