//! Typed configuration, live: a serde struct resolved from its defaults, the service's local
//! file, the environment and the control plane (each over the last), kept current by a
//! blocking-query watch. A revision that does not deserialize or fails the service's own
//! validation is refused: the instance keeps its last good configuration, logs why, and
//! reports the refusal to the control plane, which shows per instance what it runs.
//!
//! Only the top-level keys the struct has (those its `Default` serializes) are read from the
//! environment and the store, so application-wide keys meant for other services are ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_api::config::{merge, ApplyReport, ApplyStatus, Resolved, DEFAULT_PROFILE, PROFILE_ENV};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::client::ConfigClient;
use super::file::{FileError, TomlFile};

/// How long one blocking query waits on the server.
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// Why the local layers (defaults, file, environment) did not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The local file is missing or malformed (names the file and line).
    #[error(transparent)]
    File(#[from] FileError),
    /// The layers merged into something the struct does not accept, or validation refused it.
    #[error("{source_name}: {reason}")]
    Invalid {
        /// Which layers (`defaults + catalog.toml + environment`).
        source_name: String,
        /// Why.
        reason: String,
    },
}

/// A validation hook: `Err` says why a configuration may not be run.
pub type Validator<T> = Arc<dyn Fn(&T) -> Result<(), String> + Send + Sync>;

/// Builds a [`LiveConfig`]: which service and profile, which local file, which environment
/// prefix, which validation.
pub struct ConfigLoader<T> {
    service: String,
    profile: String,
    file: Option<PathBuf>,
    env_prefix: String,
    validate: Option<Validator<T>>,
}

/// What an instance runs: a configuration and the store revision it came from (0: local
/// layers only).
#[derive(Debug)]
pub struct Applied<T> {
    /// The configuration.
    pub value: Arc<T>,
    /// The store revision it includes.
    pub revision: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<T> ConfigLoader<T>
where
    T: Serialize + DeserializeOwned + Default + Send + Sync + 'static,
{
    /// A loader for `service`: profile from `FLOTILLA_PROFILE` (else `default`), environment
    /// prefix `SERVICE_` (upper case, `-` as `_`), no file.
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        let profile = std::env::var(PROFILE_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PROFILE.into());
        Self {
            env_prefix: format!("{}_", service.to_ascii_uppercase().replace('-', "_")),
            service,
            profile,
            file: None,
            validate: None,
        }
    }

    /// Reads this profile's layers.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = profile.into();
        self
    }

    /// A local TOML file laid over the defaults (it must exist when given).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Environment variables `PREFIX<KEY>` (`CATALOG_PAGE_SIZE=50`) set key `key`; `__`
    /// nests (`CATALOG_DB__POOL=8`). Values are JSON when they parse as JSON, else strings.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// Checks a configuration before it is run; a refusal keeps the last good one.
    pub fn validate(mut self, check: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.validate = Some(Arc::new(check));
        self
    }

    fn known_keys() -> BTreeSet<String> {
        match serde_json::to_value(T::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Defaults, then the file, then the environment, as one JSON document.
    fn local_layers(&self, vars: impl Iterator<Item = (String, String)>) -> Result<(Value, String), ConfigError> {
        let mut doc = serde_json::to_value(T::default()).map_err(|e| ConfigError::Invalid {
            source_name: "defaults".into(),
            reason: e.to_string(),
        })?;
        let mut names = vec!["defaults".to_owned()];
        if let Some(path) = &self.file {
            let file = TomlFile::read(path)?;
            let table: toml::Table = file.parse()?;
            let value = serde_json::to_value(table).map_err(|e| file.error(e.to_string()))?;
            merge(&mut doc, value);
            names.push(path.display().to_string());
        }
        let known = Self::known_keys();
        let mut from_env = serde_json::Map::new();
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix(&self.env_prefix) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if !path.first().is_some_and(|k| known.contains(k)) {
                continue;
            }
            let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
            let nested = path.iter().rev().fold(value, |inner, key| {
                let mut map = serde_json::Map::new();
                map.insert(key.clone(), inner);
                Value::Object(map)
            });
            let mut acc = Value::Object(std::mem::take(&mut from_env));
            merge(&mut acc, nested);
            if let Value::Object(map) = acc {
                from_env = map;
            }
            if !names.iter().any(|n| n == "environment") {
                names.push("environment".into());
            }
        }
        merge(&mut doc, Value::Object(from_env));
        Ok((doc, names.join(" + ")))
    }

    fn build(&self, doc: Value, source_name: &str) -> Result<T, ConfigError> {
        let value: T = serde_json::from_value(doc).map_err(|e| ConfigError::Invalid {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(check) = &self.validate {
            check(&value).map_err(|reason| ConfigError::Invalid {
                source_name: source_name.to_owned(),
                reason,
            })?;
        }
        Ok(value)
    }

    /// The configuration from the local layers alone (no control plane), checked.
    pub fn load_local(&self) -> Result<T, ConfigError> {
        let (doc, name) = self.local_layers(std::env::vars())?;
        self.build(doc, &name)
    }

    /// Starts from the local layers, then follows the control plane at `client` (when given)
    /// until `shutdown`. Fails only if the local layers are bad: a bad store revision is
    /// refused and reported, never fatal.
    pub fn start(
        self,
        client: Option<ConfigClient>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<LiveConfig<T>, ConfigError> {
        let (local, local_name) = self.local_layers(std::env::vars())?;
        let first = self.build(local.clone(), &local_name)?;
        let (tx, rx) = watch::channel(Arc::new(Applied {
            value: Arc::new(first),
            revision: 0,
        }));
        let (instance_tx, instance_rx) = watch::channel(None::<String>);
        let (ready_tx, ready_rx) = watch::channel(client.is_none());
        if let Some(client) = client {
            let follower = Follower {
                loader: self,
                client,
                local,
                local_name,
                applied: tx,
                instance: instance_rx,
                ready: ready_tx,
            };
            tokio::spawn(async move {
                tokio::select! {
                    _ = follower.run() => {}
                    _ = shutdown => {}
                }
            });
        }
        Ok(LiveConfig {
            current: rx,
            instance: Arc::new(instance_tx),
            ready: ready_rx,
        })
    }
}

/// The running configuration of an instance. Cheap to clone; every clone sees updates.
pub struct LiveConfig<T> {
    current: watch::Receiver<Arc<Applied<T>>>,
    instance: Arc<watch::Sender<Option<String>>>,
    ready: watch::Receiver<bool>,
}

impl<T> Clone for LiveConfig<T> {
    fn clone(&self) -> Self {
        Self {
            current: self.current.clone(),
            instance: self.instance.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<T> LiveConfig<T> {
    /// A configuration that never changes (tests, services run without a control plane).
    pub fn fixed(value: T) -> Self {
        let (_, rx) = watch::channel(Arc::new(Applied {
            value: Arc::new(value),
            revision: 0,
        }));
        let (_, ready) = watch::channel(true);
        Self {
            current: rx,
            instance: Arc::new(watch::channel(None).0),
            ready,
        }
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<T> {
        self.current.borrow().value.clone()
    }

    /// The store revision in force (0: local layers only).
    pub fn revision(&self) -> u64 {
        self.current.borrow().revision
    }

    /// A receiver that wakes on every applied change.
    pub fn watch(&self) -> watch::Receiver<Arc<Applied<T>>> {
        self.current.clone()
    }

    /// Names the instance in its reports to the control plane (the registry's instance id,
    /// so the control plane can show which instance runs which revision). The runtime calls
    /// it when it registers.
    pub fn attach(&self, instance_id: &str) {
        self.instance.send_replace(Some(instance_id.to_owned()));
    }

    /// Waits until the configuration in force satisfies `wanted` (a secret something else
    /// writes into the store — a seed Job, an operator — after this instance started), at
    /// most `timeout`; whether it does. Services started together with what seeds them wait
    /// here instead of failing and being restarted.
    pub async fn wait_for(&self, timeout: Duration, wanted: impl Fn(&T) -> bool) -> bool {
        let mut current = self.current.clone();
        tokio::time::timeout(timeout, current.wait_for(|applied| wanted(&applied.value)))
            .await
            .is_ok_and(|found| found.is_ok())
    }

    /// Waits until the first answer from the control plane has been applied or refused (at
    /// once without one), at most `timeout`.
    pub async fn ready(&self, timeout: Duration) {
        let mut ready = self.ready.clone();
        let _ = tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await;
    }
}

/// The task that follows the store for one [`LiveConfig`].
struct Follower<T> {
    loader: ConfigLoader<T>,
    client: ConfigClient,
    local: Value,
    local_name: String,
    applied: watch::Sender<Arc<Applied<T>>>,
    instance: watch::Receiver<Option<String>>,
    ready: watch::Sender<bool>,
}

impl<T> Follower<T>
where
    T: Serialize + DeserializeOwned + Default + Send + Sync + 'static,
{
    async fn run(self) {
        let mut instance = self.instance.clone();
        let mut index: Option<u64> = None;
        let mut last: Option<ApplyReport> = None;
        let mut backoff = Duration::from_millis(200);
        loop {
            let resolve = self
                .client
                .resolve(&self.loader.service, &self.loader.profile, index, WATCH_WAIT);
            // A report waiting for the instance's id goes out as soon as the id is known.
            let resolved = tokio::select! {
                resolved = resolve => resolved,
                Ok(()) = instance.changed(), if last.is_some() => {
                    if let Some(report) = &last {
                        self.send_report(report).await;
                    }
                    continue;
                }
            };
            match resolved {
                Ok(resolved) => {
                    backoff = Duration::from_millis(200);
                    if index != Some(resolved.revision) {
                        let report = self.apply(&resolved);
                        self.send_report(&report).await;
                        last = Some(report);
                    }
                    index = Some(resolved.revision);
                    self.ready.send_replace(true);
                }
                Err(err) => {
                    tracing::warn!(error = %err, service = %self.loader.service, "config watch failed; keeping the configuration in force");
                    self.ready.send_replace(true);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Builds the configuration `resolved` makes; swaps it in if it is good.
    fn apply(&self, resolved: &Resolved) -> ApplyReport {
        let known = ConfigLoader::<T>::known_keys();
        let mut doc = self.local.clone();
        let store: serde_json::Map<String, Value> = resolved
            .values
            .iter()
            .filter(|(k, _)| known.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merge(&mut doc, Value::Object(store));
        let name = format!("{} + store revision {}", self.local_name, resolved.revision);
        let running = self.applied.borrow().revision;
        match self.loader.build(doc, &name) {
            Ok(value) => {
                self.applied.send_replace(Arc::new(Applied {
                    value: Arc::new(value),
                    revision: resolved.revision,
                }));
                tracing::info!(service = %self.loader.service, revision = resolved.revision, "config applied");
                ApplyReport {
                    service: self.loader.service.clone(),
                    revision: resolved.revision,
                    status: ApplyStatus::Applied,
                    running: resolved.revision,
                    error: None,
                    time_ms: now_ms(),
                }
            }
            Err(err) => {
                let err = mask_secrets(&err.to_string(), resolved);
                tracing::error!(service = %self.loader.service, revision = resolved.revision, running, error = %err, "config revision refused; keeping the last good one");
                ApplyReport {
                    service: self.loader.service.clone(),
                    revision: resolved.revision,
                    status: ApplyStatus::Refused,
                    running,
                    error: Some(err),
                    time_ms: now_ms(),
                }
            }
        }
    }

    async fn send_report(&self, report: &ApplyReport) {
        let Some(instance) = self.instance.borrow().clone() else {
            return;
        };
        if let Err(err) = self.client.report(&instance, report).await {
            tracing::warn!(error = %err, "could not report the config revision to the control plane");
        }
    }
}

/// `text` with every secret value of `resolved` replaced by the mask: a refused secret must not
/// reach a log or the control plane through a deserializer's error message.
fn mask_secrets(text: &str, resolved: &Resolved) -> String {
    let mut out = text.to_owned();
    let mut hide = |value: &Value| {
        let spellings = match value {
            Value::String(s) => vec![s.clone()],
            other => vec![other.to_string()],
        };
        for spelling in spellings.into_iter().filter(|s| s.len() >= 3) {
            out = out.replace(&spelling, flotilla_api::config::SECRET_MASK);
        }
    };
    for key in &resolved.secret_keys {
        if let Some(value) = resolved.values.get(key) {
            let mut stack = vec![value];
            while let Some(v) = stack.pop() {
                match v {
                    Value::Object(map) => stack.extend(map.values()),
                    Value::Array(items) => stack.extend(items.iter()),
                    other => hide(other),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_answers_once_the_configuration_has_what_is_wanted() {
        let (applied, current) = watch::channel(Arc::new(Applied {
            value: Arc::new(String::new()),
            revision: 0,
        }));
        let config = LiveConfig {
            current,
            instance: Arc::new(watch::channel(None).0),
            ready: watch::channel(true).1,
        };
        let late = Duration::from_millis(50);
        assert!(
            !config.wait_for(late, |v: &String| !v.is_empty()).await,
            "not there: false after the wait"
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            applied.send_replace(Arc::new(Applied {
                value: Arc::new("seeded".to_owned()),
                revision: 2,
            }));
            // Kept open a while, as a follower would be.
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        assert!(
            config
                .wait_for(Duration::from_secs(5), |v: &String| !v.is_empty())
                .await
        );
        assert_eq!(config.revision(), 2);
    }

    #[test]
    fn refusals_never_carry_a_secret_value() {
        let resolved = Resolved {
            revision: 3,
            service: "payments".into(),
            profile: "default".into(),
            values: [("api_key".to_owned(), serde_json::json!({"value": "sk_live_42"}))].into(),
            sources: Default::default(),
            secret_keys: ["api_key".to_owned()].into(),
        };
        let text = "invalid type: string \"sk_live_42\", expected u32";
        assert_eq!(
            mask_secrets(text, &resolved),
            "invalid type: string \"******\", expected u32"
        );
    }

    #[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Knobs {
        page_size: u32,
        greeting: String,
        db: Db,
    }

    #[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Db {
        pool: u32,
        url: String,
    }

    fn vars(list: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn layers_go_defaults_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(&file, "page_size = 30\ngreeting = \"hi\"\n[db]\nurl = \"sqlite://x\"\n").unwrap();
        let loader = ConfigLoader::<Knobs>::new("catalog").file(&file);
        let (doc, name) = loader
            .local_layers(vars(&[
                ("CATALOG_PAGE_SIZE", "50"),
                ("CATALOG_DB__POOL", "8"),
                ("CATALOG_UNRELATED", "x"),
                ("OTHER_PAGE_SIZE", "1"),
            ]))
            .unwrap();
        let knobs = loader.build(doc, &name).unwrap();
        assert_eq!(
            knobs,
            Knobs {
                page_size: 50,
                greeting: "hi".into(),
                db: Db {
                    pool: 8,
                    url: "sqlite://x".into()
                }
            }
        );
        assert!(name.contains("catalog.toml") && name.ends_with("environment"), "{name}");
    }

    #[test]
    fn a_bad_file_names_its_line_and_a_failed_validation_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("catalog.toml");
        std::fs::write(&file, "page_size = 30\npage_sise = 2\n").unwrap();
        let loader = ConfigLoader::<Knobs>::new("catalog").file(&file);
        let (doc, name) = loader.local_layers(vars(&[])).unwrap();
        let err = loader.build(doc, &name).unwrap_err();
        assert!(err.to_string().contains("page_sise"), "{err}");

        let loader = ConfigLoader::<Knobs>::new("catalog").validate(|k| {
            if k.page_size == 0 {
                Err("page_size must be at least 1".into())
            } else {
                Ok(())
            }
        });
        let (doc, name) = loader.local_layers(vars(&[])).unwrap();
        let err = loader.build(doc, &name).unwrap_err();
        assert!(err.to_string().contains("page_size must be at least 1"), "{err}");
    }
}
