//! Kills and pauses on request (`flotilla chaos kill|pause`, through the socket API): the
//! supervisor owns the processes, so it signals them itself. A kill is SIGKILL, and the
//! process is restarted as after any crash. A pause is SIGSTOP and, after its duration,
//! SIGCONT from a task of the supervisor, so a CLI that exits (or is killed) never leaves a
//! process stopped. Every fault is said on the merged log and exported as a span of the
//! service `chaos`; the pauses in force and the latest faults are listed for `flotilla status`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use flotilla::http::{Json, Query};
use flotilla::Problem;
use flotilla_api::faults::{FaultList, FaultRecord, FaultRequest, ProcessFault};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::fleet::Fleet;
use super::output::Output;
use crate::chaos::span::{FaultSpan, SpanExporter};

/// The target that names any process.
pub const RANDOM: &str = "random";
/// How many faults the supervisor remembers.
pub const RECENT: usize = 50;
/// The longest pause: longer looks like a process gone for good, which a kill says better.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Why a fault was not made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChaosError {
    /// The target names no process or service.
    #[error("no process or service `{target}`; processes: {}; or `random`", known.join(", "))]
    UnknownTarget {
        /// The target as given.
        target: String,
        /// The processes there are.
        known: Vec<String>,
    },
    /// The target's processes are all between a crash and their restart (or none is left
    /// that may take this fault).
    #[error("{0}")]
    NotRunning(String),
    /// A request field is wrong.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The signal could not be sent.
    #[error("signalling {process} (pid {pid}): {reason}")]
    Signal {
        /// The process.
        process: String,
        /// Its pid.
        pid: u32,
        /// What the kernel said.
        reason: String,
    },
}

impl From<ChaosError> for Problem {
    fn from(err: ChaosError) -> Self {
        let detail = err.to_string();
        match err {
            ChaosError::UnknownTarget { .. } => Problem::not_found(detail),
            ChaosError::NotRunning(_) => Problem::new(409, "not-running", "Not running").with_detail(detail),
            ChaosError::Invalid { field, reason } => Problem::invalid_field(field, reason),
            ChaosError::Signal { .. } => Problem::new(500, "signal-failed", "Signal failed").with_detail(detail),
        }
    }
}

/// A process a fault may hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name (`orders-1`).
    pub name: String,
    /// Its service (`orders`).
    pub service: String,
    /// Its pid, when it runs.
    pub pid: Option<u32>,
    /// Whether a pause holds it now.
    pub paused: bool,
}

/// The process `target` names among `processes`: `random` is any of them, a service name
/// one of its instances (both chosen with `rng`), else the process of that name. Only
/// running processes are chosen, and paused ones only when `paused_ok` (a kill).
pub fn choose<'a>(
    target: &str,
    processes: &'a [Candidate],
    paused_ok: bool,
    rng: &mut impl Rng,
) -> Result<&'a Candidate, ChaosError> {
    let fits = |c: &&Candidate| c.pid.is_some() && (paused_ok || !c.paused);
    let pool: Vec<&Candidate> = if target == RANDOM {
        processes.iter().filter(fits).collect()
    } else if let Some(process) = processes.iter().find(|c| c.name == target) {
        if process.pid.is_none() {
            return Err(ChaosError::NotRunning(format!(
                "{target} is not running now (restarting); try again in a moment"
            )));
        }
        if !fits(&process) {
            return Err(ChaosError::NotRunning(format!("{target} is paused already")));
        }
        vec![process]
    } else if processes.iter().any(|c| c.service == target) {
        processes.iter().filter(|c| c.service == target).filter(fits).collect()
    } else {
        return Err(ChaosError::UnknownTarget {
            target: target.to_owned(),
            known: processes.iter().map(|c| c.name.clone()).collect(),
        });
    };
    if pool.is_empty() {
        let why = if paused_ok { "running" } else { "running and not paused" };
        return Err(ChaosError::NotRunning(format!("no process of `{target}` is {why} now")));
    }
    Ok(pool[rng.random_range(0..pool.len())])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", Duration::from_millis(ms).as_secs_f64())
}

#[derive(Default)]
struct Book {
    /// Pauses in force, by fault id.
    active: BTreeMap<String, FaultRecord>,
    /// The latest faults, newest first.
    recent: VecDeque<FaultRecord>,
}

impl Book {
    fn remember(&mut self, record: FaultRecord) {
        self.recent.push_front(record);
        self.recent.truncate(RECENT);
    }

    /// Ends a pause in force: takes it from the active ones and stamps its end.
    fn end(&mut self, id: &str, at_ms: u64) -> Option<FaultRecord> {
        let mut record = self.active.remove(id)?;
        record.ended_ms = Some(at_ms);
        if let Some(kept) = self.recent.iter_mut().find(|r| r.id == id) {
            kept.ended_ms = Some(at_ms);
        }
        Some(record)
    }
}

/// The supervisor's fault injection.
pub(super) struct Chaos {
    fleet: Arc<Fleet>,
    output: Arc<Output>,
    exporter: Option<SpanExporter>,
    book: Mutex<Book>,
    next_id: AtomicU64,
}

impl Chaos {
    /// Fault injection over `fleet`'s processes, saying each fault on `output` and exporting
    /// it through `exporter` (none: spans are not sent).
    pub(super) fn new(fleet: Arc<Fleet>, output: Arc<Output>, exporter: Option<SpanExporter>) -> Arc<Self> {
        Arc::new(Self {
            fleet,
            output,
            exporter,
            book: Mutex::new(Book::default()),
            next_id: AtomicU64::new(1),
        })
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pauses in force and the latest faults.
    pub(super) fn list(&self) -> FaultList {
        let book = self.book();
        let mut active: Vec<FaultRecord> = book.active.values().cloned().collect();
        active.sort_by_key(|r| r.at_ms);
        FaultList {
            active,
            recent: book.recent.iter().cloned().collect(),
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let paused: Vec<String> = self.book().active.values().map(|r| r.process.clone()).collect();
        self.fleet
            .processes()
            .into_iter()
            .map(|(name, process)| Candidate {
                paused: paused.contains(&name),
                pid: process.pid.get(),
                service: process.service,
                name,
            })
            .collect()
    }

    /// Makes the fault `request` asks for.
    pub(super) fn inject(self: &Arc<Self>, request: &FaultRequest) -> Result<FaultRecord, ChaosError> {
        let duration = match (request.kind, request.duration_ms) {
            (ProcessFault::Kill, None) => None,
            (ProcessFault::Kill, Some(_)) => {
                return Err(ChaosError::Invalid {
                    field: "duration_ms",
                    reason: "a kill has no duration".into(),
                })
            }
            (ProcessFault::Pause, Some(ms)) if ms > 0 && u128::from(ms) <= MAX_PAUSE.as_millis() => Some(ms),
            (ProcessFault::Pause, _) => {
                return Err(ChaosError::Invalid {
                    field: "duration_ms",
                    reason: format!("a pause lasts from 1 ms to {}s", MAX_PAUSE.as_secs()),
                })
            }
        };
        let candidates = self.candidates();
        let paused_ok = request.kind == ProcessFault::Kill;
        let chosen = match request.seed {
            Some(seed) => choose(
                &request.target,
                &candidates,
                paused_ok,
                &mut StdRng::seed_from_u64(seed),
            )?,
            None => choose(&request.target, &candidates, paused_ok, &mut rand::rng())?,
        };
        let pid = chosen.pid.unwrap_or(0);
        let signal = match request.kind {
            ProcessFault::Kill => Signal::SIGKILL,
            ProcessFault::Pause => Signal::SIGSTOP,
        };
        kill(Pid::from_raw(pid as i32), signal).map_err(|errno| ChaosError::Signal {
            process: chosen.name.clone(),
            pid,
            reason: errno.desc().to_owned(),
        })?;
        let record = FaultRecord {
            id: self.next_id.fetch_add(1, Ordering::Relaxed).to_string(),
            kind: request.kind,
            process: chosen.name.clone(),
            target: request.target.clone(),
            pid,
            at_ms: now_ms(),
            duration_ms: duration,
            ended_ms: None,
        };
        match request.kind {
            ProcessFault::Kill => {
                // A killed process is no longer paused: its pause ends with it.
                let ended: Vec<String> = {
                    let mut book = self.book();
                    let ids: Vec<String> = book
                        .active
                        .values()
                        .filter(|r| r.process == record.process)
                        .map(|r| r.id.clone())
                        .collect();
                    ids.iter()
                        .filter_map(|id| book.end(id, record.at_ms))
                        .map(|r| r.id)
                        .collect()
                };
                self.book().remember(record.clone());
                let also = if ended.is_empty() { "" } else { ", which was paused" };
                self.output
                    .say(&format!("chaos: killed {} (pid {pid}){also}", record.process));
                self.export(&record, record.at_ms);
            }
            ProcessFault::Pause => {
                {
                    let mut book = self.book();
                    book.active.insert(record.id.clone(), record.clone());
                    book.remember(record.clone());
                }
                self.output.say(&format!(
                    "chaos: paused {} (pid {pid}) for {}",
                    record.process,
                    seconds(duration.unwrap_or(0))
                ));
                let chaos = self.clone();
                let id = record.id.clone();
                let wait = Duration::from_millis(duration.unwrap_or(0));
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    chaos.resume(&id, "");
                });
            }
        }
        Ok(record)
    }

    /// Ends the pause `id` if it is still in force: continues the process, unless it is
    /// gone (killed or stopped meanwhile) or its pid is another run's now.
    fn resume(&self, id: &str, why: &str) -> Option<FaultRecord> {
        let record = self.book().end(id, now_ms())?;
        let took = seconds(record.ended_ms.unwrap_or(record.at_ms).saturating_sub(record.at_ms));
        let current = self.fleet.processes().get(&record.process).and_then(|p| p.pid.get());
        if current == Some(record.pid) {
            let _ = kill(Pid::from_raw(record.pid as i32), Signal::SIGCONT);
            self.output.say(&format!(
                "chaos: resumed {} (pid {}) after {took}{why}",
                record.process, record.pid
            ));
        } else {
            self.output.say(&format!(
                "chaos: the pause of {} (pid {}) ended after {took}; the process had gone meanwhile",
                record.process, record.pid
            ));
        }
        self.export(&record, record.ended_ms.unwrap_or(record.at_ms));
        Some(record)
    }

    /// Ends the pauses in force now, of every process or of those `target` names (a process
    /// or a service); returns them.
    pub(super) fn resume_all(&self, target: Option<&str>) -> Vec<FaultRecord> {
        let services: BTreeMap<String, String> = self
            .fleet
            .processes()
            .into_iter()
            .map(|(name, p)| (name, p.service))
            .collect();
        let ids: Vec<String> = self
            .book()
            .active
            .values()
            .filter(|r| target.is_none_or(|t| r.process == t || services.get(&r.process).is_some_and(|s| s == t)))
            .map(|r| r.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.resume(id, " (cleared)")).collect()
    }

    /// Sends the fault's span, in the background; a failure is said, never fatal.
    fn export(&self, record: &FaultRecord, end_ms: u64) {
        let Some(exporter) = self.exporter.clone() else {
            return;
        };
        let span = fault_span(record, end_ms);
        let output = self.output.clone();
        tokio::spawn(async move {
            if let Err(err) = exporter.export(&span).await {
                output.say(&format!("chaos: the span of `{}` was not stored: {err}", span.name));
            }
        });
    }
}

/// The span of a fault the supervisor made.
fn fault_span(record: &FaultRecord, end_ms: u64) -> FaultSpan {
    let mut attributes = vec![
        ("fault.kind".to_owned(), json!(record.kind.as_str())),
        ("fault.target".to_owned(), json!(record.process)),
        ("fault.requested".to_owned(), json!(record.target)),
        ("fault.id".to_owned(), json!(record.id)),
        ("process.pid".to_owned(), json!(record.pid)),
    ];
    if let Some(ms) = record.duration_ms {
        attributes.push(("fault.duration_ms".to_owned(), json!(ms)));
    }
    FaultSpan {
        name: format!("chaos {} {}", record.kind.as_str(), record.process),
        instance: "supervisor".into(),
        start_unix_nano: record.at_ms.saturating_mul(1_000_000),
        end_unix_nano: end_ms.saturating_mul(1_000_000),
        attributes,
    }
}

/// Which pauses `DELETE /v1/faults` ends.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeParams {
    /// A process or a service; none: every pause.
    target: Option<String>,
}

/// `POST /v1/faults` (make a fault), `GET /v1/faults` (pauses in force, latest faults),
/// `DELETE /v1/faults[?target=]` (end pauses now; answers those it ended).
pub(super) fn routes(chaos: Arc<Chaos>) -> Router {
    Router::new()
        .route("/v1/faults", get(list).post(inject).delete(resume))
        .with_state(chaos)
}

async fn list(State(chaos): State<Arc<Chaos>>) -> Json<FaultList> {
    Json(chaos.list())
}

async fn inject(
    State(chaos): State<Arc<Chaos>>,
    Json(request): Json<FaultRequest>,
) -> Result<(http::StatusCode, Json<FaultRecord>), Problem> {
    Ok((http::StatusCode::CREATED, Json(chaos.inject(&request)?)))
}

/// Answers the pauses it ended.
async fn resume(State(chaos): State<Arc<Chaos>>, Query(params): Query<ResumeParams>) -> Json<Vec<FaultRecord>> {
    Json(chaos.resume_all(params.target.as_deref()))
}

#[cfg(test)]
mod tests;
