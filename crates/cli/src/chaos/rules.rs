//! A service's fault rules in the config store (key `faults` of its scope, profile
//! `default`): added with compare-and-set so two writers never lose each other's rule,
//! cleared by deleting the key (its history stays, like any config key's).

use std::collections::BTreeMap;

use flotilla::api::config::{ConfigKey, DEFAULT_PROFILE};
use flotilla::api::faults::{FaultRule, FAULTS_KEY};
use flotilla::config::{ConfigClient, ConfigClientError, Write};

/// Attempts at a compare-and-set before giving up: only a busy key needs more than one.
const ATTEMPTS: usize = 5;

/// Why the rules could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The control plane failed or refused.
    #[error("{key}: {source}")]
    Store {
        /// The key.
        key: ConfigKey,
        /// Why.
        #[source]
        source: ConfigClientError,
    },
    /// The key holds something that is not a list of rules (written by hand).
    #[error("{key} does not hold fault rules ({reason}); fix it with `flotilla config edit faults --scope {scope}` or clear it")]
    Malformed {
        /// The key.
        key: ConfigKey,
        /// Its scope.
        scope: String,
        /// Why.
        reason: String,
    },
    /// Others kept changing the key.
    #[error("{0} kept changing while the rule was written; try again")]
    Busy(ConfigKey),
}

/// The key of a service's rules.
pub fn key(service: &str) -> ConfigKey {
    ConfigKey::new(service, DEFAULT_PROFILE, FAULTS_KEY)
}

fn parse(key: &ConfigKey, value: serde_json::Value) -> Result<Vec<FaultRule>, RulesError> {
    serde_json::from_value(value).map_err(|e| RulesError::Malformed {
        key: key.clone(),
        scope: key.scope.clone(),
        reason: e.to_string(),
    })
}

/// The rules a service has after `rule` is added at `now_ms`: ended rules go, and a new rule
/// replaces the one of its kind aimed at the same requests (saying `latency catalog 500ms`
/// after `latency catalog 200ms` means 500 ms, not both; a rule for one path stays beside
/// one for every path).
pub fn with_rule(current: Vec<FaultRule>, rule: FaultRule, now_ms: u64) -> Vec<FaultRule> {
    let mut rules: Vec<FaultRule> = current
        .into_iter()
        .filter(|r| r.active_at(now_ms) && !r.same_aim(&rule))
        .collect();
    rules.push(rule);
    rules
}

/// The rules of `service` and the key's revision (0: no value).
async fn read(client: &ConfigClient, key: &ConfigKey) -> Result<(Vec<FaultRule>, u64), RulesError> {
    match client.get(key).await {
        Ok(entry) if !entry.deleted => Ok((parse(key, entry.value)?, entry.revision)),
        Ok(_) | Err(ConfigClientError::NotFound(_)) => Ok((Vec::new(), 0)),
        Err(source) => Err(RulesError::Store {
            key: key.clone(),
            source,
        }),
    }
}

/// Adds `rule` to `service`'s rules; returns the revision written.
pub async fn add(client: &ConfigClient, service: &str, rule: FaultRule, now_ms: u64) -> Result<u64, RulesError> {
    let key = key(service);
    for _ in 0..ATTEMPTS {
        let (current, revision) = read(client, &key).await?;
        let rules = with_rule(current, rule.clone(), now_ms);
        let value = serde_json::to_value(&rules).map_err(|e| RulesError::Malformed {
            key: key.clone(),
            scope: key.scope.clone(),
            reason: e.to_string(),
        })?;
        let write = Write {
            expect: Some(revision),
            author: Some("flotilla chaos".into()),
            comment: Some(format!("chaos: {} (rule {})", rule.describe(), rule.id)),
        };
        match client.set(&key, value, false, write).await {
            Ok(entry) => return Ok(entry.revision),
            Err(ConfigClientError::Conflict(_)) => continue,
            Err(source) => return Err(RulesError::Store { key, source }),
        }
    }
    Err(RulesError::Busy(key))
}

/// Deletes `service`'s rules; returns those that were still in force at `now_ms`.
pub async fn clear(client: &ConfigClient, service: &str, now_ms: u64) -> Result<Vec<FaultRule>, RulesError> {
    let key = key(service);
    let (current, revision) = read(client, &key).await?;
    if revision == 0 {
        return Ok(Vec::new());
    }
    let write = Write {
        expect: None,
        author: Some("flotilla chaos".into()),
        comment: Some("chaos: cleared".into()),
    };
    match client.delete(&key, write).await {
        Ok(_) | Err(ConfigClientError::NotFound(_)) => {}
        Err(source) => return Err(RulesError::Store { key, source }),
    }
    Ok(current.into_iter().filter(|r| r.active_at(now_ms)).collect())
}

/// Every `faults` key with a value: its scope and its rules (ended ones too), from one call
/// to the store's listing. A hand-written key that is not rules counts with no rules.
async fn listing(client: &ConfigClient) -> Result<Vec<(String, Vec<FaultRule>)>, RulesError> {
    let entries = client
        .list(None, Some(DEFAULT_PROFILE))
        .await
        .map_err(|source| RulesError::Store { key: key("*"), source })?;
    Ok(entries
        .into_iter()
        .filter(|e| e.key == FAULTS_KEY && !e.deleted)
        .map(|e| (e.scope, serde_json::from_value(e.value).unwrap_or_default()))
        .collect())
}

/// The services with fault rules in the store, ended or not.
pub async fn scopes(client: &ConfigClient) -> Result<Vec<String>, RulesError> {
    Ok(listing(client).await?.into_iter().map(|(scope, _)| scope).collect())
}

/// Every service's rules in force at `now_ms`, by service.
pub async fn all(client: &ConfigClient, now_ms: u64) -> Result<BTreeMap<String, Vec<FaultRule>>, RulesError> {
    Ok(listing(client)
        .await?
        .into_iter()
        .map(|(scope, rules)| {
            (
                scope,
                rules.into_iter().filter(|r| r.active_at(now_ms)).collect::<Vec<_>>(),
            )
        })
        .filter(|(_, rules)| !rules.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use flotilla::api::faults::FaultKind;

    use super::*;

    fn rule(id: &str, kind: FaultKind, until_ms: Option<u64>) -> FaultRule {
        FaultRule {
            id: id.into(),
            kind,
            delay_ms: 100,
            status: None,
            share: 1.0,
            method: None,
            path: None,
            until_ms,
        }
    }

    #[test]
    fn a_new_rule_replaces_its_kind_and_ended_rules_go() {
        let current = vec![
            rule("old-delay", FaultKind::Delay, None),
            rule("abort", FaultKind::Abort, Some(2_000)),
            rule("ended", FaultKind::Abort, Some(500)),
        ];
        let ids = |rules: Vec<FaultRule>| rules.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(with_rule(
                current.clone(),
                rule("new-delay", FaultKind::Delay, None),
                1_000
            )),
            ["abort", "new-delay"]
        );
        assert_eq!(
            ids(with_rule(
                current.clone(),
                rule("new-abort", FaultKind::Abort, None),
                3_000
            )),
            ["old-delay", "new-abort"]
        );
        let mut capture = rule("capture", FaultKind::Abort, None);
        capture.path = Some("/api/v1/payments/*/capture".into());
        assert_eq!(
            ids(with_rule(current, capture, 1_000)),
            ["old-delay", "abort", "capture"]
        );
    }
}
