//! RED figures from the instances' own metrics: every few seconds the control plane reads each
//! registered instance's Prometheus text (where service discovery tells Prometheus to) and keeps
//! five minutes of samples per instance — the request counter by status and the latency
//! histogram, summed over routes. A service's rate, error ratio and p50/p99 over a window are
//! the differences between its instances' first and last samples in it, the quantiles
//! interpolated in the histogram's buckets as Prometheus' `histogram_quantile` does. Every
//! request is counted, unlike the sampled spans.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla::http::HttpClient;
use tokio::time::Instant;

use crate::ControlState;

/// How often instances are read.
pub(crate) const EVERY: Duration = Duration::from_secs(5);
/// How much is kept.
pub(crate) const KEPT: Duration = Duration::from_secs(300);
/// How long one instance may take to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The counter of requests handled, by `status` (a service's, then the gateway's).
const REQUESTS: [&str; 2] = ["flotilla_http_server_requests_total", "flotilla_gateway_requests_total"];
/// The latency histogram's buckets, by `le`.
const BUCKETS: [&str; 2] = [
    "flotilla_http_server_request_duration_seconds_bucket",
    "flotilla_gateway_request_duration_seconds_bucket",
];

/// One reading of one instance, summed over routes and methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    requests: f64,
    errors: f64,
    /// Cumulative counts by upper bound, ascending (`+Inf` last).
    buckets: Vec<(f64, f64)>,
}

/// The labels of a sample line, as pairs.
fn labels(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.push((name.trim_start_matches(',').trim(), &after[..end]));
        rest = &after[end + 1..];
    }
    out
}

/// Reads the figures the dashboard needs out of a Prometheus text exposition; anything else
/// (and any line it cannot read) is passed over.
pub(crate) fn parse(text: &str) -> Reading {
    let mut reading = Reading::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some((series, value)) => (series, value),
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, label_text) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if REQUESTS.contains(&name) {
            reading.requests += value;
            if labels(label_text)
                .iter()
                .any(|(k, v)| *k == "status" && v.starts_with('5'))
            {
                reading.errors += value;
            }
        } else if BUCKETS.contains(&name) {
            let Some(le) = labels(label_text)
                .into_iter()
                .find(|(k, _)| *k == "le")
                .and_then(|(_, v)| {
                    if v == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        v.parse::<f64>().ok()
                    }
                })
            else {
                continue;
            };
            // Keyed by the bound's bits: positive floats order as their bits do.
            buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += value;
        }
    }
    reading.buckets = buckets.into_values().collect();
    reading
}

/// A service's figures over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Red {
    /// Requests per second.
    pub(crate) rate: f64,
    /// The share of them answered 5xx.
    pub(crate) error_ratio: f64,
    /// Median latency, ms.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency, ms.
    pub(crate) p99_ms: f64,
    /// Whether anything was measured (two readings of an instance in the window).
    pub(crate) measured: bool,
}

/// The `q` quantile of the counts between two cumulative histograms, interpolated linearly in
/// the bucket it falls in; the highest finite bound when it falls in `+Inf`.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else { return 0.0 };
    if total <= 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0;
            }
            let inside = (count - below.1).max(f64::MIN_POSITIVE);
            return below.0 + (le - below.0) * ((rank - below.1) / inside);
        }
        below = (le, count);
    }
    below.0
}

/// The change between two readings of one instance (a restarted counter counts from zero).
fn delta(first: &Reading, last: &Reading) -> Reading {
    let less = |a: f64, b: f64| if b >= a { b - a } else { b };
    Reading {
        requests: less(first.requests, last.requests),
        errors: less(first.errors, last.errors),
        buckets: last
            .buckets
            .iter()
            .map(|&(le, count)| {
                let before = first
                    .buckets
                    .iter()
                    .find(|(l, _)| l.to_bits() == le.to_bits())
                    .map_or(0.0, |(_, c)| *c);
                (le, less(before, count))
            })
            .collect(),
    }
}

/// Sums instances' changes into a service's figures over `seconds`.
fn red_of(deltas: &[Reading], seconds: f64) -> Red {
    if deltas.is_empty() || seconds <= 0.0 {
        return Red::default();
    }
    let requests: f64 = deltas.iter().map(|d| d.requests).sum();
    let errors: f64 = deltas.iter().map(|d| d.errors).sum();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for d in deltas {
        for &(le, count) in &d.buckets {
            buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += count;
        }
    }
    let buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    Red {
        rate: requests / seconds,
        error_ratio: if requests > 0.0 { errors / requests } else { 0.0 },
        p50_ms: quantile(0.5, &buckets) * 1000.0,
        p99_ms: quantile(0.99, &buckets) * 1000.0,
        measured: true,
    }
}

/// One instance's readings, oldest first.
#[derive(Debug)]
struct Instance {
    service: String,
    readings: VecDeque<(Instant, Reading)>,
}

/// Every instance's recent readings, shared by the sampler and the pages.
#[derive(Debug, Default)]
pub struct Samples {
    instances: Mutex<BTreeMap<String, Instance>>,
}

impl Samples {
    fn record(&self, at: Instant, read: Vec<(String, String, Reading)>) {
        let mut instances = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, service, reading) in read {
            let entry = instances.entry(id).or_insert_with(|| Instance {
                service,
                readings: VecDeque::new(),
            });
            entry.readings.push_back((at, reading));
        }
        for instance in instances.values_mut() {
            while instance
                .readings
                .front()
                .is_some_and(|(when, _)| at.duration_since(*when) > KEPT)
            {
                instance.readings.pop_front();
            }
        }
        instances.retain(|_, i| !i.readings.is_empty());
    }

    /// Each service's figures over the last `window`.
    pub(crate) fn red(&self, window: Duration) -> BTreeMap<String, Red> {
        let now = Instant::now();
        self.red_between(now.checked_sub(window).unwrap_or(now), now)
    }

    fn red_between(&self, from: Instant, to: Instant) -> BTreeMap<String, Red> {
        let instances = self.instances.lock().unwrap_or_else(PoisonError::into_inner);
        let mut deltas: BTreeMap<&str, (Vec<Reading>, f64)> = BTreeMap::new();
        for instance in instances.values() {
            let inside: Vec<&(Instant, Reading)> = instance
                .readings
                .iter()
                .filter(|(when, _)| *when >= from && *when <= to)
                .collect();
            let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
                continue;
            };
            if inside.len() < 2 {
                continue;
            }
            let entry = deltas.entry(instance.service.as_str()).or_default();
            entry.0.push(delta(&first.1, &last.1));
            entry.1 = entry.1.max(last.0.duration_since(first.0).as_secs_f64());
        }
        deltas
            .into_iter()
            .map(|(service, (d, seconds))| (service.to_owned(), red_of(&d, seconds)))
            .collect()
    }

    /// One service's figures in consecutive steps over what is kept, oldest first (for its
    /// page's charts): `(seconds ago, figures)`.
    pub(crate) fn history(&self, service: &str, step: Duration) -> Vec<(f64, Red)> {
        let now = Instant::now();
        let steps = (KEPT.as_secs_f64() / step.as_secs_f64()).floor() as u32;
        (0..steps)
            .rev()
            .filter_map(|k| {
                let to = now.checked_sub(step * k)?;
                let from = to.checked_sub(step)?;
                // Overlap one reading, so each step has two.
                let from = from.checked_sub(EVERY).unwrap_or(from);
                self.red_between(from, to)
                    .remove(service)
                    .map(|red| (f64::from(k) * step.as_secs_f64(), red))
            })
            .collect()
    }
}

/// Where an instance serves its metrics, as service discovery tells Prometheus.
fn metrics_url(instance: &flotilla_api::Instance) -> String {
    let (address, path) = crate::telemetry::http::metrics_target(instance);
    format!("http://{address}{path}")
}

/// Reads every registered instance every [`EVERY`], until `stopped`.
pub async fn sample_metrics(state: Arc<ControlState>, stopped: impl Future<Output = ()>) {
    let client = HttpClient::new(TIMEOUT);
    let sample = async {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let instances = state.registry.list(None).instances;
            let reads = instances.into_iter().map(|instance| {
                let client = &client;
                async move {
                    let url = metrics_url(&instance);
                    let answer = tokio::time::timeout(
                        TIMEOUT,
                        client.send_raw::<()>(axum::http::Method::GET, &url, None, None, Some(TIMEOUT)),
                    )
                    .await;
                    match answer {
                        Ok(Ok((status, _, _, body))) if status.is_success() => Some((
                            instance.instance_id,
                            instance.service,
                            parse(&String::from_utf8_lossy(&body)),
                        )),
                        _ => None,
                    }
                }
            });
            let read: Vec<_> = futures_util::future::join_all(reads)
                .await
                .into_iter()
                .flatten()
                .collect();
            state.samples.record(Instant::now(), read);
        }
    };
    tokio::select! {
        () = sample => {}
        () = stopped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE flotilla_http_server_requests_total counter
flotilla_http_server_requests_total{route="/a",method="GET",status="200"} 90
flotilla_http_server_requests_total{route="/a",method="GET",status="503"} 10
flotilla_http_server_request_duration_seconds_bucket{route="/a",method="GET",le="0.01"} 50
flotilla_http_server_request_duration_seconds_bucket{route="/a",method="GET",le="0.1"} 99
flotilla_http_server_request_duration_seconds_bucket{route="/a",method="GET",le="+Inf"} 100
process_threads 7
garbage line
"#;

    #[test]
    fn requests_errors_and_buckets_are_read_and_the_rest_passed_over() {
        let reading = parse(TEXT);
        assert_eq!(reading.requests, 100.0);
        assert_eq!(reading.errors, 10.0);
        assert_eq!(reading.buckets, vec![(0.01, 50.0), (0.1, 99.0), (f64::INFINITY, 100.0)]);
    }

    #[test]
    fn quantiles_interpolate_in_their_bucket() {
        let buckets = [(0.01, 50.0), (0.1, 99.0), (f64::INFINITY, 100.0)];
        assert!((quantile(0.5, &buckets) - 0.01).abs() < 1e-9);
        // The 99th falls at the top of the second bucket.
        assert!((quantile(0.99, &buckets) - 0.1).abs() < 1e-9);
        // The 99.5th falls in +Inf: the highest finite bound.
        assert!((quantile(0.995, &buckets) - 0.1).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[]), 0.0);
    }

    #[test]
    fn a_window_is_the_difference_of_its_first_and_last_readings() {
        let samples = Samples::default();
        let start = Instant::now();
        let before = parse(concat!(
            "flotilla_http_server_requests_total{status=\"200\"} 40\n",
            "flotilla_http_server_request_duration_seconds_bucket{le=\"0.01\"} 40\n",
            "flotilla_http_server_request_duration_seconds_bucket{le=\"0.1\"} 40\n",
            "flotilla_http_server_request_duration_seconds_bucket{le=\"+Inf\"} 40\n",
        ));
        let after = parse(TEXT);
        samples.record(start, vec![("c-1".into(), "catalog".into(), before)]);
        samples.record(
            start + Duration::from_secs(10),
            vec![("c-1".into(), "catalog".into(), after)],
        );
        let red = samples.red_between(start, start + Duration::from_secs(10));
        let catalog = &red["catalog"];
        // 60 requests in 10 s, 10 of them 503; of the 60, 10 under 10 ms and 49 more under 100.
        assert!((catalog.rate - 6.0).abs() < 1e-9, "{catalog:?}");
        assert!((catalog.error_ratio - 1.0 / 6.0).abs() < 1e-9);
        let p50 = 10.0 + 90.0 * (30.0 - 10.0) / 49.0;
        assert!((catalog.p50_ms - p50).abs() < 1e-6, "{catalog:?}");
        assert!(catalog.measured);
        let one = samples.red_between(start + Duration::from_secs(5), start + Duration::from_secs(10));
        assert!(one.is_empty(), "one reading measures nothing: {one:?}");
    }

    #[test]
    fn a_restarted_counter_counts_from_zero() {
        let first = parse("flotilla_http_server_requests_total{status=\"200\"} 500\n");
        let last = parse("flotilla_http_server_requests_total{status=\"200\"} 20\n");
        assert_eq!(delta(&first, &last).requests, 20.0);
    }

    #[test]
    fn figures_sum_over_instances() {
        let a = Reading {
            requests: 50.0,
            errors: 5.0,
            buckets: vec![(0.01, 50.0), (f64::INFINITY, 50.0)],
        };
        let red = red_of(&[a.clone(), a], 10.0);
        assert_eq!(red.rate, 10.0);
        assert!((red.error_ratio - 0.1).abs() < 1e-9);
        assert!(red.p99_ms <= 10.0 && red.p99_ms > 9.0, "{red:?}");
    }
}
