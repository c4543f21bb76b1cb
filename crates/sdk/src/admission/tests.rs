use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

use super::*;

#[test]
fn a_refusal_is_a_503_problem_with_whole_seconds_to_wait() {
    let refused = Overloaded {
        what: "12 orders are being confirmed".into(),
        retry_after: Duration::from_millis(1_200),
    };
    let response = refused.clone().into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(refused.problem().slug(), OVERLOADED);
    assert!(refused.to_string().contains("12 orders"), "{refused}");
    let soon = Overloaded {
        what: String::new(),
        retry_after: Duration::from_millis(10),
    };
    assert_eq!(soon.into_response().headers()["retry-after"], "1", "never 0");
}

#[test]
fn a_backlog_takes_its_floor_before_anything_finished() {
    let backlog = Backlog::new(3);
    let within = Duration::from_secs(1);
    for _ in 0..3 {
        backlog.admit(within, |n| format!("{n} open")).unwrap();
    }
    let refused = backlog.admit(within, |n| format!("{n} open")).unwrap_err();
    assert_eq!(refused.what, "3 open");
    assert_eq!(refused.retry_after, Duration::from_secs(1), "no rate yet: a second");
    // One left: one more is taken.
    backlog.left(1);
    backlog.admit(within, |n| format!("{n} open")).unwrap();
    assert_eq!(backlog.open(), 3);
}

#[test]
fn a_backlog_takes_what_finishes_within_the_target_by_littles_law() {
    let backlog = Backlog::new(1);
    // The fleet finishes 100 a second; 40 are open: 0.4 s of work.
    backlog.observe(40, Some(100.0));
    let half_second = Duration::from_millis(500);
    for _ in 0..10 {
        backlog.admit(half_second, |n| format!("{n}")).unwrap();
    }
    // 50 open = half a second of work: the next waits.
    let refused = backlog.admit(half_second, |n| format!("{n}")).unwrap_err();
    assert_eq!(refused.what, "50");
    assert_eq!(refused.retry_after, Duration::from_millis(10), "one over, at 100/s");
    // A longer target takes more.
    backlog.admit(Duration::from_secs(1), |n| format!("{n}")).unwrap();
    // The store's next count replaces what was taken and left meanwhile.
    backlog.observe(5, Some(100.0));
    assert_eq!(backlog.open(), 5);
}

#[test]
fn a_backlog_counts_its_own_finished_units_as_a_rate() {
    let backlog = Backlog::new(1);
    backlog.left(30);
    // Young: divided by a second at least.
    let rate = backlog.rate();
    assert!((29.0..=30.0).contains(&rate), "{rate}");
    // Its own rate stands in for the fleet's it was not told.
    backlog.observe(0, None);
    for _ in 0..15 {
        backlog.admit(Duration::from_millis(500), |n| format!("{n}")).unwrap();
    }
    assert!(backlog.admit(Duration::from_millis(500), |n| format!("{n}")).is_err());
}

#[test]
fn a_backlog_counts_its_rate_per_second_of_work_not_of_the_clock() {
    let backlog = Backlog::new(1000);
    backlog.observe(0, None);
    // Four waves of 30, each done in 0.1 s, with 0.6 s of nothing between them: the workers
    // finish 300 a second while they work, 43 a second by the clock.
    for _ in 0..4 {
        for _ in 0..30 {
            backlog.admit(Duration::from_secs(60), |n| format!("{n}")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        backlog.left(30);
        std::thread::sleep(Duration::from_millis(600));
    }
    let rate = backlog.rate();
    assert!(rate >= 55.0, "{rate} a second: counted over the busy time");
}

#[test]
fn a_backlog_remembers_the_rate_it_managed_after_a_quiet_spell() {
    let backlog = Backlog::new(1);
    backlog.observe(0, Some(100.0));
    backlog.admit(Duration::from_secs(1), |n| format!("{n}")).unwrap();
    // Quiet: nobody finishes anything; the fleet's rate reads 0.
    backlog.observe(50, Some(0.0));
    for _ in 0..40 {
        backlog.admit(Duration::from_secs(1), |n| format!("{n}")).unwrap();
    }
    // The peak of 100/s fades slowly: 90 open still finish within a second.
    assert_eq!(backlog.open(), 90);
}

#[tokio::test]
async fn a_limit_refuses_what_waited_its_queue_age() {
    let limit = ConcurrencyLimit::new(LimitConfig {
        initial: 2,
        min: 1,
        max: 10,
        max_queue_age: Duration::from_millis(30),
        tolerance: 1.5,
    });
    let first = limit.acquire().await.unwrap();
    let _second = limit.acquire().await.unwrap();
    assert_eq!(limit.in_flight(), 2);
    let refused = limit.acquire().await.unwrap_err();
    assert!(refused.what.contains("2 requests are running"), "{}", refused.what);
    // One waiting in line gets the place the first gives back.
    let waiting = {
        let limit = limit.clone();
        tokio::spawn(async move { limit.acquire().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(first);
    waiting.await.unwrap().expect("a place came free within its queue age");
}

#[tokio::test]
async fn a_limit_shrinks_when_latency_climbs_and_grows_while_it_stays_level() {
    let config = LimitConfig {
        initial: 20,
        min: 2,
        max: 100,
        max_queue_age: Duration::from_millis(10),
        tolerance: 1.5,
    };
    let limit = ConcurrencyLimit::new(config.clone());
    {
        let mut g = limit.gradient();
        for _ in 0..100 {
            g.sample(0.010, 20, &config);
        }
    }
    let level = limit.limit();
    assert!(level > 20, "level latency with the limit in use: grows ({level})");
    {
        let mut g = limit.gradient();
        for _ in 0..30 {
            g.sample(0.100, level, &config);
        }
    }
    let slow = limit.limit();
    assert!(slow < level / 2, "ten times slower: shrinks ({level} → {slow})");
    {
        let mut g = limit.gradient();
        for _ in 0..100 {
            g.sample(0.010, 0, &config);
        }
    }
    assert_eq!(limit.limit(), slow, "a limit not in use stays where it is");
}

#[tokio::test]
async fn a_limit_gives_back_fewer_places_after_it_shrank() {
    let config = LimitConfig {
        initial: 4,
        min: 1,
        max: 4,
        max_queue_age: Duration::from_millis(1),
        tolerance: 1.0,
    };
    let limit = ConcurrencyLimit::new(config);
    let permits: Vec<_> = futures_util::future::join_all((0..4).map(|_| limit.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    limit.gradient().limit = 1.0;
    drop(permits);
    // As many places as the limit says, fewer than were handed out: one more is refused.
    let places = limit.limit();
    assert!(places < 4, "{places}");
    let mut held = Vec::new();
    for _ in 0..places {
        held.push(limit.acquire().await.unwrap());
    }
    assert!(limit.acquire().await.is_err(), "the limit is {places}");
}

#[tokio::test]
async fn a_limited_router_answers_503_before_its_handler_runs() {
    let limit = ConcurrencyLimit::new(LimitConfig {
        initial: 1,
        min: 1,
        max: 1,
        max_queue_age: Duration::from_millis(20),
        tolerance: 1.5,
    });
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = ran.clone();
    let router = limited(
        Router::new().route(
            "/slow",
            get(move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    "done"
                }
            }),
        ),
        limit,
    );
    let call = || {
        router
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
    };
    let (first, second) = tokio::join!(call(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        call().await
    });
    assert_eq!(first.unwrap().status(), StatusCode::OK);
    let second = second.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
}
