//! The event log in one SQLite file, driven by one thread of its own.
//!
//! Every operation (an append, a fetch, an ack) is one closure run on the log's thread, which
//! owns the connection: one hand-over per operation instead of one per statement (through
//! sqlx's worker, each statement of an append cost a round trip between threads, and those
//! hand-overs were most of the control plane's CPU under `bench/events`). The thread never
//! waits for the disk on an append's behalf: it commits with `synchronous = NORMAL` and the
//! append then waits, off the thread, for an fsync of the write-ahead log that started after
//! its commit ([`WalSync`]) — appends arriving together share one, and fetches and acks run
//! meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla::store::WalSync;
use flotilla_api::events::{validate_topic, Appended, CloudEvent, Delivery, GroupInfo, TopicInfo};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::watch;

use super::{check_group, dead_letter_topic, invalid, now_ms, LogConfig, LogError};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (topic TEXT NOT NULL, offset INTEGER NOT NULL, id TEXT NOT NULL, envelope TEXT NOT NULL, appended_ms INTEGER NOT NULL, PRIMARY KEY (topic, offset));
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (topic, id);
CREATE TABLE IF NOT EXISTS groups (topic TEXT NOT NULL, grp TEXT NOT NULL, next_offset INTEGER NOT NULL, PRIMARY KEY (topic, grp));
CREATE TABLE IF NOT EXISTS in_flight (topic TEXT NOT NULL, grp TEXT NOT NULL, offset INTEGER NOT NULL, attempts INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, last_error TEXT, PRIMARY KEY (topic, grp, offset));";

/// Work for the log's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The thread that owns the connection, and the way to hand it work.
#[derive(Debug)]
struct Db {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Db {
    /// Opens `file` (or a database in memory) on a new thread; it ends when the log is dropped.
    async fn open(file: Option<std::path::PathBuf>) -> Result<Self, LogError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (opened, ready) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || {
                let mut conn = match connect(file.as_deref()) {
                    Ok(conn) => {
                        let _ = opened.send(Ok(()));
                        conn
                    }
                    Err(err) => {
                        let _ = opened.send(Err(err));
                        return;
                    }
                };
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| LogError::Unavailable(format!("event log thread: {e}")))?;
        ready.await.map_err(|_| stopped())??;
        Ok(Self { jobs })
    }

    /// Runs `work` on the log's thread and answers what it returns.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, LogError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn: &mut Connection| {
                let _ = answer.send(work(conn));
            }))
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> LogError {
    LogError::Unavailable("the event log's thread stopped".into())
}

fn connect(file: Option<&Path>) -> Result<Connection, LogError> {
    let conn = match file {
        Some(file) => Connection::open(file)?,
        None => Connection::open_in_memory()?,
    };
    conn.busy_timeout(Duration::from_secs(5))?;
    // WAL, commits without a sync of their own ([`WalSync`] makes appends durable), and
    // 16 MiB of page cache.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384;")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// An event ready to be written: its id and its envelope as JSON.
struct Row {
    id: String,
    envelope: String,
}

/// Appends `rows` to `topic` in `tx`: an id the topic holds already is answered with its
/// first offset, marked duplicate.
fn append_rows(
    tx: &rusqlite::Transaction<'_>,
    topic: &str,
    rows: Vec<Row>,
    now: i64,
) -> Result<Vec<Appended>, LogError> {
    let mut next: i64 = tx
        .prepare_cached(
            "INSERT INTO topics (topic, next_offset) VALUES (?1, 0) \
             ON CONFLICT (topic) DO UPDATE SET next_offset = next_offset RETURNING next_offset",
        )?
        .query_row([topic], |row| row.get(0))?;
    // The unique index on (topic, id) finds a repeated id as the row goes in: one look-up
    // per event, and only a repeat costs a second.
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (topic, offset, id, envelope, appended_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (topic, id) DO NOTHING",
    )?;
    let mut first = tx.prepare_cached("SELECT offset FROM events WHERE topic = ?1 AND id = ?2")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if insert.execute(params![topic, next, row.id, row.envelope, now])? == 0 {
            let offset: i64 = first.query_row(params![topic, row.id], |r| r.get(0))?;
            out.push(Appended {
                id: row.id,
                offset: offset as u64,
                duplicate: true,
            });
            continue;
        }
        out.push(Appended {
            id: row.id,
            offset: next as u64,
            duplicate: false,
        });
        next += 1;
    }
    tx.prepare_cached("UPDATE topics SET next_offset = ?1 WHERE topic = ?2")?
        .execute(params![next, topic])?;
    Ok(out)
}

/// What a fetch found: the deliveries (envelopes still as text), or, with none, when the
/// earliest event in flight falls due.
struct Fetched {
    handed: Vec<(i64, u32, String)>,
    next_due: Option<i64>,
}

/// The event log. Share it behind an `Arc`.
pub struct SqliteLog {
    db: Db,
    /// Syncs of `events.db-wal` that make appends durable (none in memory).
    pub(super) wal: Option<Arc<WalSync>>,
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
        let file = data_dir.join("events.db");
        let wal = WalSync::of_database(&file);
        Ok(Self::with(Db::open(Some(file)).await?, Some(Arc::new(wal)), config))
    }

    /// A log in memory, for tests.
    pub async fn in_memory(config: LogConfig) -> Result<Self, LogError> {
        Ok(Self::with(Db::open(None).await?, None, config))
    }

    fn with(db: Db, wal: Option<Arc<WalSync>>, config: LogConfig) -> Self {
        Self {
            db,
            wal,
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
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            event.validate().map_err(|(field, reason)| invalid(field, reason))?;
            rows.push(Row {
                id: event.id.clone(),
                envelope: serde_json::to_string(event).map_err(|e| invalid("event", e.to_string()))?,
            });
        }
        let topic = topic.to_owned();
        let now = now_ms();
        let out = self
            .db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = append_rows(&tx, &topic, rows, now)?;
                tx.commit()?;
                Ok(out)
            })
            .await?;
        self.synced().await?;
        self.appended.send_modify(|n| *n += 1);
        Ok(out)
    }

    /// Waits for the write-ahead log to be synced past every commit made so far.
    async fn synced(&self) -> Result<(), LogError> {
        match &self.wal {
            Some(wal) => wal
                .synced()
                .await
                .map_err(|e| LogError::Unavailable(format!("syncing the event log: {e}"))),
            None => Ok(()),
        }
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
            let fetched = self.fetch_now(topic, group, max).await?;
            if !fetched.handed.is_empty() {
                return fetched
                    .handed
                    .into_iter()
                    .filter_map(|(offset, attempt, envelope)| {
                        // An envelope that no longer reads as an event was recorded as handed
                        // out; it is left to time out and, in the end, be dead-lettered.
                        serde_json::from_str::<CloudEvent>(&envelope).ok().map(|event| {
                            Ok(Delivery {
                                offset: offset as u64,
                                attempt,
                                event,
                            })
                        })
                    })
                    .collect();
            }
            // Wake on an append, or when the earliest event in flight falls due.
            let mut wake = until;
            if let Some(due) = fetched.next_due {
                let in_ms = (due - now_ms()).max(0) as u64;
                wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(in_ms));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout_at(wake, appended.changed()).await;
        }
    }

    /// One look: due redeliveries first (those out of deliveries go to the dead-letter topic
    /// in the same transaction), then new events, each recorded as in flight.
    async fn fetch_now(&self, topic: &str, group: &str, max: u32) -> Result<Fetched, LogError> {
        let (topic, group) = (topic.to_owned(), group.to_owned());
        let now = now_ms();
        let deadline = now + self.config.ack_timeout.as_millis() as i64;
        let max_deliveries = i64::from(self.config.max_deliveries);
        let (fetched, dead_lettered) = self
            .db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut handed = Vec::new();
                let mut dead = Vec::new();
                {
                    let mut due = tx.prepare_cached(
                        "SELECT f.offset, f.attempts, f.last_error, e.envelope FROM in_flight f \
                         LEFT JOIN events e ON e.topic = f.topic AND e.offset = f.offset \
                         WHERE f.topic = ?1 AND f.grp = ?2 AND f.deadline_ms <= ?3 ORDER BY f.offset LIMIT ?4",
                    )?;
                    let rows = due
                        .query_map(params![topic, group, now, i64::from(max)], |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, i64>(1)?,
                                row.get::<_, Option<String>>(2)?,
                                row.get::<_, Option<String>>(3)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut forget =
                        tx.prepare_cached("DELETE FROM in_flight WHERE topic = ?1 AND grp = ?2 AND offset = ?3")?;
                    let mut again = tx.prepare_cached(
                        "UPDATE in_flight SET attempts = attempts + 1, deadline_ms = ?1 \
                         WHERE topic = ?2 AND grp = ?3 AND offset = ?4",
                    )?;
                    for (offset, attempts, last_error, envelope) in rows {
                        let Some(envelope) = envelope else {
                            // Dropped by retention while in flight: nothing left to deliver.
                            forget.execute(params![topic, group, offset])?;
                            continue;
                        };
                        if attempts >= max_deliveries {
                            forget.execute(params![topic, group, offset])?;
                            let reason = last_error.unwrap_or_else(|| format!("not acked after {attempts} deliveries"));
                            dead.push((offset, reason, envelope));
                            continue;
                        }
                        again.execute(params![deadline, topic, group, offset])?;
                        handed.push((offset, (attempts + 1) as u32, envelope));
                    }
                }
                let room = i64::from(max) - handed.len() as i64;
                if room > 0 {
                    // Where the group has got to; a new group is made (a fetch finding nothing
                    // writes nothing).
                    let known: Option<i64> = tx
                        .prepare_cached("SELECT next_offset FROM groups WHERE topic = ?1 AND grp = ?2")?
                        .query_row(params![topic, group], |row| row.get(0))
                        .optional()?;
                    let next = match known {
                        Some(next) => next,
                        None => {
                            tx.prepare_cached("INSERT INTO groups (topic, grp, next_offset) VALUES (?1, ?2, 0)")?
                                .execute(params![topic, group])?;
                            0
                        }
                    };
                    let fresh = tx
                        .prepare_cached(
                            "SELECT offset, envelope FROM events WHERE topic = ?1 AND offset >= ?2 ORDER BY offset LIMIT ?3",
                        )?
                        .query_map(params![topic, next, room], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    if let Some((last, _)) = fresh.last() {
                        let mut flying = tx.prepare_cached(
                            "INSERT INTO in_flight (topic, grp, offset, attempts, deadline_ms, last_error) \
                             VALUES (?1, ?2, ?3, 1, ?4, NULL)",
                        )?;
                        for (offset, _) in &fresh {
                            flying.execute(params![topic, group, offset, deadline])?;
                        }
                        tx.prepare_cached("UPDATE groups SET next_offset = ?1 WHERE topic = ?2 AND grp = ?3")?
                            .execute(params![last + 1, topic, group])?;
                    }
                    handed.extend(fresh.into_iter().map(|(offset, envelope)| (offset, 1, envelope)));
                }
                let dead_lettered = !dead.is_empty();
                for (offset, reason, envelope) in dead {
                    let Ok(mut event) = serde_json::from_str::<CloudEvent>(&envelope) else {
                        continue;
                    };
                    tracing::warn!(topic, group, offset, %reason, id = %event.id, "event dead-lettered");
                    event.deadletterreason = Some(format!("{reason} (topic {topic}, group {group}, offset {offset})"));
                    let envelope = serde_json::to_string(&event).map_err(|e| invalid("event", e.to_string()))?;
                    append_rows(&tx, &dead_letter_topic(&topic), vec![Row { id: event.id, envelope }], now)?;
                }
                let next_due = if handed.is_empty() {
                    tx.prepare_cached("SELECT MIN(deadline_ms) FROM in_flight WHERE topic = ?1 AND grp = ?2")?
                        .query_row(params![topic, group], |row| row.get::<_, Option<i64>>(0))?
                } else {
                    None
                };
                tx.commit()?;
                Ok((Fetched { handed, next_due }, dead_lettered))
            })
            .await?;
        if dead_lettered {
            // A dead letter is an append: durable, and its topic's readers woken.
            self.synced().await?;
            self.appended.send_modify(|n| *n += 1);
        }
        Ok(fetched)
    }

    /// The group is done with these offsets.
    pub async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<u64, LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        check_group(group)?;
        let (topic, group, offsets) = (topic.to_owned(), group.to_owned(), offsets.to_vec());
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut done = 0;
                {
                    let mut delete =
                        tx.prepare_cached("DELETE FROM in_flight WHERE topic = ?1 AND grp = ?2 AND offset = ?3")?;
                    for offset in offsets {
                        done += delete.execute(params![topic, group, offset as i64])? as u64;
                    }
                }
                tx.commit()?;
                Ok(done)
            })
            .await
    }

    /// A handler failed on this event: it is due again at once (or dead-lettered on its last
    /// delivery), with the reason kept.
    pub async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), LogError> {
        validate_topic(topic).map_err(|r| invalid("topic", r))?;
        check_group(group)?;
        let reason: String = reason.chars().take(2000).collect();
        let (topic, group) = (topic.to_owned(), group.to_owned());
        let updated = self
            .db
            .run({
                let (topic, group) = (topic.clone(), group.clone());
                move |conn| {
                    Ok(conn.prepare_cached(
                        "UPDATE in_flight SET deadline_ms = ?1, last_error = ?2 WHERE topic = ?3 AND grp = ?4 AND offset = ?5",
                    )?
                    .execute(params![now_ms(), reason, topic, group, offset as i64])?)
                }
            })
            .await?;
        if updated == 0 {
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
        let topic = topic.to_owned();
        let rows = self
            .db
            .run(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT offset, envelope FROM events WHERE topic = ?1 AND offset >= ?2 ORDER BY offset LIMIT ?3")?
                    .query_map(params![topic, from as i64, i64::from(limit.clamp(1, 1000))], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        rows.into_iter()
            .map(|(offset, envelope)| {
                Ok(Delivery {
                    offset: offset as u64,
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
        event.id = flotilla::events::replay_id(&event.id);
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
        let keep = i64::try_from(self.config.max_events_per_topic).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut dropped = tx.execute("DELETE FROM events WHERE appended_ms < ?1", [cutoff])?;
                dropped += tx.execute(
                    "DELETE FROM events WHERE offset < (SELECT next_offset FROM topics t WHERE t.topic = events.topic) - ?1",
                    [keep],
                )?;
                tx.commit()?;
                Ok(dropped as u64)
            })
            .await
    }

    /// Every topic, with its groups' progress.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        self.db
            .run(|conn| {
                let topics = conn
                    .prepare_cached(
                        "SELECT t.topic, t.next_offset, (SELECT COUNT(*) FROM events e WHERE e.topic = t.topic) \
                         FROM topics t ORDER BY t.topic",
                    )?
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut groups_of = conn.prepare_cached(
                    "SELECT g.grp, g.next_offset, \
                     (SELECT COUNT(*) FROM in_flight f WHERE f.topic = g.topic AND f.grp = g.grp) \
                     FROM groups g WHERE g.topic = ?1 ORDER BY g.grp",
                )?;
                let mut out = Vec::with_capacity(topics.len());
                for (topic, next, events) in topics {
                    let groups = groups_of
                        .query_map([&topic], |g| {
                            let group_next: i64 = g.get(1)?;
                            Ok(GroupInfo {
                                group: g.get(0)?,
                                next_offset: group_next as u64,
                                in_flight: g.get::<_, i64>(2)? as u64,
                                lag: (next - group_next).max(0) as u64,
                            })
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push(TopicInfo {
                        topic,
                        events: events as u64,
                        next_offset: next as u64,
                        groups,
                    });
                }
                Ok(out)
            })
            .await
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
