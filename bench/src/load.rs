//! A steady, open-loop load through the gateway: one request every 1/rate seconds whatever
//! the answers, so a slow answer shows as latency instead of hiding as fewer requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One request's fate.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, since the load began.
    pub at: Duration,
    /// How long the answer took.
    pub latency: Duration,
    /// The method.
    pub method: http::Method,
    /// The status, or why there was none.
    pub outcome: Result<u16, String>,
}

impl Sample {
    /// A failure: no answer, or a 5xx the gateway had to give.
    pub fn failed(&self) -> bool {
        !matches!(self.outcome, Ok(status) if status < 500)
    }
}

/// A running load.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

/// What a load saw.
pub struct Report {
    /// Every request, in the order they finished.
    pub samples: Vec<Sample>,
}

impl Report {
    /// The failed requests.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.failed()).collect()
    }

    /// The `q` quantile (0.99 for p99) of the latencies of requests sent between `from` and `to`.
    pub fn quantile_between(&self, q: f64, from: Duration, to: Duration) -> Duration {
        let mut latencies: Vec<Duration> = self
            .samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .map(|s| s.latency)
            .collect();
        latencies.sort();
        let rank = ((latencies.len() as f64) * q).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied().unwrap_or_default()
    }
}

impl Load {
    /// Sends `rate` requests a second to the gateway, cycling through `requests`.
    pub fn start(gateway: SocketAddr, rate: u32, requests: Vec<(http::Method, &'static str)>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return Vec::new();
            };
            runtime.block_on(async move {
                let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0usize;
                while !flag.load(Ordering::SeqCst) {
                    // Latency counts from when the request was due, not from when it went
                    // out, so a stall in the sender shows up instead of hiding (coordinated
                    // omission).
                    let due = tick.tick().await.into_std();
                    let (method, path) = requests[n % requests.len()].clone();
                    n += 1;
                    let (client, tx) = (client.clone(), tx.clone());
                    tokio::spawn(async move {
                        let at = due.saturating_duration_since(started);
                        let sent = due;
                        let body = if method == http::Method::POST {
                            Bytes::from_static(b"{}")
                        } else {
                            Bytes::new()
                        };
                        let mut request = http::Request::builder()
                            .method(method.clone())
                            .uri(format!("http://{gateway}{path}"));
                        if method == http::Method::POST {
                            request = request.header("content-type", "application/json");
                        }
                        let outcome = match request.body(Full::new(body)) {
                            Err(e) => Err(format!("request: {e}")),
                            Ok(request) => {
                                match tokio::time::timeout(Duration::from_secs(20), client.request(request)).await {
                                    Ok(Ok(response)) => {
                                        let status = response.status().as_u16();
                                        match response.into_body().collect().await {
                                            Ok(_) => Ok(status),
                                            Err(e) => Err(format!("body: {e}")),
                                        }
                                    }
                                    Ok(Err(e)) => Err(e.to_string()),
                                    Err(_) => Err("no answer in 20 s".into()),
                                }
                            }
                        };
                        let _ = tx.send(Sample {
                            at,
                            latency: sent.elapsed(),
                            method,
                            outcome,
                        });
                    });
                }
                drop(tx);
                let mut samples = Vec::new();
                while let Some(sample) = rx.recv().await {
                    samples.push(sample);
                }
                samples
            })
        });
        Load { started, stop, thread }
    }

    /// Time since the load began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops sending, waits for the answers still due, and reports.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        Report {
            samples: self.thread.join().unwrap_or_default(),
        }
    }
}
