//! Fault injection where a request is served, as Envoy's fault filter does it: a service's
//! fault rules (`flotilla chaos latency|abort`, the config key `faults` of its scope) delay a
//! share of its application requests, or answer them with an error status, without the
//! handler running. Health checks and `/metrics` are never touched: a fault should look like
//! a slow or failing service to its callers, not take it out of the registry.
//!
//! Each instance follows its rules live; a rule ends by itself at its `until_ms`. Every
//! request a rule hits carries `flotilla.fault` on its server span (`delay 200ms`,
//! `abort 503`), and the instance logs once when the rules in force change.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_api::faults::{validate_rules, FaultKind, FaultRule};
use flotilla_api::Problem;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigClient, ConfigLoader, LiveConfig};

/// The part of a service's configuration fault injection reads: only the key `faults`, so
/// it never disturbs (nor is disturbed by) the service's own configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultConfig {
    /// The rules, in the order they are tried.
    pub faults: Vec<FaultRule>,
}

impl FaultConfig {
    /// Checks every rule, so a bad revision is refused (and reported) rather than run.
    pub fn validate(&self) -> Result<(), String> {
        validate_rules(&self.faults)
    }
}

/// What the rules do to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long before the handler.
    pub delay: Option<Duration>,
    /// Then answer this status instead of running the handler.
    pub abort: Option<u16>,
}

impl Decision {
    /// Whether the request is left alone.
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }

    /// The value of the span attribute `flotilla.fault`: `delay 200ms`, `abort 503`, or both.
    pub fn describe(&self) -> String {
        let delay = self.delay.map(|d| format!("delay {}ms", d.as_millis()));
        let abort = self.abort.map(|s| format!("abort {s}"));
        [delay, abort].into_iter().flatten().collect::<Vec<_>>().join(", ")
    }
}

/// What `rules` do to one request (`method`, `path`) at `now_ms`: the first delay rule in
/// force and aimed at it whose roll falls within its share delays it, then the first such
/// abort rule fails it (a request may be both, as with Envoy). `roll` gives numbers in
/// `0..1`, one per rule tried; it and the clock are parameters so tests can fix them.
pub fn decide(rules: &[FaultRule], method: &str, path: &str, now_ms: u64, mut roll: impl FnMut() -> f64) -> Decision {
    let mut decision = Decision::default();
    for rule in rules.iter().filter(|r| r.active_at(now_ms) && r.matches(method, path)) {
        match rule.kind {
            FaultKind::Delay if decision.delay.is_none() && roll() < rule.share => {
                decision.delay = Some(Duration::from_millis(rule.delay_ms));
            }
            FaultKind::Abort if decision.abort.is_none() && roll() < rule.share => {
                decision.abort = Some(rule.abort_status());
            }
            _ => {}
        }
    }
    decision
}

/// The answer of an aborted request.
pub fn abort_problem(status: u16) -> Problem {
    Problem::new(status, "fault-injected", "Fault injected").with_detail(
        "this service answers a share of requests with an error on purpose (fault injection; `flotilla chaos clear` ends it)",
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A service instance's fault rules, as the runtime consults them for every request.
#[derive(Clone, Default)]
pub(crate) struct Faults {
    live: Option<LiveConfig<FaultConfig>>,
}

impl Faults {
    /// Rules that never change (tests).
    #[cfg(test)]
    pub(crate) fn fixed(rules: Vec<FaultRule>) -> Self {
        Self {
            live: Some(LiveConfig::fixed(FaultConfig { faults: rules })),
        }
    }

    /// Follows `service`'s rules in the control plane's store until `shutdown`, logging each
    /// change of the rules in force. A bad local layer (`<SERVICE>_FAULTS` in the
    /// environment) is logged and leaves the service without fault injection.
    pub(crate) fn follow(
        service: &str,
        client: ConfigClient,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        // Both the store's watch and the announcements end with the instance.
        let shutdown = futures_util::FutureExt::shared(shutdown);
        let started = ConfigLoader::<FaultConfig>::new(service)
            .validate(FaultConfig::validate)
            .start(Some(client), shutdown.clone());
        let live = match started {
            Ok(live) => live,
            Err(err) => {
                tracing::error!(service, error = %err, "fault rules refused; running without fault injection");
                return Self::default();
            }
        };
        let service = service.to_owned();
        let watched = live.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = announce(&service, watched) => {}
                _ = shutdown => {}
            }
        });
        Self { live: Some(live) }
    }

    /// What the rules in force do to the request being served.
    pub(crate) fn decide_now(&self, method: &str, path: &str) -> Decision {
        let Some(live) = &self.live else {
            return Decision::default();
        };
        let config = live.current();
        if config.faults.is_empty() {
            return Decision::default();
        }
        decide(&config.faults, method, path, now_ms(), rand::random::<f64>)
    }
}

/// The rules in force, for a log line: `delay 200ms on 50% of requests until … (rule ab12)`.
fn describe_all(rules: &[FaultRule]) -> String {
    rules
        .iter()
        .map(|rule| {
            let until = match rule.until_ms {
                Some(ms) => format!(
                    " until {}",
                    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                ),
                None => " until cleared".to_owned(),
            };
            format!("{}{until} (rule {})", rule.describe(), rule.id)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Logs once whenever the set of rules in force changes: a new revision, or a rule's end.
async fn announce(service: &str, live: LiveConfig<FaultConfig>) {
    let mut changes = live.watch();
    let mut shown: Vec<FaultRule> = Vec::new();
    loop {
        let now = now_ms();
        let config = live.current();
        let active: Vec<FaultRule> = config.faults.iter().filter(|r| r.active_at(now)).cloned().collect();
        if active != shown {
            if active.is_empty() {
                tracing::info!(service, "fault injection cleared");
            } else {
                tracing::warn!(service, "fault injection active: {}", describe_all(&active));
            }
            shown = active;
        }
        let next_end = shown.iter().filter_map(|r| r.until_ms).min();
        let wait = next_end.map(|end| Duration::from_millis(end.saturating_sub(now).max(1)));
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, kind: FaultKind, share: f64, until_ms: Option<u64>) -> FaultRule {
        FaultRule {
            id: id.into(),
            kind,
            delay_ms: 200,
            status: (kind == FaultKind::Abort).then_some(502),
            share,
            method: None,
            path: None,
            until_ms,
        }
    }

    /// A roll that gives `values` in turn, and fails the test if asked for more.
    fn rolls(values: &[f64]) -> impl FnMut() -> f64 + '_ {
        let mut next = values.iter();
        move || *next.next().expect("no more rolls than rules")
    }

    #[test]
    fn a_rule_picks_its_share_of_requests() {
        let rules = [rule("d", FaultKind::Delay, 0.5, None)];
        assert_eq!(
            decide(&rules, "GET", "/p", 0, rolls(&[0.49])).delay,
            Some(Duration::from_millis(200))
        );
        assert!(decide(&rules, "GET", "/p", 0, rolls(&[0.5])).is_none());
        let all = [rule("d", FaultKind::Delay, 1.0, None)];
        assert!(!decide(&all, "GET", "/p", 0, rolls(&[0.999_999])).is_none());
        let none = [rule("d", FaultKind::Delay, 0.0, None)];
        assert!(decide(&none, "GET", "/p", 0, rolls(&[0.0])).is_none());
    }

    #[test]
    fn a_request_may_be_delayed_and_aborted_and_expired_rules_do_nothing() {
        let rules = [
            rule("old", FaultKind::Abort, 1.0, Some(1_000)),
            rule("d", FaultKind::Delay, 1.0, Some(5_000)),
            rule("a", FaultKind::Abort, 0.1, None),
        ];
        // At 999 the first abort still holds: delay, then abort 502; no roll for the third.
        let early = decide(&rules, "GET", "/p", 999, rolls(&[0.3, 0.0]));
        assert_eq!(early.abort, Some(502));
        assert_eq!(early.describe(), "delay 200ms, abort 502");
        // At 1000 it has ended: the third rule rolls for its 10 %.
        let later = decide(&rules, "GET", "/p", 1_000, rolls(&[0.0, 0.05]));
        assert_eq!((later.delay.is_some(), later.abort), (true, Some(502)));
        let missed = decide(&rules, "GET", "/p", 1_000, rolls(&[0.0, 0.2]));
        assert_eq!(missed.describe(), "delay 200ms");
        // After every end, only the open-ended abort remains.
        assert_eq!(
            decide(&rules, "GET", "/p", 9_000, rolls(&[0.0])).describe(),
            "abort 502"
        );
    }

    #[test]
    fn a_rule_aimed_at_one_call_leaves_the_others_alone() {
        let mut capture = rule("c", FaultKind::Abort, 1.0, None);
        capture.method = Some("POST".into());
        capture.path = Some("/api/v1/payments/*/capture".into());
        let rules = [capture, rule("d", FaultKind::Delay, 0.0, None)];
        let hit = decide(&rules, "POST", "/api/v1/payments/7/capture", 0, rolls(&[0.5, 0.0]));
        assert_eq!(hit.describe(), "abort 502");
        // Other calls roll only for the rules aimed at them.
        assert!(decide(&rules, "POST", "/api/v1/payments", 0, rolls(&[0.0])).is_none());
        assert!(decide(&rules, "GET", "/api/v1/payments/7/capture", 0, rolls(&[0.0])).is_none());
    }

    #[test]
    fn the_first_matching_rule_of_each_kind_wins() {
        let mut long = rule("long", FaultKind::Delay, 1.0, None);
        long.delay_ms = 900;
        let rules = [rule("d", FaultKind::Delay, 0.5, None), long];
        assert_eq!(
            decide(&rules, "GET", "/p", 0, rolls(&[0.1])).delay,
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            decide(&rules, "GET", "/p", 0, rolls(&[0.9, 0.0])).delay,
            Some(Duration::from_millis(900))
        );
    }

    #[test]
    fn bad_rules_are_refused_and_rules_in_force_are_described() {
        let bad: FaultConfig =
            serde_json::from_value(serde_json::json!({"faults": [{"id": "a", "kind": "delay"}]})).unwrap();
        let err = bad.validate().unwrap_err();
        assert!(err.contains("delay_ms"), "{err}");
        let rules = [
            rule("a", FaultKind::Abort, 0.25, None),
            rule("d", FaultKind::Delay, 1.0, Some(0)),
        ];
        assert_eq!(
            describe_all(&rules),
            "abort 502 on 25% of requests until cleared (rule a); delay 200ms on 100% of requests until 1970-01-01T00:00:00Z (rule d)"
        );
    }
}
