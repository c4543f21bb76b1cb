//! One interface to the event backends: the control plane's event log (`/v1/events`, the
//! default) or NATS JetStream (see [`super::nats`]). Callers — the outbox relay, the inbox
//! consumer, the CLI — see the same offsets, attempts, dead letters and replays on either.

use std::sync::Arc;
use std::time::Duration;

use flotilla_api::events::{Appended, CloudEvent, Delivery, TopicInfo};

use super::log::LogBackend;
use super::nats::{NatsBackend, NatsConfig};
use crate::http::HttpError;
use crate::runtime::ServiceEnv;

/// Why an event call failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The control plane's log: unreachable, refused or malformed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// NATS: unreachable, timed out, or JetStream refused the request.
    #[error("NATS JetStream, {during}: {reason}")]
    Nats {
        /// What the client was doing (`publishing`, `fetching`, …).
        during: &'static str,
        /// What NATS said.
        reason: String,
    },
    /// A name or an event is malformed (checked before anything is sent).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No such event, or the offset is not in flight for the group.
    #[error("{0}")]
    NotFound(String),
    /// Neither an events URL nor a control plane is configured.
    #[error("no event backend: set FLOTILLA_EVENTS to a nats:// URL or FLOTILLA_CONTROL_ADDR")]
    NoBackend,
}

/// A client of the event backend. Cheap to clone; clones share one connection (and, on
/// NATS, the deliveries awaiting an ack).
#[derive(Clone, Debug)]
pub struct EventsClient {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Log(Arc<LogBackend>),
    Nats(Arc<NatsBackend>),
}

/// Whether `url` names a NATS server.
fn is_nats(url: &str) -> bool {
    url.starts_with("nats://")
}

impl EventsClient {
    /// A client of the event log of the control plane at `control_addr`.
    pub fn new(control_addr: &str, token: Option<String>) -> Self {
        Self {
            backend: Backend::Log(Arc::new(LogBackend::new(control_addr, token))),
        }
    }

    /// A `nats://` URL: NATS JetStream (`token`, if any, authenticates to NATS); anything
    /// else: the control plane's event log at that address (`token` is its token).
    pub async fn connect(url: &str, token: Option<String>) -> Result<Self, EventsError> {
        if is_nats(url) {
            Self::nats(url, token, NatsConfig::default()).await
        } else {
            Ok(Self::new(url, token))
        }
    }

    /// NATS JetStream at `url` with the given consumer and retention settings.
    pub async fn nats(url: &str, token: Option<String>, config: NatsConfig) -> Result<Self, EventsError> {
        Ok(Self {
            backend: Backend::Nats(Arc::new(NatsBackend::connect(url, token, config).await?)),
        })
    }

    /// The backend a service's environment names: NATS when `FLOTILLA_EVENTS` is a `nats://`
    /// URL (credentials, if any, in the URL), else the control plane's log with its token.
    pub async fn for_service(env: &ServiceEnv) -> Result<Self, EventsError> {
        match (&env.events, &env.control_addr) {
            (Some(url), _) if is_nats(url) => Self::nats(url, None, NatsConfig::default()).await,
            (_, Some(control)) => Ok(Self::new(control, env.token.clone())),
            _ => Err(EventsError::NoBackend),
        }
    }

    /// Whether this client speaks to NATS JetStream (else the control plane's log).
    pub fn is_nats(&self) -> bool {
        matches!(self.backend, Backend::Nats(_))
    }

    /// Appends events to a topic, in order; an id the topic already holds is not added again
    /// (answered with its first offset, marked duplicate).
    pub async fn append(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Appended>, EventsError> {
        match &self.backend {
            Backend::Log(log) => log.append(topic, events).await,
            Backend::Nats(nats) => nats.append(topic, events).await,
        }
    }

    /// Up to `max` events for the group, waiting up to `wait` for some.
    pub async fn fetch(
        &self,
        topic: &str,
        group: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        match &self.backend {
            Backend::Log(log) => log.fetch(topic, group, max, wait).await,
            Backend::Nats(nats) => nats.fetch(topic, group, max, wait).await,
        }
    }

    /// The group is done with these offsets.
    pub async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<(), EventsError> {
        match &self.backend {
            Backend::Log(log) => log.ack(topic, group, offsets).await,
            Backend::Nats(nats) => nats.ack(topic, group, offsets).await,
        }
    }

    /// A handler failed on this event: it comes again, or, on its last delivery, goes to
    /// `<topic>.dead-letter` with `reason`.
    pub async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), EventsError> {
        match &self.backend {
            Backend::Log(log) => log.nack(topic, group, offset, reason).await,
            Backend::Nats(nats) => nats.nack(topic, group, offset, reason).await,
        }
    }

    /// Every topic, with its groups' progress.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, EventsError> {
        match &self.backend {
            Backend::Log(log) => log.topics().await,
            Backend::Nats(nats) => nats.topics().await,
        }
    }

    /// Events of a topic from an offset, without a group.
    pub async fn read(&self, topic: &str, from: u64, limit: u32) -> Result<Vec<Delivery>, EventsError> {
        match &self.backend {
            Backend::Log(log) => log.read(topic, from, limit).await,
            Backend::Nats(nats) => nats.read(topic, from, limit).await,
        }
    }

    /// Appends a dead letter back to its topic under a new id; answers `{"topic", "offset", "id"}`.
    pub async fn replay(&self, dead_letter_topic: &str, offset: u64) -> Result<serde_json::Value, EventsError> {
        match &self.backend {
            Backend::Log(log) => log.replay(dead_letter_topic, offset).await,
            Backend::Nats(nats) => nats.replay(dead_letter_topic, offset).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_environment_picks_the_backend() {
        let control = ServiceEnv {
            control_addr: Some("127.0.0.1:9".into()),
            token: Some("t".into()),
            ..ServiceEnv::default()
        };
        assert!(!EventsClient::for_service(&control).await.unwrap().is_nats());
        let not_nats = ServiceEnv {
            events: Some("http://127.0.0.1:9".into()),
            ..control.clone()
        };
        assert!(!EventsClient::for_service(&not_nats).await.unwrap().is_nats());
        assert!(matches!(
            EventsClient::for_service(&ServiceEnv::default()).await,
            Err(EventsError::NoBackend)
        ));
        // Nothing listens there: the error says NATS, and what it was doing.
        let nats = ServiceEnv {
            events: Some("nats://127.0.0.1:9".into()),
            ..control
        };
        assert!(matches!(
            EventsClient::for_service(&nats).await,
            Err(EventsError::Nats {
                during: "connecting",
                ..
            })
        ));
        assert!(!EventsClient::connect("127.0.0.1:9", None).await.unwrap().is_nats());
    }
}
