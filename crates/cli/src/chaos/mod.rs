//! `flotilla chaos`: fault injection against a running `flotilla up`, once or on a schedule.
//!
//! * `kill` and `pause` hit whole processes. The supervisor owns them, so the command asks it
//!   (its socket in the data dir) and it signals the process, resumes a pause itself, says
//!   each fault on its log and exports it as a span (`supervisor::chaos`).
//! * `latency` and `abort` hit a share of one service's requests. The command writes a rule
//!   into the service's config (key `faults`) and every instance applies it where requests
//!   are served (`flotilla::runtime::faults`); a rule given `--for` ends by itself.
//! * `clear` deletes the rules and ends the pauses in force.
//!
//! Every fault is printed with its time (one line each; JSON lines with `--output json`), and
//! is seen afterwards in `flotilla status` and `flotilla traces --service chaos`.

pub mod rules;
pub mod schedule;
pub mod span;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla::api::faults::{FaultKind, FaultRecord, FaultRequest, FaultRule, ProcessFault};
use flotilla::config::ConfigClient;
use flotilla::discovery::{RegistryClient, RegistryError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use self::rules::RulesError;
use self::schedule::{DurationRange, Schedule};
use self::span::{FaultSpan, SpanExporter};
use crate::local_time::LocalTime;
use crate::supervisor::control::{self as supervisor, SupervisorError};

/// How a `flotilla chaos` command reaches the system, and how it answers.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The running system's data dir (its supervisor's socket, the token).
    pub data_dir: PathBuf,
    /// The control plane (the config store, the registry, the trace store).
    pub control_addr: String,
    /// JSON lines instead of lines for people.
    pub json: bool,
    /// Seeds every random choice (process, pause length, wait), so a run can be repeated.
    pub seed: Option<u64>,
    /// Repeat the fault on this schedule; none: once.
    pub schedule: Option<Schedule>,
    /// The zone times are printed in.
    pub time: LocalTime,
}

/// A fault to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL a process; the supervisor restarts it.
    Kill {
        /// A process (`orders-1`), a service (one of its instances), or `random`.
        target: String,
    },
    /// SIGSTOP a process, SIGCONT after a duration drawn from `length`.
    Pause {
        /// As for a kill.
        target: String,
        /// How long.
        length: DurationRange,
    },
    /// Delay a share of a service's requests.
    Latency {
        /// The service.
        service: String,
        /// By how much.
        delay: Duration,
        /// Which requests.
        aim: Aim,
    },
    /// Answer a share of a service's requests with an error status.
    Abort {
        /// The service.
        service: String,
        /// Which status.
        status: u16,
        /// Which requests.
        aim: Aim,
    },
}

/// Which of a service's requests a latency or abort rule picks, and for how long.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aim {
    /// Which share, 0 to 1.
    pub share: f64,
    /// Only this method; none: every method.
    pub method: Option<String>,
    /// Only paths that match this pattern (`*` is one segment); none: every path.
    pub path: Option<String>,
    /// For how long; none: until cleared.
    pub length: Option<Duration>,
}

/// Why a chaos command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The supervisor is not there, or refused.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// The rules could not be read or written.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// The control plane's registry did not answer.
    #[error("cannot reach the control plane at {control} (is `flotilla up` running? --control-addr): {source}")]
    Registry {
        /// The address tried.
        control: String,
        /// Why.
        #[source]
        source: RegistryError,
    },
    /// No such service is registered.
    #[error("no service `{service}` is registered; registered: {}", registered.join(", "))]
    UnknownService {
        /// The service given.
        service: String,
        /// The services there are.
        registered: Vec<String>,
    },
    /// Latency or abort asked of the gateway.
    #[error("the gateway does not follow fault rules; give its route a `fault` policy (docs/routes.md), or pick the service behind it")]
    Gateway,
    /// A flag's value is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Printing failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", Duration::from_millis(ms).as_secs_f64())
}

impl Fault {
    /// The rule a latency or abort fault writes, with its id and end; none for process faults.
    fn rule(&self, id: String, now_ms: u64) -> Option<(String, FaultRule)> {
        let (service, kind, delay_ms, status, aim) = match self {
            Fault::Latency { service, delay, aim } => (service, FaultKind::Delay, ms(*delay), None, aim),
            Fault::Abort { service, status, aim } => (service, FaultKind::Abort, 0, Some(*status), aim),
            Fault::Kill { .. } | Fault::Pause { .. } => return None,
        };
        let rule = FaultRule {
            id,
            kind,
            delay_ms,
            status,
            share: aim.share,
            method: aim.method.as_ref().map(|m| m.to_ascii_uppercase()),
            path: aim.path.clone(),
            until_ms: aim.length.map(|l| now_ms.saturating_add(ms(l))),
        };
        Some((service.clone(), rule))
    }

    /// Checks the flags before anything is done; the error names the flag.
    pub fn validate(&self, schedule: Option<&Schedule>) -> Result<(), ChaosError> {
        if let Some((_, rule)) = self.rule("check".into(), 0) {
            rule.validate().map_err(|(field, reason)| {
                let flag = match field {
                    "share" => "--share",
                    "status" => "--status",
                    "delay_ms" => "DELAY",
                    "method" => "--method",
                    "path" => "--path",
                    other => other,
                };
                ChaosError::Invalid(format!("{flag}: {reason}"))
            })?;
            if schedule.is_some() && rule.until_ms.is_none() {
                return Err(ChaosError::Invalid(
                    "--every repeats the fault: give it --for, so that each one ends".into(),
                ));
            }
        }
        if let Fault::Pause { length, .. } = self {
            if length.max > crate::supervisor::chaos::MAX_PAUSE {
                return Err(ChaosError::Invalid(format!(
                    "--for: a pause lasts at most {}s",
                    crate::supervisor::chaos::MAX_PAUSE.as_secs()
                )));
            }
        }
        Ok(())
    }
}

/// What one fault did, as printed.
enum Made {
    Process(FaultRecord),
    Rule {
        service: String,
        rule: FaultRule,
        revision: u64,
    },
}

/// Makes `fault` once, or on the options' schedule until it ends or `shutdown` resolves;
/// prints each fault; returns how many were made.
pub async fn run(
    options: &ChaosOptions,
    fault: &Fault,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<usize, ChaosError> {
    fault.validate(options.schedule.as_ref())?;
    let token = crate::token::read(&options.data_dir).ok().flatten();
    let mut rng = match options.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let config = ConfigClient::new(&options.control_addr, token.clone());
    let exporter = SpanExporter::new(&options.control_addr, token.clone());
    if let Fault::Latency { service, .. } | Fault::Abort { service, .. } = fault {
        check_service(&options.control_addr, token.clone(), service).await?;
    }
    tokio::pin!(shutdown);
    let started = Instant::now();
    let mut made = 0;
    loop {
        match make(options, fault, &config, &exporter, &mut rng).await {
            Ok(done) => {
                made += 1;
                print(options, out, &done)?;
            }
            // On a schedule, a target between a crash and its restart is skipped, not fatal.
            Err(ChaosError::Supervisor(SupervisorError::Refused(problem)))
                if options.schedule.is_some() && problem.status == 409 =>
            {
                let why = problem.detail.unwrap_or(problem.title);
                if options.json {
                    writeln!(
                        out,
                        "{}",
                        json!({"time": jiff::Timestamp::now().to_string(), "skipped": why})
                    )?;
                } else {
                    writeln!(out, "{}  skipped: {why}", options.time.clock(jiff::Timestamp::now()))?;
                }
            }
            Err(err) => return Err(err),
        }
        out.flush()?;
        let Some(schedule) = &options.schedule else {
            return Ok(made);
        };
        let Some(wait) = schedule.next_wait(started.elapsed(), &mut rng) else {
            break;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    if !options.json {
        writeln!(
            out,
            "{made} fault{} in {}",
            if made == 1 { "" } else { "s" },
            seconds(ms(started.elapsed()))
        )?;
    }
    Ok(made)
}

/// Refuses a service the registry does not know (a typo would write a rule nobody reads).
async fn check_service(control: &str, token: Option<String>, service: &str) -> Result<(), ChaosError> {
    if service == "gateway" {
        return Err(ChaosError::Gateway);
    }
    let registry = RegistryClient::new(control, token);
    let list = registry
        .instances(None, None, Duration::ZERO)
        .await
        .map_err(|source| ChaosError::Registry {
            control: control.to_owned(),
            source,
        })?;
    let mut registered: Vec<String> = list.instances.into_iter().map(|i| i.service).collect();
    registered.dedup();
    if registered.iter().any(|s| s == service) {
        return Ok(());
    }
    registered.retain(|s| s != "gateway");
    Err(ChaosError::UnknownService {
        service: service.to_owned(),
        registered,
    })
}

async fn make(
    options: &ChaosOptions,
    fault: &Fault,
    config: &ConfigClient,
    exporter: &SpanExporter,
    rng: &mut StdRng,
) -> Result<Made, ChaosError> {
    // Seeds for the supervisor's choice come from ours, so one --seed repeats a whole run.
    let seed = options.seed.map(|_| rng.random::<u64>());
    let request = match fault {
        Fault::Kill { target } => Some(FaultRequest {
            kind: ProcessFault::Kill,
            target: target.clone(),
            duration_ms: None,
            seed,
        }),
        Fault::Pause { target, length } => Some(FaultRequest {
            kind: ProcessFault::Pause,
            target: target.clone(),
            duration_ms: Some(ms(length.pick(rng))),
            seed,
        }),
        Fault::Latency { .. } | Fault::Abort { .. } => None,
    };
    if let Some(request) = request {
        return Ok(Made::Process(supervisor::inject(&options.data_dir, &request).await?));
    }
    let now = now_ms();
    let id = format!("{:08x}", rng.random::<u32>());
    let Some((service, rule)) = fault.rule(id, now) else {
        return Err(ChaosError::Invalid("not a rule".into()));
    };
    let revision = rules::add(config, &service, rule.clone(), now).await?;
    // The rule's span: the moment it was set, with what it does and for how long.
    let mut attributes = vec![
        ("fault.kind".to_owned(), json!(rule.kind.as_str())),
        ("fault.target".to_owned(), json!(service)),
        ("fault.id".to_owned(), json!(rule.id)),
        ("fault.share".to_owned(), json!(rule.share)),
    ];
    match rule.kind {
        FaultKind::Delay => attributes.push(("fault.delay_ms".to_owned(), json!(rule.delay_ms))),
        FaultKind::Abort => attributes.push(("fault.status".to_owned(), json!(rule.abort_status()))),
    }
    if let Some(method) = &rule.method {
        attributes.push(("fault.method".to_owned(), json!(method)));
    }
    if let Some(path) = &rule.path {
        attributes.push(("fault.path".to_owned(), json!(path)));
    }
    if let Some(until) = rule.until_ms {
        attributes.push(("fault.duration_ms".to_owned(), json!(until.saturating_sub(now))));
    }
    let span = FaultSpan {
        name: format!(
            "chaos {} {service}",
            if rule.kind == FaultKind::Delay {
                "latency"
            } else {
                "abort"
            }
        ),
        instance: "cli".into(),
        start_unix_nano: now.saturating_mul(1_000_000),
        end_unix_nano: now.saturating_mul(1_000_000),
        attributes,
    };
    if let Err(err) = exporter.export(&span).await {
        // The rule is in force; only its record in the trace store is missing.
        eprintln!("warning: the fault's span was not stored: {err}");
    }
    Ok(Made::Rule {
        service,
        rule,
        revision,
    })
}

fn print(options: &ChaosOptions, out: &mut dyn Write, made: &Made) -> std::io::Result<()> {
    let now = jiff::Timestamp::now();
    if options.json {
        let line = match made {
            Made::Process(record) => json!({"time": now.to_string(), "fault": record}),
            Made::Rule {
                service,
                rule,
                revision,
            } => json!({"time": now.to_string(), "service": service, "rule": rule, "revision": revision}),
        };
        return writeln!(out, "{line}");
    }
    let clock = options.time.clock(now);
    match made {
        Made::Process(record) => match record.kind {
            ProcessFault::Kill => writeln!(
                out,
                "{clock}  killed {} (pid {}); the supervisor restarts it",
                record.process, record.pid
            ),
            ProcessFault::Pause => writeln!(
                out,
                "{clock}  paused {} (pid {}) for {}; the supervisor continues it then",
                record.process,
                record.pid,
                seconds(record.duration_ms.unwrap_or(0))
            ),
        },
        Made::Rule {
            service,
            rule,
            revision,
        } => {
            let until = match rule.until_ms {
                Some(until) => format!("for {}", seconds(until.saturating_sub(now_ms().min(until)))),
                None => format!("until `flotilla chaos clear {service}`"),
            };
            writeln!(
                out,
                "{clock}  {service}: {} {until} (rule {}, config revision {revision})",
                rule.describe(),
                rule.id
            )
        }
    }
}

/// Ends every fault in force, or those of one service (or process): deletes the rules and
/// ends the pauses. Prints what it ended.
pub async fn clear(options: &ChaosOptions, target: Option<&str>, out: &mut dyn Write) -> Result<(), ChaosError> {
    let token = crate::token::read(&options.data_dir).ok().flatten();
    let config = ConfigClient::new(&options.control_addr, token);
    let now = now_ms();
    let services: Vec<String> = match target {
        Some(target) => vec![target.to_owned()],
        None => rules::scopes(&config).await?,
    };
    let mut cleared = Vec::new();
    for service in &services {
        for rule in rules::clear(&config, service, now).await? {
            cleared.push((service.clone(), rule));
        }
    }
    // Pauses: only where a supervisor runs; without one nothing is paused by us.
    let resumed = match supervisor::resume(&options.data_dir, target).await {
        Ok(resumed) => resumed,
        Err(SupervisorError::NotRunning(..)) => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    if options.json {
        let rules: Vec<_> = cleared
            .iter()
            .map(|(service, rule)| json!({"service": service, "rule": rule}))
            .collect();
        writeln!(out, "{}", json!({"cleared": rules, "resumed": resumed}))?;
        return Ok(());
    }
    for (service, rule) in &cleared {
        writeln!(out, "{service}: cleared {} (rule {})", rule.describe(), rule.id)?;
    }
    for record in &resumed {
        writeln!(out, "resumed {} (pid {})", record.process, record.pid)?;
    }
    if cleared.is_empty() && resumed.is_empty() {
        match target {
            Some(target) => writeln!(out, "{target}: no faults in force")?,
            None => writeln!(out, "no faults in force")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_before_anything_is_done() {
        let latency = |share, length| Fault::Latency {
            service: "catalog".into(),
            delay: Duration::from_millis(200),
            aim: Aim {
                share,
                length,
                ..Aim::default()
            },
        };
        assert!(latency(0.5, None).validate(None).is_ok());
        let err = latency(1.5, None).validate(None).unwrap_err().to_string();
        assert!(err.starts_with("--share"), "{err}");
        let every = Schedule {
            every: "2s".parse().unwrap(),
            duration: None,
        };
        let err = latency(1.0, None).validate(Some(&every)).unwrap_err().to_string();
        assert!(err.contains("--for"), "{err}");
        assert!(latency(1.0, Some(Duration::from_secs(1)))
            .validate(Some(&every))
            .is_ok());
        let abort = |status, path: &str| Fault::Abort {
            service: "catalog".into(),
            status,
            aim: Aim {
                share: 1.0,
                path: Some(path.into()),
                ..Aim::default()
            },
        };
        assert!(abort(200, "/a")
            .validate(None)
            .unwrap_err()
            .to_string()
            .starts_with("--status"));
        assert!(abort(503, "a/*")
            .validate(None)
            .unwrap_err()
            .to_string()
            .starts_with("--path"));
        let pause = Fault::Pause {
            target: "random".into(),
            length: "2h".parse().unwrap(),
        };
        assert!(pause.validate(None).is_err());
    }

    #[test]
    fn a_rule_ends_when_its_length_says() {
        let abort = Fault::Abort {
            service: "payments".into(),
            status: 402,
            aim: Aim {
                share: 0.1,
                method: Some("post".into()),
                path: Some("/api/v1/payments/*/capture".into()),
                length: Some(Duration::from_secs(30)),
            },
        };
        let (service, rule) = abort.rule("r".into(), 1_000).unwrap();
        assert_eq!(service, "payments");
        assert_eq!(rule.until_ms, Some(31_000));
        assert_eq!(rule.describe(), "abort 402 on 10% of POST /api/v1/payments/*/capture");
        assert!(Fault::Kill { target: "x".into() }.rule("r".into(), 0).is_none());
    }
}
