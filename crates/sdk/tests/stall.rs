//! A real stall of the calling process (SIGSTOP, then SIGCONT 300 ms later) is seen for what
//! it is: calls that were in flight through it are not held against their upstream by the
//! circuit breaker, while the same failures without a stall open it.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use flotilla::resilience::stall::StallMark;
use flotilla::resilience::{BreakerConfig, BreakerState, CircuitBreaker, SlidingWindow};

/// Stops this very process for about `pause`: a shell continues it.
fn stop_myself(pause: Duration) {
    let pid = std::process::id().to_string();
    let mut waker = Command::new("sh")
        .args(["-c", &format!("sleep {}; kill -CONT {pid}", pause.as_secs_f64())])
        .spawn()
        .unwrap();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // We run again once the shell sent SIGCONT.
    waker.wait().unwrap();
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(
        "stalled-caller",
        BreakerConfig {
            window: SlidingWindow::Count(4),
            minimum_calls: 4,
            ..BreakerConfig::default()
        },
    )
}

// One test: stopping the process would disturb any test running beside it.
#[tokio::test]
async fn failures_of_calls_in_flight_through_a_stall_of_the_caller_are_not_charged_to_the_upstream() {
    let quiet = StallMark::now();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!quiet.excuses(), "no stall: {:?}", quiet.stalled());

    // Four calls in flight, then the caller is stopped; when it runs again they all fail
    // (their timeouts fired while it was stopped).
    let b = breaker();
    let mark = StallMark::now();
    let permits: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    stop_myself(Duration::from_millis(300));
    assert!(
        mark.stalled() >= Duration::from_millis(200),
        "the stop was seen: {:?}",
        mark.stalled()
    );
    for permit in permits {
        b.record(permit, true);
    }
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the caller's own stop is not the upstream's failure"
    );

    // The same failures with no stall open it.
    for _ in 0..4 {
        let permit = b.try_acquire().unwrap();
        b.record(permit, true);
    }
    assert_eq!(b.state(), BreakerState::Open);
}
