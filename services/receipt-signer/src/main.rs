//! receipt-signer: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{Bus, BusConfig, Shutdown};
use receipt_signer::{Signer, SignerConfig};

// Counts heap allocations and live bytes for /metrics and /debug/heap.
#[global_allocator]
static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(name = "receipt-signer", version, about = "Signs HyperSync's receipt log")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    metrics: hsync_metrics::MetricsConfig,
    #[command(flatten)]
    signer: SignerConfig,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Replace the signing key with a new one (a new key id) and keep the old verifier key
    /// in <state-dir>/retired.vkeys, so that checkpoints signed before stay verifiable.
    /// A running signer keeps its key until restarted; restart it to sign with the new one.
    RotateKey,
}

/// Default port of the metrics and profiling endpoint (docs/OBSERVABILITY.md).
const METRICS_PORT: u16 = 9644;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::RotateKey) = args.command {
        let (new, old) = hsync_receipts::keys::rotate(&args.signer.key_path(), &args.signer.origin, &args.signer.retired_keys_path())?;
        println!("retired {old}");
        println!("current {}", new.verifier_key());
        return Ok(());
    }
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("receipt-signer"))?;
    let shutdown = Shutdown::on_signals();
    let _metrics = args.metrics.start(METRICS_PORT).await?;

    let signer = Signer::open(&args.signer)?;
    let bus = Arc::new(Bus::connect(&args.bus, "receipt-signer").await?);
    tracing::info!(nats = %args.bus.nats_url, tree_size = signer.tree_size(), "receipt-signer ready");
    let result = receipt_signer::run(bus.clone(), signer, args.signer, shutdown.signal()).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
