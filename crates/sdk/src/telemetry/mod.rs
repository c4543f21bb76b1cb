//! Traces and logs set-up shared by every Flotilla process.
//!
//! `tracing` spans become OpenTelemetry spans (through `tracing-opentelemetry`), exported as
//! OTLP/HTTP protobuf to the control plane's `/v1/traces`, or to any collector the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names. New traces are sampled by ratio, child spans follow
//! their parent's decision; the gateway also keeps the requests that failed or were slow
//! (see [`sampling`]). Log lines carry the trace and span id they were written in, as JSON
//! when the supervisor asks for it, so one request's lines can be followed across processes.

pub mod edge;
mod export;
mod logs;
pub mod metrics;
pub mod propagation;
pub mod sampling;
pub mod span;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::telemetry::{otel_env, LOG_FORMAT_ENV};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanProcessor};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use export::{Endpoint, OtlpExporter};
pub use sampling::{Sampling, TailPolicy};

use crate::runtime::ServiceEnv;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One `flotilla_api::telemetry::LogLine` per line: for files and the supervisor.
    Json,
    /// For people at a terminal.
    Text,
}

impl LogFormat {
    /// `FLOTILLA_LOG_FORMAT` when set (`json`/`text`), else text on a terminal and JSON
    /// otherwise.
    pub fn from_env() -> Self {
        match std::env::var(LOG_FORMAT_ENV).ok().as_deref() {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            _ if std::io::stderr().is_terminal() => LogFormat::Text,
            _ => LogFormat::Json,
        }
    }
}

/// Everything [`init`] needs to know.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` on every span and log line.
    pub service: String,
    /// `service.instance.id`: the supervisor's name for the process.
    pub instance: Option<String>,
    /// Where spans go; none keeps them in the process (logs still carry trace ids).
    pub endpoint: Option<Endpoint>,
    /// Which traces are kept.
    pub sampling: Sampling,
    /// How log lines look.
    pub format: LogFormat,
}

impl TelemetryConfig {
    /// Reads the standard OpenTelemetry variables and the supervisor's: spans go to
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`,
    /// else the control plane in `env` (with its token); `OTEL_TRACES_EXPORTER=none` turns
    /// export off; the ratio comes from `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env(service: &str, env: &ServiceEnv) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let headers = var(otel_env::HEADERS)
            .map(|h| export::parse_headers(&h))
            .unwrap_or_default();
        let endpoint = if var(otel_env::TRACES_EXPORTER).is_some_and(|v| v == "none") {
            None
        } else if let Some(url) = var(otel_env::TRACES_ENDPOINT) {
            Some(Endpoint {
                url,
                headers,
                replicas: Vec::new(),
            })
        } else if let Some(base) = var(otel_env::ENDPOINT) {
            Some(Endpoint {
                url: format!("{}/v1/traces", base.trim_end_matches('/')),
                headers,
                replicas: Vec::new(),
            })
        } else {
            env.control_addr.as_ref().map(|control| {
                let mut headers = headers;
                if let Some(token) = &env.token {
                    headers.push(("authorization".into(), format!("Bearer {token}")));
                }
                let mut urls = control
                    .split(',')
                    .filter(|a| !a.trim().is_empty())
                    .map(|a| format!("{}/v1/traces", crate::http::base_url(a)));
                Endpoint {
                    url: urls.next().unwrap_or_default(),
                    headers,
                    replicas: urls.collect(),
                }
            })
        };
        Self {
            service: service.to_owned(),
            instance: env.instance_name.clone(),
            endpoint,
            sampling: Sampling::from_env(),
            format: LogFormat::from_env(),
        }
    }
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] (or dropping it) sends what is left.
#[must_use = "dropping it stops exporting spans"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans queued so far now, rather than at the next batch.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Sends the spans still queued (waiting at most a few seconds) and stops exporting.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown_with_timeout(Duration::from_secs(3));
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs logging (filtered by `RUST_LOG`, default `info`) and, when `config` has an
/// endpoint, span export. A second call only returns a guard that does nothing.
pub fn init(config: TelemetryConfig) -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(logs::JsonLines::new(&config.service, config.instance.as_deref()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .boxed(),
    };
    // Log lines need only events: the trace and span ids come from the OpenTelemetry layer,
    // so the formatter does not keep every span's fields.
    let fmt = fmt.with_filter(filter()).with_filter(filter_fn(|meta| !meta.is_span()));
    if disabled() {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Telemetry { provider: None };
    }
    let (provider, sink) = tracer_provider(&config);
    let tracer = provider.tracer("flotilla");
    let _ = edge::EDGE.set(edge::EdgeTracing {
        sampler: config.sampling.sampler(),
        sink,
        tail: config.sampling.tail,
    });
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(span::only_spans());
    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init().is_ok();
    Telemetry {
        provider: (installed && config.endpoint.is_some()).then_some(provider),
    }
}

/// `OTEL_SDK_DISABLED=true`, the standard switch: no spans at all (log lines then carry no
/// trace ids). For measuring what tracing costs, and for whoever wants none.
fn disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The tracer provider: ids and sampling always (log lines carry trace ids even when
/// nothing is exported), and, when there is an endpoint, a batching exporter — returned too,
/// for the spans the gateway's tail rule keeps after the fact.
fn tracer_provider(config: &TelemetryConfig) -> (SdkTracerProvider, Option<Arc<dyn SpanProcessor>>) {
    let mut attributes = vec![
        KeyValue::new("service.name", config.service.clone()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(instance) = &config.instance {
        attributes.push(KeyValue::new("service.instance.id", instance.clone()));
    }
    let resource = Resource::builder_empty().with_attributes(attributes).build();
    let builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(config.sampling.sampler());
    let Some(endpoint) = &config.endpoint else {
        return (builder.build(), None);
    };
    let batch: Arc<dyn SpanProcessor> = Arc::new(
        BatchSpanProcessor::builder(OtlpExporter::new(endpoint.clone(), &resource))
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(env_millis("OTEL_BSP_SCHEDULE_DELAY").unwrap_or(Duration::from_millis(1000)))
                    .with_max_queue_size(8192)
                    .build(),
            )
            .build(),
    );
    let provider = builder.with_span_processor(Shared(batch.clone())).build();
    (provider, Some(batch))
}

/// A processor the provider and the edge span share.
#[derive(Debug)]
struct Shared(Arc<dyn SpanProcessor>);

impl SpanProcessor for Shared {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        self.0.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    // The exporter was given the resource when it was made.
    fn set_resource(&mut self, _resource: &Resource) {}
}

fn env_millis(name: &str) -> Option<Duration> {
    std::env::var(name).ok()?.trim().parse().ok().map(Duration::from_millis)
}
