//! The event log's wire types: CloudEvents-shaped envelopes (CloudEvents 1.0, JSON format),
//! appends, deliveries to consumer groups, and acknowledgements.

use serde::{Deserialize, Serialize};

/// An event, as CloudEvents 1.0 shapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloudEvent {
    /// `1.0`.
    #[serde(default = "spec_version")]
    pub specversion: String,
    /// Unique per source; the log drops a second append of the same id to a topic.
    pub id: String,
    /// Who emitted it (`/orders`).
    pub source: String,
    /// What happened (`shop.order.confirmed`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What it is about (the aggregate id: `order/42`); events of one subject keep their order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The W3C trace context of the operation that emitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Set on dead letters: why the event was given up on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadletterreason: Option<String>,
}

fn spec_version() -> String {
    "1.0".into()
}

/// Distinguishes events made in the same nanosecond by one process.
fn next_counter() -> u32 {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl CloudEvent {
    /// An event `kind` from `source` (`/reviews`) about `subject` (`entry/42`), with a fresh
    /// id and the time now; the outbox adds the trace context.
    pub fn new(
        source: impl Into<String>,
        kind: impl Into<String>,
        subject: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        let at = std::time::SystemTime::now();
        let now = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Self {
            specversion: spec_version(),
            id: format!("{:x}-{:08x}", now.as_nanos(), next_counter()),
            source: source.into(),
            kind: kind.into(),
            subject: Some(subject.into()),
            time: Some(humantime::format_rfc3339_millis(at).to_string()),
            traceparent: None,
            data,
            deadletterreason: None,
        }
    }

    /// Checks the required attributes; the error names the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.specversion != "1.0" {
            return Err(("specversion", "only 1.0".into()));
        }
        for (name, value, max) in [
            ("id", &self.id, 200),
            ("source", &self.source, 500),
            ("type", &self.kind, 200),
        ] {
            if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
                return Err((name, format!("required, printable, at most {max} characters")));
            }
        }
        if self.subject.as_ref().is_some_and(|s| s.len() > 500) {
            return Err(("subject", "at most 500 characters".into()));
        }
        Ok(())
    }
}

/// A topic name: lowercase letters, digits, `.`, `_` and `-`, 1 to 100 characters.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 100
        && topic
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{topic}` is not a topic name (lowercase letters, digits, '.', '_', '-')"
        ))
    }
}

/// What an append did with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Appended {
    /// The event's id.
    pub id: String,
    /// Its offset in the topic.
    pub offset: u64,
    /// It was already in the topic (appended before with this id): nothing was added.
    pub duplicate: bool,
}

/// One event handed to a consumer group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    /// Its offset; ack it by this.
    pub offset: u64,
    /// 1 on first delivery, more on redelivery.
    pub attempt: u32,
    /// The event.
    pub event: CloudEvent,
}

/// `POST /v1/events/{topic}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The consumer group.
    pub group: String,
    /// The offsets it is done with.
    pub offsets: Vec<u64>,
}

/// `POST /v1/events/{topic}/nack`: a handler failed; redeliver (or dead-letter) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Nack {
    /// The consumer group.
    pub group: String,
    /// The offset.
    pub offset: u64,
    /// Why it failed.
    pub reason: String,
}

/// A topic as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Events retained.
    pub events: u64,
    /// The next offset to be written.
    pub next_offset: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupInfo>,
}

/// A consumer group's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    /// The group.
    pub group: String,
    /// The next offset it has not been handed.
    pub next_offset: u64,
    /// Events handed out and not yet acked.
    pub in_flight: u64,
    /// Events not yet handed out.
    pub lag: u64,
}

#[cfg(test)]
mod new_event_tests {
    use super::*;

    #[test]
    fn a_new_event_is_valid_unique_and_dated() {
        let a = CloudEvent::new(
            "/reviews",
            "reviews.entry-added",
            "entry/1",
            serde_json::json!({"id": "1"}),
        );
        let b = CloudEvent::new("/reviews", "reviews.entry-added", "entry/2", serde_json::json!({}));
        assert!(a.validate().is_ok());
        assert_ne!(a.id, b.id);
        assert_eq!(a.subject.as_deref(), Some("entry/1"));
        let time = a.time.unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
}
