//! Central configuration: JSON documents keyed by scope, profile and key, every write a new
//! store-wide revision (time, author, comment) in SQLite, compare-and-set on a key's revision,
//! history, diff and rollback, secrets sealed at rest, and blocking queries on the revision —
//! the registry's watch model — so every instance hears of a change in milliseconds.
//!
//! The current value of every key (deletions included, as tombstones) is cached in memory:
//! resolving a service's document never touches the disk; history and diffs read it.

pub mod http;
pub(crate) mod nats;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_api::config::{
    merge, ApplyReport, ConfigEntry, ConfigKey, InstanceConfig, Resolved, Source, APPLICATION, DEFAULT_PROFILE,
    SECRET_MASK,
};
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tokio::sync::watch;

pub use flotilla::seal::{SealError as SecretError, Sealer};

/// Why a config operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A part of the key or a field is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The key has no value (never set, or deleted).
    #[error("`{0}` has no value")]
    NotFound(ConfigKey),
    /// The revision does not exist, or belongs to another key.
    #[error("`{key}` has no revision {revision}")]
    NoSuchRevision {
        /// The key.
        key: ConfigKey,
        /// The revision asked for.
        revision: u64,
    },
    /// Compare-and-set failed: the key moved on since the caller read it.
    #[error("`{key}` is at revision {current}, not {expected}")]
    Conflict {
        /// The key.
        key: ConfigKey,
        /// The revision the caller expected (0: expected no value).
        expected: u64,
        /// The revision it is at (0: it has no value).
        current: u64,
    },
    /// The database failed.
    #[error("config store: {0}")]
    Database(#[from] sqlx::Error),
    /// A secret could not be opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The store (NATS) cannot take the write now.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A write's conditions and provenance.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Compare-and-set: the key's current revision must be this (0: the key must have no
    /// value). `None` writes unconditionally.
    pub expect: Option<u64>,
    /// Who.
    pub author: String,
    /// Why.
    pub comment: String,
}

/// One row as stored: the value in plain JSON text, or sealed when secret.
#[derive(Debug, Clone)]
struct StoredRow {
    key: ConfigKey,
    revision: u64,
    stored: Option<String>,
    secret: bool,
    time_ms: u64,
    author: String,
    comment: String,
}

/// Whether values of secrets may be shown to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    /// Show secrets (the caller presented the token).
    Secrets,
    /// Replace them with [`SECRET_MASK`].
    Masked,
}

/// Where revisions are kept.
enum Backend {
    /// A SQLite file (or memory) of this process.
    Sqlite(SqlitePool),
    /// A NATS JetStream stream every replica follows.
    Nats(Box<nats::Revisions>),
}

/// The config store. Share it behind an `Arc`; every method takes `&self`.
///
/// Revisions are kept in SQLite (one process) or in a NATS stream (any number of replicas,
/// each following the stream into its cache): the same operations, the same tests.
pub struct ConfigStore {
    backend: Backend,
    sealer: Sealer,
    /// Latest row of every key ever written (tombstones included).
    current: Mutex<BTreeMap<ConfigKey, StoredRow>>,
    /// Serializes writes, so a compare-and-set reads and writes as one step.
    writing: tokio::sync::Mutex<()>,
    revision: watch::Sender<u64>,
    applied: Mutex<BTreeMap<String, ApplyReport>>,
    applied_changes: watch::Sender<u64>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("revision", &*self.revision.borrow())
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS config_revisions (
    revision INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    profile TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    secret INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS config_revisions_by_key ON config_revisions (scope, profile, key, revision);";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutation under these locks is one insert; a panic cannot leave them half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConfigStore {
    /// The store in `data_dir/control.db`, its secrets key in `data_dir/config.key`. Every
    /// write is synced before it is acknowledged (WAL, `synchronous = FULL`).
    pub async fn open(data_dir: &Path) -> Result<Self, ConfigError> {
        Self::open_with_keys(data_dir, data_dir).await
    }

    /// The store in `data_dir/control.db`, its secrets key in `keys_dir/config.key` (where a
    /// Secret is mounted, read-only, on Kubernetes).
    pub async fn open_with_keys(data_dir: &Path, keys_dir: &Path) -> Result<Self, ConfigError> {
        std::fs::create_dir_all(data_dir).map_err(|source| SecretError::KeyFile {
            path: data_dir.display().to_string(),
            source,
        })?;
        let pool = crate::sqlite(Some(&data_dir.join("control.db")), SCHEMA).await?;
        Self::with(pool, Sealer::from_file(&keys_dir.join("config.key"))?).await
    }

    /// A store on NATS JetStream, secrets sealed with `sealer` (whose key never reaches
    /// NATS). Its cache is filled by [`ConfigStore::run_follow`].
    pub async fn on_nats(store: &crate::store::Nats, sealer: Sealer) -> Result<Self, ConfigError> {
        let revisions = nats::Revisions::open(store).await?;
        Ok(Self::empty(Backend::Nats(Box::new(revisions)), sealer, 0))
    }

    fn empty(backend: Backend, sealer: Sealer, top: u64) -> Self {
        Self {
            backend,
            sealer,
            current: Mutex::new(BTreeMap::new()),
            writing: tokio::sync::Mutex::new(()),
            revision: watch::Sender::new(top),
            applied: Mutex::new(BTreeMap::new()),
            applied_changes: watch::Sender::new(0),
        }
    }

    /// Whether the cache has caught up with the store (at once for SQLite).
    pub fn synced(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => true,
            Backend::Nats(revisions) => revisions.synced(),
        }
    }

    /// Keeps the cache true to the store until `shutdown` (on NATS; SQLite needs nothing).
    pub async fn run_follow(&self, shutdown: impl std::future::Future<Output = ()>) {
        match &self.backend {
            Backend::Sqlite(_) => shutdown.await,
            Backend::Nats(revisions) => nats::follow(self, revisions, shutdown).await,
        }
    }

    /// A store that lives in memory, for tests.
    pub async fn in_memory() -> Result<Self, ConfigError> {
        Self::with(crate::sqlite(None, SCHEMA).await?, Sealer::ephemeral()).await
    }

    async fn with(pool: SqlitePool, sealer: Sealer) -> Result<Self, ConfigError> {
        // Reads come from the cache below; the one connection serializes writes.
        let rows = sqlx::query(
            "SELECT r.* FROM config_revisions r JOIN (SELECT MAX(revision) AS revision FROM config_revisions GROUP BY scope, profile, key) l ON r.revision = l.revision",
        )
        .fetch_all(&pool)
        .await?;
        let mut current = BTreeMap::new();
        let mut top = 0;
        for row in rows {
            let row = row_from(&row)?;
            top = top.max(row.revision);
            current.insert(row.key.clone(), row);
        }
        let store = Self::empty(Backend::Sqlite(pool), sealer, top);
        *lock(&store.current) = current;
        Ok(store)
    }

    /// The newest revision in the store (0 when empty).
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    fn entry(&self, row: &StoredRow, reveal: Reveal) -> Result<ConfigEntry, ConfigError> {
        let value = match (&row.stored, row.secret, reveal) {
            (None, ..) => Value::Null,
            (Some(_), true, Reveal::Masked) => Value::String(SECRET_MASK.into()),
            (Some(sealed), true, Reveal::Secrets) => {
                let plain = self.sealer.open(&row.key.to_string(), sealed)?;
                serde_json::from_slice(&plain).unwrap_or(Value::Null)
            }
            (Some(text), false, _) => serde_json::from_str(text).unwrap_or(Value::Null),
        };
        Ok(ConfigEntry {
            scope: row.key.scope.clone(),
            profile: row.key.profile.clone(),
            key: row.key.key.clone(),
            revision: row.revision,
            value,
            secret: row.secret,
            deleted: row.stored.is_none(),
            time_ms: row.time_ms,
            author: row.author.clone(),
            comment: row.comment.clone(),
        })
    }

    fn check(key: &ConfigKey) -> Result<(), ConfigError> {
        key.validate()
            .map_err(|(field, reason)| ConfigError::Invalid { field, reason })
    }

    /// The key's current value.
    pub fn get(&self, key: &ConfigKey, reveal: Reveal) -> Result<ConfigEntry, ConfigError> {
        Self::check(key)?;
        let row = lock(&self.current)
            .get(key)
            .filter(|r| r.stored.is_some())
            .cloned()
            .ok_or_else(|| ConfigError::NotFound(key.clone()))?;
        self.entry(&row, reveal)
    }

    /// Every key with a value, optionally of one scope and/or profile; secrets masked.
    pub fn list(&self, scope: Option<&str>, profile: Option<&str>) -> Vec<ConfigEntry> {
        let rows: Vec<StoredRow> = lock(&self.current)
            .values()
            .filter(|r| r.stored.is_some())
            .filter(|r| scope.is_none_or(|s| r.key.scope == s) && profile.is_none_or(|p| r.key.profile == p))
            .cloned()
            .collect();
        rows.iter().filter_map(|r| self.entry(r, Reveal::Masked).ok()).collect()
    }

    /// Sets a key: a new revision. Secrets are sealed before they reach the disk.
    pub async fn set(
        &self,
        key: &ConfigKey,
        value: Value,
        secret: bool,
        options: WriteOptions,
    ) -> Result<ConfigEntry, ConfigError> {
        Self::check(key)?;
        if value.is_null() {
            return Err(ConfigError::Invalid {
                field: "value",
                reason: "null is not a value; delete the key instead".into(),
            });
        }
        let text = value.to_string();
        let stored = if secret {
            self.sealer.seal(&key.to_string(), text.as_bytes())
        } else {
            text
        };
        self.write(key, Some(stored), secret, options).await
    }

    /// Deletes a key: a new revision with no value, so history keeps what it was.
    pub async fn delete(&self, key: &ConfigKey, options: WriteOptions) -> Result<ConfigEntry, ConfigError> {
        Self::check(key)?;
        let secret = {
            let current = lock(&self.current);
            match current.get(key) {
                Some(row) if row.stored.is_some() => row.secret,
                _ => return Err(ConfigError::NotFound(key.clone())),
            }
        };
        self.write(key, None, secret, options).await
    }

    /// A new revision carrying `revision`'s value (or its deletion).
    pub async fn rollback(
        &self,
        key: &ConfigKey,
        revision: u64,
        mut options: WriteOptions,
    ) -> Result<ConfigEntry, ConfigError> {
        Self::check(key)?;
        let old = self.row_at(key, revision).await?;
        if options.comment.is_empty() {
            options.comment = format!("rollback to revision {revision}");
        }
        // A sealed value is bound to its key, which is the same: it can be stored as it is.
        self.write(key, old.stored, old.secret, options).await
    }

    async fn write(
        &self,
        key: &ConfigKey,
        stored: Option<String>,
        secret: bool,
        options: WriteOptions,
    ) -> Result<ConfigEntry, ConfigError> {
        let _writing = self.writing.lock().await;
        if let Backend::Nats(revisions) = &self.backend {
            // A compare-and-set is checked against everything the store holds now.
            if options.expect.is_some() {
                revisions.caught_up().await?;
            }
        }
        let (current, last) = lock(&self.current).get(key).map_or((0, 0), |r| {
            (if r.stored.is_some() { r.revision } else { 0 }, r.revision)
        });
        if let Some(expected) = options.expect {
            if expected != current {
                return Err(ConfigError::Conflict {
                    key: key.clone(),
                    expected,
                    current,
                });
            }
        }
        let time_ms = now_ms();
        let author = if options.author.is_empty() {
            "unknown".to_owned()
        } else {
            options.author
        };
        let mut row = StoredRow {
            key: key.clone(),
            revision: 0,
            stored,
            secret,
            time_ms,
            author,
            comment: options.comment,
        };
        match &self.backend {
            Backend::Sqlite(pool) => {
                let done = sqlx::query(
                    "INSERT INTO config_revisions (scope, profile, key, value, secret, time_ms, author, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&key.scope)
                .bind(&key.profile)
                .bind(&key.key)
                .bind(&row.stored)
                .bind(secret)
                .bind(time_ms as i64)
                .bind(&row.author)
                .bind(&row.comment)
                .execute(pool)
                .await?;
                row.revision = done.last_insert_rowid() as u64;
                lock(&self.current).insert(key.clone(), row.clone());
                self.revision.send_replace(row.revision);
            }
            Backend::Nats(revisions) => {
                // The server checks the key's last revision, so two replicas cannot both win.
                let condition = options.expect.map(|_| last);
                match revisions.append(&row, condition).await? {
                    Some(revision) => row.revision = revision,
                    None => {
                        revisions.caught_up().await?;
                        let current = lock(&self.current)
                            .get(key)
                            .filter(|r| r.stored.is_some())
                            .map_or(0, |r| r.revision);
                        return Err(ConfigError::Conflict {
                            key: key.clone(),
                            expected: options.expect.unwrap_or(0),
                            current,
                        });
                    }
                }
            }
        }
        tracing::info!(key = %key, revision = row.revision, secret, author = %row.author, deleted = row.stored.is_none(), "config written");
        self.entry(&row, Reveal::Masked)
    }

    async fn row_at(&self, key: &ConfigKey, revision: u64) -> Result<StoredRow, ConfigError> {
        let pool = match &self.backend {
            Backend::Sqlite(pool) => pool,
            Backend::Nats(revisions) => {
                return revisions
                    .row_at(key, revision)
                    .ok_or_else(|| ConfigError::NoSuchRevision {
                        key: key.clone(),
                        revision,
                    })
            }
        };
        let row =
            sqlx::query("SELECT * FROM config_revisions WHERE revision = ? AND scope = ? AND profile = ? AND key = ?")
                .bind(revision as i64)
                .bind(&key.scope)
                .bind(&key.profile)
                .bind(&key.key)
                .fetch_optional(pool)
                .await?
                .ok_or_else(|| ConfigError::NoSuchRevision {
                    key: key.clone(),
                    revision,
                })?;
        row_from(&row)
    }

    /// One revision of a key.
    pub async fn at(&self, key: &ConfigKey, revision: u64, reveal: Reveal) -> Result<ConfigEntry, ConfigError> {
        Self::check(key)?;
        let row = self.row_at(key, revision).await?;
        self.entry(&row, reveal)
    }

    /// Every revision of a key, newest first, at most `limit`.
    pub async fn history(&self, key: &ConfigKey, limit: u32, reveal: Reveal) -> Result<Vec<ConfigEntry>, ConfigError> {
        Self::check(key)?;
        let rows = match &self.backend {
            Backend::Sqlite(pool) => sqlx::query(
                "SELECT * FROM config_revisions WHERE scope = ? AND profile = ? AND key = ? ORDER BY revision DESC LIMIT ?",
            )
            .bind(&key.scope)
            .bind(&key.profile)
            .bind(&key.key)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(row_from)
            .collect::<Result<Vec<_>, _>>()?,
            Backend::Nats(revisions) => revisions.history(key, limit),
        };
        if rows.is_empty() {
            return Err(ConfigError::NotFound(key.clone()));
        }
        rows.iter().map(|r| self.entry(r, reveal)).collect()
    }

    /// The layers a service's instance reads, lowest first.
    fn layers<'a>(service: &'a str, profile: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut layers = vec![(APPLICATION, DEFAULT_PROFILE)];
        if profile != DEFAULT_PROFILE {
            layers.push((APPLICATION, profile));
        }
        if service != APPLICATION {
            layers.push((service, DEFAULT_PROFILE));
            if profile != DEFAULT_PROFILE {
                layers.push((service, profile));
            }
        }
        layers
    }

    /// A service's document: application < application+profile < service < service+profile.
    pub fn resolve(&self, service: &str, profile: &str, reveal: Reveal) -> Result<Resolved, ConfigError> {
        flotilla_api::config::validate_scope(service).map_err(|reason| ConfigError::Invalid {
            field: "service",
            reason,
        })?;
        flotilla_api::config::validate_profile(profile).map_err(|reason| ConfigError::Invalid {
            field: "profile",
            reason,
        })?;
        let rows: Vec<StoredRow> = {
            let current = lock(&self.current);
            Self::layers(service, profile)
                .into_iter()
                .flat_map(|(scope, profile)| {
                    current
                        .values()
                        .filter(move |r| r.key.scope == scope && r.key.profile == profile)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut resolved = Resolved {
            revision: rows.iter().map(|r| r.revision).max().unwrap_or(0),
            service: service.to_owned(),
            profile: profile.to_owned(),
            values: BTreeMap::new(),
            sources: BTreeMap::new(),
            secret_keys: Default::default(),
        };
        for row in rows.iter().filter(|r| r.stored.is_some()) {
            let entry = self.entry(row, reveal)?;
            if entry.secret {
                resolved.secret_keys.insert(entry.key.clone());
            }
            match resolved.values.get_mut(&entry.key) {
                Some(slot) => merge(slot, entry.value),
                None => {
                    resolved.values.insert(entry.key.clone(), entry.value);
                }
            }
            resolved.sources.entry(entry.key).or_default().push(Source {
                scope: entry.scope,
                profile: entry.profile,
                revision: entry.revision,
            });
        }
        Ok(resolved)
    }

    /// A blocking resolve: waits until a write touches one of the service's layers after
    /// `index`, or `wait` passes. In SQLite an index from the future (the store was reset)
    /// answers at once; on NATS it is another replica's, further along the same stream, and is
    /// waited for like any other, so a watcher that moves keeps its place.
    pub async fn resolve_after(
        &self,
        service: &str,
        profile: &str,
        index: u64,
        wait: Duration,
        reveal: Reveal,
    ) -> Result<Resolved, ConfigError> {
        let mut changes = self.revision.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // The revision is marked seen before the cache is read: a write taken in between
            // wakes the wait below rather than slipping past it.
            let store = *changes.borrow_and_update();
            let resolved = self.resolve(service, profile, reveal)?;
            let reset = index > store && matches!(self.backend, Backend::Sqlite(_));
            if resolved.revision > index || reset {
                return Ok(resolved);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(resolved),
            }
        }
    }

    /// Records what an instance did with a revision.
    pub async fn report(&self, instance_id: &str, report: ApplyReport) -> Result<(), ConfigError> {
        if report.error.is_some() {
            tracing::warn!(instance = %instance_id, revision = report.revision, running = report.running, error = report.error.as_deref().unwrap_or(""), "an instance refused a config revision");
        }
        match &self.backend {
            Backend::Sqlite(_) => {
                self.take_report(instance_id, Some(report), None);
                Ok(())
            }
            // The bucket's watch brings it into every replica's reports.
            Backend::Nats(revisions) => revisions.report(instance_id, &report).await,
        }
    }

    /// Takes a report (or its removal) into the reports; the index moves to the store's
    /// sequence when it has one, else by one.
    fn take_report(&self, instance_id: &str, report: Option<ApplyReport>, seq: Option<u64>) {
        let mut applied = lock(&self.applied);
        match report {
            Some(report) => {
                applied.insert(instance_id.to_owned(), report);
            }
            None => {
                applied.remove(instance_id);
            }
        }
        drop(applied);
        self.applied_changes.send_modify(|n| *n = seq.unwrap_or(*n + 1).max(*n));
    }

    /// The latest report of every instance `live` accepts, with the index of the reports'
    /// changes for blocking queries. Reports of instances gone for ten minutes are forgotten.
    pub fn reports(&self, live: impl Fn(&str) -> bool) -> (u64, Vec<InstanceConfig>) {
        let index = *self.applied_changes.borrow();
        let forget_before = now_ms().saturating_sub(600_000);
        let mut applied = lock(&self.applied);
        applied.retain(|id, report| live(id) || report.time_ms >= forget_before);
        let list = applied
            .iter()
            .filter(|(id, _)| live(id))
            .map(|(id, report)| InstanceConfig {
                instance_id: id.clone(),
                report: report.clone(),
            })
            .collect();
        (index, list)
    }

    /// Waits until a report arrives after `index`, or `wait` passes.
    pub async fn reports_after(&self, index: u64, wait: Duration) {
        let mut changes = self.applied_changes.subscribe();
        let _ = tokio::time::timeout(wait, changes.wait_for(|n| *n != index)).await;
    }
}

fn row_from(row: &sqlx::sqlite::SqliteRow) -> Result<StoredRow, ConfigError> {
    Ok(StoredRow {
        key: ConfigKey {
            scope: row.try_get("scope")?,
            profile: row.try_get("profile")?,
            key: row.try_get("key")?,
        },
        revision: row.try_get::<i64, _>("revision")? as u64,
        stored: row.try_get("value")?,
        secret: row.try_get("secret")?,
        time_ms: row.try_get::<i64, _>("time_ms")? as u64,
        author: row.try_get("author")?,
        comment: row.try_get("comment")?,
    })
}

#[cfg(test)]
mod tests;
