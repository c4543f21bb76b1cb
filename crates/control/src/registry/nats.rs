//! Leases in a replicated NATS key-value bucket (`flotilla-registry`), one key per instance.
//!
//! * The bucket's entries live one TTL (`max_age`): a heartbeat writes the lease again, and a
//!   lease that is not written again is removed by the server, which leaves an expiry marker
//!   (nats-server ≥ 2.11 `subject_delete_marker_ttl`) that every watcher sees as a purge.
//! * A heartbeat is a compare-and-set on the lease's last revision, so a lease that expired (or
//!   was deregistered) meanwhile is not brought back by a late heartbeat: the instance is told
//!   to register again.
//! * Every replica follows the bucket with one watch; the view's index is the bucket's
//!   sequence, the same on every replica.
//! * Self-preservation: an expiry seen while (or just after) the store had no quorum, or as
//!   part of a mass expiry, is held a further TTL. A held lease is then deleted through the
//!   store (conditionally on the expiry marker still being its last word), so every replica
//!   drops it at the same sequence — unless the instance came back meanwhile.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use flotilla_api::Registration;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Applied, Registry};
use crate::store::{Nats, StoreError};

/// The bucket's name.
pub(crate) const BUCKET: &str = "flotilla-registry";

/// A lease as kept in the bucket.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    registration: Registration,
    /// When the instance first registered (wall clock), kept across heartbeats.
    registered_ms: u64,
}

/// The bucket and how to write to it.
pub(super) struct Leases {
    pub(super) store: Nats,
    kv: kv::Store,
    ttl: Duration,
}

/// An instance id as a bucket key: keys allow `[-/_=.a-zA-Z0-9]`; anything else (and `=`
/// itself) is written `=XX`.
pub(crate) fn key_of(instance_id: &str) -> String {
    let mut key = String::with_capacity(instance_id.len());
    for byte in instance_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/') || (byte == b'.' && !key.is_empty()) {
            key.push(byte as char);
        } else {
            key.push_str(&format!("={byte:02X}"));
        }
    }
    key
}

/// The instance id a bucket key stands for.
pub(crate) fn id_of(key: &str) -> Option<String> {
    let mut out = Vec::with_capacity(key.len());
    let bytes = key.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = key.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Leases {
    /// Opens the bucket, making it if missing: history 1, entries living one TTL, expiry
    /// markers kept long enough for a held lease to be released against them.
    pub(super) async fn open(store: &Nats, ttl: Duration) -> Result<Self, StoreError> {
        let config = kv::Config {
            bucket: BUCKET.into(),
            description: "Flotilla registry leases".into(),
            history: 1,
            max_age: ttl,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: store.replicas,
            limit_markers: Some((ttl * 4).max(Duration::from_secs(1))),
            ..Default::default()
        };
        let kv = store.bucket(config).await?;
        Ok(Self {
            store: store.clone(),
            kv,
            ttl,
        })
    }

    fn subject(&self, instance_id: &str) -> String {
        format!("$KV.{BUCKET}.{}", key_of(instance_id))
    }

    async fn publish(
        &self,
        what: &str,
        subject: String,
        message: PublishMessage,
    ) -> Result<Result<u64, ()>, StoreError> {
        let sent = self.store.jetstream.send_publish(subject, message).await;
        let ack = match sent {
            Ok(ack) => ack.await,
            Err(e) => return Err(self.store.failed(what, e)),
        };
        match ack {
            Ok(ack) => {
                self.store.observe(Ok(()));
                Ok(Ok(ack.sequence))
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Err(())),
            Err(e) => Err(self.store.failed(what, e)),
        }
    }

    fn record(registration: &Registration, registered_ms: u64) -> Bytes {
        // Our own wire type always serializes.
        Bytes::from(
            serde_json::to_vec(&Record {
                registration: registration.clone(),
                registered_ms,
            })
            .unwrap_or_default(),
        )
    }

    /// Writes a lease; its sequence.
    pub(super) async fn put(&self, registration: &Registration, registered_ms: u64) -> Result<u64, StoreError> {
        let message = PublishMessage::build().payload(Self::record(registration, registered_ms));
        let subject = self.subject(&registration.instance_id);
        self.publish("registering", subject, message)
            .await?
            .map_err(|()| StoreError::Other("an unconditional write was refused as conditional".into()))
    }

    /// Renews a lease whose last revision is `last`: its new sequence, or `None` if the lease
    /// is gone (expired or deregistered).
    pub(super) async fn renew(
        &self,
        registration: &Registration,
        registered_ms: u64,
        last: u64,
    ) -> Result<Option<u64>, StoreError> {
        let subject = self.subject(&registration.instance_id);
        let mut expected = last;
        // The view may be a step behind another replica's renewal: look once at the bucket.
        for _ in 0..2 {
            let message = PublishMessage::build()
                .payload(Self::record(registration, registered_ms))
                .expected_last_subject_sequence(expected);
            match self.publish("renewing a lease", subject.clone(), message).await? {
                Ok(seq) => return Ok(Some(seq)),
                Err(()) => match self.kv.entry(key_of(&registration.instance_id)).await {
                    Ok(Some(entry)) if entry.operation == Operation::Put && entry.revision != expected => {
                        expected = entry.revision;
                    }
                    Ok(_) => return Ok(None),
                    Err(e) => return Err(self.store.failed("reading a lease", e)),
                },
            }
        }
        Ok(None)
    }

    /// Deletes a lease; the delete's sequence.
    pub(super) async fn delete(&self, instance_id: &str) -> Result<u64, StoreError> {
        let message = PublishMessage::build().header("KV-Operation", "DEL");
        self.publish("deregistering", self.subject(instance_id), message)
            .await?
            .map_err(|()| StoreError::Other("an unconditional delete was refused as conditional".into()))
    }

    /// Deletes a held lease if its last word is still the expiry marker `marker`; otherwise the
    /// instance came back (or another replica released it) and the watch says so.
    async fn release(&self, instance_id: &str, marker: u64) -> Result<(), StoreError> {
        let message = PublishMessage::build()
            .header("KV-Operation", "DEL")
            .expected_last_subject_sequence(marker);
        let subject = self.subject(instance_id);
        if self.publish("releasing a held lease", subject, message).await?.is_ok() {
            return Ok(());
        }
        // The marker may itself have expired: then the lease is gone for good and a plain
        // delete tells every replica. A lease written again is left alone.
        match self.kv.entry(key_of(instance_id)).await {
            Ok(Some(entry)) if entry.operation == Operation::Put => Ok(()),
            Ok(_) => self.delete(instance_id).await.map(|_| ()),
            Err(e) => Err(self.store.failed("reading a lease", e)),
        }
    }
}

/// How long ago the server took a message, as an instant of this process's clock.
fn instant_of(created: i128) -> Instant {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let age = Duration::from_nanos((now_ns - created).clamp(0, i128::from(u64::MAX)) as u64);
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}

/// Follows the bucket into the registry's view until `shutdown`, watching again after an
/// error, and releases held leases when their extra TTL is over.
pub(super) async fn follow(registry: &Registry, leases: &Leases, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut first = true;
    loop {
        let watched = async {
            let empty = leases.kv.status().await.map(|s| s.values() == 0).unwrap_or(false);
            let watch = leases.kv.watch_with_history(">").await.map_err(|e| e.to_string())?;
            Ok::<_, String>((empty, watch))
        };
        let (empty, mut watch) = tokio::select! {
            _ = &mut shutdown => return,
            watched = watched => match watched {
                Ok(watched) => watched,
                Err(e) => {
                    leases.store.observe(Err(&e));
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        // On a watch made again, keys the store no longer has are dropped once it caught up.
        let mut seen_keys = (!first).then(std::collections::HashSet::new);
        first = false;
        if empty {
            registry.synced.send_replace(true);
            seen_keys = None;
        }
        loop {
            let next_release = registry.next_release();
            let release = async {
                match next_release {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = release => {
                    for (id, marker) in registry.due_releases() {
                        if let Err(e) = leases.release(&id, marker).await {
                            tracing::warn!(instance = %id, error = %e, "could not release a held lease; keeping it");
                        }
                    }
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        if let Some(keys) = seen_keys.as_mut() {
                            keys.insert(entry.key.clone());
                        }
                        registry.apply_entry(&entry, leases.ttl);
                        if entry.seen_current && !registry.synced() {
                            registry.synced.send_replace(true);
                        }
                        if entry.seen_current {
                            if let Some(keys) = seen_keys.take() {
                                registry.retain_keys(&keys, entry.revision);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the registry's watch failed; watching again");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

impl Registry {
    /// Applies one entry of the bucket's watch.
    fn apply_entry(&self, entry: &kv::Entry, ttl: Duration) {
        let Some(id) = id_of(&entry.key) else {
            tracing::warn!(key = %entry.key, "a registry key that is no instance id; ignored");
            return;
        };
        let seq = entry.revision;
        let mut state = self.lock();
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<Record>(&entry.value) {
                Ok(record) => {
                    let heartbeat = instant_of(entry.created.unix_timestamp_nanos());
                    let registered = instant_of(i128::from(record.registered_ms) * 1_000_000);
                    match self.apply_put(&mut state, record.registration, registered, heartbeat, seq, Some(seq)) {
                        Applied::Created => tracing::debug!(instance = %id, seq, "lease seen"),
                        Applied::Changed | Applied::Same => {}
                    }
                }
                Err(e) => tracing::warn!(instance = %id, error = %e, "an unreadable lease in the store; ignored"),
            },
            Operation::Delete => {
                if state.instances.remove(&id).is_some() {
                    self.bump(&mut state, Some(seq));
                }
            }
            Operation::Purge => self.expired_in_store(&mut state, &id, seq, ttl),
        }
        drop(state);
        self.seen.send_if_modified(|s| {
            let moved = seq > *s;
            *s = (*s).max(seq);
            moved
        });
    }

    /// The store expired a lease: drop it, or hold it (self-preservation).
    fn expired_in_store(&self, state: &mut super::State, id: &str, marker: u64, ttl: Duration) {
        let now = Instant::now();
        let Some(entry) = state.instances.get(id) else {
            return;
        };
        if entry.held_until.is_some() {
            return;
        }
        state
            .recent_expiries
            .retain(|at| now.saturating_duration_since(*at) < ttl);
        state.recent_expiries.push_back(now);
        let expired = state.recent_expiries.len();
        let population = state.instances.len().max(1);
        let mass = expired >= 2 && expired as f64 > self.preservation.share * population as f64;
        let outage = self.store_recovering(ttl);
        if mass || outage {
            if state
                .preserving_since
                .is_none_or(|since| now.saturating_duration_since(since) > ttl * 2)
            {
                tracing::warn!(
                    expired,
                    instances = population,
                    reason = if outage { "the store was without quorum" } else { "a mass expiry" },
                    hold = ?ttl,
                    "self-preservation: leases that ran out are held a further TTL while their instances register again"
                );
            }
            state.preserving_since = Some(now);
            if let Some(entry) = state.instances.get_mut(id) {
                entry.held_until = Some(now + ttl);
                entry.stored = marker;
            }
            return;
        }
        if let Some(gone) = state.instances.remove(id) {
            tracing::warn!(
                service = %gone.registration.service,
                instance = %id,
                address = %gone.registration.address,
                "lease expired; instance removed"
            );
            self.bump(state, Some(marker));
        }
    }

    /// Whether the store lacks quorum now or regained it lately (two leases and the few
    /// seconds its streams take to elect their leaders): leases that ran out meanwhile could
    /// not have been renewed.
    fn store_recovering(&self, ttl: Duration) -> bool {
        let Some(health) = self.store_health() else {
            return false;
        };
        !health.quorum
            || health.recovered_ms.is_some_and(|at| {
                crate::store::now_ms().saturating_sub(at) < (ttl * 2 + Duration::from_secs(5)).as_millis() as u64
            })
    }

    /// When the next held lease's extra TTL is over.
    fn next_release(&self) -> Option<Instant> {
        self.lock().instances.values().filter_map(|e| e.held_until).min()
    }

    /// Held leases whose extra TTL is over, with the marker each was held at.
    fn due_releases(&self) -> Vec<(String, u64)> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut due = Vec::new();
        for (id, entry) in state.instances.iter_mut() {
            if entry.held_until.is_some_and(|at| at <= now) {
                // Asked once; if the release fails, it is asked again a TTL later.
                entry.held_until = Some(now + self.config.ttl);
                due.push((id.clone(), entry.stored));
            }
        }
        due
    }

    /// After a watch was made again: drops instances whose keys the store no longer holds.
    fn retain_keys(&self, keys: &std::collections::HashSet<String>, seq: u64) {
        let mut state = self.lock();
        let before = state.instances.len();
        state.instances.retain(|id, _| keys.contains(&key_of(id)));
        if state.instances.len() != before {
            self.bump(&mut state, Some(seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_round_trip_through_bucket_keys() {
        for id in ["catalog-1-abcd", "a.b", "x:y@z", "=", ".lead", "ünï"] {
            let key = key_of(id);
            assert!(
                key.chars().all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)) && !key.starts_with('.'),
                "{key}"
            );
            assert_eq!(id_of(&key).as_deref(), Some(id));
        }
    }
}
