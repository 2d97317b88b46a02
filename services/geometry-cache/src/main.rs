//! geometry-cache: configuration, wiring, graceful shutdown.

use std::sync::Arc;

use clap::Parser;
use hsync_bus::{streams, Bus, BusConfig, Shutdown};

// Counts heap allocations and live bytes for /metrics and /debug/heap.
#[global_allocator]
static ALLOCATOR: hsync_metrics::heap::CountingAllocator = hsync_metrics::heap::CountingAllocator;

#[derive(Parser, Debug)]
#[command(name = "geometry-cache", version, about = "Serves HyperSync's hyperbolic geometry operators")]
struct Args {
    #[command(flatten)]
    bus: BusConfig,
    #[command(flatten)]
    metrics: hsync_metrics::MetricsConfig,
    /// Entries per operator cache; 0 turns caching off.
    #[arg(long = "cache-entries", env = "HSYNC_GEO_CACHE_ENTRIES", default_value_t = 100_000)]
    cache_entries: usize,
    /// Bytes per operator cache (approximate size of the cached values); 0 turns caching
    /// off. Bounds memory whatever the results' sizes.
    #[arg(long = "cache-bytes", env = "HSYNC_GEO_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_bytes: usize,
    /// A different size for one operator's cache: OPERATOR=ENTRIES or
    /// OPERATOR=ENTRIES:BYTES (repeat the flag, or separate with commas in the variable).
    /// `geo.embed` keeps 64 entries unless set here.
    #[arg(long = "cache", env = "HSYNC_GEO_CACHES", value_delimiter = ',')]
    cache: Vec<String>,
    /// Directory of embedding tables (`<name>.emb`, e.g. written by `hsync geo embed
    /// --out`) that `geo.table.knn` searches by memory mapping; unset: it refuses.
    #[arg(long = "tables-dir", env = "HSYNC_GEO_TABLES_DIR")]
    tables_dir: Option<std::path::PathBuf>,
}

/// Default port of the metrics and profiling endpoint (docs/OBSERVABILITY.md).
const METRICS_PORT: u16 = 9643;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut caches = geometry_cache::CacheConfig::new(args.cache_entries, args.cache_bytes);
    for spec in &args.cache {
        caches.set_override(spec).map_err(anyhow::Error::msg)?;
    }
    let telemetry = hsync_telemetry::init(hsync_telemetry::TelemetryConfig::from_env("geometry-cache"))?;
    let shutdown = Shutdown::on_signals();
    let _metrics = args.metrics.start(METRICS_PORT).await?;

    let bus = Arc::new(Bus::connect(&args.bus, "geometry-cache").await?);
    let registry = streams::operators_bucket(&bus.jetstream(), bus.names()).await?;
    for def in geometry_cache::definitions(bus.names()) {
        let (_, body) = bus.codec().encode(&def, hsync_protocol::Format::MsgPack)?;
        registry
            .put(&def.id, body)
            .await
            .map_err(|e| anyhow::anyhow!("cannot register {}: {e}", def.id))?;
    }

    tracing::info!(nats = %args.bus.nats_url, "geometry-cache ready");
    let result = geometry_cache::run(
        bus.clone(),
        geometry_cache::GeoConfig { caches, tables_dir: args.tables_dir.clone() },
        shutdown.signal(),
    ).await;
    bus.drain().await;
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry shutdown: {e}");
    }
    result
}
