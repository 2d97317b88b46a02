//! Logging and distributed tracing for HyperSync services.
//!
//! [`init`] installs one global `tracing` subscriber made of
//!
//! * an [`EnvFilter`] (from `RUST_LOG`, default `info`; the OpenTelemetry and gRPC stack's own
//!   targets are quietened unless `RUST_LOG` names them explicitly),
//! * a `fmt` layer writing text or JSON lines to stderr,
//! * with [`TelemetryConfig::log_file`] set, a second `fmt` layer writing the same lines
//!   (never coloured) to a size-rotated file whose rotated files are gzipped ([`logfile`]), and
//! * a `tracing-opentelemetry` layer whose spans go through a batch span processor to an OTLP/gRPC
//!   collector (Jaeger), with resource `service.name` = [`TelemetryConfig::service_name`].
//!
//! It also installs the W3C TraceContext propagator globally; [`propagation`] carries the
//! context across NATS messages in `traceparent`/`tracestate` headers.
//!
//! Keep the returned [`TelemetryGuard`] alive for the life of the process: dropping it (or
//! calling [`TelemetryGuard::shutdown`]) flushes buffered spans, shuts the exporter down and
//! waits for a pending log-file compression.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let _telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("runner"))?;
//! tracing::info!("started");
//! # Ok(()) }
//! ```
//!
//! Design notes:
//! * Exports run on a private one-worker tokio runtime owned by the guard, not on the caller's
//!   runtime. The SDK's batch processor exports from its own thread and blocks on the gRPC call;
//!   with the channel's I/O on a runtime of our own, a synchronous flush never deadlocks, even
//!   when it is called from a `current_thread` runtime (e.g. `#[tokio::test]`).
//! * With no collector listening nothing blocks and nothing spams: exports fail fast (short
//!   connect/export timeouts, two retries), the SDK's internal logs are compiled out, and a
//!   single warning from a startup probe says spans are being dropped.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

pub mod conventions;
pub mod logfile;
pub mod propagation;

pub use logfile::{LogFileConfig, RotatingFile};

/// Collector endpoint used when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4317";

/// Upper bound for one export including retries (the SDK default is 10 s; a missing collector
/// must not hold up a flush or a graceful shutdown for that long).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP connect timeout of the gRPC channel (a black-holed address fails fast too).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of the one-off "is a collector listening?" probe at init.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Bound on the flush performed by [`TelemetryGuard::shutdown`].
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the wait for a rotated log file's compression at shutdown (one 64 MiB file takes
/// about a second; a file left plain is compressed at the next start).
const COMPRESSION_WAIT: Duration = Duration::from_secs(10);
/// Directives placed *before* the user's filter: a later directive for the same target
/// replaces an earlier one, so `RUST_LOG=h2=debug` still wins, while a plain `RUST_LOG=debug`
/// does not turn on the exporter stack's chatter (or feed its own spans back into itself).
const QUIET_TARGETS: &str = "opentelemetry=off,tonic=warn,h2=warn,hyper=warn,tower=warn";

/// Set by the first [`init`]; the global subscriber and provider exist once per process.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// What [`init`] sets up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// Resource attribute `service.name` of every exported span.
    pub service_name: String,
    /// OTLP/gRPC collector, e.g. `http://localhost:4317`; `None` disables export (spans still
    /// get trace ids, so logs correlate and propagation keeps working).
    pub otlp_endpoint: Option<String>,
    /// `EnvFilter` directives, e.g. `info` or `hsync_bus=debug,info`.
    pub log_filter: String,
    /// JSON lines instead of human-readable text on stderr (and in the log file).
    pub json_logs: bool,
    /// Also write the log lines to a rotating file (`Ok(None)`: stderr only). `Err` carries a
    /// malformed variable found by [`from_env`](Self::from_env); [`init`] fails with it.
    pub log_file: Result<Option<LogFileConfig>, String>,
}

impl TelemetryConfig {
    /// Reads the configuration from the environment:
    ///
    /// * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else
    ///   [`DEFAULT_OTLP_ENDPOINT`]; `OTEL_SDK_DISABLED=true` disables export;
    /// * `RUST_LOG` (default `info`);
    /// * `HSYNC_LOG_FORMAT=json|text` (default text);
    /// * `HSYNC_LOG_DIR`, `HSYNC_LOG_MAX_BYTES`, `HSYNC_LOG_KEEP` (see
    ///   [`LogFileConfig::from_env`]).
    pub fn from_env(service_name: &str) -> Self {
        let var = |key: &str| {
            std::env::var(key)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let otlp_endpoint = (!disabled).then(|| {
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .unwrap_or_else(|| DEFAULT_OTLP_ENDPOINT.to_owned())
        });
        TelemetryConfig {
            service_name: service_name.to_owned(),
            otlp_endpoint,
            log_filter: var("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            json_logs: var("HSYNC_LOG_FORMAT").is_some_and(|v| v.eq_ignore_ascii_case("json")),
            log_file: LogFileConfig::from_env(),
        }
    }
}

/// Installs the global subscriber, tracer provider and propagator (see the crate docs).
///
/// Call it once, early, from inside or outside a tokio runtime. A second call in the same
/// process returns an error. The batch span processor honours `OTEL_BSP_SCHEDULE_DELAY` (ms,
/// default 5000) and the other `OTEL_BSP_*` variables.
pub fn init(cfg: TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        bail!("hsync_telemetry::init was already called in this process");
    }
    let result = init_inner(cfg);
    if result.is_err() {
        // Nothing global was installed (the subscriber is set last), so a retry may succeed.
        INITIALIZED.store(false, Ordering::SeqCst);
    }
    result
}

fn init_inner(cfg: TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let log_file = match &cfg.log_file {
        Err(e) => bail!("{e}"),
        Ok(None) => None,
        Ok(Some(lf)) => Some(RotatingFile::open(&cfg.service_name, lf).with_context(|| {
            format!(
                "opening the log file {}",
                lf.dir.join(format!("{}.log", cfg.service_name)).display()
            )
        })?),
    };
    let filter = EnvFilter::builder().parse_lossy(format!("{QUIET_TARGETS},{}", cfg.log_filter));
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();

    let endpoint = cfg
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(normalize_endpoint)
        .transpose()?;

    let mut guard = TelemetryGuard {
        provider: None,
        runtime: None,
        log_file: log_file.clone(),
    };
    let provider = match &endpoint {
        None => SdkTracerProvider::builder().with_resource(resource).build(),
        Some(endpoint) => {
            let runtime = ExportRuntime::new()?;
            let exporter = runtime.build_exporter(endpoint)?;
            guard.runtime = Some(runtime);
            // `BatchConfigBuilder::default()` reads OTEL_BSP_SCHEDULE_DELAY & co. (checked in
            // opentelemetry_sdk 0.33's span_processor.rs), so no env parsing of our own.
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(BatchConfigBuilder::default().build())
                .build();
            SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource)
                .build()
        }
    };
    guard.provider = Some(provider.clone());
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));

    let json = cfg.json_logs;
    // Colour only on a terminal: docker/journald/CI logs would otherwise carry escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(json.then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        }))
        .with((!json).then(|| {
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
        }))
        .with(log_file.clone().filter(|_| json).map(|file| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(file)
        }))
        .with(log_file.filter(|_| !json).map(|file| {
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
        }))
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()
        .context("installing the global tracing subscriber")?;
    // Only once our subscriber is in place: these globals are not "undoable".
    opentelemetry::global::set_tracer_provider(provider);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    if let (Some(endpoint), Some(runtime)) = (endpoint, &guard.runtime) {
        runtime.spawn_probe(endpoint);
    }
    Ok(guard)
}

/// Adds `http://` to a bare `host:port` and rejects what this build cannot export to.
fn normalize_endpoint(endpoint: &str) -> anyhow::Result<String> {
    let endpoint = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    if endpoint.starts_with("https://") {
        // opentelemetry-otlp is built without a TLS feature in this workspace.
        bail!("OTLP endpoint {endpoint}: https is not supported (no TLS feature); use http://");
    }
    tonic::transport::Endpoint::from_shared(endpoint.clone())
        .with_context(|| format!("invalid OTLP endpoint {endpoint:?}"))?;
    Ok(endpoint)
}

/// `host:port` of an http(s) endpoint (port defaulting from the scheme), for the probe.
fn probe_target(endpoint: &str) -> Option<(String, u16)> {
    let ep = tonic::transport::Endpoint::from_shared(endpoint.to_owned()).ok()?;
    let uri = ep.uri();
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host.to_owned(), port))
}

/// Whether something accepts TCP connections at `host:port` within [`PROBE_TIMEOUT`].
async fn collector_listening(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// The private runtime that drives the OTLP channel's I/O (see the crate docs for why).
/// Dropping it uses `shutdown_background`, because dropping a `Runtime` the normal way panics
/// inside an async context — and services drop the guard at the end of `#[tokio::main]`.
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl ExportRuntime {
    fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hsync-otlp-export")
            .enable_all()
            .build()
            .context("building the OTLP export runtime")?;
        Ok(ExportRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
    }

    fn build_exporter(&self, endpoint: &str) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
        // `connect_lazy` spawns the channel's worker onto the runtime entered here.
        let _entered = self.handle().enter();
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| format!("invalid OTLP endpoint {endpoint:?}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_channel(channel)
            // Also the deadline across retries.
            .with_timeout(EXPORT_TIMEOUT)
            .with_retry_policy(
                RetryPolicy::recommended()
                    .with_max_retries(2)
                    .with_max_delay(Duration::from_millis(400)),
            )
            .build()
            .context("building the OTLP span exporter")
    }

    /// One background connect attempt; a single warning if nothing listens.
    fn spawn_probe(&self, endpoint: String) {
        let Some((host, port)) = probe_target(&endpoint) else {
            return;
        };
        self.handle().spawn(async move {
            if !collector_listening(&host, port).await {
                tracing::warn!(
                    "no OTLP collector at {endpoint}; spans are dropped until one listens"
                );
            }
        });
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Flushes and shuts down span export when dropped (or on [`TelemetryGuard::shutdown`]).
///
/// Hold it in `main` until the service exits. After shutdown, spans are no longer exported
/// and `init` cannot be called again in this process.
#[must_use = "dropping the guard immediately shuts span export down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    // Declared after `provider` only for readability; shutdown order is explicit below.
    runtime: Option<ExportRuntime>,
    log_file: Option<RotatingFile>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("active", &self.provider.is_some())
            .field("exporting", &self.runtime.is_some())
            .field("log_file", &self.log_file)
            .finish()
    }
}

impl TelemetryGuard {
    /// Exports every buffered span (bounded by a 5 s timeout), then shuts the provider and
    /// the export runtime down, then waits (at most 10 s) for a rotated log file still being
    /// gzipped. Blocks the calling thread meanwhile; on a multi-thread tokio runtime it uses
    /// `block_in_place` so other tasks keep running. Events logged afterwards still reach
    /// stderr and the log file.
    ///
    /// An error means the flush timed out; spans a collector refused are dropped silently.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        if let Some(provider) = self.provider.take() {
            result = run_blocking(|| provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .map_err(|e| anyhow!("shutting down the tracer provider: {e}"));
            // Only after the flush: the export runtime carries the flush's network I/O.
            self.runtime.take();
        }
        if let Some(file) = self.log_file.take() {
            if !run_blocking(|| file.wait_for_compression_timeout(COMPRESSION_WAIT)) {
                eprintln!(
                    "hsync-telemetry: a rotated log file is still being gzipped; the next \
                     start finishes it"
                );
            }
        }
        result
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_inner() {
            eprintln!("hsync-telemetry: {e:#}");
        }
    }
}

/// Runs blocking `f`, telling a multi-thread tokio runtime (if we are on one) to move its
/// other tasks off this worker meanwhile. `block_in_place` panics on a current-thread runtime,
/// where plain blocking is the only option (harmless here: export I/O is on our own runtime).
fn run_blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The 32-hex-digit trace id of the current `tracing` span's OpenTelemetry context, or `None`
/// when there is no valid one (no current span, or [`init`] was not called).
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_validated() {
        assert_eq!(
            normalize_endpoint("localhost:4317").unwrap(),
            "http://localhost:4317"
        );
        assert_eq!(
            normalize_endpoint("http://jaeger:4317").unwrap(),
            "http://jaeger:4317"
        );
        assert!(normalize_endpoint("https://jaeger:4317").is_err());
        assert!(normalize_endpoint("http://bad host:4317").is_err());
    }

    #[test]
    fn probe_targets() {
        assert_eq!(
            probe_target("http://localhost:4317"),
            Some(("localhost".into(), 4317))
        );
        assert_eq!(probe_target("http://jaeger"), Some(("jaeger".into(), 80)));
        assert_eq!(
            probe_target("http://[::1]:4317"),
            Some(("::1".into(), 4317))
        );
    }

    #[tokio::test]
    async fn probe_sees_listeners_only() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(collector_listening("127.0.0.1", port).await);
        drop(listener);
        assert!(!collector_listening("127.0.0.1", port).await);
    }

    // The only unit test touching the environment (tests in this binary run in parallel).
    #[test]
    fn config_from_env() {
        for k in [
            "OTEL_SDK_DISABLED",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "RUST_LOG",
            "HSYNC_LOG_FORMAT",
            "HSYNC_LOG_DIR",
            "HSYNC_LOG_MAX_BYTES",
            "HSYNC_LOG_KEEP",
        ] {
            std::env::remove_var(k);
        }
        let cfg = TelemetryConfig::from_env("svc");
        assert_eq!(cfg.log_file, Ok(None));
        assert_eq!(cfg.service_name, "svc");
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some(DEFAULT_OTLP_ENDPOINT));
        assert_eq!(cfg.log_filter, "info");
        assert!(!cfg.json_logs);

        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317");
        std::env::set_var("RUST_LOG", "debug");
        std::env::set_var("HSYNC_LOG_FORMAT", "JSON");
        std::env::set_var("HSYNC_LOG_DIR", "/var/log/hsync");
        std::env::set_var("HSYNC_LOG_KEEP", "3");
        let cfg = TelemetryConfig::from_env("svc");
        assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://jaeger:4317"));
        assert_eq!(cfg.log_filter, "debug");
        assert!(cfg.json_logs);
        assert_eq!(
            cfg.log_file,
            Ok(Some(LogFileConfig {
                dir: "/var/log/hsync".into(),
                max_bytes: logfile::DEFAULT_MAX_BYTES,
                keep: 3,
            }))
        );
        std::env::set_var("HSYNC_LOG_MAX_BYTES", "64MB");
        assert_eq!(
            TelemetryConfig::from_env("svc").log_file,
            Err("HSYNC_LOG_MAX_BYTES=64MB is not a number of bytes".to_owned())
        );

        std::env::set_var("OTEL_SDK_DISABLED", "true");
        assert_eq!(TelemetryConfig::from_env("svc").otlp_endpoint, None);
        for k in [
            "OTEL_SDK_DISABLED",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "RUST_LOG",
            "HSYNC_LOG_FORMAT",
            "HSYNC_LOG_DIR",
            "HSYNC_LOG_MAX_BYTES",
            "HSYNC_LOG_KEEP",
        ] {
            std::env::remove_var(k);
        }
    }
}
