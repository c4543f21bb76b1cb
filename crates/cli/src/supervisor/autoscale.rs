//! Autoscaling under `up`, with the Kubernetes HPA's algorithm and numbers, so a laptop and a
//! cluster scale a service alike.
//!
//! Every `period` each autoscaled service's running instances are measured: CPU from
//! `/proc/<pid>/stat` (user + system time over the period, the process's descendants
//! included) as a share of the CPU request, and, when a `target_inflight` is set, the
//! requests each is serving (`flotilla_http_server_active_requests` on its `/metrics`,
//! sampled every second). Only instances registered for a whole period have a sample: one
//! still starting burns CPU on its start, not on traffic (the HPA sets unready pods aside
//! the same way). Then, per metric:
//!
//! - `ratio = average / target`; within the 10 % tolerance nothing changes;
//! - `desired = ceil(ratio × instances sampled)`; when some instances have no sample, the
//!   average is taken again counting them as 0 (going up) or as the target (going down), and
//!   a change that this turns around or into the tolerance is dropped;
//!
//! the largest of the metrics' proposals is the recommendation. Up goes at once (at most
//! `max(2 × current, current + 4)` in one step, the HPA's default policy); down goes only to
//! the highest recommendation within the scale-down window (the HPA's stabilization), so a dip
//! does not drop instances needed a moment later. The result is kept within `min..=max`.
//!
//! A count the autoscaler did not set (`flotilla scale`, an edited `instances`) is where it
//! continues from: that count is taken as a recommendation, so the service is not scaled below
//! it before a window has passed. At 0 instances it leaves the service alone, as the HPA does.
//! Changes go through [`Fleet::scale`]: new instances take traffic once registered, removed
//! ones deregister and drain. Each is said on the supervisor's output with its reason, and
//! the state is served on the supervisor's socket for `flotilla status`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla::discovery::RegistryClient;
use flotilla::http::HttpClient;
use flotilla_api::registry::meta;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fleet::Fleet;
use super::output::Output;
use crate::manifest::{cpu_quantity, Autoscale, Manifest, Resources};

/// Within this much of 1, the ratio of a metric to its target changes nothing: the HPA's
/// default tolerance, so noise around the target does not flap the count.
pub const TOLERANCE: f64 = 0.1;

/// How often in-flight requests are sampled between decisions: one read of a gauge is noise.
const INFLIGHT_EVERY: Duration = Duration::from_secs(1);

/// `/proc` gives CPU times in USER_HZ, 100 on every Linux architecture (the SDK's process
/// metrics read them the same way).
const TICKS_PER_SECOND: f64 = 100.0;

/// How long one instance's `/metrics` may take before its in-flight sample is skipped.
const METRICS_TIMEOUT: Duration = Duration::from_millis(500);

/// The gauge of requests an SDK instance is serving now.
const INFLIGHT_METRIC: &str = "flotilla_http_server_active_requests";

/// What an autoscaler measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// CPU used, in percent of the CPU request.
    Cpu,
    /// Requests being served, per instance.
    Inflight,
}

/// One metric over a service's running instances: a sample per instance, `None` for one
/// without (not registered for a whole period yet, restarted, or not exposing the metric).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measured {
    /// The metric.
    pub(crate) kind: MetricKind,
    /// Its target per instance.
    pub(crate) target: f64,
    /// One entry per running instance.
    pub(crate) samples: Vec<Option<f64>>,
}

/// One metric's proposal: the instance count it asks for, and the average it saw.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Proposal {
    kind: MetricKind,
    replicas: u32,
    average: f64,
    target: f64,
}

/// The HPA's replica calculation for one metric; `None` without a single sample.
fn propose(current: u32, metric: &Measured) -> Option<Proposal> {
    let sampled: Vec<f64> = metric.samples.iter().flatten().copied().collect();
    if sampled.is_empty() || metric.target <= 0.0 {
        return None;
    }
    let average = sampled.iter().sum::<f64>() / sampled.len() as f64;
    let ratio = average / metric.target;
    let proposal = |replicas| {
        Some(Proposal {
            kind: metric.kind,
            replicas,
            average,
            target: metric.target,
        })
    };
    let missing = metric.samples.len() - sampled.len();
    if missing == 0 {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return proposal(current);
        }
        return proposal(ceil(ratio * sampled.len() as f64));
    }
    // Instances without a sample count as idle going up and as on target going down: the
    // move is then the most cautious one the samples allow.
    let filler = if ratio < 1.0 { metric.target } else { 0.0 };
    let total = sampled.iter().sum::<f64>() + filler * missing as f64;
    let all = metric.samples.len() as f64;
    let new_ratio = total / all / metric.target;
    let turned = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if (new_ratio - 1.0).abs() <= TOLERANCE || turned {
        return proposal(current);
    }
    let replicas = ceil(new_ratio * all);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return proposal(current);
    }
    proposal(replicas)
}

/// `ceil`, forgiving the float error of a product that is whole (2.0000000001 is 2).
fn ceil(x: f64) -> u32 {
    let rounded = (x - 1e-9).ceil().max(0.0);
    if rounded >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        rounded as u32
    }
}

/// The recommendations of the last scale-down window, oldest first: a scale-down goes only as
/// low as the highest of them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Recommendations(VecDeque<(Instant, u32)>);

impl Recommendations {
    /// Records `replicas` as recommended at `at`, forgetting what fell out of the window.
    pub(crate) fn record(&mut self, at: Instant, replicas: u32, window: Duration) {
        self.0.push_back((at, replicas));
        while self
            .0
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > window)
        {
            self.0.pop_front();
        }
    }

    /// The highest recommendation in the window.
    fn highest(&self) -> Option<u32> {
        self.0.iter().map(|(_, r)| *r).max()
    }
}

/// What one evaluation settled on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The instance count wanted now.
    pub(crate) desired: u32,
    /// The metrics' recommendation before stabilization and bounds; `None` without samples.
    pub(crate) recommendation: Option<u32>,
    /// Why, for people: the metrics, driving one first, then what limited the move.
    pub(crate) reason: String,
    /// The average CPU utilization of the sampled instances, in percent (`None`: no sample).
    pub(crate) cpu: Option<f64>,
    /// The average in-flight requests of the sampled instances (`None`: no sample).
    pub(crate) inflight: Option<f64>,
}

fn describe(p: &Proposal, resources: &Resources) -> String {
    match p.kind {
        MetricKind::Cpu => format!(
            "cpu {:.0}% of {} request, target {:.0}%",
            p.average,
            cpu_quantity(resources.cpu_millis),
            p.target
        ),
        MetricKind::Inflight => format!("in-flight {:.1} per instance, target {}", p.average, p.target),
    }
}

fn window_text(window: Duration) -> String {
    humantime::format_duration(window).to_string()
}

/// One evaluation of the HPA's algorithm at `now`: the metrics' proposals, the largest
/// recommended, up at once within the rate limit, down to the window's highest
/// recommendation, within `min..=max`.
pub(crate) fn decide(
    current: u32,
    metrics: &[Measured],
    autoscale: &Autoscale,
    resources: &Resources,
    history: &mut Recommendations,
    now: Instant,
) -> Outcome {
    let mut proposals: Vec<Proposal> = metrics.iter().filter_map(|m| propose(current, m)).collect();
    // The metric that asks for the most drives the decision, and is named first.
    proposals.sort_by_key(|p| std::cmp::Reverse(p.replicas));
    let average = |kind| proposals.iter().find(|p| p.kind == kind).map(|p| p.average);
    let (cpu, inflight) = (average(MetricKind::Cpu), average(MetricKind::Inflight));
    let mut said: Vec<String> = proposals.iter().map(|p| describe(p, resources)).collect();
    if said.is_empty() {
        said.push("no samples yet".to_owned());
    }
    let recommendation = proposals.first().map(|p| p.replicas);
    let mut desired = current;
    if let Some(recommended) = recommendation {
        history.record(now, recommended, autoscale.scale_down_window);
        let highest = history.highest().unwrap_or(recommended);
        if recommended > current {
            desired = recommended;
            let limit = current.saturating_mul(2).max(current.saturating_add(4));
            // Named only when it binds: max may cut deeper.
            if desired > limit && limit < autoscale.max {
                desired = limit;
                said.push(format!("at most {limit} in one step"));
            }
        } else if highest < current {
            desired = highest;
            said.push(format!(
                "the highest recommendation within the last {}",
                window_text(autoscale.scale_down_window)
            ));
        }
    }
    if desired > autoscale.max {
        desired = autoscale.max;
        said.push(format!("capped at max {}", autoscale.max));
    }
    if desired < autoscale.min {
        desired = autoscale.min;
        said.push(format!("raised to min {}", autoscale.min));
    }
    Outcome {
        desired,
        recommendation,
        reason: said.join("; "),
        cpu,
        inflight,
    }
}

/// An autoscaled service's state, as the supervisor's socket serves it and `flotilla status`
/// shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleStatus {
    /// The service.
    pub service: String,
    /// Instances running now.
    pub instances: u32,
    /// The count the last evaluation settled on.
    pub desired: u32,
    /// What the metrics recommended then, before stabilization and bounds.
    pub recommendation: Option<u32>,
    /// The fewest instances.
    pub min: u32,
    /// The most instances.
    pub max: u32,
    /// Each instance's CPU request, in millicores: what CPU utilization is a share of.
    pub cpu_request_millis: u64,
    /// CPU utilization: the average over sampled instances, and the target, in percent.
    pub cpu: Option<MetricStatus>,
    /// In-flight requests per instance: the average, and the target.
    pub inflight: Option<MetricStatus>,
    /// Instances with a sample in the last evaluation.
    pub sampled: u32,
    /// How often it evaluates, in milliseconds.
    pub period_ms: u64,
    /// The scale-down stabilization window, in milliseconds.
    pub scale_down_window_ms: u64,
    /// When it last evaluated (Unix milliseconds).
    pub evaluated_ms: Option<u64>,
    /// Its last change of the instance count.
    pub last_decision: Option<Decision>,
    /// Why it does not decide now, when it does not (no samples yet, stopped at 0).
    pub note: Option<String>,
}

/// A metric's reading against its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    /// The average over the sampled instances (`None`: no sample).
    pub current: Option<f64>,
    /// The target per instance.
    pub target: f64,
}

/// One change of a service's instance count by the autoscaler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Instances before.
    pub from: u32,
    /// Instances after.
    pub to: u32,
    /// Why, as said on the supervisor's output.
    pub reason: String,
}

/// What the socket answers: every autoscaled service's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutoscaleList {
    /// By service name.
    pub services: Vec<AutoscaleStatus>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A service's autoscaling in a line: `between 1 and 4 instances on cpu 70% of 100m request
/// (every 15s; scale-down window 5m)`.
fn summary(settings: &Settings) -> String {
    let Settings { autoscale, resources } = settings;
    let mut targets = Vec::new();
    if let Some(cpu) = autoscale.target_cpu {
        targets.push(format!("cpu {cpu}% of {} request", cpu_quantity(resources.cpu_millis)));
    }
    if let Some(inflight) = autoscale.target_inflight {
        targets.push(format!("{inflight} in-flight requests per instance"));
    }
    format!(
        "between {} and {} instances on {} (every {}; scale-down window {})",
        autoscale.min,
        autoscale.max,
        targets.join(" and "),
        window_text(autoscale.period),
        window_text(autoscale.scale_down_window)
    )
}

/// Puts a service's settings in its state.
fn settle(state: &mut AutoscaleStatus, settings: &Settings) {
    let Settings { autoscale, resources } = settings;
    state.min = autoscale.min;
    state.max = autoscale.max;
    state.cpu_request_millis = resources.cpu_millis;
    state.period_ms = u64::try_from(autoscale.period.as_millis()).unwrap_or(u64::MAX);
    state.scale_down_window_ms = u64::try_from(autoscale.scale_down_window.as_millis()).unwrap_or(u64::MAX);
    let metric = |current: Option<&MetricStatus>, target: f64| MetricStatus {
        current: current.and_then(|m| m.current),
        target,
    };
    state.cpu = autoscale.target_cpu.map(|t| metric(state.cpu.as_ref(), f64::from(t)));
    state.inflight = autoscale.target_inflight.map(|t| metric(state.inflight.as_ref(), t));
}

/// One service's settings, as the manifest says them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    autoscale: Autoscale,
    resources: Resources,
}

struct Running {
    settings: watch::Sender<Settings>,
    status: Arc<Mutex<AutoscaleStatus>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a service's autoscaling task measures and acts through.
#[derive(Clone)]
struct Probe {
    fleet: Arc<Fleet>,
    output: Arc<Output>,
    registry: RegistryClient,
    http: HttpClient,
}

/// The autoscaling of every service whose manifest entry has `autoscale`: a task each.
pub(super) struct Autoscaler {
    probe: Probe,
    services: Mutex<BTreeMap<String, Running>>,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Autoscaler {
    /// An autoscaler that scales through `fleet`, finds instances in `registry` and says its
    /// decisions on `output`; it runs nothing until [`Autoscaler::configure`].
    pub(super) fn new(fleet: Arc<Fleet>, output: Arc<Output>, registry: RegistryClient) -> Self {
        Self {
            probe: Probe {
                fleet,
                output,
                registry,
                http: HttpClient::new(METRICS_TIMEOUT),
            },
            services: Mutex::new(BTreeMap::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Makes the autoscaled services those of `manifest`: a service newly autoscaled gets a
    /// task, one whose settings changed has them from its next evaluation, one no longer
    /// autoscaled is left to the manifest's `instances`. Returns a line for people per service
    /// whose autoscaling started, changed or ended.
    pub(super) fn configure(&self, manifest: &Manifest) -> Vec<String> {
        if *self.stop.borrow() {
            return Vec::new();
        }
        let mut services = lock(&self.services);
        let mut changed = Vec::new();
        let wanted: BTreeMap<&str, Settings> = manifest
            .services
            .iter()
            .filter_map(|s| {
                s.autoscale.map(|autoscale| {
                    (
                        s.name.as_str(),
                        Settings {
                            autoscale,
                            resources: s.resources,
                        },
                    )
                })
            })
            .collect();
        services.retain(|name, running| {
            let keep = wanted.contains_key(name.as_str());
            if !keep {
                running.task.abort();
                changed.push(format!("{name}: no longer autoscaled"));
            }
            keep
        });
        for (name, settings) in wanted {
            match services.get(name) {
                Some(running) => {
                    if running.settings.send_if_modified(|s| {
                        let modified = *s != settings;
                        *s = settings;
                        modified
                    }) {
                        settle(&mut lock(&running.status), &settings);
                        changed.push(format!("{name}: autoscaling changed: {}", summary(&settings)));
                    }
                }
                None => {
                    changed.push(format!("{name}: autoscaling {}", summary(&settings)));
                    let (tx, rx) = watch::channel(settings);
                    let mut state = AutoscaleStatus {
                        service: name.to_owned(),
                        note: Some("not evaluated yet".to_owned()),
                        ..AutoscaleStatus::default()
                    };
                    settle(&mut state, &settings);
                    let status = Arc::new(Mutex::new(state));
                    let task = tokio::spawn(run(
                        self.probe.clone(),
                        name.to_owned(),
                        rx,
                        status.clone(),
                        self.stop.subscribe(),
                    ));
                    services.insert(
                        name.to_owned(),
                        Running {
                            settings: tx,
                            status,
                            task,
                        },
                    );
                }
            }
        }
        changed
    }

    /// Every autoscaled service's state.
    pub(super) fn statuses(&self) -> AutoscaleList {
        AutoscaleList {
            services: lock(&self.services).values().map(|r| lock(&r.status).clone()).collect(),
        }
    }

    /// Stops autoscaling for good and waits for a change under way (a drain) to finish, so
    /// nothing starts while the system stops.
    pub(super) async fn stop(&self) {
        // Kept even without a task listening, so a later `configure` starts nothing.
        self.stop.send_replace(true);
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.services))
            .into_values()
            .map(|r| r.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// One CPU reading of an instance.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    /// The process, by pid and start time (a pid reused is another process).
    pid: u32,
    started: u64,
    /// User and system ticks of it and its descendants.
    ticks: u64,
    at: Instant,
    /// Whether it was registered then: only a period that began registered is a sample.
    registered: bool,
}

/// A process as `/proc/<pid>/stat` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    /// utime + stime + cutime + cstime: its own time and that of children it reaped, so a
    /// descendant's time moves to its parent when it exits instead of vanishing.
    ticks: u64,
    started: u64,
}

/// Parses one `/proc/<pid>/stat` line.
fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: fields are counted after the last `)`.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        started: field(22)?,
    })
}

/// Every process's stat, by pid.
fn proc_table() -> BTreeMap<u32, Stat> {
    let mut table = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            table.insert(pid, stat);
        }
    }
    table
}

/// The ticks of `pid` and all its descendants, with its start time.
fn tree_ticks(table: &BTreeMap<u32, Stat>, pid: u32) -> Option<(u64, u64)> {
    let root = table.get(&pid)?;
    let mut total = root.ticks;
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (child, stat) in table {
            if stat.ppid == parent && *child != parent {
                total += stat.ticks;
                frontier.push(*child);
            }
        }
    }
    Some((total, root.started))
}

/// A registered instance of the service, as the registry lists it.
struct Registered {
    /// Where its `/metrics` is served, plain.
    metrics: Option<String>,
}

async fn registered(probe: &Probe, service: &str) -> BTreeMap<String, Registered> {
    let Ok(list) = probe.registry.instances(Some(service), None, Duration::ZERO).await else {
        return BTreeMap::new();
    };
    list.instances
        .into_iter()
        .filter_map(|i| {
            let name = i.metadata.get(meta::SUPERVISOR_NAME)?.clone();
            // Under mTLS the service listener wants a certificate: `/metrics` is on the
            // plain admin listener then.
            let mtls = i.metadata.get(meta::TLS).map(String::as_str) == Some(meta::TLS_MUTUAL);
            let addr = match i.metadata.get(meta::METRICS_ADDRESS) {
                Some(admin) => Some(admin.clone()),
                None if !mtls => Some(i.address.clone()),
                None => None,
            };
            let path = i
                .metadata
                .get(meta::METRICS_PATH)
                .cloned()
                .unwrap_or_else(|| "/metrics".to_owned());
            let metrics = addr.map(|a| {
                let base = if a.contains("://") { a } else { format!("http://{a}") };
                format!("{base}{path}")
            });
            Some((name, Registered { metrics }))
        })
        .collect()
}

/// The in-flight gauge in a Prometheus text page (the sum of its series).
fn parse_inflight(page: &str) -> Option<f64> {
    let mut found = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(INFLIGHT_METRIC) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.trim().parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

async fn inflight_of(http: &HttpClient, url: &str) -> Option<f64> {
    let (status, _, _, body) = http
        .send_raw::<()>(http::Method::GET, url, None, None, Some(METRICS_TIMEOUT))
        .await
        .ok()?;
    if !status.is_success() {
        return None;
    }
    parse_inflight(&String::from_utf8_lossy(&body))
}

/// In-flight samples of each instance since the last evaluation.
type InflightSums = BTreeMap<String, (f64, u32)>;

async fn sample_inflight(probe: &Probe, service: &str, sums: &mut InflightSums) {
    let registered = registered(probe, service).await;
    let reads = registered.iter().filter_map(|(name, r)| {
        let url = r.metrics.clone()?;
        let http = probe.http.clone();
        Some(async move { (name.clone(), inflight_of(&http, &url).await) })
    });
    for (name, value) in futures_util::future::join_all(reads).await {
        if let Some(value) = value {
            let entry = sums.entry(name).or_insert((0.0, 0));
            entry.0 += value;
            entry.1 += 1;
        }
    }
}

/// One service's autoscaling, until stopped.
async fn run(
    probe: Probe,
    service: String,
    mut settings: watch::Receiver<Settings>,
    status: Arc<Mutex<AutoscaleStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut history = Recommendations::default();
    let mut readings: BTreeMap<String, CpuReading> = BTreeMap::new();
    let mut inflight = InflightSums::new();
    // The count seen or set last: another one was set by someone else.
    let mut last_seen: Option<u32> = None;
    let mut last_evaluated = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        let now_settings = *settings.borrow_and_update();
        let autoscale = now_settings.autoscale;
        let step = autoscale.period.min(INFLIGHT_EVERY);
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            // New settings are taken at once; their bounds apply at the next evaluation.
            changed = settings.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
            _ = tokio::time::sleep(step) => {}
        }
        if autoscale.target_inflight.is_some() {
            sample_inflight(&probe, &service, &mut inflight).await;
        }
        if last_evaluated.elapsed() + Duration::from_millis(50) < autoscale.period {
            continue;
        }
        last_evaluated = Instant::now();
        evaluate(
            &probe,
            &service,
            &now_settings,
            &mut Memory {
                history: &mut history,
                readings: &mut readings,
                inflight: &mut inflight,
                last_seen: &mut last_seen,
            },
            &status,
        )
        .await;
    }
}

/// What a service's task keeps between evaluations.
struct Memory<'a> {
    history: &'a mut Recommendations,
    readings: &'a mut BTreeMap<String, CpuReading>,
    inflight: &'a mut InflightSums,
    last_seen: &'a mut Option<u32>,
}

async fn evaluate(
    probe: &Probe,
    service: &str,
    settings: &Settings,
    memory: &mut Memory<'_>,
    status: &Mutex<AutoscaleStatus>,
) {
    let Settings { autoscale, resources } = settings;
    let Some(names) = probe.fleet.counts().await.remove(service) else {
        return;
    };
    let current = u32::try_from(names.len()).unwrap_or(u32::MAX);
    let registered = registered(probe, service).await;
    let processes = probe.fleet.processes();
    let table = proc_table();
    let now = Instant::now();

    // CPU: each instance's time since its last reading, over the CPU request.
    let mut cpu = Vec::with_capacity(names.len());
    let mut fresh = BTreeMap::new();
    for name in &names {
        let reading = processes
            .get(name)
            .and_then(|p| p.pid.get())
            .and_then(|pid| tree_ticks(&table, pid).map(|(ticks, started)| (pid, ticks, started)))
            .map(|(pid, ticks, started)| CpuReading {
                pid,
                started,
                ticks,
                at: now,
                registered: registered.contains_key(name),
            });
        let sample = match (memory.readings.get(name), &reading) {
            (Some(before), Some(after))
                if before.registered && before.pid == after.pid && before.started == after.started =>
            {
                let seconds = after.at.saturating_duration_since(before.at).as_secs_f64();
                (seconds > 0.0).then(|| {
                    let used_millis =
                        after.ticks.saturating_sub(before.ticks) as f64 / TICKS_PER_SECOND / seconds * 1000.0;
                    used_millis / resources.cpu_millis as f64 * 100.0
                })
            }
            _ => None,
        };
        cpu.push(sample);
        if let Some(reading) = reading {
            fresh.insert(name.clone(), reading);
        }
    }
    *memory.readings = fresh;

    let mut metrics = Vec::new();
    if let Some(target) = autoscale.target_cpu {
        metrics.push(Measured {
            kind: MetricKind::Cpu,
            target: f64::from(target),
            samples: cpu.clone(),
        });
    }
    if let Some(target) = autoscale.target_inflight {
        let sums = std::mem::take(memory.inflight);
        metrics.push(Measured {
            kind: MetricKind::Inflight,
            target,
            samples: names
                .iter()
                .map(|n| sums.get(n).filter(|(_, k)| *k > 0).map(|(sum, k)| sum / f64::from(*k)))
                .collect(),
        });
    }
    let sampled = metrics
        .iter()
        .map(|m| m.samples.iter().flatten().count())
        .max()
        .unwrap_or(0);

    let mut state = lock(status).clone();
    settle(&mut state, settings);
    state.instances = current;
    state.evaluated_ms = Some(unix_ms());
    state.sampled = u32::try_from(sampled).unwrap_or(u32::MAX);

    if current == 0 {
        // Stopped by hand: the HPA does not scale from zero either.
        *memory.last_seen = Some(0);
        state.desired = 0;
        state.recommendation = None;
        state.note = Some("at 0 instances: not autoscaled until scaled up (`flotilla scale`)".to_owned());
        *lock(status) = state;
        return;
    }
    if *memory.last_seen != Some(current) {
        // Started, or scaled by someone else: continue from there, not below it within a window.
        memory.history.record(now, current, autoscale.scale_down_window);
    }
    let outcome = decide(current, &metrics, autoscale, resources, memory.history, now);
    state.cpu = autoscale.target_cpu.map(|t| MetricStatus {
        current: outcome.cpu,
        target: f64::from(t),
    });
    state.inflight = autoscale.target_inflight.map(|t| MetricStatus {
        current: outcome.inflight,
        target: t,
    });
    state.recommendation = outcome.recommendation;
    state.desired = outcome.desired;
    state.note =
        (sampled == 0).then(|| "no samples yet: an instance is sampled once registered for a whole period".to_owned());
    *memory.last_seen = Some(current);
    if outcome.desired != current {
        let line = format!(
            "{service}: autoscaled {current} → {} ({})",
            outcome.desired, outcome.reason
        );
        state.last_decision = Some(Decision {
            at_ms: unix_ms(),
            from: current,
            to: outcome.desired,
            reason: outcome.reason.clone(),
        });
        *lock(status) = state.clone();
        probe.output.say(&line);
        match probe.fleet.scale(service, outcome.desired).await {
            Ok(_) => {
                *memory.last_seen = Some(outcome.desired);
                state.instances = outcome.desired;
            }
            Err(reason) => probe.output.say(&format!("{service}: autoscaling: {reason}")),
        }
    }
    *lock(status) = state;
}

#[cfg(test)]
mod tests;
