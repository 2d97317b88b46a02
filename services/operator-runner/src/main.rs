//! operator-runner: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use hsync_runner::{Engine, EngineConfig, Registry};

#[global_allocator]
static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(name = "operator-runner", version, about = "Runs HyperSync job DAGs")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    metrics: hsync_metrics::MetricsConfig,
    #[command(flatten)]
    engine: EngineConfig,
    #[command(flatten)]
    durable: operator_runner::durable::DurableConfig,
}

/// Default port of the metrics and profiling endpoint (docs/OBSERVABILITY.md).
const METRICS_PORT: u16 = 9641;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("operator-runner"))?;
    let shutdown = Shutdown::on_signals();
    let _metrics = args.metrics.start(METRICS_PORT).await?;

    let bus = Arc::new(Bus::connect(&args.bus, "operator-runner").await?);
    let js = bus.jetstream();
    streams::records_stream(&js, bus.names()).await?;
    let registry = Registry::new(Some(streams::operators_bucket(&js, bus.names()).await?), bus.codec().clone());
    registry.register_builtins().await?;
    registry.follow_changes();
    let engine = Arc::new(Engine::new(bus.clone(), registry, args.engine));

    tracing::info!(nats = %args.bus.nats_url, "operator-runner ready");
    let result = operator_runner::run(bus.clone(), engine, args.durable, shutdown.signal()).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
