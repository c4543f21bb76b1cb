//! The control plane's event log over HTTP (`/v1/events`): the default backend.

use std::time::Duration;

use flotilla_api::events::{Ack, Appended, CloudEvent, Delivery, Nack, TopicInfo};
use http::Method;

use super::client::EventsError;
use crate::http::HttpClient;

/// A client of the control plane's event log.
#[derive(Debug)]
pub(super) struct LogBackend {
    http: HttpClient,
    base: String,
    token: Option<String>,
}

impl LogBackend {
    pub(super) fn new(control_addr: &str, token: Option<String>) -> Self {
        Self {
            http: HttpClient::for_control(Duration::from_secs(5)).failing_over(control_addr),
            base: crate::http::base_url(control_addr),
            token,
        }
    }

    pub(super) async fn append(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<Appended>, EventsError> {
        let uri = format!("{}/v1/events/{topic}", self.base);
        Ok(self
            .http
            .send(Method::POST, &uri, self.token.as_deref(), Some(&events), None)
            .await?
            .body)
    }

    pub(super) async fn fetch(
        &self,
        topic: &str,
        group: &str,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<Delivery>, EventsError> {
        let uri = format!(
            "{}/v1/events/{topic}?group={group}&max={max}&wait={}ms",
            self.base,
            wait.as_millis()
        );
        Ok(self
            .http
            .send::<(), _>(
                Method::GET,
                &uri,
                self.token.as_deref(),
                None,
                Some(wait + Duration::from_secs(5)),
            )
            .await?
            .body)
    }

    pub(super) async fn ack(&self, topic: &str, group: &str, offsets: &[u64]) -> Result<(), EventsError> {
        let uri = format!("{}/v1/events/{topic}/ack", self.base);
        let body = Ack {
            group: group.to_owned(),
            offsets: offsets.to_vec(),
        };
        self.http
            .send::<_, serde_json::Value>(Method::POST, &uri, self.token.as_deref(), Some(&body), None)
            .await?;
        Ok(())
    }

    pub(super) async fn nack(&self, topic: &str, group: &str, offset: u64, reason: &str) -> Result<(), EventsError> {
        let uri = format!("{}/v1/events/{topic}/nack", self.base);
        let body = Nack {
            group: group.to_owned(),
            offset,
            reason: reason.to_owned(),
        };
        self.http
            .send_raw(Method::POST, &uri, self.token.as_deref(), Some(&body), None)
            .await?;
        Ok(())
    }

    pub(super) async fn topics(&self) -> Result<Vec<TopicInfo>, EventsError> {
        let uri = format!("{}/v1/events", self.base);
        Ok(self
            .http
            .send::<(), _>(Method::GET, &uri, self.token.as_deref(), None, None)
            .await?
            .body)
    }

    pub(super) async fn read(&self, topic: &str, from: u64, limit: u32) -> Result<Vec<Delivery>, EventsError> {
        let uri = format!("{}/v1/events/{topic}/messages?from={from}&limit={limit}", self.base);
        Ok(self
            .http
            .send::<(), _>(Method::GET, &uri, self.token.as_deref(), None, None)
            .await?
            .body)
    }

    pub(super) async fn replay(&self, dead_letter_topic: &str, offset: u64) -> Result<serde_json::Value, EventsError> {
        let uri = format!("{}/v1/events/{dead_letter_topic}/replay", self.base);
        let body = serde_json::json!({ "offset": offset });
        Ok(self
            .http
            .send(Method::POST, &uri, self.token.as_deref(), Some(&body), None)
            .await?
            .body)
    }
}
