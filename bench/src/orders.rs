//! Placing orders through the gateway and watching them settle, for `bench/orders` and the
//! overload system test: one place to say what an order request is, how its answer is
//! sorted, and when its confirmation was seen (on the `orders` topic, as another service
//! would see it, after the outbox relay).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::events::EventsClient;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// When each order was seen confirmed (`true`) or cancelled, by id.
pub type Settled = Arc<Mutex<HashMap<String, (Instant, bool)>>>;

/// Notes every order confirmed or cancelled on the `orders` topic into `settled`, as a
/// consumer group of its own, until dropped.
pub async fn watch(events: EventsClient, settled: Settled) {
    let group = format!("bench-{}-{:x}", std::process::id(), rand::random::<u64>());
    loop {
        let Ok(deliveries) = events.fetch("orders", &group, 500, Duration::from_secs(5)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let now = Instant::now();
        let offsets: Vec<u64> = deliveries.iter().map(|d| d.offset).collect();
        if let Ok(mut settled) = settled.lock() {
            for delivery in &deliveries {
                let confirmed = delivery.event.kind == flotilla_shop_contracts::orders::CONFIRMED;
                if confirmed || delivery.event.kind == flotilla_shop_contracts::orders::CANCELLED {
                    if let Some(order) = &delivery.event.subject {
                        settled.entry(order.clone()).or_insert((now, confirmed));
                    }
                }
            }
        }
        if !offsets.is_empty() {
            let _ = events.ack("orders", &group, &offsets).await;
        }
    }
}

/// A client for the gateway, pooled.
pub type Gateway = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP/1 client.
pub fn client() -> Gateway {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What one `POST /api/v1/orders` answered.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 202: the order's id.
    Accepted(String),
    /// 503 `overloaded`, with its `Retry-After` seconds (`None`: the header was missing).
    Refused(Option<u64>),
    /// Anything else: status and problem type (status 0: no answer).
    Other(u16, String),
}

/// One placed order's answer and how long the POST took.
#[derive(Debug, Clone)]
pub struct Placed {
    /// What came back.
    pub answer: Answer,
    /// When it was sent.
    pub sent: Instant,
    /// When it was sent, ms since the Unix epoch (to compare with the shop's own times).
    pub sent_ms: i64,
    /// How long until its whole answer was read.
    pub took: Duration,
}

/// Places one order of one unit of `product` with `key` as its Idempotency-Key.
pub async fn place(client: &Gateway, uri: &http::Uri, token: &str, key: &str, product: u64) -> Placed {
    let body = format!(
        r#"{{"lines":[{{"product_id":{product},"quantity":1}}],"shipping_address":{{"name":"Bench","line1":"Kai 1","city":"Hamburg","postal_code":"20457","country":"DE"}}}}"#
    );
    let sent = Instant::now();
    let sent_ms = flotilla::store::now_ms();
    let request = http::Request::post(uri.clone())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from(body)));
    let answer = match request {
        Err(err) => Answer::Other(0, err.to_string()),
        Ok(request) => match client.request(request).await {
            Err(err) => Answer::Other(0, format!("no answer ({err})")),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let kind = answer["type"].as_str().unwrap_or("").to_owned();
                match answer["id"].as_str() {
                    Some(id) if status == http::StatusCode::ACCEPTED => Answer::Accepted(id.to_owned()),
                    _ if status == http::StatusCode::SERVICE_UNAVAILABLE && kind.ends_with(":overloaded") => {
                        Answer::Refused(retry_after)
                    }
                    _ => Answer::Other(status.as_u16(), kind),
                }
            }
        },
    };
    Placed {
        answer,
        sent,
        sent_ms,
        took: sent.elapsed(),
    }
}

/// When the order `id` was confirmed, ms since the Unix epoch, as the order itself says (its
/// last event's time, read from `GET /api/v1/orders/{id}`): `None` while it is not confirmed.
pub async fn confirmed_at(client: &Gateway, gateway: std::net::SocketAddr, token: &str, id: &str) -> Option<i64> {
    let request = http::Request::get(format!("http://{gateway}/api/v1/orders/{id}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let response = client.request(request).await.ok()?;
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    let order: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    (order["status"] == "CONFIRMED")
        .then(|| order["updated_ms"].as_i64())
        .flatten()
}

/// Orders offered at a steady `rate` per second for `for_`, each sent on time whatever the
/// earlier ones are doing (an open loop: overload is not hidden by clients that wait).
pub async fn offer(client: &Gateway, uri: &http::Uri, token: &str, rate: f64, for_: Duration) -> Vec<Placed> {
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let run = format!("{:x}", rand::random::<u64>());
    let until = Instant::now() + for_;
    let mut sending = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < until {
        ticks.tick().await;
        n += 1;
        let (client, uri, token, key) = (
            client.clone(),
            uri.clone(),
            token.to_owned(),
            format!("offer-{run}-{n}"),
        );
        sending.spawn(async move { place(&client, &uri, &token, &key, 1 + n % 20).await });
    }
    let mut placed = Vec::with_capacity(n as usize);
    while let Some(done) = sending.join_next().await {
        if let Ok(one) = done {
            placed.push(one);
        }
    }
    placed
}

/// `clients` closed-loop clients placing orders for `for_`, each with its own keys. A client
/// refused as overloaded waits as `Retry-After` says, but at most `patience`.
pub async fn closed_loop(
    client: &Gateway,
    uri: &http::Uri,
    token: &str,
    clients: usize,
    for_: Duration,
    patience: Duration,
) -> Vec<Placed> {
    let until = Instant::now() + for_;
    let mut workers = tokio::task::JoinSet::new();
    let run = format!("{:x}", rand::random::<u32>());
    for worker in 0..clients {
        let (client, uri, token, run) = (client.clone(), uri.clone(), token.to_owned(), run.clone());
        workers.spawn(async move {
            let mut placed = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let product = 1 + (worker as u64 * 7 + n) % 20;
                let one = place(&client, &uri, &token, &format!("bench-{run}-{worker}-{n}"), product).await;
                if let Answer::Refused(Some(after)) = one.answer {
                    // As a client should: come back when told (or sooner, to keep the shop busy).
                    let wait = Duration::from_secs(after).min(patience);
                    tokio::time::sleep(wait.min(until.saturating_duration_since(Instant::now()))).await;
                }
                placed.push(one);
            }
            placed
        });
    }
    let mut placed = Vec::new();
    while let Some(Ok(some)) = workers.join_next().await {
        placed.extend(some);
    }
    placed
}

/// Waits until every accepted order in `placed` settled in `settled`, or `within` passed.
pub async fn settle(placed: &[Placed], settled: &Settled, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let open = settled.lock().map_or(usize::MAX, |s| {
            placed
                .iter()
                .filter(|p| matches!(&p.answer, Answer::Accepted(id) if !s.contains_key(id)))
                .count()
        });
        if open == 0 || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a run of orders came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Accepted (202).
    pub accepted: usize,
    /// Refused as overloaded (503 with `Retry-After`).
    pub refused: usize,
    /// Refused as overloaded without a `Retry-After`.
    pub refused_without_retry_after: usize,
    /// The gateway gave up waiting (504).
    pub timed_out: usize,
    /// Other answers, `status type` → how many.
    pub others: BTreeMap<String, usize>,
    /// Accepted orders seen confirmed: POST sent → confirmation seen, ms, sorted.
    pub to_confirmed_ms: Vec<f64>,
    /// Accepted orders cancelled.
    pub cancelled: usize,
    /// Accepted orders never seen settled.
    pub unsettled: usize,
    /// Every POST's time to its answer, ms, sorted.
    pub post_ms: Vec<f64>,
}

impl Tally {
    /// Sorts `placed` out against what `settled` saw.
    pub fn of(placed: &[Placed], settled: &Settled) -> Self {
        let settled = settled.lock().map(|s| s.clone()).unwrap_or_default();
        let mut tally = Tally::default();
        for one in placed {
            tally.post_ms.push(one.took.as_secs_f64() * 1000.0);
            match &one.answer {
                Answer::Accepted(id) => {
                    tally.accepted += 1;
                    match settled.get(id) {
                        Some((at, true)) => tally
                            .to_confirmed_ms
                            .push(at.duration_since(one.sent).as_secs_f64() * 1000.0),
                        Some((_, false)) => tally.cancelled += 1,
                        None => tally.unsettled += 1,
                    }
                }
                Answer::Refused(Some(_)) => tally.refused += 1,
                Answer::Refused(None) => tally.refused_without_retry_after += 1,
                Answer::Other(504, _) => tally.timed_out += 1,
                Answer::Other(status, kind) => *tally.others.entry(format!("{status} {kind}")).or_default() += 1,
            }
        }
        tally.post_ms.sort_by(f64::total_cmp);
        tally.to_confirmed_ms.sort_by(f64::total_cmp);
        tally
    }

    /// Other answers as `n × status type`, or `none`.
    pub fn others_text(&self) -> String {
        if self.others.is_empty() {
            return "none".into();
        }
        let kinds: Vec<String> = self.others.iter().map(|(kind, n)| format!("{n} × {kind}")).collect();
        kinds.join(", ")
    }
}

/// The `q` quantile of sorted figures (0 when there are none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}
