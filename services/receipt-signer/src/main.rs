//! receipt-signer: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{Bus, BusConfig, Shutdown};
use receipt_signer::{Signer, SignerConfig};

#[derive(Parser, Debug)]
#[command(name = "receipt-signer", version, about = "Signs HyperSync's receipt log")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    signer: SignerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("receipt-signer"))?;
    let shutdown = Shutdown::on_signals();

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
