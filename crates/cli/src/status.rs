//! `flotilla status`: the services and instances the control plane knows, the faults
//! `flotilla chaos` made that are in force, and what the autoscaler of `flotilla up` measured
//! and decided, as a table or JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla::config::ConfigClient;
use flotilla::discovery::RegistryClient;
use flotilla_api::faults::{FaultRecord, FaultRule, ProcessFault};
use flotilla_api::{Instance, InstanceList};
use serde::Serialize;

use crate::local_time::LocalTime;
use crate::manifest::cpu_quantity;
use crate::supervisor::autoscale::AutoscaleStatus;

/// Fetches the registry's view.
pub async fn fetch(client: &RegistryClient) -> Result<InstanceList, flotilla::discovery::RegistryError> {
    client.instances(None, None, Duration::ZERO).await
}

/// The faults in force, as `flotilla status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Faults {
    /// Processes paused now (from the supervisor of the data dir; empty without one).
    pub paused: Vec<FaultRecord>,
    /// The supervisor's latest kills and pauses, newest first.
    pub recent: Vec<FaultRecord>,
    /// Latency and abort rules in force, by service (from the config store).
    pub rules: BTreeMap<String, Vec<FaultRule>>,
}

/// What `flotilla status --output json` prints: the registry's list, the control plane's
/// replicas, and the faults.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// The registry's instances.
    #[serde(flatten)]
    pub list: &'a InstanceList,
    /// Each control-plane replica's view of itself and its store.
    pub replicas: &'a [Replica],
    /// The faults in force.
    pub faults: &'a Faults,
    /// The autoscaled services of the running `up`: counts, metrics, last decisions.
    pub autoscale: &'a [AutoscaleStatus],
}

/// One control-plane replica as `flotilla status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Replica {
    /// Its (operator's) address.
    pub address: String,
    /// What it says of itself (`GET /v1/control`), or why it did not answer.
    #[serde(flatten)]
    pub answer: ReplicaAnswer,
}

/// A replica's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReplicaAnswer {
    /// Its status document.
    Status(serde_json::Value),
    /// It did not answer.
    Unreachable {
        /// Why.
        error: String,
    },
}

/// Asks every replica in `control` (a comma-separated list) for its status, each directly.
pub async fn replicas(control: &str, token: Option<&str>) -> Vec<Replica> {
    let http = flotilla::http::HttpClient::new(Duration::from_secs(2));
    let mut out = Vec::new();
    for address in control.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let url = format!("{}/v1/control", flotilla::http::base_url(address));
        let answer = match http.get_json::<serde_json::Value>(&url, token).await {
            Ok(status) => ReplicaAnswer::Status(status),
            Err(err) => ReplicaAnswer::Unreachable { error: err.to_string() },
        };
        out.push(Replica {
            address: address.to_owned(),
            answer,
        });
    }
    out
}

/// The replicas as a table, when there is more than one or their store is not embedded
/// (a single embedded control plane is already named on the first line).
pub fn replicas_table(replicas: &[Replica]) -> String {
    let embedded_alone = replicas.len() == 1
        && matches!(&replicas[0].answer, ReplicaAnswer::Status(s) if s["store"]["kind"] == "embedded");
    if replicas.is_empty() || embedded_alone {
        return String::new();
    }
    let mut rows = vec![[
        "REPLICA".to_owned(),
        "STATUS".to_owned(),
        "STORE".to_owned(),
        "QUORUM".to_owned(),
        "VIA".to_owned(),
        "INDEX".to_owned(),
        "HELD".to_owned(),
    ]];
    for replica in replicas {
        rows.push(match &replica.answer {
            ReplicaAnswer::Status(s) => [
                replica.address.clone(),
                s["status"].as_str().unwrap_or("?").to_owned(),
                format!(
                    "{} ×{}",
                    s["store"]["kind"].as_str().unwrap_or("?"),
                    s["store"]["replicas"].as_u64().unwrap_or(1)
                ),
                if s["store"]["quorum"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "NO"
                }
                .to_owned(),
                s["store"]["connected_to"].as_str().unwrap_or("-").to_owned(),
                s["registry_index"].as_u64().map_or("-".into(), |i| i.to_string()),
                s["held"].as_u64().map_or("-".into(), |i| i.to_string()),
            ],
            ReplicaAnswer::Unreachable { .. } => [
                replica.address.clone(),
                "unreachable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        });
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::from("\n");
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}", w = *w))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The faults in force: pauses and recent faults from the supervisor running in `data_dir`
/// (none without one), rules from the config store. What cannot be read is left out: the
/// status of the services matters more than that of the experiments on them.
pub async fn faults(data_dir: &Path, config: &ConfigClient) -> Faults {
    let mut faults = Faults::default();
    if crate::supervisor::control::socket_exists(data_dir) {
        if let Ok(list) = crate::supervisor::control::faults(data_dir).await {
            faults.paused = list.active;
            faults.recent = list.recent;
        }
    }
    if let Ok(rules) = crate::chaos::rules::all(config, now_ms()).await {
        faults.rules = rules;
    }
    faults
}

/// How many recent kills the table shows.
const RECENT_KILLS: usize = 5;

/// The faults as the table's last part; empty when there are none.
pub fn faults_table(faults: &Faults, time: &LocalTime) -> String {
    let at = |ms: u64| {
        jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
            .map_or_else(|_| ms.to_string(), |t| time.clock(t))
    };
    let mut rows: Vec<[String; 2]> = Vec::new();
    for pause in &faults.paused {
        let length = pause.duration_ms.unwrap_or(0);
        rows.push([
            "paused".into(),
            format!(
                "{} (pid {}) for {:.1}s, until {}",
                pause.process,
                pause.pid,
                Duration::from_millis(length).as_secs_f64(),
                at(pause.at_ms.saturating_add(length))
            ),
        ]);
    }
    for (service, rules) in &faults.rules {
        for rule in rules {
            let until = rule.until_ms.map_or_else(|| "cleared".to_owned(), at);
            rows.push([
                rule.kind.as_str().into(),
                format!("{service}: {}, until {until} (rule {})", rule.describe(), rule.id),
            ]);
        }
    }
    let kills = faults.recent.iter().filter(|r| r.kind == ProcessFault::Kill);
    for kill in kills.take(RECENT_KILLS) {
        rows.push([
            "killed".into(),
            format!("{} (pid {}) at {}", kill.process, kill.pid, at(kill.at_ms)),
        ]);
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nFAULTS (flotilla chaos; `flotilla chaos clear` ends them)\n");
    for [kind, what] in rows {
        out.push_str(&format!("{kind:<8}  {what}\n"));
    }
    out
}

/// The autoscaled services of the supervisor running in `data_dir`: none without one, or when
/// it cannot be asked (the instances matter more than how they are scaled).
pub async fn autoscale(data_dir: &Path) -> Vec<AutoscaleStatus> {
    if !crate::supervisor::control::socket_exists(data_dir) {
        return Vec::new();
    }
    crate::supervisor::control::autoscale(data_dir)
        .await
        .map(|list| list.services)
        .unwrap_or_default()
}

/// The autoscaled services as a table: instances now (→ desired), bounds, each metric against
/// its target, and the last decision with its time and reason; empty when none is autoscaled.
pub fn autoscale_table(services: &[AutoscaleStatus], time: &LocalTime) -> String {
    if services.is_empty() {
        return String::new();
    }
    let at = |ms: u64| {
        jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
            .map_or_else(|_| ms.to_string(), |t| time.clock(t))
    };
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "INSTANCES".to_owned(),
        "MIN-MAX".to_owned(),
        "CPU/TARGET".to_owned(),
        "IN-FLIGHT/TARGET".to_owned(),
        "LAST DECISION".to_owned(),
    ]];
    for s in services {
        let instances = if s.evaluated_ms.is_none() {
            "?".to_owned()
        } else if s.desired == s.instances {
            s.instances.to_string()
        } else {
            format!("{} → {}", s.instances, s.desired)
        };
        let cpu = s.cpu.map_or_else(
            || "-".to_owned(),
            |m| {
                format!(
                    "{}/{:.0}% of {}",
                    m.current.map_or_else(|| "?".to_owned(), |c| format!("{c:.0}%")),
                    m.target,
                    cpu_quantity(s.cpu_request_millis)
                )
            },
        );
        let inflight = s.inflight.map_or_else(
            || "-".to_owned(),
            |m| {
                format!(
                    "{}/{}",
                    m.current.map_or_else(|| "?".to_owned(), |c| format!("{c:.1}")),
                    m.target
                )
            },
        );
        let decision = match (&s.last_decision, &s.note) {
            (Some(d), _) => format!("{} {} → {} ({})", at(d.at_ms), d.from, d.to, d.reason),
            (None, Some(note)) => note.clone(),
            (None, None) => "none yet".to_owned(),
        };
        rows.push([
            s.service.clone(),
            instances,
            format!("{}-{}", s.min, s.max),
            cpu,
            inflight,
            decision,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::from("\nAUTOSCALED (flotilla up, from the manifest's `autoscale`)\n");
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}", w = *w))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// Formats milliseconds as a short uptime (`3s`, `4m 10s`, `2h 5m`, `3d 4h`).
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The table `flotilla status` prints.
pub fn table(control: &str, list: &InstanceList) -> String {
    let headers = ["SERVICE", "INSTANCE", "ADDRESS", "VERSION", "PID", "HEALTH", "UPTIME"];
    let rows: Vec<[String; 7]> = list
        .instances
        .iter()
        .map(|i: &Instance| {
            [
                i.service.clone(),
                i.instance_id.clone(),
                i.address.clone(),
                i.version.clone(),
                i.pid().map_or("-".into(), |p| p.to_string()),
                i.health.to_string(),
                uptime(i.uptime_ms),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let services: std::collections::BTreeSet<&str> = list.instances.iter().map(|i| i.service.as_str()).collect();
    out.push_str(&format!(
        "control plane {control}: {} services, {} instances (revision {})\n\n",
        services.len(),
        list.instances.len(),
        list.index
    ));
    let line = |cells: &[String]| {
        let mut l = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    out.push_str(&line(&headers.map(String::from)));
    for row in &rows {
        out.push_str(&line(row));
    }
    if rows.is_empty() {
        out.push_str("(no instances registered)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_naturally() {
        assert_eq!(uptime(3_400), "3s");
        assert_eq!(uptime(250_000), "4m 10s");
        assert_eq!(uptime(7_500_000), "2h 5m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }

    #[test]
    fn table_has_a_row_per_instance() {
        let list: InstanceList = serde_json::from_value(serde_json::json!({
            "index": 9,
            "instances": [{
                "service": "catalog", "instance_id": "catalog-1-ab", "address": "127.0.0.1:4000",
                "version": "0.1.0", "metadata": {"pid": "77"}, "health": "passing",
                "uptime_ms": 61000, "last_heartbeat_ms": 10
            }]
        }))
        .unwrap();
        let t = table("127.0.0.1:7070", &list);
        assert!(t.contains("SERVICE"), "{t}");
        assert!(t.contains("catalog-1-ab"), "{t}");
        assert!(t.contains("77"), "{t}");
        assert!(t.contains("1m 1s"), "{t}");
    }

    #[test]
    fn faults_in_force_are_listed_and_none_print_nothing() {
        assert_eq!(faults_table(&Faults::default(), &LocalTime::utc()), "");
        let record = |kind, process: &str, at_ms| FaultRecord {
            id: "1".into(),
            kind,
            process: process.into(),
            target: "payments".into(),
            pid: 4242,
            at_ms,
            duration_ms: (kind == ProcessFault::Pause).then_some(2_000),
            ended_ms: None,
        };
        let rule: FaultRule = serde_json::from_value(serde_json::json!(
            {"id": "ab12", "kind": "delay", "delay_ms": 300, "share": 0.5, "until_ms": 1_796_076_092_000u64}
        ))
        .unwrap();
        let faults = Faults {
            paused: vec![record(ProcessFault::Pause, "payments-1", 1_796_076_062_000)],
            recent: vec![
                record(ProcessFault::Pause, "payments-1", 1_796_076_062_000),
                record(ProcessFault::Kill, "orders-1", 1_796_076_061_000),
            ],
            rules: [("catalog".to_owned(), vec![rule])].into(),
        };
        let t = faults_table(&faults, &LocalTime::utc());
        assert_eq!(
            t,
            "\nFAULTS (flotilla chaos; `flotilla chaos clear` ends them)\n\
             paused    payments-1 (pid 4242) for 2.0s, until 22:01:04.000\n\
             delay     catalog: delay 300ms on 50% of requests, until 22:01:32.000 (rule ab12)\n\
             killed    orders-1 (pid 4242) at 22:01:01.000\n"
        );
        let list = InstanceList::default();
        let json = serde_json::to_value(Report {
            replicas: &[],
            list: &list,
            faults: &faults,
            autoscale: &[],
        })
        .unwrap();
        assert_eq!(json["instances"], serde_json::json!([]));
        assert_eq!(json["faults"]["rules"]["catalog"][0]["delay_ms"], 300);
        assert_eq!(json["faults"]["paused"][0]["kind"], "pause");
    }

    #[test]
    fn autoscaled_services_show_their_count_bounds_metrics_and_last_decision() {
        use crate::supervisor::autoscale::{Decision, MetricStatus};
        assert_eq!(autoscale_table(&[], &LocalTime::utc()), "");
        let catalog = AutoscaleStatus {
            service: "catalog".into(),
            instances: 3,
            desired: 1,
            recommendation: Some(1),
            min: 1,
            max: 3,
            cpu_request_millis: 100,
            cpu: Some(MetricStatus {
                current: Some(4.2),
                target: 50.0,
            }),
            inflight: None,
            sampled: 3,
            period_ms: 3000,
            scale_down_window_ms: 20_000,
            evaluated_ms: Some(1_796_076_062_000),
            last_decision: Some(Decision {
                at_ms: 1_796_076_062_000,
                from: 3,
                to: 1,
                reason: "cpu 4% of 100m request, target 50%; the highest recommendation within the last 20s".into(),
            }),
            note: None,
        };
        let starting = AutoscaleStatus {
            service: "orders".into(),
            instances: 1,
            desired: 1,
            min: 1,
            max: 4,
            cpu_request_millis: 50,
            inflight: Some(MetricStatus {
                current: None,
                target: 2.0,
            }),
            evaluated_ms: Some(1_796_076_062_000),
            note: Some("no samples yet".into()),
            ..AutoscaleStatus::default()
        };
        let table = autoscale_table(&[catalog, starting], &LocalTime::utc());
        let lines: Vec<&str> = table.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines[0].starts_with("AUTOSCALED"), "{table}");
        assert!(lines[1].starts_with("SERVICE  INSTANCES"), "{table}");
        assert_eq!(
            lines[2],
            "catalog  3 → 1      1-3      4%/50% of 100m  -                 22:01:02.000 3 → 1 (cpu 4% of 100m request, target 50%; the highest recommendation within the last 20s)"
        );
        assert_eq!(
            lines[3],
            "orders   1          1-4      -               ?/2               no samples yet"
        );
    }

    #[test]
    fn replicas_are_listed_with_their_store_and_an_unreachable_one_says_so() {
        let up = |address: &str, quorum: bool| Replica {
            address: address.into(),
            answer: ReplicaAnswer::Status(serde_json::json!({
                "status": if quorum { "ready" } else { "degraded" },
                "store": {"kind": "nats", "replicas": 3, "quorum": quorum, "connected_to": "127.0.0.1:4222"},
                "registry_index": 41, "held": 0,
            })),
        };
        let table = replicas_table(&[
            up("127.0.0.1:7070", true),
            up("127.0.0.1:7071", false),
            Replica {
                address: "127.0.0.1:7072".into(),
                answer: ReplicaAnswer::Unreachable {
                    error: "refused".into(),
                },
            },
        ]);
        let lines: Vec<&str> = table.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines[0].starts_with("REPLICA"), "{table}");
        assert!(
            lines[1].contains("ready") && lines[1].contains("nats ×3") && lines[1].contains("yes"),
            "{table}"
        );
        assert!(lines[2].contains("degraded") && lines[2].contains("NO"), "{table}");
        assert!(lines[3].contains("unreachable"), "{table}");
        // One embedded control plane adds nothing: the first line names it.
        let alone = Replica {
            address: "127.0.0.1:7070".into(),
            answer: ReplicaAnswer::Status(serde_json::json!({"store": {"kind": "embedded"}})),
        };
        assert_eq!(replicas_table(&[alone]), "");
    }
}
