//! Each layer against a scripted upstream (tower-test's mock): the test plays the upstream,
//! answering or failing each request as it arrives.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

use super::*;

type Req = Request<Full<Bytes>>;
type Res = Response<&'static str>;

/// A scripted upstream speaking `CallError`: errors sent through the handle come back as the
/// `CallError` they were.
fn upstream() -> (
    impl Service<Req, Response = Res, Error = CallError, Future: Send> + Clone + Send + 'static,
    mock::Handle<Req, Res>,
) {
    let (service, handle) = mock::pair::<Req, Res>();
    let service = service.map_err(|err: BoxError| match err.downcast::<CallError>() {
        Ok(call) => *call,
        Err(other) => CallError::Transport {
            endpoint: "mock".into(),
            cause: other,
        },
    });
    (service, handle)
}

fn request(method: Method) -> Req {
    Request::builder()
        .method(method)
        .uri("http://catalog/x")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

fn connect_error() -> CallError {
    CallError::Connect {
        endpoint: "10.0.0.1:80".into(),
        cause: "connection refused".into(),
    }
}

fn reset_error() -> CallError {
    CallError::Transport {
        endpoint: "10.0.0.1:80".into(),
        cause: "connection reset".into(),
    }
}

fn generous_budget() -> Arc<RetryBudget> {
    Arc::new(RetryBudget::new(BudgetConfig::default()))
}

fn ok() -> Res {
    Response::new("ok")
}

#[tokio::test]
async fn retry_moves_a_failed_connect_to_another_attempt_even_for_post() {
    let (svc, mut handle) = upstream();
    let mut svc = RetryLayer::new(RetryPolicy::default(), generous_budget()).layer(svc);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::POST)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(connect_error());
    let (second, send) = handle.next_request().await.unwrap();
    assert_eq!(second.method(), Method::POST);
    let body = http_body_util::BodyExt::collect(second.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "{}", "the body is replayed");
    send.send_response(ok());
    assert_eq!(call.await.unwrap().unwrap().body(), &"ok");
}

#[tokio::test]
async fn retry_never_repeats_a_post_that_may_have_arrived() {
    let (svc, mut handle) = upstream();
    let mut svc = RetryLayer::new(RetryPolicy::default(), generous_budget()).layer(svc);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::POST)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(reset_error());
    assert!(matches!(call.await.unwrap(), Err(CallError::Transport { .. })));
    assert!(
        tokio::time::timeout(Duration::from_millis(20), handle.next_request())
            .await
            .is_err(),
        "one attempt only"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_gives_up_after_max_attempts_and_returns_the_last_answer() {
    let (svc, mut handle) = upstream();
    let mut svc = RetryLayer::new(RetryPolicy::default(), generous_budget()).layer(svc);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
    for _ in 0..3 {
        let (_, send) = handle.next_request().await.unwrap();
        let mut unavailable = Response::new("busy");
        *unavailable.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        send.send_response(unavailable);
    }
    let response = call.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(tokio::time::timeout(Duration::from_secs(1), handle.next_request())
        .await
        .is_err());
}

#[tokio::test]
async fn an_exhausted_budget_stops_retries() {
    let spent = Arc::new(RetryBudget::new(BudgetConfig {
        ratio: 0.0,
        min_per_second: 0,
        window: Duration::from_secs(10),
    }));
    let (svc, mut handle) = upstream();
    let mut svc = RetryLayer::new(RetryPolicy::default(), spent).layer(svc);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(connect_error());
    assert!(matches!(call.await.unwrap(), Err(CallError::Connect { .. })));
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_and_closes_after_good_probes() {
    let breaker = Arc::new(CircuitBreaker::new(
        "catalog",
        BreakerConfig {
            window: SlidingWindow::Count(4),
            minimum_calls: 4,
            half_open_calls: 1,
            ..BreakerConfig::default()
        },
    ));
    let (svc, mut handle) = upstream();
    let mut svc = BreakerLayer::new(breaker.clone(), "catalog").layer(svc);
    for _ in 0..4 {
        let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
        let (_, send) = handle.next_request().await.unwrap();
        let mut failed = Response::new("boom");
        *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        send.send_response(failed);
        call.await.unwrap().unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let refused = svc.ready().await.unwrap().call(request(Method::GET)).await;
    assert!(
        matches!(refused, Err(CallError::CircuitOpen { .. })),
        "fails fast, the upstream sees nothing"
    );

    tokio::time::advance(Duration::from_secs(5)).await;
    let probe = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(ok());
    probe.await.unwrap().unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn deadline_limits_the_call_and_travels_in_the_header() {
    let (svc, mut handle) = upstream();
    let mut svc = DeadlineLayer::new(Duration::from_millis(800), "catalog").layer(svc);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
    let (sent, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(sent.headers()[&DEADLINE_HEADER], "800");
    let result = call.await.unwrap();
    assert!(matches!(result, Err(CallError::DeadlineExceeded { .. })), "{result:?}");

    // Inside a request whose own deadline is nearer, the call inherits it.
    let inherited = Deadline::after(Duration::from_millis(300))
        .scope(async {
            let call = svc.ready().await.unwrap().call(request(Method::GET));
            let (sent, send) = handle.next_request().await.unwrap();
            send.send_response(ok());
            call.await.unwrap();
            sent.headers()[&DEADLINE_HEADER].to_str().unwrap().to_owned()
        })
        .await;
    assert_eq!(inherited, "300");
}

#[tokio::test]
async fn a_passed_deadline_fails_before_sending() {
    let (svc, mut handle) = upstream();
    let mut svc = DeadlineLayer::new(Duration::from_secs(5), "catalog").layer(svc);
    handle.allow(1);
    let result = Deadline(tokio::time::Instant::now())
        .scope(async { svc.ready().await.unwrap().call(request(Method::GET)).await })
        .await;
    assert!(matches!(result, Err(CallError::DeadlineExceeded { .. })));
    assert!(tokio::time::timeout(Duration::from_millis(20), handle.next_request())
        .await
        .is_err());
}

#[tokio::test]
async fn bulkhead_refuses_beyond_its_limit() {
    let (svc, mut handle) = upstream();
    let bulkhead = Bulkhead::new(1);
    let mut svc = BulkheadLayer::new(bulkhead.clone(), "catalog").layer(svc);
    let first = tokio::spawn(svc.ready().await.unwrap().call(request(Method::GET)));
    let (_, send) = handle.next_request().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    let second = svc.ready().await.unwrap().call(request(Method::GET)).await;
    assert!(matches!(second, Err(CallError::BulkheadFull { limit: 1, .. })));
    send.send_response(ok());
    first.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_flight(), 0, "the slot is given back");
}
