//! policy-evaluator: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{streams, Bus, BusConfig, Shutdown};
use policy_evaluator::{EvaluatorConfig, PolicyStore};

// Counts heap allocations and live bytes for /metrics and /debug/heap.
#[global_allocator]
static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(name = "policy-evaluator", version, about = "Evaluates HyperSync's Cedar policies")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    metrics: hsync_metrics::MetricsConfig,
    #[command(flatten)]
    evaluator: EvaluatorConfig,
}

/// Default port of the metrics and profiling endpoint (docs/OBSERVABILITY.md).
const METRICS_PORT: u16 = 9642;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("policy-evaluator"))?;
    let shutdown = Shutdown::on_signals();
    let _metrics = args.metrics.start(METRICS_PORT).await?;

    let bus = Arc::new(Bus::connect(&args.bus, "policy-evaluator").await?);
    let bucket = streams::policies_bucket(&bus.jetstream(), bus.names()).await?;
    let store = Arc::new(PolicyStore::new(args.evaluator.clone()));
    policy_evaluator::load_and_follow(store.clone(), bucket).await?;

    tracing::info!(nats = %args.bus.nats_url, "policy-evaluator ready");
    let result = policy_evaluator::run(bus.clone(), store, shutdown.signal()).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
