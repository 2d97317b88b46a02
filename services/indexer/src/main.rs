//! indexer: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{Bus, BusConfig, Shutdown};
use indexer::IndexerConfig;

// Counts heap allocations and live bytes for /metrics and /debug/heap.
#[global_allocator]
static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(name = "indexer", version, about = "Indexes HyperSync receipts in RocksDB and answers audit queries")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    metrics: hsync_metrics::MetricsConfig,
    #[command(flatten)]
    index: IndexerConfig,
}

/// Default port of the metrics and profiling endpoint (docs/OBSERVABILITY.md).
const METRICS_PORT: u16 = 9645;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("indexer"))?;
    let shutdown = Shutdown::on_signals();
    let _metrics = args.metrics.start(METRICS_PORT).await?;

    let store = Arc::new(args.index.open()?);
    let report_store = store.clone();
    hsync_metrics::global().add_debug_text("rocksdb", move || {
        let mut report = report_store.property(None, "rocksdb.stats").ok().flatten().unwrap_or_default();
        report.push('\n');
        report.push_str(&report_store.statistics().unwrap_or_else(|| {
            "RocksDB statistics are off: start the indexer with --rocksdb-statistics (HSYNC_INDEX_STATISTICS=true) to collect them\n".to_string()
        }));
        report
    });
    let bus = Arc::new(Bus::connect(&args.bus, "indexer").await?);
    tracing::info!(nats = %args.bus.nats_url, db = %args.index.db.display(), "indexer ready");
    let result = indexer::run(bus.clone(), store, args.index, shutdown.signal()).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
