//! The event log: topics of CloudEvents with offsets; appends de-duplicated by event id and
//! synced to disk before they are acknowledged; consumer groups that are handed events, ack
//! them, and get them again when an ack does not come in time; after `max_deliveries` failed
//! deliveries an event moves to the topic's dead-letter topic (`<topic>.dead-letter`), from
//! which it can be replayed; retention by age and by count. SQLite in the data dir
//! (`events.db`, WAL): an append is synced to disk before it is answered (`synchronous =
//! FULL`); a group's progress (what is in flight, what was acked) is not (`NORMAL`), since
//! losing the last of it in a crash only redelivers events, which consumers' inboxes absorb.
//! Appends wake every waiting fetch.
//!
//! In cluster mode the log is NATS JetStream instead, through the SDK's backend (the one
//! services publish and consume through): the same API, the same semantics, every replica
//! serving it.

pub mod http;

use std::path::Path;
use std::time::Duration;

use flotilla_api::events::{validate_topic, Appended, CloudEvent, Delivery, GroupInfo, TopicInfo};
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

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
    Database(#[from] sqlx::Error),
    /// NATS JetStream did not answer (or refused).
    #[error("event log: {0}")]
    Unavailable(String),
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (topic TEXT NOT NULL, offset INTEGER NOT NULL, id TEXT NOT NULL, envelope TEXT NOT NULL, appended_ms INTEGER NOT NULL, PRIMARY KEY (topic, offset));
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (topic, id);
CREATE TABLE IF NOT EXISTS groups (topic TEXT NOT NULL, grp TEXT NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic, grp));
CREATE TABLE IF NOT EXISTS in_flight (topic TEXT NOT NULL, grp TEXT NOT NULL, offset INTEGER NOT NULL, attempts INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, last_error TEXT, PRIMARY KEY (topic, grp, offset));";

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

/// The event log. Share it behind an `Arc`.
pub struct SqliteLog {
    pool: SqlitePool,
    config: LogConfig,
    appended: watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SqliteLog {
    /// The log in `data_dir/events.db`.
    pub async fn open(data_dir: &Path, config: LogConfig) -> Result<Self, LogError> {
        Ok(Self::with(
            crate::sqlite(Some(&data_dir.join("events.db")), SCHEMA).await?,
            config,
        ))
    }

    /// A log in memory, for tests.
    pub async fn in_memory(config: LogConfig) -> Result<Self, LogError> {
        Ok(Self::with(crate::sqlite(None, SCHEMA).await?, config))
    }

    /// Every operation is a short transaction on the one connection.
    fn with(pool: SqlitePool, config: LogConfig) -> Self {
        Self {
            pool,
            config,
            appended: watch::Sender::new(0),
        }
    }

    /// Appends events to a topic, in order; an event whose id the topic already holds is not
    /// added again (its first offset is answered, marked duplicate). Durable when it returns.
    pub async fn append(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Appended>, LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        if events.is_empty() || events.len() > 1000 {
            return Err(invalid("events", "1 to 1000 per append"));
        }
        for event in events {
            event.validate().map_err(|(field, reason)| invalid(field, reason))?;
        }
        let now = now_ms();
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("INSERT INTO topics (topic, next_offset) VALUES (?, 0) ON CONFLICT (topic) DO NOTHING")
            .bind(topic)
            .execute(&mut *tx)
            .await?;
        let mut next: i64 = sqlx::query_scalar("SELECT next_offset FROM topics WHERE topic = ?")
            .bind(topic)
            .fetch_one(&mut *tx)
            .await?;
        // The ids the topic holds already, in one query per chunk.
        let mut known = std::collections::HashMap::new();
        for chunk in events.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT id, offset FROM events WHERE topic = ? AND id IN ({marks})");
            let mut query = sqlx::query(&sql).bind(topic);
            for event in chunk {
                query = query.bind(&event.id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                known.insert(row.try_get::<String, _>("id")?, row.try_get::<i64, _>("offset")?);
            }
        }
        let mut out = Vec::with_capacity(events.len());
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            if let Some(offset) = known.get(&event.id) {
                out.push(Appended {
                    id: event.id.clone(),
                    offset: *offset as u64,
                    duplicate: true,
                });
                continue;
            }
            let envelope = serde_json::to_string(event).map_err(|e| invalid("event", e.to_string()))?;
            known.insert(event.id.clone(), next);
            rows.push((next, event.id.clone(), envelope));
            out.push(Appended {
                id: event.id.clone(),
                offset: next as u64,
                duplicate: false,
            });
            next += 1;
        }
        for chunk in rows.chunks(200) {
            let marks = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO events (topic, offset, id, envelope, appended_ms) VALUES {marks}");
            let mut insert = sqlx::query(&sql);
            for (offset, id, envelope) in chunk {
                insert = insert.bind(topic).bind(*offset).bind(id).bind(envelope).bind(now);
            }
            insert.execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE topics SET next_offset = ? WHERE topic = ?")
            .bind(next)
            .bind(topic)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.appended.send_modify(|n| *n += 1);
        Ok(out)
    }

    /// Hands the group up to `max` events: due redeliveries first, then new ones. With
    /// `wait`, blocks until there is something or it passes.
    pub async fn fetch(&self, topic: &str, group: &str, max: u32, wait: Duration) -> Result<Vec<Delivery>, LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        check_group(group)?;
        let max = max.clamp(1, 1000);
        let until = tokio::time::Instant::now() + wait;
        let mut appended = self.appended.subscribe();
        loop {
            appended.borrow_and_update();
            let handed = self.fetch_now(topic, group, max).await?;
            if !handed.is_empty() {
                return Ok(handed);
            }
            // Wake on an append, or when the earliest event in flight falls due.
            let next_due: Option<i64> =
                sqlx::query_scalar("SELECT MIN(deadline_ms) FROM in_flight WHERE topic = ? AND grp = ?")
                    .bind(topic)
                    .bind(group)
                    .fetch_one(&self.pool)
                    .await?;
            let mut wake = until;
            if let Some(due) = next_due {
                let in_ms = (due - now_ms()).max(0) as u64;
                wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(in_ms));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(wake, appended.changed()).await;
        }
    }

    async fn fetch_now(&self, topic: &str, group: &str, max: u32) -> Result<Vec<Delivery>, LogError> {
        let now = now_ms();
        let deadline = now + self.config.ack_timeout.as_millis() as i64;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query(
            "INSERT INTO groups (topic, grp, next_offset) VALUES (?, ?, 0) ON CONFLICT (topic, grp) DO NOTHING",
        )
        .bind(topic)
        .bind(group)
        .execute(&mut *tx)
        .await?;
        let mut handed = Vec::new();
        let mut dead = Vec::new();
        let due = sqlx::query(
            "SELECT f.offset, f.attempts, f.last_error, e.envelope FROM in_flight f LEFT JOIN events e ON e.topic = f.topic AND e.offset = f.offset \
             WHERE f.topic = ? AND f.grp = ? AND f.deadline_ms <= ? ORDER BY f.offset LIMIT ?",
        )
        .bind(topic)
        .bind(group)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
        for row in due {
            let offset: i64 = row.try_get("offset")?;
            let attempts: i64 = row.try_get("attempts")?;
            let envelope: Option<String> = row.try_get("envelope")?;
            let Some(event) = envelope.and_then(|e| serde_json::from_str::<CloudEvent>(&e).ok()) else {
                // Dropped by retention while in flight: nothing left to deliver.
                sqlx::query("DELETE FROM in_flight WHERE topic = ? AND grp = ? AND offset = ?")
                    .bind(topic)
                    .bind(group)
                    .bind(offset)
                    .execute(&mut *tx)
                    .await?;
                continue;
            };
            if attempts >= i64::from(self.config.max_deliveries) {
                let reason: Option<String> = row.try_get("last_error")?;
                sqlx::query("DELETE FROM in_flight WHERE topic = ? AND grp = ? AND offset = ?")
                    .bind(topic)
                    .bind(group)
                    .bind(offset)
                    .execute(&mut *tx)
                    .await?;
                dead.push((
                    event,
                    reason.unwrap_or_else(|| format!("not acked after {attempts} deliveries")),
                    offset,
                ));
                continue;
            }
            sqlx::query("UPDATE in_flight SET attempts = attempts + 1, deadline_ms = ? WHERE topic = ? AND grp = ? AND offset = ?")
                .bind(deadline)
                .bind(topic)
                .bind(group)
                .bind(offset)
                .execute(&mut *tx)
                .await?;
            handed.push(Delivery {
                offset: offset as u64,
                attempt: (attempts + 1) as u32,
                event,
            });
        }
        let room = i64::from(max) - handed.len() as i64;
        if room > 0 {
            let next: i64 = sqlx::query_scalar("SELECT next_offset FROM groups WHERE topic = ? AND grp = ?")
                .bind(topic)
                .bind(group)
                .fetch_one(&mut *tx)
                .await?;
            let fresh = sqlx::query(
                "SELECT offset, envelope FROM events WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
            )
            .bind(topic)
            .bind(next)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
            let mut last = None;
            let mut flying = Vec::new();
            for row in fresh {
                let offset: i64 = row.try_get("offset")?;
                let envelope: String = row.try_get("envelope")?;
                last = Some(offset);
                let Ok(event) = serde_json::from_str::<CloudEvent>(&envelope) else {
                    continue;
                };
                flying.push(offset);
                handed.push(Delivery {
                    offset: offset as u64,
                    attempt: 1,
                    event,
                });
            }
            for chunk in flying.chunks(200) {
                let marks = vec!["(?, ?, ?, 1, ?, NULL)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO in_flight (topic, grp, offset, attempts, deadline_ms, last_error) VALUES {marks}"
                );
                let mut insert = sqlx::query(&sql);
                for offset in chunk {
                    insert = insert.bind(topic).bind(group).bind(*offset).bind(deadline);
                }
                insert.execute(&mut *tx).await?;
            }
            if let Some(last) = last {
                sqlx::query("UPDATE groups SET next_offset = ? WHERE topic = ? AND grp = ?")
                    .bind(last + 1)
                    .bind(topic)
                    .bind(group)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        // The one connection goes back before the dead letters are appended through it.
        drop(conn);
        for (mut event, reason, offset) in dead {
            tracing::warn!(topic, group, offset, %reason, id = %event.id, "event dead-lettered");
            event.deadletterreason = Some(format!("{reason} (topic {topic}, group {group}, offset {offset})"));
            self.append(&dead_letter_topic(topic), &[event]).await?;
        }
        Ok(handed)
    }

    /// The group is done with these offsets.
    pub async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<u64, LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        check_group(group)?;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let mut done = 0;
        for chunk in offsets.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("DELETE FROM in_flight WHERE topic = ? AND grp = ? AND offset IN ({marks})");
            let mut delete = sqlx::query(&sql).bind(topic).bind(group);
            for offset in chunk {
                delete = delete.bind(*offset as i64);
            }
            done += delete.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(done)
    }

    /// A handler failed on this event: it is due again at once (or dead-lettered on its last
    /// delivery), with the reason kept.
    pub async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        check_group(group)?;
        let reason: String = reason.chars().take(2000).collect();
        let updated = sqlx::query(
            "UPDATE in_flight SET deadline_ms = ?, last_error = ? WHERE topic = ? AND grp = ? AND offset = ?",
        )
        .bind(now_ms())
        .bind(reason)
        .bind(topic)
        .bind(group)
        .bind(offset as i64)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(LogError::NotFound(format!(
                "offset {offset} of `{topic}` is not in flight for `{group}`"
            )));
        }
        self.appended.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Events of a topic from an offset, without a group (inspection).
    pub async fn read(&self, topic: &str, from: u64, limit: u32) -> Result<Vec<Delivery>, LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        let rows =
            sqlx::query("SELECT offset, envelope FROM events WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?")
                .bind(topic)
                .bind(from as i64)
                .bind(i64::from(limit.clamp(1, 1000)))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let envelope: String = row.try_get("envelope")?;
                Ok(Delivery {
                    offset: row.try_get::<i64, _>("offset")? as u64,
                    attempt: 0,
                    event: serde_json::from_str(&envelope).map_err(|e| invalid("envelope", e.to_string()))?,
                })
            })
            .collect()
    }

    /// Appends a dead letter back to the topic it died on, as a new event (a fresh id, so
    /// consumers' inboxes take it); returns where it went.
    pub async fn replay(&self, dead_letter_topic_name: &str, offset: u64) -> Result<(String, Appended), LogError> {
        let Some(original) = dead_letter_topic_name.strip_suffix(".dead-letter") else {
            return Err(invalid(
                "topic",
                "replay takes events from a `<topic>.dead-letter` topic",
            ));
        };
        let mut event = self
            .read(dead_letter_topic_name, offset, 1)
            .await?
            .into_iter()
            .find(|d| d.offset == offset)
            .ok_or_else(|| LogError::NotFound(format!("no event at offset {offset} of `{dead_letter_topic_name}`")))?
            .event;
        event.deadletterreason = None;
        event.id = format!("{}~replay-{}", event.id, now_ms());
        let appended = self.append(original, &[event]).await?;
        Ok((
            original.to_owned(),
            appended
                .into_iter()
                .next()
                .ok_or_else(|| LogError::NotFound("nothing appended".into()))?,
        ))
    }

    /// Drops what retention says to; returns how many events went.
    pub async fn enforce_retention(&self) -> Result<u64, LogError> {
        let cutoff = now_ms() - self.config.retention.as_millis() as i64;
        let mut dropped = sqlx::query("DELETE FROM events WHERE appended_ms < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let keep = self.config.max_events_per_topic as i64;
        dropped += sqlx::query(
            "DELETE FROM events WHERE offset < (SELECT next_offset FROM topics t WHERE t.topic = events.topic) - ?",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(dropped)
    }

    /// Every topic, with its groups' progress.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let topics = sqlx::query("SELECT t.topic, t.next_offset, (SELECT COUNT(*) FROM events e WHERE e.topic = t.topic) AS events FROM topics t ORDER BY t.topic")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for row in topics {
            let topic: String = row.try_get("topic")?;
            let next: i64 = row.try_get("next_offset")?;
            let groups = sqlx::query(
                "SELECT g.grp, g.next_offset, (SELECT COUNT(*) FROM in_flight f WHERE f.topic = g.topic AND f.grp = g.grp) AS in_flight FROM groups g WHERE g.topic = ? ORDER BY g.grp",
            )
            .bind(&topic)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|g| {
                let group_next: i64 = g.try_get("next_offset")?;
                Ok(GroupInfo {
                    group: g.try_get("grp")?,
                    next_offset: group_next as u64,
                    in_flight: g.try_get::<i64, _>("in_flight")? as u64,
                    lag: (next - group_next).max(0) as u64,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
            out.push(TopicInfo {
                topic,
                events: row.try_get::<i64, _>("events")? as u64,
                next_offset: next as u64,
                groups,
            });
        }
        Ok(out)
    }

    /// Enforces retention every minute until `shutdown`.
    pub async fn run_retention(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match self.enforce_retention().await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "event retention"),
                Err(err) => tracing::error!(error = %err, "event retention failed"),
            }
        }
    }
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
