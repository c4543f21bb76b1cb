//! Fault injection's wire types: the rules `flotilla chaos latency|abort` writes into a
//! service's config (key [`FAULTS_KEY`]) and every instance of the service applies to the
//! requests it serves, and what the supervisor answers about the kills and pauses it made.
//!
//! Defined here because three parts speak them: the CLI writes rules, the SDK's runtime
//! applies them, and `flotilla status` shows them.

use serde::{Deserialize, Serialize};

/// The config key (in a service's scope) that holds its fault rules.
pub const FAULTS_KEY: &str = "faults";

/// The status an abort answers when its rule names none.
pub const DEFAULT_ABORT_STATUS: u16 = 503;

/// The longest delay a rule may ask for: a fault should look like a slow dependency, not a
/// request parked for good (a per-try timeout of a caller is 1 s; a minute is far past it).
pub const MAX_DELAY_MS: u64 = 60_000;

/// What a rule does to a request it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Wait `delay_ms` before the handler runs.
    Delay,
    /// Answer `status` (problem+json) without running the handler.
    Abort,
}

impl FaultKind {
    /// The name used in rules and in the CLI's output.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::Abort => "abort",
        }
    }
}

/// One fault rule of a service: which share of its application requests (of every request,
/// or of one method and path) to delay or fail, and until when. Rules expire on their own
/// (`until_ms`), so a forgotten experiment ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// An id to tell rules apart in logs and listings.
    pub id: String,
    /// Delay or abort.
    pub kind: FaultKind,
    /// How long a delay waits, in milliseconds (delays only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// The status an abort answers (aborts only; default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The share of requests picked, from 0 to 1.
    #[serde(default = "all")]
    pub share: f64,
    /// Only requests of this method (`POST`, any case); none: every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only requests whose path matches this pattern, segment by segment: `*` or a template
    /// segment (`{id}`) matches any one segment (`/api/v1/payments/*/capture`); none: every
    /// path. Aiming a fault at one call of a saga needs no more than that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The wall-clock time (Unix epoch milliseconds) the rule ends; none: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn all() -> f64 {
    1.0
}

impl FaultRule {
    /// Whether the rule is still in force at `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }

    /// Whether the rule is about a request of `method` to `path`.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|pattern| path_matches(pattern, path))
    }

    /// Whether `other` is aimed at the same requests in the same way (kind, method, path):
    /// a new rule replaces such a one rather than adding to it.
    pub fn same_aim(&self, other: &FaultRule) -> bool {
        self.kind == other.kind
            && self.method.as_deref().map(str::to_ascii_uppercase)
                == other.method.as_deref().map(str::to_ascii_uppercase)
            && self.path == other.path
    }

    /// The status an abort answers.
    pub fn abort_status(&self) -> u16 {
        self.status.unwrap_or(DEFAULT_ABORT_STATUS)
    }

    /// Checks the rule; the error names the field and says why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.id.is_empty() {
            return Err(("id", "a rule needs an id".into()));
        }
        if !(0.0..=1.0).contains(&self.share) {
            return Err(("share", format!("{} is not within 0..=1", self.share)));
        }
        if let Some(method) = &self.method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(("method", format!("`{method}` is not an HTTP method")));
            }
        }
        if let Some(path) = &self.path {
            if !path.starts_with('/') {
                return Err(("path", format!("`{path}` does not start with `/`")));
            }
        }
        match self.kind {
            FaultKind::Delay => {
                if self.delay_ms == 0 || self.delay_ms > MAX_DELAY_MS {
                    return Err((
                        "delay_ms",
                        format!("{} is not within 1..={MAX_DELAY_MS}", self.delay_ms),
                    ));
                }
            }
            FaultKind::Abort => {
                let status = self.abort_status();
                if !(400..=599).contains(&status) {
                    return Err(("status", format!("{status} is not an error status (400..=599)")));
                }
            }
        }
        Ok(())
    }

    /// What the rule does, for people: `delay 200ms`, `abort 503`.
    pub fn effect(&self) -> String {
        match self.kind {
            FaultKind::Delay => format!("delay {}ms", self.delay_ms),
            FaultKind::Abort => format!("abort {}", self.abort_status()),
        }
    }

    /// The rule in one line, without its end: `delay 200ms on 50% of requests`, `abort 402
    /// on 10% of POST /api/v1/payments/*/capture`.
    pub fn describe(&self) -> String {
        let percent = self.share * 100.0;
        let share = if percent.fract() == 0.0 {
            format!("{percent:.0}%")
        } else {
            format!("{percent}%")
        };
        let aim = match (&self.method, &self.path) {
            (None, None) => "requests".to_owned(),
            (Some(method), None) => format!("{} requests", method.to_ascii_uppercase()),
            (None, Some(path)) => format!("requests to {path}"),
            (Some(method), Some(path)) => format!("{} {path}", method.to_ascii_uppercase()),
        };
        format!("{} on {share} of {aim}", self.effect())
    }
}

/// Whether `path` matches `pattern` segment by segment, `*` and `{name}` matching any one
/// segment.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pattern = pattern.trim_end_matches('/').split('/');
    let mut path = path.trim_end_matches('/').split('/');
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(want), Some(got)) => {
                let any = want == "*" || (want.starts_with('{') && want.ends_with('}'));
                if !((any && !got.is_empty()) || want == got) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Checks a list of rules, naming the rule at fault by its position and id.
pub fn validate_rules(rules: &[FaultRule]) -> Result<(), String> {
    for (i, rule) in rules.iter().enumerate() {
        rule.validate()
            .map_err(|(field, reason)| format!("faults[{i}] (`{}`).{field}: {reason}", rule.id))?;
    }
    Ok(())
}

/// A fault the supervisor applies to a whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessFault {
    /// SIGKILL: the supervisor restarts it as it would after any crash.
    Kill,
    /// SIGSTOP, then SIGCONT after the duration: a hung process.
    Pause,
}

impl ProcessFault {
    /// The name used in requests and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessFault::Kill => "kill",
            ProcessFault::Pause => "pause",
        }
    }
}

/// A request to the supervisor's `POST /v1/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Kill or pause.
    pub kind: ProcessFault,
    /// A process (`orders-1`), a service (one of its instances, at random), or `random`
    /// (any process, the gateway and the control plane included).
    pub target: String,
    /// How long a pause lasts (pauses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Seeds the random choice of a process, so a run can be repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A fault the supervisor made: what, to which process, when, and (pauses) until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// The fault's id.
    pub id: String,
    /// Kill or pause.
    pub kind: ProcessFault,
    /// The process it hit (`orders-1`).
    pub process: String,
    /// The target as asked (`orders`, `random`).
    pub target: String,
    /// The process's pid when it was hit.
    pub pid: u32,
    /// When (Unix epoch milliseconds).
    pub at_ms: u64,
    /// How long a pause lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When a pause ended (the process continued, was killed, or was stopped); none while
    /// it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
}

/// The answer of the supervisor's `GET /v1/faults`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultList {
    /// The pauses in force now.
    pub active: Vec<FaultRecord>,
    /// The latest faults, newest first (a bounded list).
    pub recent: Vec<FaultRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: FaultKind) -> FaultRule {
        FaultRule {
            id: "r1".into(),
            kind,
            delay_ms: 200,
            status: None,
            share: 0.5,
            method: None,
            path: None,
            until_ms: Some(1_000),
        }
    }

    #[test]
    fn rules_read_with_their_defaults_and_expire() {
        let rule: FaultRule = serde_json::from_str(r#"{"id":"a","kind":"abort"}"#).unwrap();
        assert_eq!(rule.share, 1.0);
        assert_eq!(rule.abort_status(), 503);
        assert!(rule.active_at(u64::MAX));
        assert_eq!(rule.describe(), "abort 503 on 100% of requests");
        let delay = super::tests::rule(FaultKind::Delay);
        assert!(delay.active_at(999) && !delay.active_at(1_000));
        assert_eq!(delay.describe(), "delay 200ms on 50% of requests");
        assert!(serde_json::from_str::<FaultRule>(r#"{"id":"a","kind":"abort","sahre":1}"#).is_err());
    }

    #[test]
    fn bad_rules_are_named() {
        let mut bad = rule(FaultKind::Delay);
        bad.share = 1.5;
        assert_eq!(bad.validate().unwrap_err().0, "share");
        let mut bad = rule(FaultKind::Delay);
        bad.delay_ms = 0;
        assert_eq!(bad.validate().unwrap_err().0, "delay_ms");
        let mut bad = rule(FaultKind::Abort);
        bad.status = Some(200);
        let err = validate_rules(&[rule(FaultKind::Abort), bad]).unwrap_err();
        assert!(err.starts_with("faults[1] (`r1`).status"), "{err}");
        let mut bad = rule(FaultKind::Abort);
        bad.path = Some("api/v1".into());
        assert_eq!(bad.validate().unwrap_err().0, "path");
        bad.path = None;
        bad.method = Some("PO ST".into());
        assert_eq!(bad.validate().unwrap_err().0, "method");
    }

    #[test]
    fn a_rule_may_aim_at_one_method_and_path() {
        let mut capture = rule(FaultKind::Abort);
        capture.status = Some(402);
        capture.method = Some("post".into());
        capture.path = Some("/api/v1/payments/*/capture".into());
        assert!(capture.matches("POST", "/api/v1/payments/p-17/capture"));
        assert!(capture.matches("POST", "/api/v1/payments/p-17/capture/"));
        assert!(!capture.matches("GET", "/api/v1/payments/p-17/capture"));
        assert!(!capture.matches("POST", "/api/v1/payments/p-17"));
        assert!(!capture.matches("POST", "/api/v1/payments//capture"));
        assert!(!capture.matches("POST", "/api/v1/payments/p-17/capture/x"));
        assert!(path_matches("/api/v1/orders/{id}", "/api/v1/orders/42"));
        assert!(rule(FaultKind::Delay).matches("DELETE", "/anything"));
        assert_eq!(
            capture.describe(),
            "abort 402 on 50% of POST /api/v1/payments/*/capture"
        );
        let mut same = capture.clone();
        same.method = Some("POST".into());
        same.share = 1.0;
        assert!(capture.same_aim(&same));
        same.path = None;
        assert!(!capture.same_aim(&same));
    }
}
