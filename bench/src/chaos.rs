//! Chaos: orders through the gateway at a steady rate while `flotilla chaos` kills or pauses
//! a random process (any shop service, the gateway, the control plane) every few seconds,
//! and pauses payments for a long while once; then the shop's invariants, checked exactly
//! from the services' databases and APIs. Cancellations happen at every step of the order
//! saga: declines (payments' limit), shortages (one product stocked thin), and refusals
//! injected after authorization (shipping), at capture (payments) and after capture
//! (inventory's commit, so the payment is refunded), so every compensation runs under the
//! faults. `bench/chaos` prints the figures; `tests/chaos.rs` runs a short version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::Row;

use crate::shop::{json, password_token};

use crate::procs::http_request;
use crate::system::System;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Orders placed per second (open loop: one every 1/rate s whatever the answers).
    pub rate: f64,
    /// How long orders are placed and faults made.
    pub seconds: u64,
    /// The pause between two faults: a random time in this range.
    pub fault_every: (Duration, Duration),
    /// How long a pause lasts: a random time in this range.
    pub pause_for: (Duration, Duration),
    /// One long pause of payments, this long, at this share of the run (0 to 1); none: skip.
    pub long_payments_pause: Option<(Duration, f64)>,
    /// The share of orders made to be declined (over payments' limit), and the share of the
    /// saga's calls to shipping, to capture and to commit that are refused (each).
    pub refusals: f64,
    /// Units of the thin product (13): once sold, its orders are cancelled for want of stock.
    pub thin_stock: i64,
    /// How long the order stream may take to settle after the load.
    pub settle: Duration,
    /// The seed of the run's random choices (faults, order mix).
    pub seed: u64,
}

impl Options {
    /// The full run: 30 orders/s for 180 s, a fault every 2–3 s, payments paused 20 s.
    pub fn full() -> Self {
        Self {
            rate: 30.0,
            seconds: 180,
            fault_every: (Duration::from_secs(2), Duration::from_secs(3)),
            pause_for: (Duration::from_secs(1), Duration::from_secs(3)),
            long_payments_pause: Some((Duration::from_secs(20), 0.4)),
            refusals: 0.02,
            thin_stock: 40,
            settle: Duration::from_secs(180),
            seed: 7,
        }
    }
}

impl Options {
    /// The short run the test suite makes (`tests/chaos.rs`, on a debug build): 5 orders/s
    /// for 60 s, a fault every 2–3 s, payments paused 10 s; refusals common enough that each
    /// kind happens.
    pub fn short() -> Self {
        Self {
            rate: 5.0,
            seconds: 60,
            long_payments_pause: Some((Duration::from_secs(10), 0.4)),
            refusals: 0.05,
            thin_stock: 5,
            settle: Duration::from_secs(150),
            ..Self::full()
        }
    }
}

/// The product whose stock runs out during a run.
const THIN: i64 = 13;

/// Wall-clock milliseconds (the services stamp their rows with these).
fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The refusals injected into a share of the saga's calls: after authorization (shipping
/// refuses the shipment), after the shipment (payments refuses the capture), and after the
/// capture (inventory refuses to commit the stock, so the captured payment is refunded).
const REFUSALS: [(&str, &str, &str, u16); 3] = [
    ("shipping", "POST", "/api/v1/shipments", 422),
    ("payments", "POST", "/api/v1/payments/*/capture", 402),
    ("inventory", "POST", "/api/v1/inventory/reservations/*/commit", 409),
];

/// One order of the run as the client saw it.
#[derive(Debug, Clone)]
struct Placed {
    key: String,
    /// Made to be declined (over payments' limit).
    big: bool,
    product: i64,
    quantity: i64,
    /// Wall-clock time of its first try.
    first_try_ms: i64,
    /// The order id, once accepted.
    id: Option<String>,
    /// Tries until accepted (or given up).
    tries: u32,
    /// Refused at once, for good: inventory said (over gRPC) it cannot fill the order now.
    refused: bool,
}

/// A fault the run made.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Seconds into the run.
    pub at: f64,
    /// `kill` or `pause`.
    pub kind: String,
    /// What `flotilla chaos` said it did (or why it could not).
    pub said: String,
    /// How long it lasted when it was the run's long pause of payments.
    pub long: Option<Duration>,
}

/// One invariant and whether it held.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub name: String,
    /// Whether it did.
    pub ok: bool,
    /// The figures behind it, or what broke it.
    pub detail: String,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Orders the clients set out to place.
    pub orders: usize,
    /// Orders accepted (202), after the clients' retries.
    pub accepted: usize,
    /// Orders refused at once because inventory cannot fill them now (409 `out-of-stock`: a
    /// final answer, not a failure; the thin product runs out).
    pub refused_at_once: usize,
    /// POSTs sent, retries included.
    pub tries: usize,
    /// Tries that did not get a 202, by status and problem type.
    pub failed_tries: BTreeMap<String, usize>,
    /// Accepted orders by final status (`CONFIRMED`, `CANCELLED`, or still open).
    pub outcomes: BTreeMap<String, usize>,
    /// Cancellations by what the order says.
    pub reasons: BTreeMap<String, usize>,
    /// How many orders were made big enough for payments to decline (each should be).
    pub made_to_decline: usize,
    /// First try to final state, ms, of orders placed while faults were made.
    pub to_final_ms: Vec<f64>,
    /// The same, of the orders not placed during the long pause of payments (those wait
    /// for payments to come back, by design).
    pub to_final_outside_long_pause_ms: Vec<f64>,
    /// The slowest orders' histories: each event's type and time after the first try.
    pub slowest: Vec<String>,
    /// When the failed tries came, by kind, in bursts (seconds into the run).
    pub failure_bursts: Vec<String>,
    /// The faults made.
    pub faults: Vec<Fault>,
    /// Restarts the supervisor made.
    pub restarts: usize,
    /// The invariants.
    pub checks: Vec<Check>,
    /// How long the load ran, s.
    pub load_seconds: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0.0)
}

impl Report {
    /// Invariants that did not hold.
    pub fn violations(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }

    /// Failed tries per 1,000 tries.
    pub fn failed_per_thousand(&self) -> f64 {
        let failed: usize = self.failed_tries.values().sum();
        failed as f64 * 1000.0 / self.tries.max(1) as f64
    }

    /// The figures and the invariants, as Markdown tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut to_final = self.to_final_ms.clone();
        to_final.sort_by(f64::total_cmp);
        let failed: usize = self.failed_tries.values().sum();
        let kinds: Vec<String> = self
            .failed_tries
            .iter()
            .map(|(kind, n)| format!("{n} × {kind}"))
            .collect();
        let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
        for fault in &self.faults {
            *faults.entry(fault.kind.as_str()).or_default() += 1;
        }
        let faults: Vec<String> = faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str("| figure | value |\n|---|---|\n");
        out.push_str(&format!(
            "| orders placed / accepted | {} / {} over {:.0} s ({:.1}/s) |\n",
            self.orders,
            self.accepted,
            self.load_seconds,
            self.accepted as f64 / self.load_seconds.max(1e-9)
        ));
        out.push_str(&format!(
            "| faults | {} ({}); {} restarts by the supervisor |\n",
            self.faults.len(),
            faults.join(", "),
            self.restarts
        ));
        out.push_str(&format!(
            "| tries (POST, retries with the same key included) | {} |\n",
            self.tries
        ));
        out.push_str(&format!(
            "| failed tries before the client's retries | {failed} ({:.1} per 1,000){} |\n",
            self.failed_per_thousand(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(": {}", kinds.join(", "))
            }
        ));
        out.push_str(&format!(
            "| refused at once (out of stock, asked of inventory over gRPC) | {} |\n",
            self.refused_at_once
        ));
        out.push_str(&format!(
            "| failed orders after retries | {} |\n",
            self.orders - self.accepted - self.refused_at_once
        ));
        let outcomes: Vec<String> = self.outcomes.iter().map(|(s, n)| format!("{n} {s}")).collect();
        out.push_str(&format!("| outcomes | {} |\n", outcomes.join(", ")));
        let reasons: Vec<String> = self.reasons.iter().map(|(s, n)| format!("{n} × {s}")).collect();
        out.push_str(&format!("| cancelled because | {} |\n", reasons.join(", ")));
        out.push_str(&format!(
            "| orders made big enough for payments to decline | {} |\n",
            self.made_to_decline
        ));
        out.push_str(&format!(
            "| order → final state p50 / p99 / max (during the faults) | {:.0} / {:.0} / {:.0} ms |\n",
            quantile(&to_final, 0.5),
            quantile(&to_final, 0.99),
            to_final.last().copied().unwrap_or(0.0)
        ));
        if self.faults.iter().any(|f| f.long.is_some()) {
            let mut outside = self.to_final_outside_long_pause_ms.clone();
            outside.sort_by(f64::total_cmp);
            out.push_str(&format!(
                "| the same, orders not placed during the long pause of payments ({} of {}) | {:.0} / {:.0} / {:.0} ms |\n",
                outside.len(),
                to_final.len(),
                quantile(&outside, 0.5),
                quantile(&outside, 0.99),
                outside.last().copied().unwrap_or(0.0)
            ));
        }
        for burst in &self.failure_bursts {
            out.push_str(&format!("| failed tries over time | {burst} |\n"));
        }
        for slow in &self.slowest {
            out.push_str(&format!("| a slow order | {slow} |\n"));
        }
        out.push_str("\n| invariant | held | figures |\n|---|---|---|\n");
        for check in &self.checks {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                check.name,
                if check.ok { "yes" } else { "**NO**" },
                check.detail
            ));
        }
        out
    }
}

fn fail(what: &str) -> ! {
    panic!("chaos: {what}")
}

fn cli(system: &System, args: &[&str]) -> String {
    let out = system.cli(args);
    if !out.status.success() {
        fail(&format!(
            "flotilla {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An administrator and a customer; stock deep for products 1–20 but the thin one; payments'
/// limit low enough to decline the run's big orders; the injected refusals. Returns the
/// administrator's and the customer's tokens.
fn prepare(system: &System, options: &Options) -> (String, String) {
    cli(
        system,
        &[
            "config",
            "set",
            "admin",
            r#"{"email":"root@example.com","password":"a long admin password"}"#,
            "--scope",
            "identity",
            "--secret",
        ],
    );
    let admin = (0..400)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            password_token(system, "root@example.com", "a long admin password")
        })
        .unwrap_or_else(|| fail("the administrator could not sign in"));
    for product in 1..=20 {
        let on_hand = if product == THIN { options.thin_stock } else { 1_000_000 };
        let (status, body) = json(http_request(
            system.gateway,
            "PUT",
            &format!("/api/v1/inventory/{product}"),
            &[
                ("Authorization", &format!("Bearer {admin}")),
                ("Content-Type", "application/json"),
            ],
            &json!({ "on_hand": on_hand }).to_string(),
        ));
        if status != 200 {
            fail(&format!("stocking product {product}: {status} {body}"));
        }
    }
    // Orders of 100 units (at least 499.00) are over the limit; the others (1 unit, at most
    // 249.99) are not.
    cli(
        system,
        &["config", "set", "decline_over_minor", "40000", "--scope", "payments"],
    );
    // The injected refusals: a share of the saga's calls at three steps refused (4xx: the
    // saga compensates at once), for as long as the run lasts.
    let lasts = format!("{}s", options.seconds + options.settle.as_secs() + 600);
    for (service, method, path, status) in REFUSALS {
        cli(
            system,
            &[
                "chaos",
                "abort",
                service,
                "--status",
                &status.to_string(),
                "--share",
                &options.refusals.to_string(),
                "--method",
                method,
                "--path",
                path,
                "--for",
                &lasts,
            ],
        );
    }
    let customer = crate::shop::customer(system, "chaos@example.com", "Chaos").unwrap_or_else(|e| fail(&e));
    (admin, customer)
}

/// One try to place an order: the status and the problem type (or why there was no answer),
/// the order id on a 202, and how long the answer says to wait before a retry.
async fn try_once(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: &http::Uri,
    customer: &str,
    order: &Placed,
) -> Result<String, (String, Option<Duration>)> {
    let body = json!({
        "lines": [{"product_id": order.product, "quantity": order.quantity}],
        "shipping_address": {"name": "Chaos", "line1": "Kai 1", "city": "Hamburg", "postal_code": "20457", "country": "DE"}
    })
    .to_string();
    let request = http::Request::post(uri.clone())
        .header("authorization", format!("Bearer {customer}"))
        .header("content-type", "application/json")
        .header("idempotency-key", &order.key)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| (format!("request: {e}"), None))?;
    let response = match tokio::time::timeout(Duration::from_secs(20), client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => return Err(("no answer".into(), None)),
        Err(_) => return Err(("no answer in 20 s".into(), None)),
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Err((format!("{} (body cut)", status.as_u16()), None)),
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    match answer["id"].as_str() {
        Some(id) if status == http::StatusCode::ACCEPTED => Ok(id.to_owned()),
        _ => {
            let kind = answer["type"]
                .as_str()
                .map(|t| t.trim_start_matches("urn:flotilla:problem:").to_owned())
                .unwrap_or_default();
            Err((format!("{} {kind}", status.as_u16()).trim().to_owned(), retry_after))
        }
    }
}

/// Places one order, retrying with its key until it is accepted or `give_up` passes; the
/// order and its failed tries.
async fn place(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    customer: Arc<str>,
    mut order: Placed,
    give_up: Instant,
) -> (Placed, Vec<(String, i64)>) {
    let mut failed = Vec::new();
    order.first_try_ms = epoch_ms();
    loop {
        order.tries += 1;
        match try_once(&client, &uri, &customer, &order).await {
            Ok(id) => {
                order.id = Some(id);
                return (order, failed);
            }
            // A final answer: another try would be refused the same way.
            Err((kind, _)) if kind == "409 out-of-stock" => {
                order.refused = true;
                return (order, failed);
            }
            Err((kind, retry_after)) => {
                failed.push((kind, epoch_ms()));
                if Instant::now() >= give_up {
                    return (order, failed);
                }
                // A hold's Retry-After is whole seconds; the order's own retries back off a
                // little, as a client's would.
                let wait = retry_after
                    .unwrap_or(Duration::from_millis(250))
                    .min(Duration::from_secs(2));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The open-loop load: one order every 1/rate s for the run's length.
async fn load(system: &System, options: &Options, customer: &str) -> (Vec<Placed>, Vec<(String, i64)>, f64) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{}/api/v1/orders", system.gateway)
        .parse()
        .unwrap_or_else(|e| fail(&format!("uri: {e}")));
    let customer: Arc<str> = Arc::from(customer);
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let total = (options.rate * options.seconds as f64).round() as usize;
    let began = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for n in 0..total {
        let at = began + Duration::from_secs_f64(n as f64 / options.rate);
        tokio::time::sleep_until(at.into()).await;
        let big = rng.random_bool(options.refusals);
        let product = if big {
            // Any product but the thin one: a decline must not run it out.
            1 + (rng.random_range(1..20) + THIN - 1) % 20
        } else {
            rng.random_range(1..=20)
        };
        let order = Placed {
            key: format!("chaos-{}-{n}", options.seed),
            big,
            product,
            quantity: if big { 100 } else { 1 },
            first_try_ms: 0,
            id: None,
            tries: 0,
            refused: false,
        };
        let give_up = Instant::now() + Duration::from_secs(120);
        running.spawn(place(client.clone(), uri.clone(), customer.clone(), order, give_up));
    }
    let load_seconds = began.elapsed().as_secs_f64();
    let (mut placed, mut failed) = (Vec::new(), Vec::new());
    while let Some(done) = running.join_next().await {
        if let Ok((order, tries)) = done {
            placed.push(order);
            failed.extend(tries);
        }
    }
    (placed, failed, load_seconds)
}

/// Makes a fault every few seconds until `stop`: a kill or a pause of a random process, and
/// once the long pause of payments.
fn make_faults(system: &System, options: &Options, stop: &AtomicBool) -> Vec<Fault> {
    let mut rng = SmallRng::seed_from_u64(options.seed ^ 0x5eed);
    let began = Instant::now();
    let mut long = options
        .long_payments_pause
        .map(|(pause, share)| (began + Duration::from_secs_f64(options.seconds as f64 * share), pause));
    let mut faults = Vec::new();
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    loop {
        let (low, high) = options.fault_every;
        let wait = rng.random_range(low.as_millis()..=high.as_millis().max(low.as_millis()));
        let next = Instant::now() + Duration::from_millis(wait as u64);
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return faults;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut lasting = None;
        let (kind, args): (&str, Vec<String>) = match long {
            Some((at, pause)) if Instant::now() >= at => {
                long = None;
                lasting = Some(pause);
                (
                    "pause",
                    vec!["pause".into(), "payments".into(), "--for".into(), ms(pause)],
                )
            }
            _ if rng.random_bool(0.5) => ("kill", vec!["kill".into(), "random".into()]),
            _ => {
                let (low, high) = options.pause_for;
                let pause = Duration::from_millis(rng.random_range(low.as_millis()..=high.as_millis()) as u64);
                (
                    "pause",
                    vec!["pause".into(), "random".into(), "--for".into(), ms(pause)],
                )
            }
        };
        // The target's choice follows the run's seed too, so a seed repeats a whole run.
        let seed = rng.random::<u64>().to_string();
        let mut command = vec!["chaos"];
        command.extend(args.iter().map(String::as_str));
        command.extend(["--seed", seed.as_str()]);
        let out = system.cli(&command);
        let said = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            format!("failed: {}", String::from_utf8_lossy(&out.stderr).trim())
        };
        faults.push(Fault {
            at: began.elapsed().as_secs_f64(),
            kind: kind.to_owned(),
            said,
            long: lasting,
        });
    }
}

/// The services' databases, opened beside the running system.
struct Databases {
    orders: Db,
    payments: Db,
    inventory: Db,
    shipping: Db,
    notifications: Db,
}

/// One service's database, read beside the service.
struct Db(sqlx::AnyPool);

impl Db {
    fn pool(&self) -> &sqlx::AnyPool {
        &self.0
    }
}

impl Databases {
    async fn open(system: &System) -> Self {
        let open = |service: &str| {
            let path = system.data_dir().join(service).join(format!("{service}.db"));
            async move {
                sqlx::any::install_default_drivers();
                let pool = sqlx::any::AnyPoolOptions::new()
                    .max_connections(2)
                    .connect(&format!("sqlite://{}?mode=rw", path.display()))
                    .await
                    .unwrap_or_else(|e| fail(&format!("opening {}: {e}", path.display())));
                Db(pool)
            }
        };
        Self {
            orders: open("orders").await,
            payments: open("payments").await,
            inventory: open("inventory").await,
            shipping: open("shipping").await,
            notifications: open("notifications").await,
        }
    }

    async fn stock(&self) -> BTreeMap<i64, (i64, i64)> {
        let rows = sqlx::query("SELECT product_id, on_hand, reserved FROM stock")
            .fetch_all(self.inventory.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                Some((
                    r.try_get("product_id").ok()?,
                    (r.try_get("on_hand").ok()?, r.try_get("reserved").ok()?),
                ))
            })
            .collect()
    }

    /// Every order: (status, total, last update).
    async fn orders(&self) -> BTreeMap<String, (String, i64, i64)> {
        let rows = sqlx::query("SELECT id, status, total_minor, updated_ms FROM orders_view")
            .fetch_all(self.orders.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                Some((
                    r.try_get("id").ok()?,
                    (
                        r.try_get("status").ok()?,
                        r.try_get("total_minor").ok()?,
                        r.try_get("updated_ms").ok()?,
                    ),
                ))
            })
            .collect()
    }

    /// Each cancelled order's reason.
    async fn reasons(&self) -> BTreeMap<String, String> {
        let rows = sqlx::query("SELECT order_id, data FROM order_events WHERE type = 'cancelled'")
            .fetch_all(self.orders.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                let data: String = r.try_get("data").ok()?;
                let data: Value = serde_json::from_str(&data).ok()?;
                Some((r.try_get("order_id").ok()?, data["reason"].as_str()?.to_owned()))
            })
            .collect()
    }

    /// Each order's events: type and time.
    async fn timelines(&self) -> BTreeMap<String, Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT order_id, type, at_ms FROM order_events ORDER BY order_id, seq")
            .fetch_all(self.orders.pool())
            .await
            .unwrap_or_default();
        let mut out: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for row in &rows {
            if let (Ok(order), Ok(kind), Ok(at)) = (
                row.try_get::<String, _>("order_id"),
                row.try_get::<String, _>("type"),
                row.try_get::<i64, _>("at_ms"),
            ) {
                out.entry(order).or_default().push((kind, at));
            }
        }
        out
    }

    /// The event types each order went through.
    async fn histories(&self) -> BTreeMap<String, BTreeSet<String>> {
        let rows = sqlx::query("SELECT order_id, type FROM order_events")
            .fetch_all(self.orders.pool())
            .await
            .unwrap_or_default();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for row in &rows {
            if let (Ok(order), Ok(kind)) = (row.try_get::<String, _>("order_id"), row.try_get::<String, _>("type")) {
                out.entry(order).or_default().insert(kind);
            }
        }
        out
    }

    /// Each cancelled order's kind of cancellation.
    async fn cancel_kinds(&self) -> BTreeMap<String, String> {
        let (reasons, histories, payments) = (self.reasons().await, self.histories().await, self.payments().await);
        let refunded: BTreeSet<&str> = payments
            .iter()
            .filter(|p| p.1 == "refunded")
            .map(|p| p.0.as_str())
            .collect();
        reasons
            .iter()
            .map(|(order, reason)| {
                let history = histories.get(order).cloned().unwrap_or_default();
                (
                    order.clone(),
                    cancel_kind(reason, &history, refunded.contains(order.as_str())),
                )
            })
            .collect()
    }

    /// The order id each idempotency key answered with.
    async fn keys(&self) -> BTreeMap<String, String> {
        let rows = sqlx::query("SELECT key, response FROM idempotency_keys WHERE status = 202")
            .fetch_all(self.orders.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                let key: String = r.try_get("key").ok()?;
                let response: String = r.try_get("response").ok()?;
                let response: Value = serde_json::from_str(&response).ok()?;
                // Keys are kept as `<subject>:<key>`.
                let key = key.split_once(':').map_or(key.clone(), |(_, k)| k.to_owned());
                Some((key, response["id"].as_str()?.to_owned()))
            })
            .collect()
    }

    /// Every payment: (order, state, amount, refunded).
    async fn payments(&self) -> Vec<(String, String, i64, i64)> {
        let rows = sqlx::query("SELECT order_id, state, amount_minor, refunded_minor FROM payments")
            .fetch_all(self.payments.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                Some((
                    r.try_get("order_id").ok()?,
                    r.try_get("state").ok()?,
                    r.try_get("amount_minor").ok()?,
                    r.try_get("refunded_minor").ok()?,
                ))
            })
            .collect()
    }

    /// Every shipment: (order, status, held).
    async fn shipments(&self) -> Vec<(String, String, bool)> {
        let rows = sqlx::query("SELECT order_id, status, held FROM shipments")
            .fetch_all(self.shipping.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                Some((
                    r.try_get("order_id").ok()?,
                    r.try_get("status").ok()?,
                    r.try_get::<i64, _>("held").ok()? != 0,
                ))
            })
            .collect()
    }

    /// Every notification: (order, kind).
    async fn notifications(&self) -> Vec<(String, String)> {
        let rows = sqlx::query("SELECT order_id, kind FROM notifications")
            .fetch_all(self.notifications.pool())
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| Some((r.try_get("order_id").ok()?, r.try_get("kind").ok()?)))
            .collect()
    }

    /// Events written to outboxes and not yet relayed, by service.
    async fn outboxes(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for (name, store) in [
            ("orders", &self.orders),
            ("payments", &self.payments),
            ("inventory", &self.inventory),
            ("shipping", &self.shipping),
            ("notifications", &self.notifications),
        ] {
            // Only services that publish have the table.
            if let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM flotilla_outbox")
                .fetch_one(store.pool())
                .await
            {
                out.insert(name, n);
            }
        }
        out
    }
}

/// Where an order's saga was refused, from its reason and its history (the event types it
/// went through) and whether a payment of it was refunded.
fn cancel_kind(reason: &str, history: &BTreeSet<String>, refunded: bool) -> String {
    let lower = reason.to_ascii_lowercase();
    let kind = if lower.contains("over the limit") || lower.contains("declined") {
        "declined"
    } else if lower.contains("stock") || lower.contains("available") {
        "out of stock"
    } else if lower.contains("could not be completed") {
        "operational (told in general terms)"
    } else if history.contains("shipment_cancelled") && refunded {
        "refused at commit (after capture: refunded)"
    } else if history.contains("shipment_cancelled") {
        "refused at capture (after the shipment)"
    } else if history.contains("payment_released") {
        "refused by shipping (after authorization)"
    } else {
        return format!("other: {reason}");
    };
    kind.to_owned()
}

/// Words that belong to operations, never in what a customer is told.
const OPERATIONAL_WORDS: [&str; 6] = [
    "compensation",
    "no instance",
    "timed out",
    "did not answer",
    "circuit",
    "deadline",
];

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        detail,
    }
}

/// The invariants, from the databases and the APIs.
async fn checks(
    system: &System,
    dbs: &Databases,
    admin: &str,
    placed: &[Placed],
    initial: &BTreeMap<i64, (i64, i64)>,
    require_every_refusal: bool,
) -> Vec<Check> {
    let mut out = Vec::new();
    let orders = dbs.orders().await;
    let accepted: Vec<&Placed> = placed.iter().filter(|p| p.id.is_some()).collect();
    let ids: BTreeMap<&str, &Placed> = accepted.iter().filter_map(|p| Some((p.id.as_deref()?, *p))).collect();

    let lost: Vec<&&str> = ids.keys().filter(|id| !orders.contains_key(**id)).collect();
    out.push(check(
        "no accepted order lost",
        lost.is_empty(),
        format!("{} accepted, {} missing", ids.len(), lost.len()),
    ));
    let keys = dbs.keys().await;
    let mismatched = accepted
        .iter()
        .filter(|p| keys.get(&p.key).map(String::as_str) != p.id.as_deref())
        .count();
    let extra = orders.len().saturating_sub(ids.len());
    out.push(check(
        "no order duplicated",
        mismatched == 0 && extra == 0 && ids.len() == accepted.len(),
        format!(
            "{} orders in the orders database for {} accepted keys; {mismatched} keys answered another id",
            orders.len(),
            accepted.len()
        ),
    ));
    let open: Vec<&str> = ids
        .keys()
        .filter(|id| !matches!(orders.get(**id).map(|o| o.0.as_str()), Some("CONFIRMED" | "CANCELLED")))
        .copied()
        .collect();
    out.push(check(
        "every order settled (confirmed or cancelled)",
        open.is_empty(),
        format!(
            "{} still open{}",
            open.len(),
            open.first().map(|id| format!(", e.g. {id}")).unwrap_or_default()
        ),
    ));
    let status = |id: &str| orders.get(id).map_or("", |o| o.0.as_str());

    // Stock: what was on hand, less what confirmed orders took; nothing left reserved.
    let stock = dbs.stock().await;
    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    for p in &accepted {
        if p.id.as_deref().is_some_and(|id| status(id) == "CONFIRMED") {
            *sold.entry(p.product).or_default() += p.quantity;
        }
    }
    let wrong: Vec<String> = initial
        .iter()
        .filter_map(|(product, (on_hand, _))| {
            let want = on_hand - sold.get(product).copied().unwrap_or(0);
            let (now, reserved) = stock.get(product).copied().unwrap_or((-1, -1));
            (now != want || reserved != 0)
                .then(|| format!("product {product}: {now} on hand (want {want}), {reserved} reserved"))
        })
        .collect();
    out.push(check(
        "stock conserved exactly",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("{} products; {} units sold", initial.len(), sold.values().sum::<i64>())
        } else {
            wrong.join("; ")
        },
    ));

    // Payments.
    let payments = dbs.payments().await;
    let mut by_order: BTreeMap<&str, Vec<&(String, String, i64, i64)>> = BTreeMap::new();
    for payment in &payments {
        by_order.entry(payment.0.as_str()).or_default().push(payment);
    }
    let mut captured_wrong = Vec::new();
    let mut uncompensated = Vec::new();
    for (id, (state, total, _)) in &orders {
        let mine = by_order.get(id.as_str()).cloned().unwrap_or_default();
        if state == "CONFIRMED" {
            let captured: Vec<_> = mine.iter().filter(|p| p.1 == "captured").collect();
            if captured.len() != 1 || captured[0].2 != *total {
                captured_wrong.push(format!("{id}: {mine:?} for {total}"));
            }
        } else if state == "CANCELLED" {
            for p in &mine {
                let undone = matches!(p.1.as_str(), "voided" | "declined") || (p.1 == "refunded" && p.3 == p.2);
                if !undone {
                    uncompensated.push(format!("{id}: {} {}", p.1, p.2));
                }
            }
        }
    }
    out.push(check(
        "one captured payment per confirmed order, for its total",
        captured_wrong.is_empty(),
        format!(
            "{} wrong{}",
            captured_wrong.len(),
            captured_wrong.first().map(|w| format!(": {w}")).unwrap_or_default()
        ),
    ));
    let standing = payments.iter().filter(|p| p.1 == "authorized").count();
    let (status_code, report) = json(http_request(
        system.gateway,
        "GET",
        "/api/v1/payments/reconciliation",
        &[("Authorization", &format!("Bearer {admin}"))],
        "",
    ));
    let reported = report["standing"].as_array().map_or(usize::MAX, Vec::len);
    out.push(check(
        "no other authorization left standing",
        standing == 0 && reported == 0,
        format!(
            "{standing} authorized in payments' database; reconciliation ({status_code}): {reported} standing, {} voided by the sweep",
            report["voided_since_start"]
        ),
    ));
    out.push(check(
        "no uncompensated payment on a cancelled order",
        uncompensated.is_empty(),
        format!(
            "{} left{}",
            uncompensated.len(),
            uncompensated.first().map(|w| format!(": {w}")).unwrap_or_default()
        ),
    ));

    // Shipments.
    let shipments = dbs.shipments().await;
    let mut shipped: BTreeMap<&str, Vec<&(String, String, bool)>> = BTreeMap::new();
    for shipment in &shipments {
        shipped.entry(shipment.0.as_str()).or_default().push(shipment);
    }
    let mut wrong_shipments = Vec::new();
    for (id, (state, _, _)) in &orders {
        let mine = shipped.get(id.as_str()).cloned().unwrap_or_default();
        let ok = match state.as_str() {
            "CONFIRMED" => mine.len() == 1 && mine[0].1 != "cancelled" && !mine[0].2,
            "CANCELLED" => mine.iter().all(|s| s.1 == "cancelled"),
            _ => true,
        };
        if !ok {
            wrong_shipments.push(format!("{id} ({state}): {mine:?}"));
        }
    }
    out.push(check(
        "one released shipment per confirmed order, none for a cancelled one",
        wrong_shipments.is_empty(),
        format!(
            "{} shipments; {} wrong{}",
            shipments.len(),
            wrong_shipments.len(),
            wrong_shipments.first().map(|w| format!(": {w}")).unwrap_or_default()
        ),
    ));

    // Notifications.
    let notes = dbs.notifications().await;
    let mut told: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (order, kind) in &notes {
        told.entry(order.as_str()).or_default().push(kind.as_str());
    }
    let mut wrong_notes = Vec::new();
    for (id, (state, _, _)) in &orders {
        let want: &[&str] = match state.as_str() {
            "CONFIRMED" => &["order.confirmed"],
            "CANCELLED" => &["order.cancelled"],
            _ => continue,
        };
        let got = told.get(id.as_str()).cloned().unwrap_or_default();
        if got != want {
            wrong_notes.push(format!("{id} ({state}): {got:?}"));
        }
    }
    out.push(check(
        "one notification per order and kind",
        wrong_notes.is_empty(),
        format!(
            "{} notifications; {} orders wrong{}",
            notes.len(),
            wrong_notes.len(),
            wrong_notes.first().map(|w| format!(": {w}")).unwrap_or_default()
        ),
    ));

    // Events: every outbox relayed, nothing dead-lettered.
    let outboxes = dbs.outboxes().await;
    let pending: i64 = outboxes.values().sum();
    let token = std::fs::read_to_string(system.data_dir().join("token"))
        .map(|t| t.trim().to_owned())
        .ok();
    let events = flotilla::events::EventsClient::new(&system.control.to_string(), token);
    let dead: Vec<String> = match events.topics().await {
        Ok(topics) => topics
            .iter()
            .filter(|t| t.topic.ends_with(".dead-letter") && t.events > 0)
            .map(|t| format!("{} ({})", t.topic, t.events))
            .collect(),
        Err(err) => vec![format!("topics unreadable: {err}")],
    };
    out.push(check(
        "no event lost (outboxes empty, no dead letter)",
        pending == 0 && dead.is_empty(),
        format!(
            "outboxes {outboxes:?}; dead letters: {}",
            if dead.is_empty() {
                "none".into()
            } else {
                dead.join(", ")
            }
        ),
    ));

    // What customers were told.
    let reasons = dbs.reasons().await;
    let leaked: Vec<&String> = reasons
        .values()
        .filter(|r| OPERATIONAL_WORDS.iter().any(|w| r.to_ascii_lowercase().contains(w)))
        .collect();
    out.push(check(
        "the customer is told the business reason, never an operational error",
        leaked.is_empty(),
        format!(
            "{} cancellations; {} operational{}",
            reasons.len(),
            leaked.len(),
            leaked.first().map(|w| format!(": {w}")).unwrap_or_default()
        ),
    ));
    if require_every_refusal {
        let kinds: BTreeSet<String> = dbs.cancel_kinds().await.into_values().collect();
        let refunded = payments.iter().filter(|p| p.1 == "refunded").count();
        let voided = payments.iter().filter(|p| p.1 == "voided").count();
        let cancelled_shipments = shipments.iter().filter(|s| s.1 == "cancelled").count();
        let every = [
            "declined",
            "out of stock",
            "refused by shipping (after authorization)",
            "refused at capture (after the shipment)",
            "refused at commit (after capture: refunded)",
        ];
        // Orders asks inventory before it accepts an order: the thin product's shortage is
        // mostly refused at once (409), and reaches the saga's reservation only in a race.
        let refused_at_once = placed.iter().filter(|p| p.refused).count();
        let missing: Vec<&&str> = every
            .iter()
            .filter(|k| {
                let covered = kinds.contains(**k) || (**k == "out of stock" && refused_at_once > 0);
                !covered
            })
            .collect();
        out.push(check(
            "every compensation ran (a cancellation or refusal at every step)",
            missing.is_empty() && refunded > 0 && voided > 0 && cancelled_shipments > 0,
            format!(
                "{voided} payments voided, {refunded} refunded, {cancelled_shipments} shipments cancelled, {refused_at_once} refused at once for want of stock{}",
                if missing.is_empty() {
                    String::new()
                } else {
                    format!("; no cancellation {missing:?}")
                }
            ),
        ));
    }
    out
}

/// Runs the chaos against a system that is up, and checks the invariants once the system
/// has settled (or its time to settle ran out).
pub fn run(system: &System, options: &Options) -> Report {
    let (admin, customer) = prepare(system, options);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    let dbs = runtime.block_on(Databases::open(system));
    let initial = runtime.block_on(dbs.stock());

    let stop = Arc::new(AtomicBool::new(false));
    let faults = Arc::new(Mutex::new(Vec::new()));
    let (placed, failed, load_seconds) = std::thread::scope(|scope| {
        let (stop_faults, made) = (stop.clone(), faults.clone());
        scope.spawn(move || {
            let list = make_faults(system, options, &stop_faults);
            if let Ok(mut made) = made.lock() {
                *made = list;
            }
        });
        let loaded = runtime.block_on(load(system, options, &customer));
        stop.store(true, Ordering::Relaxed);
        loaded
    });
    let faults = faults.lock().map(|f| f.clone()).unwrap_or_default();
    let began_ms = placed.iter().map(|p| p.first_try_ms).min().unwrap_or(0);
    // The long pause of payments, in wall-clock ms (the fault thread and the load start
    // together).
    let long_pause = faults.iter().find_map(|f| {
        let pause = f.long?;
        let from = began_ms + (f.at * 1000.0) as i64;
        Some((from, from + pause.as_millis() as i64))
    });

    // Settling: every accepted order final, then the invariants (the sweep and the relays
    // may need a few more seconds after that).
    let deadline = Instant::now() + options.settle;
    let report_checks = runtime.block_on(async {
        loop {
            let orders = dbs.orders().await;
            let settled = placed
                .iter()
                .filter_map(|p| p.id.as_deref())
                .all(|id| matches!(orders.get(id).map(|o| o.0.as_str()), Some("CONFIRMED" | "CANCELLED")));
            if settled || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let deadline = Instant::now()
            .max(deadline)
            .min(Instant::now() + Duration::from_secs(90));
        loop {
            let found = checks(system, &dbs, &admin, &placed, &initial, options.refusals > 0.0).await;
            if found.iter().all(|c| c.ok) || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });

    let orders = runtime.block_on(dbs.orders());
    let kinds = runtime.block_on(dbs.cancel_kinds());
    let timelines = runtime.block_on(dbs.timelines());
    let mut slow: Vec<(i64, &Placed)> = Vec::new();
    let mut report = Report {
        orders: placed.len(),
        accepted: placed.iter().filter(|p| p.id.is_some()).count(),
        refused_at_once: placed.iter().filter(|p| p.refused).count(),
        tries: placed.iter().map(|p| p.tries as usize).sum(),
        faults,
        restarts: system.output().lines().filter(|l| l.contains("restarting in")).count(),
        checks: report_checks,
        load_seconds,
        ..Report::default()
    };
    let mut by_kind: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (kind, at) in failed {
        *report.failed_tries.entry(kind.clone()).or_default() += 1;
        by_kind.entry(kind).or_default().push(at);
    }
    // When the failed tries came, in bursts (a gap of 2 s starts a new one), to set beside
    // the faults.
    for (kind, mut times) in by_kind {
        times.sort_unstable();
        let mut bursts: Vec<(i64, i64, usize)> = Vec::new();
        for at in times {
            match bursts.last_mut() {
                Some((_, last, n)) if at - *last <= 2_000 => {
                    *last = at;
                    *n += 1;
                }
                _ => bursts.push((at, at, 1)),
            }
        }
        let rel = |t: i64| (t - began_ms) as f64 / 1000.0;
        let text: Vec<String> = bursts
            .iter()
            .map(|(from, to, n)| format!("{:.1}–{:.1} s ({n})", rel(*from), rel(*to)))
            .collect();
        report.failure_bursts.push(format!("{kind}: {}", text.join(", ")));
    }
    for p in &placed {
        let Some(id) = p.id.as_deref() else { continue };
        let (status, _, updated) = orders.get(id).cloned().unwrap_or_default();
        *report
            .outcomes
            .entry(if status.is_empty() {
                "missing".into()
            } else {
                status.clone()
            })
            .or_default() += 1;
        if matches!(status.as_str(), "CONFIRMED" | "CANCELLED") {
            let took = updated - p.first_try_ms;
            report.to_final_ms.push(took as f64);
            let during_long_pause = long_pause.is_some_and(|(from, to)| (from..=to).contains(&p.first_try_ms));
            if !during_long_pause {
                report.to_final_outside_long_pause_ms.push(took as f64);
            }
            slow.push((took, p));
        }
        if status == "CANCELLED" {
            let kind = kinds.get(id).cloned().unwrap_or_else(|| "no reason".to_owned());
            *report.reasons.entry(kind).or_default() += 1;
        }
    }
    slow.sort_by_key(|(took, _)| std::cmp::Reverse(*took));
    for (took, p) in slow.iter().take(3) {
        let Some(id) = p.id.as_deref() else { continue };
        let steps: Vec<String> = timelines
            .get(id)
            .map(|events| {
                events
                    .iter()
                    .map(|(kind, at)| format!("{kind} +{:.1}s", (at - p.first_try_ms) as f64 / 1000.0))
                    .collect()
            })
            .unwrap_or_default();
        report.slowest.push(format!(
            "{:.1} s, first try at +{:.1} s of the run: {}",
            *took as f64 / 1000.0,
            (p.first_try_ms - began_ms) as f64 / 1000.0,
            steps.join(", ")
        ));
    }
    report.made_to_decline = placed.iter().filter(|p| p.big).count();
    report
}
