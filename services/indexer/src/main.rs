//! indexer: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{Bus, BusConfig, Shutdown};
use indexer::IndexerConfig;

#[derive(Parser, Debug)]
#[command(name = "indexer", version, about = "Indexes HyperSync receipts in RocksDB and answers audit queries")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    index: IndexerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("indexer"))?;
    let shutdown = Shutdown::on_signals();

    let store = Arc::new(args.index.open()?);
    let bus = Arc::new(Bus::connect(&args.bus, "indexer").await?);
    tracing::info!(nats = %args.bus.nats_url, db = %args.index.db.display(), "indexer ready");
    let result = indexer::run(bus.clone(), store, args.index, shutdown.signal()).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
