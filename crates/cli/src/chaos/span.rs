//! Every fault `flotilla chaos` makes is a span of the service `chaos` in the control plane's
//! trace store (`flotilla traces --service chaos`), beside the requests it hurt: a kill is an
//! instant, a pause lasts as long as the process was stopped, a latency or abort rule is the
//! moment it was set. Sent as OTLP JSON to `/v1/traces`, as any OTLP sender would.

use std::time::{SystemTime, UNIX_EPOCH};

use flotilla::http::{base_url, HttpClient, HttpError};
use serde_json::{json, Value};

/// The `service.name` of fault spans.
pub const SERVICE: &str = "chaos";

/// One fault as a span.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpan {
    /// The span's name: `chaos pause payments-1`.
    pub name: String,
    /// Who made it (`service.instance.id`): `supervisor` or `cli`.
    pub instance: String,
    /// When it began, in nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// When it ended.
    pub end_unix_nano: u64,
    /// Its attributes: `fault.kind`, `fault.target`, `process.pid`, `fault.duration_ms`, ….
    pub attributes: Vec<(String, Value)>,
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An OTLP JSON attribute value: strings, integers (as strings, as the JSON mapping of
/// int64 says), doubles and booleans.
fn any_value(value: &Value) -> Value {
    match value {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64().unwrap_or(0.0) }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

impl FaultSpan {
    /// The span as an OTLP JSON `ExportTraceServiceRequest`, with the given ids (32 and 16
    /// hex digits); a root span of kind internal.
    pub fn to_otlp(&self, trace_id: &str, span_id: &str) -> Value {
        let attributes: Vec<Value> = self
            .attributes
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": any_value(value) }))
            .collect();
        json!({
            "resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": SERVICE}},
                    {"key": "service.instance.id", "value": {"stringValue": self.instance}}
                ]},
                "scopeSpans": [{
                    "scope": {"name": "flotilla-chaos"},
                    "spans": [{
                        "traceId": trace_id,
                        "spanId": span_id,
                        "name": self.name,
                        "kind": 1,
                        "startTimeUnixNano": self.start_unix_nano.to_string(),
                        "endTimeUnixNano": self.end_unix_nano.max(self.start_unix_nano).to_string(),
                        "attributes": attributes
                    }]
                }]
            }]
        })
    }
}

/// Fresh random ids: a trace id (32 hex digits) and a span id (16), never all zero.
pub fn new_ids() -> (String, String) {
    let trace = rand::random::<u128>() | 1;
    let span = rand::random::<u64>() | 1;
    (format!("{trace:032x}"), format!("{span:016x}"))
}

/// Sends fault spans to a control plane's trace receiver.
#[derive(Debug, Clone)]
pub struct SpanExporter {
    http: HttpClient,
    url: String,
    token: Option<String>,
}

impl SpanExporter {
    /// An exporter to the control plane at `control_addr`, with the token its writes need.
    pub fn new(control_addr: &str, token: Option<String>) -> Self {
        Self {
            http: HttpClient::new(std::time::Duration::from_secs(3)),
            url: format!("{}/v1/traces", base_url(control_addr)),
            token,
        }
    }

    /// Exports one span as a trace of its own.
    pub async fn export(&self, span: &FaultSpan) -> Result<(), HttpError> {
        let (trace_id, span_id) = new_ids();
        let body = span.to_otlp(&trace_id, &span_id);
        self.http
            .send_raw(http::Method::POST, &self.url, self.token.as_deref(), Some(&body), None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_an_otlp_json_root_span_of_the_chaos_service() {
        let span = FaultSpan {
            name: "chaos pause payments-1".into(),
            instance: "supervisor".into(),
            start_unix_nano: 2_000,
            end_unix_nano: 1_000,
            attributes: vec![
                ("fault.kind".into(), json!("pause")),
                ("process.pid".into(), json!(4242)),
                ("fault.share".into(), json!(0.5)),
            ],
        };
        let otlp = span.to_otlp("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let resource = &otlp["resourceSpans"][0];
        assert_eq!(resource["resource"]["attributes"][0]["value"]["stringValue"], "chaos");
        let sent = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(sent["name"], "chaos pause payments-1");
        assert_eq!(sent["endTimeUnixNano"], "2000", "never ends before it starts");
        assert_eq!(sent["attributes"][1]["value"]["intValue"], "4242");
        assert_eq!(sent["attributes"][2]["value"]["doubleValue"], 0.5);
        let (trace, span) = new_ids();
        assert_eq!((trace.len(), span.len()), (32, 16));
    }
}
