//! Config revisions on NATS JetStream: one stream, `FLOTILLA_CONFIG`, every revision a message
//! and its revision number the message's sequence — the same on every replica, and with no
//! limit on history (a key-value bucket keeps at most 64 per key). Deletes and purges are
//! denied on the stream: history is never rewritten.
//!
//! * A key is the subject `flotilla.config.<scope>.<profile>.<key in hex>` (a key may hold
//!   `.`, which a subject would split on).
//! * Compare-and-set is the server's: a write carries the key's last sequence
//!   (`Nats-Expected-Last-Subject-Sequence`), so two replicas cannot both win.
//! * Every replica follows the stream from its start into the store's cache and keeps each
//!   key's history in memory, so reads, history and diffs are answered without a round trip
//!   (and while the store has no quorum, as stale reads).
//! * Applied reports live in the bucket `flotilla-config-applied`, one key per instance,
//!   forgotten after ten minutes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use bytes::Bytes;
use flotilla_api::config::{ApplyReport, ConfigKey};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{lock, ConfigError, ConfigStore, StoredRow};
use crate::store::{Nats, StoreError};

/// The stream of revisions.
pub(crate) const STREAM: &str = "FLOTILLA_CONFIG";
const SUBJECT_PREFIX: &str = "flotilla.config";
/// The bucket of applied reports.
const APPLIED: &str = "flotilla-config-applied";
/// A report of an instance not heard from for this long is dropped.
const REPORT_LIFE: Duration = Duration::from_secs(600);

/// A revision as kept in the stream (its number is the message's sequence).
#[derive(Debug, Serialize, Deserialize)]
struct Revision {
    scope: String,
    profile: String,
    key: String,
    /// The value (JSON text, or sealed); none for a deletion.
    value: Option<String>,
    secret: bool,
    time_ms: u64,
    author: String,
    comment: String,
}

/// The stream, the applied bucket, and what the follower has taken in.
pub(super) struct Revisions {
    pub(super) store: Nats,
    stream: stream::Stream,
    applied: kv::Store,
    /// Every revision of every key, oldest first.
    history: Mutex<BTreeMap<ConfigKey, Vec<StoredRow>>>,
    /// The last sequence the follower applied.
    seen: watch::Sender<u64>,
    synced: watch::Sender<bool>,
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn subject(key: &ConfigKey) -> String {
    format!("{SUBJECT_PREFIX}.{}.{}.{}", key.scope, key.profile, hex(&key.key))
}

impl Revisions {
    /// Opens the stream and the bucket, making them if missing.
    pub(super) async fn open(store: &Nats) -> Result<Self, StoreError> {
        let config = stream::Config {
            name: STREAM.into(),
            description: Some("Flotilla config revisions".into()),
            subjects: vec![format!("{SUBJECT_PREFIX}.>")],
            storage: stream::StorageType::File,
            num_replicas: store.replicas,
            deny_delete: true,
            deny_purge: true,
            allow_direct: true,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match store.jetstream.get_or_create_stream(config.clone()).await {
                Ok(stream) => break stream,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Unavailable(format!("opening stream {STREAM}: {e}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let applied = store
            .bucket(kv::Config {
                bucket: APPLIED.into(),
                description: "Flotilla config: what each instance applied".into(),
                history: 1,
                max_age: REPORT_LIFE,
                storage: stream::StorageType::File,
                num_replicas: store.replicas,
                ..Default::default()
            })
            .await?;
        Ok(Self {
            store: store.clone(),
            stream,
            applied,
            history: Mutex::new(BTreeMap::new()),
            seen: watch::Sender::new(0),
            synced: watch::Sender::new(false),
        })
    }

    /// Whether the follower has caught up with the stream.
    pub(super) fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the follower has applied sequence `seq`.
    async fn caught_up_to(&self, seq: u64) -> Result<(), ConfigError> {
        let mut seen = self.seen.subscribe();
        let reached = tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|s| *s >= seq))
            .await
            .is_ok();
        match reached {
            true => Ok(()),
            false => Err(ConfigError::Store(StoreError::Unavailable(format!(
                "the config watch did not reach revision {seq} in time"
            )))),
        }
    }

    /// Waits until the follower has applied everything the stream holds now.
    pub(super) async fn caught_up(&self) -> Result<(), ConfigError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.store.failed("reading the config stream", e))?;
        self.caught_up_to(info.state.last_sequence).await
    }

    /// Appends a revision. With `last`, only if the key's last revision (a deletion included;
    /// 0: the key was never written) is that one: `Ok(None)` if it is not.
    pub(super) async fn append(&self, row: &StoredRow, last: Option<u64>) -> Result<Option<u64>, ConfigError> {
        let revision = Revision {
            scope: row.key.scope.clone(),
            profile: row.key.profile.clone(),
            key: row.key.key.clone(),
            value: row.stored.clone(),
            secret: row.secret,
            time_ms: row.time_ms,
            author: row.author.clone(),
            comment: row.comment.clone(),
        };
        // Our own wire type always serializes.
        let mut message =
            PublishMessage::build().payload(Bytes::from(serde_json::to_vec(&revision).unwrap_or_default()));
        if let Some(last) = last {
            message = message.expected_last_subject_sequence(last);
        }
        let sent = self.store.jetstream.send_publish(subject(&row.key), message).await;
        let ack = match sent {
            Ok(ack) => ack.await,
            Err(e) => return Err(self.store.failed("writing config", e).into()),
        };
        match ack {
            Ok(ack) => {
                self.store.observe(Ok(()));
                self.caught_up_to(ack.sequence).await?;
                Ok(Some(ack.sequence))
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(self.store.failed("writing config", e).into()),
        }
    }

    /// One revision of a key, from the followed history.
    pub(super) fn row_at(&self, key: &ConfigKey, revision: u64) -> Option<StoredRow> {
        lock(&self.history)
            .get(key)
            .and_then(|rows| rows.iter().find(|r| r.revision == revision).cloned())
    }

    /// A key's revisions, newest first, at most `limit`.
    pub(super) fn history(&self, key: &ConfigKey, limit: u32) -> Vec<StoredRow> {
        lock(&self.history)
            .get(key)
            .map(|rows| rows.iter().rev().take(limit as usize).cloned().collect())
            .unwrap_or_default()
    }

    /// Records an instance's report in the bucket.
    pub(super) async fn report(&self, instance_id: &str, report: &ApplyReport) -> Result<(), ConfigError> {
        let value = Bytes::from(serde_json::to_vec(report).unwrap_or_default());
        self.applied
            .put(crate::registry::nats::key_of(instance_id), value)
            .await
            .map(|_| ())
            .map_err(|e| self.store.failed("recording an applied report", e).into())
    }
}

/// Follows the stream into the store's cache and the applied bucket into its reports, until
/// `shutdown`; watches again (from where it was) after an error.
pub(super) async fn follow(
    store: &ConfigStore,
    revisions: &Revisions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let revisions_followed = follow_revisions(store, revisions);
    let reports_followed = follow_reports(store, revisions);
    tokio::select! {
        _ = &mut shutdown => {}
        _ = revisions_followed => {}
        _ = reports_followed => {}
    }
}

async fn follow_revisions(store: &ConfigStore, revisions: &Revisions) {
    loop {
        let next = *revisions.seen.borrow() + 1;
        let started = async {
            let info = revisions.stream.get_info().await.map_err(|e| e.to_string())?;
            let consumer = revisions
                .stream
                .create_consumer(push::OrderedConfig {
                    deliver_subject: revisions.store.jetstream_inbox(),
                    filter_subject: format!("{SUBJECT_PREFIX}.>"),
                    deliver_policy: if next <= 1 {
                        DeliverPolicy::All
                    } else {
                        DeliverPolicy::ByStartSequence { start_sequence: next }
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let messages = consumer.messages().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((info.state.last_sequence, messages))
        };
        let (last, mut messages) = match started.await {
            Ok(started) => started,
            Err(e) => {
                revisions.store.observe(Err(&e));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if last < next {
            revisions.synced.send_replace(true);
        }
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "the config watch failed; watching again");
                    break;
                }
            };
            let Ok(info) = message.info() else { continue };
            let seq = info.stream_sequence;
            let pending = info.pending;
            match serde_json::from_slice::<Revision>(&message.payload) {
                Ok(revision) => store.take_in(
                    revisions,
                    StoredRow {
                        key: ConfigKey {
                            scope: revision.scope,
                            profile: revision.profile,
                            key: revision.key,
                        },
                        revision: seq,
                        stored: revision.value,
                        secret: revision.secret,
                        time_ms: revision.time_ms,
                        author: revision.author,
                        comment: revision.comment,
                    },
                ),
                Err(e) => tracing::warn!(seq, error = %e, "an unreadable config revision; skipped"),
            }
            revisions.seen.send_replace(seq);
            if pending == 0 {
                revisions.synced.send_replace(true);
            }
        }
    }
}

async fn follow_reports(store: &ConfigStore, revisions: &Revisions) {
    loop {
        let mut watch = match revisions.applied.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(e) => {
                revisions.store.observe(Err(&e.to_string()));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { break };
            let Some(id) = crate::registry::nats::id_of(&entry.key) else {
                continue;
            };
            let report = match entry.operation {
                Operation::Put => serde_json::from_slice::<ApplyReport>(&entry.value).ok(),
                Operation::Delete | Operation::Purge => None,
            };
            store.take_report(&id, report, Some(entry.revision));
        }
    }
}

impl ConfigStore {
    /// Takes a followed revision into the cache and the history.
    fn take_in(&self, revisions: &Revisions, row: StoredRow) {
        lock(&revisions.history)
            .entry(row.key.clone())
            .or_default()
            .push(row.clone());
        let revision = row.revision;
        lock(&self.current).insert(row.key.clone(), row);
        self.revision.send_if_modified(|r| {
            let moved = revision > *r;
            *r = (*r).max(revision);
            moved
        });
    }
}
