//! The control plane's telemetry API as the CLI asks it: one trace, a list of traces, and
//! the service dependency graph.

use std::time::Duration;

use flotilla::http::{base_url, HttpClient, HttpError};
use flotilla_api::telemetry::{DependencyGraph, Trace, TraceList, TraceQuery};
use http::StatusCode;

use crate::logs::filter::TRACE_ID_LEN;

/// Why the control plane could not answer a telemetry question.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Nothing answered at the address.
    #[error("cannot reach the control plane at {control} (is `flotilla up` running? --control-addr): {source}")]
    Unreachable {
        /// The address tried.
        control: String,
        /// What the connection said.
        #[source]
        source: HttpError,
    },
    /// The control plane does not store this trace.
    #[error(
        "trace {trace_id} is not stored: it was never recorded (or not sampled), or it is older than what the control plane keeps"
    )]
    TraceNotFound {
        /// The trace asked for.
        trace_id: String,
    },
    /// The control plane answered, but has no telemetry API (an older version).
    #[error("the control plane at {control} has no telemetry API ({path} is not found): is it older than this CLI?")]
    NoTelemetryApi {
        /// The address asked.
        control: String,
        /// The path that was not found.
        path: &'static str,
    },
    /// The id given is not a whole trace id.
    #[error("`{given}` is not a trace id: give its 32 hex digits, or the first 8 or more (as the logs show them; `flotilla traces` lists them)")]
    BadTraceId {
        /// What was given.
        given: String,
    },
    /// The query could not be put into a URL.
    #[error("building the query: {0}")]
    Query(#[from] serde_urlencoded::ser::Error),
    /// Any other failure of the call (an error status, a body that is not the type expected).
    #[error(transparent)]
    Http(HttpError),
}

/// A client of the control plane's telemetry API.
#[derive(Debug, Clone)]
pub struct TelemetryClient {
    http: HttpClient,
    control: String,
    base: String,
    token: Option<String>,
}

/// `given` as a trace id the API takes: 32 hex digits, or the first 8 or more of them (the
/// control plane finds the one trace they start), lowercased (so it is also safe in a URL
/// path).
pub fn trace_id(given: &str) -> Result<String, TelemetryError> {
    let id = given.trim().to_ascii_lowercase();
    if !(8..=TRACE_ID_LEN).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TelemetryError::BadTraceId {
            given: given.to_owned(),
        });
    }
    Ok(id)
}

impl TelemetryClient {
    /// A client of the control plane at `control_addr` (`host:port` or a URL), presenting
    /// `token` when there is one.
    pub fn new(control_addr: &str, token: Option<String>) -> Self {
        Self::with_http(
            HttpClient::new(Duration::from_secs(10)).failing_over(control_addr),
            control_addr,
            token,
        )
    }

    /// Like [`TelemetryClient::new`], over a given HTTP client.
    pub fn with_http(http: HttpClient, control_addr: &str, token: Option<String>) -> Self {
        Self {
            http,
            control: control_addr.to_owned(),
            base: base_url(control_addr),
            token,
        }
    }

    fn explain(&self, err: HttpError, path: &'static str) -> TelemetryError {
        match err {
            HttpError::Transport { .. } | HttpError::Timeout { .. } => TelemetryError::Unreachable {
                control: self.control.clone(),
                source: err,
            },
            err if err.status() == Some(StatusCode::NOT_FOUND) => TelemetryError::NoTelemetryApi {
                control: self.control.clone(),
                path,
            },
            err => TelemetryError::Http(err),
        }
    }

    /// `GET /v1/traces`: the newest traces that match `query`.
    pub async fn traces(&self, query: &TraceQuery) -> Result<TraceList, TelemetryError> {
        let query = serde_urlencoded::to_string(query)?;
        let uri = format!("{}/v1/traces?{query}", self.base);
        self.http
            .get_json(&uri, self.token.as_deref())
            .await
            .map_err(|e| self.explain(e, "/v1/traces"))
    }

    /// `GET /v1/traces/{id}`: every stored span of one trace.
    pub async fn trace(&self, id: &str) -> Result<Trace, TelemetryError> {
        let id = trace_id(id)?;
        let uri = format!("{}/v1/traces/{id}", self.base);
        match self.http.get_json(&uri, self.token.as_deref()).await {
            Ok(trace) => Ok(trace),
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {
                Err(TelemetryError::TraceNotFound { trace_id: id })
            }
            Err(err) => Err(self.explain(err, "/v1/traces/{trace_id}")),
        }
    }

    /// `GET /v1/dependencies`: who calls whom, from the spans of the last `lookback`.
    pub async fn dependencies(&self, lookback: Duration) -> Result<DependencyGraph, TelemetryError> {
        // The API counts whole seconds; anything shorter still means "the last moment".
        let seconds = lookback.as_secs().max(1);
        let uri = format!("{}/v1/dependencies?lookback_seconds={seconds}", self.base);
        self.http
            .get_json(&uri, self.token.as_deref())
            .await
            .map_err(|e| self.explain(e, "/v1/dependencies"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_32_hex_digits_or_their_first_8_or_more() {
        assert_eq!(
            trace_id(" 4BF92F3577B34DA6A3CE929D0E0E4736 ").unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id("4BF92F35").unwrap(), "4bf92f35");
        assert!(matches!(trace_id("4bf92f3"), Err(TelemetryError::BadTraceId { .. })));
        assert!(trace_id("../../v1/registry/instances00000").is_err());
    }

    #[test]
    fn queries_leave_out_what_is_not_asked() {
        let query = TraceQuery {
            service: Some("orders".into()),
            min_duration_ms: Some(100),
            errors: true,
            ..Default::default()
        };
        assert_eq!(
            serde_urlencoded::to_string(&query).unwrap(),
            "service=orders&min_duration_ms=100&errors=true"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let client = TelemetryClient::new(&addr, None);
        let err = client.traces(&TraceQuery::default()).await.unwrap_err();
        assert!(matches!(err, TelemetryError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
