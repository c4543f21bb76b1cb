//! The NATS JetStream backend, with the event log's semantics:
//!
//! * A topic is the subject `flotilla.events.<topic>`. Topics that share their first name
//!   segment share one file-backed stream, `FLOTILLA_EVENTS_<segment>` (`orders`,
//!   `orders.eu` and `orders.dead-letter` all live in `FLOTILLA_EVENTS_orders`): a topic and
//!   its dead letters are created, limited and deleted together, the stream name needs no
//!   escaping (a segment holds no `.`), and no two streams' subjects overlap.
//! * Offsets are stream sequences: increasing within a topic, not consecutive.
//! * An append publishes every event with `Nats-Msg-Id: <topic>:<id>` and then awaits every
//!   acknowledgement: the stream drops a repeat within its duplicate window and answers the
//!   first sequence, marked duplicate (scoped by topic, as the log de-duplicates per topic).
//! * A group is a durable pull consumer filtered to the topic, explicit acks, `ack_wait` as
//!   the log's ack timeout. A fetch takes what is there at once, else waits for one event and
//!   then takes the rest, so a pull request never outlives the fetch that made it.
//! * The deliveries a fetch handed out wait in the client until acked or nacked (at most
//!   `ack_wait`, when the server redelivers them anyway): an ack or a nack needs the message's
//!   reply subject, and the interface speaks in offsets.
//! * A nack on an event's last allowed delivery publishes it to `<topic>.dead-letter` with
//!   `deadletterreason` set and terminates the original. The consumer allows one delivery
//!   more than `max_deliveries`: an event whose last delivery was never acked comes once more
//!   and is dead-lettered by the fetch that receives it — no handler sees it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use flotilla_api::events::{validate_topic, Appended, CloudEvent, Delivery, GroupInfo, TopicInfo};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::client::EventsError;

/// Every event subject starts with this: a topic `orders` is `flotilla.events.orders`.
pub const SUBJECT_PREFIX: &str = "flotilla.events";

/// Every events stream's name starts with this, followed by the topic's first name segment.
pub const STREAM_PREFIX: &str = "FLOTILLA_EVENTS_";

const DEAD_LETTER_SUFFIX: &str = ".dead-letter";

/// A pull request waits at most this long, so a server that went away mid-wait is noticed.
const MAX_PULL_WAIT: Duration = Duration::from_secs(5);

/// Less time than this left is not worth a pull request.
const MIN_PULL_WAIT: Duration = Duration::from_millis(10);

/// The subject a topic's events are published on.
pub fn subject(topic: &str) -> String {
    format!("{SUBJECT_PREFIX}.{topic}")
}

/// The stream that holds a topic: one per first name segment.
pub fn stream_name(topic: &str) -> String {
    format!("{STREAM_PREFIX}{}", first_segment(topic))
}

fn first_segment(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

/// The dead-letter topic of `topic`.
fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}{DEAD_LETTER_SUFFIX}")
}

/// `Nats-Msg-Id`: the event id scoped by topic, since a stream holds several topics.
fn message_id(topic: &str, id: &str) -> String {
    format!("{topic}:{id}")
}

/// A durable consumer name for a group of a topic: readable, unique (`.` and `_` escaped),
/// and hashed when long, since the server keeps a directory per consumer.
fn consumer_name(topic: &str, group: &str) -> String {
    fn escape(name: &str) -> String {
        name.replace('_', "_5F").replace('.', "_2E")
    }
    let name = format!("{}__{}", escape(topic), escape(group));
    if name.len() <= 128 {
        return name;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}_{hex}", &name[..80])
}

/// The consumer's description names its group, which is how `topics` reads it back.
fn describe_group(topic: &str, group: &str) -> String {
    format!("group {group} on {topic}")
}

fn group_of(description: Option<&str>) -> Option<&str> {
    description?
        .strip_prefix("group ")?
        .split_once(" on ")
        .map(|(group, _)| group)
}

/// How the JetStream backend behaves; the defaults match the control plane's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// An event handed out and not acked within this is handed out again (the log's
    /// `ack_timeout`). Set when a group's consumer is created.
    pub ack_wait: Duration,
    /// After this many deliveries without an ack the event is dead-lettered (the log's
    /// `max_deliveries`). Set when a group's consumer is created.
    pub max_deliveries: u32,
    /// A second append of an event id within this window is dropped (the log remembers ids
    /// for as long as it keeps the event; the inbox absorbs any repeat after the window).
    /// Set when a stream is created.
    pub duplicate_window: Duration,
    /// Events older than this are dropped. Set when a stream is created.
    pub retention: Duration,
    /// At most this many events are kept per topic (the oldest go first). Set when a stream
    /// is created.
    pub max_events_per_topic: i64,
    /// A nacked event is redelivered after this (zero: at once, as the log does; the inbox
    /// consumer already backs off before it nacks).
    pub nack_delay: Duration,
    /// How long a JetStream request or a publish acknowledgement may take.
    pub request_timeout: Duration,
    /// Copies of every stream; `None`: one per server named in the URL, at most three (a
    /// cluster named by all its nodes keeps R3, so losing a node loses no event).
    pub replicas: Option<usize>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            duplicate_window: Duration::from_secs(5 * 60),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_topic: 1_000_000,
            nack_delay: Duration::ZERO,
            request_timeout: Duration::from_secs(5),
            replicas: None,
        }
    }
}

impl NatsConfig {
    /// Checks the values; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_deliveries == 0 {
            return Err("max_deliveries must be at least 1".into());
        }
        for (name, value) in [
            ("ack_wait", self.ack_wait),
            ("duplicate_window", self.duplicate_window),
            ("retention", self.retention),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be above zero"));
            }
        }
        if self.duplicate_window > self.retention {
            return Err("duplicate_window must not exceed retention".into());
        }
        if self.max_events_per_topic < 1 {
            return Err("max_events_per_topic must be at least 1".into());
        }
        Ok(())
    }
}

fn failed<E: std::fmt::Display>(during: &'static str) -> impl FnOnce(E) -> EventsError {
    move |err| EventsError::Nats {
        during,
        reason: err.to_string(),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EventsError {
    EventsError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The log's topic rule, and no empty segment: each segment is a subject token.
fn check_topic(topic: &str) -> Result<(), EventsError> {
    validate_topic(topic).map_err(|reason| invalid("topic", reason))?;
    if topic.split('.').any(str::is_empty) {
        return Err(invalid("topic", format!("`{topic}` has an empty segment between dots")));
    }
    Ok(())
}

fn check_group(group: &str) -> Result<(), EventsError> {
    validate_topic(group).map_err(|_| {
        invalid(
            "group",
            format!("`{group}` is not a group name (lowercase letters, digits, '.', '_', '-')"),
        )
    })
}

/// Reconnection backoff: 100 ms doubling to 2 s, so a broker back from an outage is found
/// within two seconds.
fn reconnect_delay(attempts: usize) -> Duration {
    Duration::from_millis(100u64 << attempts.min(5)).min(Duration::from_secs(2))
}

/// (topic, group, offset).
type FlightKey = (String, String, u64);

/// A delivery handed out and not yet acked or nacked.
struct InFlight {
    message: jetstream::Message,
    attempt: u32,
    /// The server redelivers it after `ack_wait`; it is forgotten here then.
    expires: Instant,
}

/// The JetStream side of [`super::EventsClient`].
/// The servers of a URL that may name several: `nats://h1:4222,h2:4222` (each part may carry
/// its own scheme).
pub fn servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            if part.contains("://") {
                part.to_owned()
            } else {
                format!("nats://{part}")
            }
        })
        .collect()
}

pub(crate) struct NatsBackend {
    /// Copies of every stream made.
    replicas: usize,
    js: jetstream::Context,
    config: NatsConfig,
    /// Streams known to exist.
    streams: Mutex<HashSet<String>>,
    /// Consumers known to exist, by (topic, group).
    consumers: Mutex<HashMap<(String, String), PullConsumer>>,
    in_flight: Mutex<HashMap<FlightKey, InFlight>>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl NatsBackend {
    /// Connects; afterwards the client reconnects by itself for as long as it lives.
    pub(crate) async fn connect(url: &str, token: Option<String>, config: NatsConfig) -> Result<Self, EventsError> {
        config.validate().map_err(|reason| invalid("nats", reason))?;
        let mut options = async_nats::ConnectOptions::new()
            .name("flotilla-events")
            .connection_timeout(config.request_timeout)
            // Acks and nacks are requests of the core client: bounded like the rest.
            .request_timeout(Some(config.request_timeout))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS: connected"),
                    other => tracing::warn!(event = %other, "NATS"),
                }
            });
        if let Some(token) = token {
            options = options.token(token);
        }
        let servers = servers(url);
        let replicas = config.replicas.unwrap_or(servers.len().clamp(1, 3));
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(failed("connecting"))?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client);
        Ok(Self {
            js,
            replicas,
            config,
            streams: Mutex::new(HashSet::new()),
            consumers: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The topic's stream, created on first use.
    async fn stream(&self, topic: &str) -> Result<String, EventsError> {
        let name = stream_name(topic);
        if lock(&self.streams).contains(&name) {
            return Ok(name);
        }
        let segment = first_segment(topic);
        let config = stream::Config {
            name: name.clone(),
            description: Some(format!(
                "Flotilla events: topic {segment}, its sub-topics and dead letters"
            )),
            subjects: vec![subject(segment), format!("{}.>", subject(segment))],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: self.config.duplicate_window,
            max_age: self.config.retention,
            max_messages_per_subject: self.config.max_events_per_topic,
            allow_direct: true,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(failed("creating the stream"))?;
        lock(&self.streams).insert(name.clone());
        Ok(name)
    }

    /// The group's consumer, created on first use.
    async fn consumer(&self, topic: &str, group: &str) -> Result<PullConsumer, EventsError> {
        let key = (topic.to_owned(), group.to_owned());
        if let Some(consumer) = lock(&self.consumers).get(&key) {
            return Ok(consumer.clone());
        }
        let stream = self.stream(topic).await?;
        let name = consumer_name(topic, group);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(describe_group(topic, group)),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // One more than allowed: the extra delivery is the dead-letter pass (see the
            // module docs), so an event never acked still ends in the dead letters.
            max_deliver: i64::from(self.config.max_deliveries) + 1,
            filter_subject: subject(topic),
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let consumer = self
            .js
            .get_stream_no_info(&stream)
            .await
            .map_err(failed("opening the stream"))?
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|err| {
                // Perhaps the stream was deleted behind our back: check it again next time.
                lock(&self.streams).remove(&stream);
                failed("creating the consumer")(err)
            })?;
        lock(&self.consumers).insert(key, consumer.clone());
        Ok(consumer)
    }

    /// Forgets what may be gone (after a failure), so the next call checks it again.
    fn forget(&self, topic: &str, group: Option<&str>) {
        lock(&self.streams).remove(&stream_name(topic));
        if let Some(group) = group {
            lock(&self.consumers).remove(&(topic.to_owned(), group.to_owned()));
        }
    }

    pub(crate) async fn append(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Appended>, EventsError> {
        check_topic(topic)?;
        if events.is_empty() || events.len() > 1000 {
            return Err(invalid("events", "1 to 1000 per append"));
        }
        for event in events {
            event.validate().map_err(|(field, reason)| invalid(field, reason))?;
        }
        self.stream(topic).await?;
        let subject = subject(topic);
        // Publish all, then await the acknowledgements: one round trip for the batch.
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let payload = serde_json::to_vec(event).map_err(|e| invalid("event", e.to_string()))?;
            let publish = PublishMessage::build()
                .payload(payload.into())
                .message_id(message_id(topic, &event.id));
            let ack = self.js.send_publish(subject.clone(), publish).await.map_err(|err| {
                self.forget(topic, None);
                failed("publishing")(err)
            })?;
            acks.push(ack);
        }
        let mut appended = Vec::with_capacity(events.len());
        for (event, ack) in events.iter().zip(acks) {
            let ack = ack.await.map_err(|err| {
                self.forget(topic, None);
                failed("awaiting a publish acknowledgement")(err)
            })?;
            appended.push(Appended {
                id: event.id.clone(),
                offset: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(appended)
    }

    /// One pull request: `max` messages there now (`wait` none), or up to `max` within `wait`.
    async fn pull(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<jetstream::Message>, EventsError> {
        let batch = match wait {
            None => consumer.fetch().max_messages(max).messages().await,
            Some(expires) => consumer.batch().max_messages(max).expires(expires).messages().await,
        }
        .map_err(failed("fetching"))?;
        tokio::pin!(batch);
        // The server ends the batch; this bounds it when the server went away meanwhile.
        let until = Instant::now() + wait.unwrap_or_default() + self.config.request_timeout;
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout_at(until, batch.next()).await {
                Ok(Some(Ok(message))) => messages.push(message),
                Ok(None) => break,
                // A status that ends the batch (max ack pending reached, consumer deleted):
                // what came before it is still ours.
                Ok(Some(Err(err))) if messages.is_empty() => return Err(failed("fetching")(err)),
                Ok(Some(Err(_))) => break,
                Err(_) if messages.is_empty() => {
                    return Err(EventsError::Nats {
                        during: "fetching",
                        reason: "no answer from the server".into(),
                    })
                }
                Err(_) => break,
            }
        }
        Ok(messages)
    }

    pub(crate) async fn fetch(
        &self,
        topic: &str,
        group: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        check_topic(topic)?;
        check_group(group)?;
        let max = max.clamp(1, 1000) as usize;
        let consumer = self.consumer(topic, group).await?;
        let until = Instant::now() + wait;
        loop {
            let messages = self.pull_some(&consumer, max, until).await.inspect_err(|_| {
                self.forget(topic, Some(group));
            })?;
            let waited_out = messages.is_empty();
            let handed = self.hand_out(topic, group, messages).await;
            if !handed.is_empty() || waited_out || Instant::now() >= until {
                return Ok(handed);
            }
        }
    }

    /// What is there now; if nothing, one event as soon as it comes (by `until`) and then
    /// whatever else is there. Empty only when nothing came by `until`.
    async fn pull_some(
        &self,
        consumer: &PullConsumer,
        max: usize,
        until: Instant,
    ) -> Result<Vec<jetstream::Message>, EventsError> {
        loop {
            let now = self.pull(consumer, max, None).await?;
            if !now.is_empty() {
                return Ok(now);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left < MIN_PULL_WAIT {
                return Ok(Vec::new());
            }
            // A batch of one ends when the first event comes: no pull request is left behind
            // to take events nobody reads (they would wait out `ack_wait`).
            let mut first = self.pull(consumer, 1, Some(left.min(MAX_PULL_WAIT))).await?;
            if first.is_empty() {
                continue;
            }
            if max > 1 {
                if let Ok(rest) = self.pull(consumer, max - 1, None).await {
                    first.extend(rest);
                }
            }
            return Ok(first);
        }
    }

    /// Turns fetched messages into deliveries and keeps them for their ack; a message past its
    /// last allowed delivery is dead-lettered instead.
    async fn hand_out(&self, topic: &str, group: &str, messages: Vec<jetstream::Message>) -> Vec<Delivery> {
        let now = Instant::now();
        let mut handed = Vec::with_capacity(messages.len());
        let mut flying = Vec::with_capacity(messages.len());
        for message in messages {
            let (offset, delivered) = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(err) => {
                    tracing::warn!(topic, group, error = %err, "a message without JetStream metadata; skipped");
                    continue;
                }
            };
            let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
            let event = match serde_json::from_slice::<CloudEvent>(&message.payload) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(topic, group, offset, error = %err, "not a CloudEvent; terminated");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            if attempt > self.config.max_deliveries {
                let reason = format!("not acked after {} deliveries", self.config.max_deliveries);
                if let Err(err) = self.dead_letter(topic, group, offset, event, &reason, &message).await {
                    tracing::warn!(topic, group, offset, error = %err, "dead-lettering failed; it will come again");
                }
                continue;
            }
            handed.push(Delivery { offset, attempt, event });
            flying.push((
                (topic.to_owned(), group.to_owned(), offset),
                InFlight {
                    message,
                    attempt,
                    expires: now + self.config.ack_wait,
                },
            ));
        }
        let mut in_flight = lock(&self.in_flight);
        // Bounded: an entry lives at most `ack_wait`, after which the server redelivers.
        in_flight.retain(|_, flight| flight.expires > now);
        in_flight.extend(flying);
        handed
    }

    /// Publishes `event` to the dead letters with why, then terminates the original.
    async fn dead_letter(
        &self,
        topic: &str,
        group: &str,
        offset: u64,
        mut event: CloudEvent,
        reason: &str,
        message: &jetstream::Message,
    ) -> Result<(), EventsError> {
        tracing::warn!(topic, group, offset, %reason, id = %event.id, "event dead-lettered");
        event.deadletterreason = Some(format!("{reason} (topic {topic}, group {group}, offset {offset})"));
        self.append(&dead_letter_topic(topic), &[event]).await?;
        message
            .double_ack_with(AckKind::Term)
            .await
            .map_err(failed("terminating a dead letter"))
    }

    fn take(&self, topic: &str, group: &str, offset: u64) -> Option<InFlight> {
        let key = (topic.to_owned(), group.to_owned(), offset);
        lock(&self.in_flight)
            .remove(&key)
            .filter(|flight| flight.expires > Instant::now())
    }

    pub(crate) async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<(), EventsError> {
        check_topic(topic)?;
        check_group(group)?;
        // Offsets not in flight here (acked already, or redelivered since) are skipped, as
        // the log skips them.
        let flights: Vec<InFlight> = offsets
            .iter()
            .filter_map(|offset| self.take(topic, group, *offset))
            .collect();
        let acks = futures_util::future::join_all(flights.iter().map(|f| f.message.double_ack())).await;
        acks.into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), |err| Err(failed("acking")(err)))
    }

    pub(crate) async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), EventsError> {
        check_topic(topic)?;
        check_group(group)?;
        let flight = self.take(topic, group, offset).ok_or_else(|| {
            EventsError::NotFound(format!("offset {offset} of `{topic}` is not in flight for `{group}`"))
        })?;
        let reason: String = reason.chars().take(2000).collect();
        if flight.attempt >= self.config.max_deliveries {
            let event = serde_json::from_slice::<CloudEvent>(&flight.message.payload)
                .map_err(|e| invalid("event", e.to_string()))?;
            return self
                .dead_letter(topic, group, offset, event, &reason, &flight.message)
                .await;
        }
        let delay = Some(self.config.nack_delay).filter(|d| !d.is_zero());
        flight
            .message
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(failed("nacking"))
    }

    pub(crate) async fn read(&self, topic: &str, from: u64, limit: u32) -> Result<Vec<Delivery>, EventsError> {
        check_topic(topic)?;
        let limit = limit.clamp(1, 1000) as usize;
        let stream = self
            .js
            .get_stream_no_info(stream_name(topic))
            .await
            .map_err(failed("opening the stream"))?;
        let subject = subject(topic);
        let mut next = from.max(1);
        let mut events = Vec::new();
        while events.len() < limit {
            let message = match stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(subject.clone())
                .send()
                .await
            {
                Ok(message) => message,
                Err(err) => match err.kind() {
                    RawMessageErrorKind::NoMessageFound => break,
                    RawMessageErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => break,
                    _ => return Err(failed("reading")(err)),
                },
            };
            next = message.sequence + 1;
            if let Ok(event) = serde_json::from_slice::<CloudEvent>(&message.payload) {
                events.push(Delivery {
                    offset: message.sequence,
                    attempt: 0,
                    event,
                });
            }
        }
        Ok(events)
    }

    pub(crate) async fn replay(&self, dead_letter_topic: &str, offset: u64) -> Result<serde_json::Value, EventsError> {
        let Some(original) = dead_letter_topic.strip_suffix(DEAD_LETTER_SUFFIX) else {
            return Err(invalid(
                "topic",
                "replay takes events from a `<topic>.dead-letter` topic",
            ));
        };
        let mut event = self
            .read(dead_letter_topic, offset, 1)
            .await?
            .into_iter()
            .find(|d| d.offset == offset)
            .ok_or_else(|| EventsError::NotFound(format!("no event at offset {offset} of `{dead_letter_topic}`")))?
            .event;
        event.deadletterreason = None;
        event.id = super::replay_id(&event.id);
        let appended = self
            .append(original, &[event])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EventsError::NotFound("nothing appended".into()))?;
        Ok(serde_json::json!({ "topic": original, "offset": appended.offset, "id": appended.id }))
    }

    pub(crate) async fn topics(&self) -> Result<Vec<TopicInfo>, EventsError> {
        let prefix = format!("{SUBJECT_PREFIX}.");
        let mut topics: BTreeMap<String, TopicInfo> = BTreeMap::new();
        let mut streams = self.js.streams();
        while let Some(info) = streams.next().await {
            let info = info.map_err(failed("listing streams"))?;
            if !info.config.name.starts_with(STREAM_PREFIX) {
                continue;
            }
            // Offsets are the stream's: the next one written to any of its topics.
            let next_offset = info.state.last_sequence + 1;
            let stream = self
                .js
                .get_stream_no_info(&info.config.name)
                .await
                .map_err(failed("opening the stream"))?;
            let mut subjects = stream
                .info_with_subjects(format!("{SUBJECT_PREFIX}.>"))
                .await
                .map_err(failed("reading the stream's subjects"))?;
            let mut counts = Vec::new();
            while let Some(subject) = subjects.next().await {
                let (subject, count) = subject.map_err(failed("reading the stream's subjects"))?;
                if let Some(topic) = subject.strip_prefix(&prefix) {
                    counts.push((topic.to_owned(), count as u64));
                }
            }
            let mut groups = Vec::new();
            let mut consumers = stream.consumers();
            while let Some(consumer) = consumers.next().await {
                let consumer = consumer.map_err(failed("listing consumers"))?;
                let Some(topic) = consumer.config.filter_subject.strip_prefix(&prefix) else {
                    continue;
                };
                let group = group_of(consumer.config.description.as_deref()).unwrap_or(&consumer.name);
                groups.push((
                    topic.to_owned(),
                    GroupInfo {
                        group: group.to_owned(),
                        next_offset: consumer.delivered.stream_sequence + 1,
                        in_flight: consumer.num_ack_pending as u64,
                        lag: consumer.num_pending,
                    },
                ));
            }
            let new = |topic: &str| TopicInfo {
                topic: topic.to_owned(),
                events: 0,
                next_offset,
                groups: Vec::new(),
            };
            for (topic, count) in counts {
                topics.entry(topic.clone()).or_insert_with(|| new(&topic)).events = count;
            }
            for (topic, group) in groups {
                topics
                    .entry(topic.clone())
                    .or_insert_with(|| new(&topic))
                    .groups
                    .push(group);
            }
        }
        let mut topics: Vec<TopicInfo> = topics.into_values().collect();
        for topic in &mut topics {
            topic.groups.sort_by(|a, b| a.group.cmp(&b.group));
        }
        Ok(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_topics_to_subjects_streams_and_consumers() {
        assert_eq!(subject("orders.eu"), "flotilla.events.orders.eu");
        assert_eq!(stream_name("orders"), "FLOTILLA_EVENTS_orders");
        assert_eq!(stream_name("orders.dead-letter"), "FLOTILLA_EVENTS_orders");
        assert_eq!(consumer_name("orders.eu", "ship_ping"), "orders_2Eeu__ship_5Fping");
        assert_ne!(consumer_name("a.b", "c"), consumer_name("a_b", "c"));
        let long = consumer_name(&"a".repeat(100), &"b".repeat(100));
        assert!(long.len() <= 128, "{long}");
        assert_ne!(long, consumer_name(&"a".repeat(100), &"b".repeat(99)));
        assert_eq!(group_of(Some(&describe_group("orders", "shipping"))), Some("shipping"));
        assert_eq!(message_id("orders", "e1"), "orders:e1");
    }

    #[test]
    fn topics_need_non_empty_segments_and_the_config_is_checked() {
        assert!(check_topic("orders.eu").is_ok());
        assert!(matches!(
            check_topic("orders..eu"),
            Err(EventsError::Invalid { field: "topic", .. })
        ));
        assert!(matches!(
            check_topic("Orders"),
            Err(EventsError::Invalid { field: "topic", .. })
        ));
        assert!(NatsConfig::default().validate().is_ok());
        let zero = NatsConfig {
            max_deliveries: 0,
            ..NatsConfig::default()
        };
        assert!(zero.validate().unwrap_err().contains("max_deliveries"));
        assert_eq!(reconnect_delay(0), Duration::from_millis(100));
        assert_eq!(reconnect_delay(40), Duration::from_secs(2));
    }
}
