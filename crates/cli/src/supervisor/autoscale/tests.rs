use super::*;

fn policy(min: u32, max: u32, window_secs: u64) -> Autoscale {
    Autoscale {
        min,
        max,
        target_cpu: Some(70),
        target_inflight: None,
        scale_down_window: Duration::from_secs(window_secs),
        period: Duration::from_secs(15),
    }
}

fn cpu(target: f64, samples: &[Option<f64>]) -> Measured {
    Measured {
        kind: MetricKind::Cpu,
        target,
        samples: samples.to_vec(),
    }
}

/// One evaluation with a fresh history and no window.
fn once(current: u32, metrics: &[Measured], autoscale: &Autoscale) -> Outcome {
    decide(
        current,
        metrics,
        autoscale,
        &Resources::default(),
        &mut Recommendations::default(),
        Instant::now(),
    )
}

#[test]
fn within_the_tolerance_nothing_changes() {
    let autoscale = policy(1, 10, 0);
    // 73.5 / 70 = 1.05 and 66.5 / 70 = 0.95: within 10 %.
    for use_ in [73.5, 66.5] {
        let outcome = once(2, &[cpu(70.0, &[Some(use_), Some(use_)])], &autoscale);
        assert_eq!(outcome.desired, 2, "{use_}: {outcome:?}");
        assert_eq!(outcome.recommendation, Some(2));
    }
    // Just past it, it does: 80 / 70 = 1.14 → ceil(2 × 1.14) = 3.
    assert_eq!(once(2, &[cpu(70.0, &[Some(80.0), Some(80.0)])], &autoscale).desired, 3);
}

#[test]
fn up_by_the_ratio_of_the_metric_to_its_target_at_once() {
    let outcome = once(1, &[cpu(70.0, &[Some(212.0)])], &policy(1, 10, 300));
    // 212 / 70 = 3.03 → ceil(1 × 3.03) = 4.
    assert_eq!(outcome.desired, 4, "{outcome:?}");
    assert_eq!(outcome.reason, "cpu 212% of 100m request, target 70%");
    assert_eq!(outcome.cpu, Some(212.0));
    // Exactly twice the target is twice the instances, not one more for float error.
    assert_eq!(once(3, &[cpu(50.0, &[Some(100.0); 3])], &policy(1, 10, 0)).desired, 6);
}

#[test]
fn bounds_and_the_rate_limit_hold() {
    // Ten times the target: 20 wanted, max(2 × 2, 2 + 4) = 6 in one step.
    let outcome = once(2, &[cpu(10.0, &[Some(100.0), Some(100.0)])], &policy(1, 64, 0));
    assert_eq!(outcome.desired, 6, "{outcome:?}");
    assert!(outcome.reason.ends_with("at most 6 in one step"), "{}", outcome.reason);
    // Capped at max.
    let outcome = once(2, &[cpu(10.0, &[Some(100.0), Some(100.0)])], &policy(1, 4, 0));
    assert_eq!(outcome.desired, 4);
    assert!(outcome.reason.ends_with("capped at max 4"), "{}", outcome.reason);
    // Idle asks for 1, min says 2.
    let outcome = once(3, &[cpu(70.0, &[Some(1.0); 3])], &policy(2, 4, 0));
    assert_eq!((outcome.recommendation, outcome.desired), (Some(1), 2));
    assert!(outcome.reason.ends_with("raised to min 2"), "{}", outcome.reason);
    // A count set by hand outside the bounds is brought back even without samples.
    assert_eq!(once(9, &[cpu(70.0, &[None; 9])], &policy(1, 4, 0)).desired, 4);
    assert_eq!(once(1, &[cpu(70.0, &[None])], &policy(2, 4, 0)).desired, 2);
}

#[test]
fn a_dip_inside_the_window_does_not_scale_down_and_after_it_does() {
    let autoscale = policy(1, 10, 20);
    let resources = Resources::default();
    let mut history = Recommendations::default();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let hot = [cpu(70.0, &[Some(200.0), Some(200.0), Some(200.0)])];
    let idle = [cpu(70.0, &[Some(3.0), Some(3.0), Some(3.0)])];
    let busy = decide(
        3,
        &[cpu(70.0, &[Some(70.0); 3])],
        &autoscale,
        &resources,
        &mut history,
        at(0),
    );
    assert_eq!(busy.desired, 3);
    // A dip 5 s later: recommended 1, but 3 was recommended within the window.
    let dip = decide(3, &idle, &autoscale, &resources, &mut history, at(5));
    assert_eq!((dip.recommendation, dip.desired), (Some(1), 3));
    // Load again: up at once, whatever the window holds.
    assert!(decide(3, &hot, &autoscale, &resources, &mut history, at(10)).desired > 3);
    let mut history = Recommendations::default();
    decide(
        3,
        &[cpu(70.0, &[Some(70.0); 3])],
        &autoscale,
        &resources,
        &mut history,
        at(0),
    );
    decide(3, &idle, &autoscale, &resources, &mut history, at(5));
    // 21 s on, the 3 of t0 has left the window: down to the highest left, 1.
    let down = decide(3, &idle, &autoscale, &resources, &mut history, at(21));
    assert_eq!(down.desired, 1, "{down:?}");
    assert_eq!(
        down.reason,
        "cpu 3% of 100m request, target 70%; the highest recommendation within the last 20s"
    );
}

#[test]
fn down_goes_only_to_the_highest_recommendation_left_in_the_window() {
    let autoscale = policy(1, 10, 20);
    let resources = Resources::default();
    let mut history = Recommendations::default();
    let t0 = Instant::now();
    // A count set by hand (or the starting one) counts as a recommendation.
    history.record(t0, 4, autoscale.scale_down_window);
    history.record(t0 + Duration::from_secs(10), 2, autoscale.scale_down_window);
    let idle = [cpu(70.0, &[Some(3.0); 4])];
    let held = decide(
        4,
        &idle,
        &autoscale,
        &resources,
        &mut history,
        t0 + Duration::from_secs(15),
    );
    assert_eq!(held.desired, 4);
    let partly = decide(
        4,
        &idle,
        &autoscale,
        &resources,
        &mut history,
        t0 + Duration::from_secs(25),
    );
    assert_eq!(partly.desired, 2, "{partly:?}");
}

#[test]
fn instances_without_a_sample_are_left_out_of_the_average_then_counted_cautiously() {
    let autoscale = policy(1, 10, 0);
    // No sample at all: no recommendation, nothing changes.
    let outcome = once(2, &[cpu(70.0, &[None, None])], &autoscale);
    assert_eq!((outcome.recommendation, outcome.desired), (None, 2));
    assert_eq!(outcome.reason, "no samples yet");
    // Going up, one without a sample counts as idle: 400 and 0 average 200, twice the target
    // of 100, so 4 — not the 8 that 400 alone would ask.
    assert_eq!(once(2, &[cpu(100.0, &[Some(400.0), None])], &autoscale).desired, 4);
    // Two just started beside a busy one: 200, 0, 0 is below the target, so no move at all
    // rather than a scale-down the samples do not support.
    assert_eq!(
        once(3, &[cpu(100.0, &[Some(200.0), None, None])], &autoscale).desired,
        3
    );
    // Going down, one without a sample counts as on target: 10, 100, 10 → 0.4 → 2, not 1.
    assert_eq!(
        once(3, &[cpu(100.0, &[Some(10.0), None, Some(10.0)])], &autoscale).desired,
        2
    );
    // The average said is that of the instances sampled.
    assert_eq!(
        once(3, &[cpu(100.0, &[Some(10.0), None, Some(20.0)])], &autoscale).cpu,
        Some(15.0)
    );
}

#[test]
fn with_several_metrics_the_one_asking_for_most_wins_and_is_named_first() {
    let autoscale = Autoscale {
        target_inflight: Some(2.0),
        ..policy(1, 10, 0)
    };
    let metrics = [
        cpu(70.0, &[Some(140.0), Some(140.0)]),
        Measured {
            kind: MetricKind::Inflight,
            target: 2.0,
            samples: vec![Some(6.0), Some(6.0)],
        },
    ];
    let outcome = once(2, &metrics, &autoscale);
    assert_eq!(outcome.desired, 6, "{outcome:?}");
    assert_eq!(
        outcome.reason,
        "in-flight 6.0 per instance, target 2; cpu 140% of 100m request, target 70%"
    );
    assert_eq!((outcome.cpu, outcome.inflight), (Some(140.0), Some(6.0)));
}

#[test]
fn proc_stat_and_the_inflight_gauge_are_read() {
    let stat = "4242 (flotilla (x) y) S 17 4242 4242 0 -1 4194560 1 0 0 0 120 30 7 3 20 0 9 0 555 1 2 3";
    assert_eq!(
        parse_stat(stat),
        Some(Stat {
            ppid: 17,
            ticks: 160,
            started: 555
        })
    );
    assert_eq!(parse_stat("garbage"), None);
    let page = "# TYPE flotilla_http_server_active_requests gauge\nflotilla_http_server_active_requests 3\nflotilla_http_server_active_requests_other 9\nflotilla_http_server_requests_total{route=\"/\"} 5\n";
    assert_eq!(parse_inflight(page), Some(3.0));
    assert_eq!(
        parse_inflight("flotilla_http_server_active_requests{a=\"b\"} 1.5\n"),
        Some(1.5)
    );
    assert_eq!(parse_inflight("other 1\n"), None);
}

#[test]
fn a_process_tree_counts_its_descendants() {
    let mut table = BTreeMap::new();
    let stat = |ppid, ticks| Stat {
        ppid,
        ticks,
        started: 1,
    };
    table.insert(10, stat(1, 100));
    table.insert(11, stat(10, 20));
    table.insert(12, stat(11, 3));
    table.insert(13, stat(1, 1000));
    assert_eq!(tree_ticks(&table, 10), Some((123, 1)));
    assert_eq!(tree_ticks(&table, 99), None);
}
