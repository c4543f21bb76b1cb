//! Which services may call this one over mTLS: the service's own list (what its code says it
//! serves), replaced live by the key `callers` in its config scope, plus those an operator
//! granted (`granted_callers`, which `up` writes from the manifest's `calls`). Checked in the
//! handshake.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigClient, ConfigLoader};
use crate::mtls::Callers;

/// The part of a service's configuration the allow list reads: the keys `callers` and
/// `granted_callers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallerConfig {
    /// The services that may call; unset, the service's own default.
    pub callers: Option<Vec<String>>,
    /// Services let in beside them: granted by an operator (the manifest's `calls`), so a new
    /// service can call an existing one without that one's code or list changing.
    pub granted_callers: Option<Vec<String>>,
}

impl CallerConfig {
    /// Names must be service names: a typo would lock a caller out without a word.
    pub fn validate(&self) -> Result<(), String> {
        for name in self
            .callers
            .iter()
            .flatten()
            .chain(self.granted_callers.iter().flatten())
        {
            if name != crate::mtls::ANY_SERVICE
                && (name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            {
                return Err(format!("callers: `{name}` is not a service name"));
            }
        }
        Ok(())
    }
}

/// Keeps `callers` on the store's list for `service` (or `default` while it has none) until
/// `shutdown`. A refused revision is logged and the list in force stays.
pub(crate) fn follow(
    service: &str,
    client: ConfigClient,
    default: Vec<String>,
    callers: Callers,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures_util::FutureExt::shared(shutdown);
    let live = match ConfigLoader::<CallerConfig>::new(service)
        .validate(CallerConfig::validate)
        .start(Some(client), shutdown.clone())
    {
        Ok(live) => live,
        Err(err) => {
            tracing::error!(service, error = %err, "the callers in the config store are refused; keeping {default:?}");
            return;
        }
    };
    let service = service.to_owned();
    tokio::spawn(async move {
        let mut changes = live.watch();
        let follow = async {
            loop {
                let current = live.current();
                let mut wanted = current.callers.clone().unwrap_or_else(|| default.clone());
                wanted.extend(current.granted_callers.iter().flatten().cloned());
                let mut shown = callers.services();
                shown.sort();
                let mut sorted = wanted.clone();
                sorted.sort();
                sorted.dedup();
                if sorted != shown {
                    tracing::info!(service, callers = ?sorted, "mTLS callers changed");
                    callers.set(sorted);
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = follow => {}
            _ = shutdown => {}
        }
    });
}
