use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let uri: http::Uri = format!("http://10.0.0.{i}:80").parse().unwrap();
            Endpoint::from_uri(&uri).unwrap()
        })
        .collect()
}

/// Picks until `target` comes up (the others answer well), then fails it once.
fn fail_on(b: &Balancer, eps: &[Endpoint], target: &str, failure: Failure) {
    loop {
        let pick = b.pick(eps, None, &[]).unwrap();
        if pick.endpoint.id == target {
            pick.failure(failure);
            return;
        }
        pick.success();
    }
}

fn balancer(strategy: Strategy) -> Balancer {
    Balancer::with_seed(
        BalanceConfig {
            strategy,
            ..BalanceConfig::default()
        },
        7,
    )
}

#[test]
fn round_robin_takes_turns() {
    let b = balancer(Strategy::RoundRobin);
    let eps = endpoints(3);
    let ids: Vec<String> = (0..6)
        .map(|_| b.pick(&eps, None, &[]).unwrap().endpoint.id.clone())
        .collect();
    assert_eq!(ids[0..3], ids[3..6]);
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    assert!(b.pick(&[], None, &[]).is_none());
}

#[tokio::test(start_paused = true)]
async fn p2c_prefers_the_faster_endpoint_and_shuns_a_hung_one() {
    let b = balancer(Strategy::P2c);
    let eps = endpoints(3);
    // Teach it: 10.0.0.0 is slow (200 ms), the others fast (1 ms).
    for _ in 0..30 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        let slow = pick.endpoint.id == "10.0.0.0:80";
        tokio::time::advance(Duration::from_millis(if slow { 200 } else { 1 })).await;
        pick.success();
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        *counts.entry(pick.endpoint.id.clone()).or_default() += 1;
        pick.success();
    }
    assert!(
        counts.get("10.0.0.0:80").copied().unwrap_or(0) < 30,
        "the slow one gets little: {counts:?}"
    );

    // A hung endpoint keeps its calls in flight; new calls go elsewhere.
    let b = balancer(Strategy::P2c);
    let hung = b.pick(&eps, None, &[]).unwrap();
    let hung_id = hung.endpoint.id.clone();
    let mut held = vec![hung];
    for _ in 0..50 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        if pick.endpoint.id == hung_id {
            held.push(pick);
        } else {
            pick.success();
        }
    }
    assert!(
        held.len() <= 3,
        "a hung endpoint is avoided once its calls pile up: {}",
        held.len()
    );
}

#[test]
fn weights_shift_traffic() {
    let b = balancer(Strategy::P2c);
    let mut eps = endpoints(2);
    eps[1].weight = 4;
    let mut heavy = 0;
    for _ in 0..1000 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        let id = pick.endpoint.id.clone();
        // Keep one call in flight on the last pick, so load differences matter.
        if id == eps[1].id {
            heavy += 1;
        }
        pick.success();
    }
    assert!(
        heavy > 500,
        "the weight-4 endpoint takes the larger share: {heavy}/1000"
    );
}

#[test]
fn consistent_hash_is_sticky_and_moves_only_the_leavers_keys() {
    let b = balancer(Strategy::ConsistentHash);
    let eps = endpoints(4);
    let owner = |eps: &[Endpoint], key: u64| b.pick(eps, Some(HashKey(key)), &[]).unwrap().endpoint.id.clone();
    let before: Vec<String> = (0..200).map(|k| owner(&eps, k)).collect();
    assert_eq!(before, (0..200).map(|k| owner(&eps, k)).collect::<Vec<_>>(), "sticky");
    let fewer: Vec<Endpoint> = eps.iter().filter(|e| e.id != "10.0.0.2:80").cloned().collect();
    for (k, was) in before.iter().enumerate() {
        let now = owner(&fewer, k as u64);
        if was != "10.0.0.2:80" {
            assert_eq!(&now, was, "key {k} moved although its endpoint stayed");
        }
    }
    assert_eq!(HashKey::of("session-1"), HashKey::of("session-1"));
}

#[test]
fn zone_preference_keeps_traffic_local_while_possible() {
    let mut eps = endpoints(3);
    eps[0].zone = Some("a".into());
    eps[1].zone = Some("b".into());
    eps[2].zone = Some("b".into());
    let b = Balancer::with_seed(
        BalanceConfig {
            local_zone: Some("a".into()),
            ..BalanceConfig::default()
        },
        1,
    );
    for _ in 0..20 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        assert_eq!(pick.endpoint.zone.as_deref(), Some("a"));
        pick.success();
    }
    // Its only local endpoint already tried: go remote rather than fail.
    let remote = b.pick(&eps, None, &[eps[0].id.clone()]).unwrap();
    assert_eq!(remote.endpoint.zone.as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_ejects_at_once_and_the_endpoint_returns_later() {
    let b = balancer(Strategy::RoundRobin);
    let eps = endpoints(3);
    let dead = eps[0].id.clone();
    fail_on(&b, &eps, &dead, Failure::Connect);
    for _ in 0..30 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        assert_ne!(pick.endpoint.id, dead, "ejected on the first refused connection");
        pick.success();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let back = (0..6).any(|_| b.pick(&eps, None, &[]).unwrap().endpoint.id == dead);
    assert!(back, "returns after the ejection time");

    // A relapse is ejected for twice as long.
    let stats = b.stats(&dead).unwrap();
    fail_on(&b, &eps, &dead, Failure::Connect);
    assert_eq!(stats.ejections(), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(stats.is_ejected(Instant::now()), "second ejection lasts 20 s");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!stats.is_ejected(Instant::now()));
}

#[test]
fn other_failures_eject_after_five_in_a_row() {
    let b = balancer(Strategy::RoundRobin);
    let eps = endpoints(2);
    let target = eps[0].id.clone();
    for _ in 0..4 {
        fail_on(&b, &eps, &target, Failure::Other);
    }
    assert!(
        !b.stats(&target).unwrap().is_ejected(Instant::now()),
        "four are not enough"
    );
    fail_on(&b, &eps, &target, Failure::Other);
    assert!(b.stats(&target).unwrap().is_ejected(Instant::now()));
}

#[test]
fn never_ejects_more_than_half() {
    let b = balancer(Strategy::RoundRobin);
    let eps = endpoints(2);
    for _ in 0..2 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        pick.failure(Failure::Connect);
    }
    let ejected = eps
        .iter()
        .filter(|e| b.stats(&e.id).unwrap().is_ejected(Instant::now()))
        .count();
    assert_eq!(ejected, 1, "one of two may go, not both");
    // With everything tried or ejected, it still answers rather than fail the call.
    let all: Vec<String> = eps.iter().map(|e| e.id.clone()).collect();
    assert!(b.pick(&eps, None, &all).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_call_left_waiting_marks_its_endpoint_slow_before_any_timeout() {
    let b = balancer(Strategy::P2c);
    let eps = endpoints(3);
    for _ in 0..30 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        tokio::time::advance(Duration::from_millis(2)).await;
        pick.success();
    }
    // One call hangs on an endpoint; 50 ms later it has answered nothing.
    let hung = b.pick(&eps, None, &[]).unwrap();
    let hung_id = hung.endpoint.id.clone();
    tokio::time::advance(Duration::from_millis(50)).await;
    for _ in 0..200 {
        let pick = b.pick(&eps, None, &[]).unwrap();
        assert_ne!(pick.endpoint.id, hung_id, "a 50 ms wait outweighs a 2 ms estimate");
        pick.success();
    }
    drop(hung);
    assert_eq!(
        b.stats(&hung_id).unwrap().in_flight(),
        0,
        "a dropped pick gives its slot back"
    );
}

#[tokio::test(start_paused = true)]
async fn every_outcome_gives_back_its_in_flight_slot_and_start_time() {
    let b = balancer(Strategy::RoundRobin);
    let eps = endpoints(1);
    let id = eps[0].id.clone();
    let first = b.pick(&eps, None, &[]).unwrap();
    let second = b.pick(&eps, None, &[]).unwrap();
    let third = b.pick(&eps, None, &[]).unwrap();
    tokio::time::advance(Duration::from_millis(5)).await;
    first.success();
    second.failure(Failure::Other);
    drop(third);
    let stats = b.stats(&id).unwrap();
    assert_eq!(stats.in_flight(), 0);
    // A call left waiting 200 ms now counts as 200 ms of latency: no leftover start times
    // of finished calls skew its age.
    let waiting = b.pick(&eps, None, &[]).unwrap();
    tokio::time::advance(Duration::from_millis(200)).await;
    let load = stats.load(Duration::from_secs(10));
    assert!(
        load >= 2.0 * 199e6,
        "load {load} = age of the waiting call x (1 in flight + 1)"
    );
    waiting.success();
}
