//! The event log: topics of CloudEvents with offsets; appends de-duplicated by event id and
//! synced to disk before they are acknowledged; consumer groups that are handed events, ack
//! them, and get them again when an ack does not come in time; after `max_deliveries` failed
//! deliveries an event moves to the topic's dead-letter topic (`<topic>.dead-letter`), from
//! which it can be replayed; retention by age and by count. SQLite in the data dir
//! (`events.db`, [`SqliteLog`]: one thread of its own, appends synced before they are
//! answered, a group's progress not, since losing the last of it in a crash only redelivers
//! events, which consumers' inboxes absorb). Appends wake every waiting fetch once durable.
//!
//! In cluster mode the log is NATS JetStream instead, through the SDK's backend (the one
//! services publish and consume through): the same API, the same semantics, every replica
//! serving it.

pub mod http;
mod sqlite;

use std::path::Path;
use std::time::Duration;

use flotilla_api::events::{validate_topic, Appended, CloudEvent, Delivery, TopicInfo};

pub use sqlite::SqliteLog;

/// How consumer groups and retention behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// An event handed out and not acked within this is handed out again.
    pub ack_timeout: Duration,
    /// After this many deliveries without an ack, the event is dead-lettered.
    pub max_deliveries: u32,
    /// Events older than this are dropped.
    pub retention: Duration,
    /// At most this many events are kept per topic (the oldest go first).
    pub max_events_per_topic: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_topic: 1_000_000,
        }
    }
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A name or an event is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No such event.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error("event log: {0}")]
    Database(#[from] rusqlite::Error),
    /// NATS JetStream did not answer (or refused).
    #[error("event log: {0}")]
    Unavailable(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn invalid(field: &'static str, reason: impl Into<String>) -> LogError {
    LogError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_group(group: &str) -> Result<(), LogError> {
    validate_topic(group).map_err(|_| {
        invalid(
            "group",
            format!("`{group}` is not a group name (lowercase letters, digits, '.', '_', '-')"),
        )
    })
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead-letter")
}

/// The event log the control plane serves: its own SQLite file, or NATS JetStream.
#[derive(Debug)]
pub enum EventLog {
    /// SQLite in the data dir (one process).
    Sqlite(SqliteLog),
    /// NATS JetStream streams (every replica; services may also speak to them directly).
    Nats(flotilla::events::EventsClient),
}

fn from_nats(err: flotilla::events::EventsError) -> LogError {
    use flotilla::events::EventsError;
    match err {
        EventsError::Invalid { field, reason } => LogError::Invalid { field, reason },
        EventsError::NotFound(what) => LogError::NotFound(what),
        other => LogError::Unavailable(other.to_string()),
    }
}

impl EventLog {
    /// The log in `data_dir/events.db`.
    pub async fn open(data_dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        SqliteLog::open(data_dir, config).await.map(Self::Sqlite)
    }

    /// A log in memory, for tests.
    pub async fn in_memory(config: LogConfig) -> Result<Self, LogError> {
        SqliteLog::in_memory(config).await.map(Self::Sqlite)
    }

    /// The log on the NATS cluster `servers` (R3 on three or more), with the same groups and
    /// retention as the SQLite log.
    pub async fn on_nats(servers: &[String], config: LogConfig) -> Result<Self, LogError> {
        let nats = flotilla::events::NatsConfig {
            ack_wait: config.ack_timeout,
            max_deliveries: config.max_deliveries,
            retention: config.retention,
            max_events_per_topic: i64::try_from(config.max_events_per_topic).unwrap_or(i64::MAX),
            request_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        flotilla::events::EventsClient::nats(&servers.join(","), None, nats)
            .await
            .map(Self::Nats)
            .map_err(from_nats)
    }

    /// Appends events to a topic, in order; an event whose id the topic already holds is not
    /// added again (its first offset is answered, marked duplicate). Durable when it returns.
    pub async fn append(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Appended>, LogError> {
        match self {
            Self::Sqlite(log) => log.append(topic, events).await,
            Self::Nats(nats) => nats.append(topic, events).await.map_err(from_nats),
        }
    }

    /// Hands a group its next events (due redeliveries first), waiting up to `wait` for some.
    pub async fn fetch(&self, topic: &str, group: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, LogError> {
        match self {
            Self::Sqlite(log) => log.fetch(topic, group, max, wait).await,
            Self::Nats(nats) => nats.fetch(topic, group, max, wait).await.map_err(from_nats),
        }
    }

    /// The group is done with these offsets; how many were in flight.
    pub async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<u64, LogError> {
        match self {
            Self::Sqlite(log) => log.ack(topic, group, offsets).await,
            Self::Nats(nats) => nats
                .ack(topic, group, offsets)
                .await
                .map(|()| offsets.len() as u64)
                .map_err(from_nats),
        }
    }

    /// A handler failed on this event: it is due again (or dead-lettered on its last delivery).
    pub async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), LogError> {
        match self {
            Self::Sqlite(log) => log.nack(topic, group, offset, reason).await,
            Self::Nats(nats) => nats.nack(topic, group, offset, reason).await.map_err(from_nats),
        }
    }

    /// Events of a topic from an offset, without a group (inspection).
    pub async fn read(&self, topic: &str, from: u64, limit: u32) -> Result<Vec<Delivery>, LogError> {
        match self {
            Self::Sqlite(log) => log.read(topic, from, limit).await,
            Self::Nats(nats) => nats.read(topic, from, limit).await.map_err(from_nats),
        }
    }

    /// Appends a dead letter back to its topic as a new event; where it went.
    pub async fn replay(&self, dead_letter_topic_name: &str, offset: u64) -> Result<(String, Appended), LogError> {
        match self {
            Self::Sqlite(log) => log.replay(dead_letter_topic_name, offset).await,
            Self::Nats(nats) => {
                let went = nats.replay(dead_letter_topic_name, offset).await.map_err(from_nats)?;
                let field = |name: &str| went.get(name).cloned().unwrap_or_default();
                Ok((
                    field("topic").as_str().unwrap_or_default().to_owned(),
                    Appended {
                        id: field("id").as_str().unwrap_or_default().to_owned(),
                        offset: field("offset").as_u64().unwrap_or_default(),
                        duplicate: false,
                    },
                ))
            }
        }
    }

    /// Every topic with its count and each group's progress.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        match self {
            Self::Sqlite(log) => log.topics().await,
            Self::Nats(nats) => nats.topics().await.map_err(from_nats),
        }
    }

    /// Drops what retention says to (NATS streams enforce their own limits).
    pub async fn enforce_retention(&self) -> Result<u64, LogError> {
        match self {
            Self::Sqlite(log) => log.enforce_retention().await,
            Self::Nats(_) => Ok(0),
        }
    }

    /// Enforces retention every minute until `shutdown` (SQLite; NATS keeps its own limits).
    pub async fn run_retention(&self, shutdown: impl std::future::Future<Output = ()>) {
        match self {
            Self::Sqlite(log) => log.run_retention(shutdown).await,
            Self::Nats(_) => shutdown.await,
        }
    }
}

#[cfg(test)]
mod tests;
