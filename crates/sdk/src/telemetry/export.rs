//! The OTLP/HTTP span exporter: batches become `ExportTraceServiceRequest` protobuf bodies
//! (encoded by `opentelemetry-proto`), posted to `/v1/traces` of the control plane or of any
//! collector.
//!
//! The batch processor calls the exporter on its own thread; the exporter drives its HTTP
//! client on a small runtime of its own there, so exporting never waits on (or holds up) the
//! service's runtime, and flushing at shutdown works from anywhere.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message;

/// How long one export may take before it is given up (the batch is dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The full URL, `http://host:port/v1/traces`.
    pub url: String,
    /// Headers sent with every export (`authorization` for the control plane).
    pub headers: Vec<(String, String)>,
    /// The same endpoint on the control plane's other replicas, tried in turn when the one in
    /// use does not answer.
    pub replicas: Vec<String>,
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values percent-decoded); pairs without
/// `=` are skipped.
pub(crate) fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let value = form_urlencoded::parse(format!("v={}", v.trim().replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            (k.trim().to_ascii_lowercase(), value)
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Why one post failed: the endpoint was not reached (another replica may be), or it answered.
enum PostError {
    Unreachable(String),
    Refused(String),
}

/// Sends span batches as OTLP/HTTP protobuf.
#[derive(Debug)]
pub struct OtlpExporter {
    endpoint: Endpoint,
    resource: ResourceAttributesWithSchema,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Which of `url` and `replicas` is in use.
    current: std::sync::atomic::AtomicUsize,
}

impl OtlpExporter {
    /// An exporter posting to `endpoint` the spans of the process `resource` describes.
    pub fn new(endpoint: Endpoint, resource: &Resource) -> Self {
        // `https://` (the control plane in a fleet) with this process's workload identity.
        let connector = crate::mtls::connector(crate::mtls::installed(), None, Duration::from_secs(2), false);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
        Self {
            endpoint,
            resource: ResourceAttributesWithSchema::from(resource),
            client,
            runtime,
            current: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Encodes a batch as the protobuf body of one export request.
    pub fn encode(&self, batch: Vec<SpanData>) -> Vec<u8> {
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        request.encode_to_vec()
    }

    /// Posts to the endpoint in use; one that refuses the connection gives way to the next
    /// replica's.
    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let urls: Vec<&str> = std::iter::once(self.endpoint.url.as_str())
            .chain(self.endpoint.replicas.iter().map(String::as_str))
            .collect();
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last = Err(PostError::Unreachable("no endpoint".into()));
        for k in 0..urls.len() {
            let i = (start + k) % urls.len();
            last = self.post_to(urls[i], body.clone()).await;
            match &last {
                Err(PostError::Unreachable(_)) => continue,
                _ => {
                    self.current.store(i, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            }
        }
        last.map_err(|e| match e {
            PostError::Unreachable(text) | PostError::Refused(text) => text,
        })
    }

    async fn post_to(&self, url: &str, body: Vec<u8>) -> Result<(), PostError> {
        let mut request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Refused(format!("{url}: {e}")))?;
        for (name, value) in &self.endpoint.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                request.headers_mut().insert(name, value);
            }
        }
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| PostError::Unreachable(format!("{url}: {}", crate::http::chain(&e))))?;
        let status = response.status();
        // Read the body so the connection goes back to the pool.
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Refused(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )))
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let Some(runtime) = &self.runtime else {
            return Err(OTelSdkError::InternalFailure("no runtime for the exporter".into()));
        };
        let body = self.encode(batch);
        match runtime.block_on(async { tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await }) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(OTelSdkError::InternalFailure(err)),
            Err(_) => Err(OTelSdkError::Timeout(EXPORT_TIMEOUT)),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_as_the_specification_writes_them() {
        assert_eq!(
            parse_headers("Authorization=Bearer%20abc, x-tenant = acme,broken,=nokey"),
            vec![
                ("authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-tenant".to_owned(), "acme".to_owned()),
            ]
        );
    }
}
