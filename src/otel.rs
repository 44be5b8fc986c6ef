//! The `otel` feature: the engine's tracing spans (sync, claim, launch, run_end, report,
//! github_write, webhook_delivery) exported over OTLP/HTTP with protobuf, configured by the
//! standard `OTEL_*` variables. I/O: a background exporter thread.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::Layer;

/// Flushes and stops the exporter when dropped.
pub struct Export(SdkTracerProvider);

impl Drop for Export {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("warning: exporting the last spans over OTLP: {e}");
        }
    }
}

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The layer that exports spans, when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_TRACES_EXPORTER=none` says otherwise. The exporter reads the other standard variables
/// itself (headers, timeout); the service name is `OTEL_SERVICE_NAME`, else
/// `coding-swarm`. Only this program's spans at level info and above are exported.
pub fn layer<S>() -> (Option<impl Layer<S>>, Option<Export>)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let configured = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    if !configured || disabled {
        return (None, None);
    }
    if let Some(p) = set("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|p| p != "http/protobuf") {
        eprintln!(
            "warning: OTEL_EXPORTER_OTLP_PROTOCOL={p}: this build exports http/protobuf only"
        );
    }
    // The endpoint (with `/v1/traces` added to the general one), headers, timeout: from the
    // environment, read by the exporter.
    let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    let exporter = match builder.build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: no OTLP export of spans: {e}");
            return (None, None);
        }
    };
    let service = set("OTEL_SERVICE_NAME").unwrap_or_else(|| "coding-swarm".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    let tracer = provider.tracer("coding-swarm");
    let only_ours = Targets::new()
        .with_target("coding_swarm", tracing::Level::INFO)
        .with_target("swarm", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(only_ours);
    (Some(layer), Some(Export(provider)))
}
