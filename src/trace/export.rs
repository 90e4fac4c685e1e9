//! Spans to an OTLP/HTTP collector (protobuf), one per sampled call with a child span per phase
//! (credentials, upstream call). Export never holds up a call: a finished call's spans go into
//! the SDK's batch processor, whose queue is bounded (`max_queue_size`); spans beyond it are
//! dropped while the collector is slow or down. The processor's own thread builds batches; the
//! HTTP requests run on the gateway's tokio runtime, with the hyper client already in the tree.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter,
    SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::CallTrace;

/// Where and how spans are sent (the `[trace]` table, validated).
pub(crate) struct ExportSettings<'a> {
    /// The collector's traces URL, like `http://collector:4318/v1/traces`.
    pub(crate) endpoint: &'a str,
    pub(crate) service_name: &'a str,
    /// Spans waiting for export at most; more are dropped.
    pub(crate) max_queue: usize,
    /// How often a batch is sent.
    pub(crate) interval: Duration,
    /// How long one export request may take.
    pub(crate) timeout: Duration,
}

/// Why the exporter could not be set up.
#[derive(Debug)]
pub(crate) enum ExportError {
    /// Not started from within the tokio runtime that is to carry the export requests.
    NoRuntime,
    /// The OTLP exporter refused its settings.
    Build(opentelemetry_otlp::ExporterBuildError),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::NoRuntime => f.write_str("cannot export traces: no tokio runtime"),
            ExportError::Build(_) => f.write_str("cannot build the OTLP trace exporter"),
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ExportError::NoRuntime => None,
            ExportError::Build(e) => Some(e),
        }
    }
}

/// The batch processor in front of the OTLP exporter.
pub(crate) struct Exporter {
    processor: Arc<BatchSpanProcessor>,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Starts the processor's thread; call from within the gateway's runtime.
    pub(crate) fn start(settings: &ExportSettings<'_>) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let mut otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.endpoint)
            .with_timeout(settings.timeout)
            .build()
            .map_err(ExportError::Build)?;
        otlp.set_resource(&Resource::builder_empty().with_service_name(settings.service_name.to_owned()).build());
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(settings.max_queue)
            .with_scheduled_delay(settings.interval)
            .build();
        let exporter = OnRuntime { inner: Arc::new(otlp), runtime };
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(config).build();
        let scope =
            InstrumentationScope::builder(env!("CARGO_PKG_NAME")).with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Exporter { processor: Arc::new(processor), scope })
    }

    /// Queues the spans of one finished call; returns at once.
    pub(crate) fn call(&self, trace: &CallTrace, call: Span, phases: &[Phase]) {
        let ids = RandomIdGenerator::default();
        for phase in phases {
            let span_id = match phase.kind {
                PhaseKind::Upstream => trace.upstream_span_id,
                PhaseKind::Credentials => ids.new_span_id(),
            };
            let span = Span {
                name: phase.kind.name(),
                start: phase.start,
                end: phase.end,
                error: phase.error.clone(),
                attributes: Vec::new(),
            };
            self.processor.on_end(self.data(trace, span_id, trace.span_id, false, phase.kind.span_kind(), span));
        }
        let parent = trace.parent.unwrap_or(SpanId::INVALID);
        self.processor.on_end(self.data(trace, trace.span_id, parent, trace.parent.is_some(), SpanKind::Server, call));
    }

    fn data(
        &self,
        trace: &CallTrace,
        id: SpanId,
        parent: SpanId,
        remote: bool,
        kind: SpanKind,
        span: Span,
    ) -> SpanData {
        let status = match span.error {
            Some(description) => Status::Error { description: Cow::Owned(description) },
            None => Status::Unset,
        };
        SpanData {
            span_context: SpanContext::new(trace.trace_id, id, trace.flags(), false, trace.state.clone()),
            parent_span_id: parent,
            parent_span_is_remote: remote,
            span_kind: kind,
            name: Cow::Borrowed(span.name),
            start_time: span.start,
            end_time: span.end,
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Sends what is queued and stops, waiting at most `timeout`: the processor blocks its
    /// caller, so it runs on a blocking thread while the runtime carries the last requests.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let processor = self.processor.clone();
        let done = tokio::task::spawn_blocking(move || processor.shutdown_with_timeout(timeout));
        match tokio::time::timeout(timeout + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => tracing::debug!("trace export flushed"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace export not flushed"),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "trace export not flushed in time"
            ),
        }
    }
}

/// One span's own facts.
pub(crate) struct Span {
    pub(crate) name: &'static str,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// The error that ended it, if any.
    pub(crate) error: Option<String>,
    pub(crate) attributes: Vec<KeyValue>,
}

/// A phase of a call that gets its own child span.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PhaseKind {
    Credentials,
    Upstream,
}

impl PhaseKind {
    fn name(self) -> &'static str {
        match self {
            PhaseKind::Credentials => "credentials",
            PhaseKind::Upstream => "upstream",
        }
    }

    fn span_kind(self) -> SpanKind {
        match self {
            PhaseKind::Credentials => SpanKind::Internal,
            PhaseKind::Upstream => SpanKind::Client,
        }
    }
}

/// A finished phase.
#[derive(Clone)]
pub(crate) struct Phase {
    pub(crate) kind: PhaseKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) error: Option<String>,
}

/// Runs each export request on the gateway's runtime: the batch processor calls the exporter
/// from its own thread, where the hyper client would find no reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move { task.await.unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string()))) }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
}
