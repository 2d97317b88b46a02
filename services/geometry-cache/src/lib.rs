//! geometry-cache: serves the `geo.*` operators on `hsync.op.geo.*`, each behind an LRU
//! cache keyed by the canonical hash of its arguments, and registers their definitions
//! in the operator registry like any other provider.

use std::sync::Arc;

use hsync_bus::{serve, start_service, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_protocol::names::services;
use hsync_protocol::operator::{
    ArgSpec, OperatorBatch, OperatorBatchReply, OperatorCall, OperatorDef, OperatorOutput, OperatorResult, Provider,
    MAX_OPERATOR_BATCH,
};
use hsync_protocol::{ErrorCode, ErrorReply, Names};

mod cache;
mod ops;

pub use cache::{CacheConfig, GeoCache};
pub use ops::{
    Compute, Context, GeoOp, MAX_DIMENSION, MAX_EMBED_DIMENSION, MAX_EMBED_NODES, MAX_GEODESIC_POINTS, MAX_PAIRWISE_POINTS, MAX_POINT_SET,
    MAX_QUALITY_SOURCES, OPS,
};

pub const VERSION: &str = "1";

/// Operator definitions this service provides, for the registry.
pub fn definitions(names: &Names) -> Vec<OperatorDef> {
    OPS.iter()
        .map(|op| OperatorDef {
            id: op.id.to_string(),
            version: VERSION.to_string(),
            capabilities: vec!["geometry".to_string(), "hyperbolic".to_string()],
            deterministic: op.deterministic(),
            cacheable: op.deterministic(),
            provider: Provider::Nats {
                subject: names.operator(op.id),
                batch_subject: Some(names.operator_batch(op.id)),
            },
            args: op
                .args
                .iter()
                .map(|(n, k, r)| ArgSpec {
                    name: n.to_string(),
                    kind: *k,
                    required: *r,
                })
                .collect(),
            cost_hint: 2,
            description: op.description.to_string(),
        })
        .collect()
}

/// What the service runs with.
#[derive(Clone, Debug)]
pub struct GeoConfig {
    pub caches: CacheConfig,
    /// Directory of the embedding tables `geo.table.*` read (`<name>.emb`).
    pub tables_dir: Option<std::path::PathBuf>,
}

impl From<CacheConfig> for GeoConfig {
    fn from(caches: CacheConfig) -> Self {
        GeoConfig { caches, tables_dir: None }
    }
}

/// Runs one call of operator `OPS[i]` through its cache (deterministic operators only).
fn serve_call(ctx: &Context, cache: &GeoCache, i: usize, call: &OperatorCall) -> Result<OperatorOutput, ErrorReply> {
    let op = &OPS[i];
    if call.operator != op.id {
        return Err(ErrorReply::new(
            ErrorCode::InvalidArgument,
            format!("this subject serves `{}`, the call names `{}`", op.id, call.operator),
        ));
    }
    if !op.deterministic() {
        return op.call(ctx, &call.args).map(|output| OperatorOutput { output, cached: false });
    }
    let (output, cached) = cache.get_or_compute(&call.args, |args| op.call(ctx, args))?;
    Ok(OperatorOutput { output, cached })
}

/// Serves every operator, one call at a time and in batches, until shutdown (the binary
/// registers [`definitions`] first).
pub async fn run(bus: Arc<Bus>, config: impl Into<GeoConfig>, shutdown: ShutdownSignal) -> anyhow::Result<()> {
    let config = config.into();
    let caches = &config.caches;
    let ctx = Arc::new(Context { tables_dir: config.tables_dir.clone() });
    let caches: Arc<Vec<GeoCache>> = Arc::new(
        OPS.iter()
            .map(|op| {
                let (entries, bytes) = caches.for_operator(op.id);
                GeoCache::new(entries, bytes)
            })
            .collect(),
    );
    let stats_caches = caches.clone();
    let service = start_service(
        &bus,
        services::GEOMETRY_CACHE,
        "hyperbolic geometry operators (Poincaré ball, embeddings, nearest neighbours) behind LRU caches",
        move |endpoint| {
            OPS.iter()
                .position(|op| op.id == endpoint.strip_suffix(".batch").unwrap_or(endpoint))
                .map(|i| stats_caches[i].stats_json())
                .unwrap_or(serde_json::Value::Null)
        },
    )
    .await?;
    let mut tasks = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        let endpoint = service
            .endpoint_builder()
            .name(op.id)
            .add(bus.names().operator(op.id))
            .await
            .map_err(|e| anyhow::anyhow!("cannot add endpoint {}: {e}", op.id))?;
        let call_caches = caches.clone();
        let call_ctx = ctx.clone();
        tasks.push(tokio::spawn(serve(
            bus.clone(),
            endpoint,
            shutdown.clone(),
            ServeOptions::default(),
            move |req: Incoming<OperatorCall>| {
                let caches = call_caches.clone();
                let ctx = call_ctx.clone();
                async move {
                    let call = req.body;
                    let span = tracing::Span::current();
                    span.record("hsync.job_id", call.job_id.as_str());
                    span.record("hsync.node_id", call.node_id.as_str());
                    span.record("hsync.operator", OPS[i].id);
                    let out = tokio::task::spawn_blocking(move || serve_call(&ctx, &caches[i], i, &call))
                        .await
                        .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("geometry task: {e}")))??;
                    span.record("hsync.cache_hit", out.cached);
                    Ok(out)
                }
            },
        )));
        let batch_name = format!("{}.batch", op.id);
        let endpoint = service
            .endpoint_builder()
            .name(&batch_name)
            .add(bus.names().operator_batch(op.id))
            .await
            .map_err(|e| anyhow::anyhow!("cannot add endpoint {batch_name}: {e}"))?;
        let caches = caches.clone();
        let batch_ctx = ctx.clone();
        tasks.push(tokio::spawn(serve(
            bus.clone(),
            endpoint,
            shutdown.clone(),
            ServeOptions::default(),
            move |req: Incoming<OperatorBatch>| {
                let caches = caches.clone();
                let ctx = batch_ctx.clone();
                async move {
                    let calls = req.body.calls;
                    if calls.len() > MAX_OPERATOR_BATCH {
                        return Err(ErrorReply::new(
                            ErrorCode::InvalidArgument,
                            format!("a batch holds at most {MAX_OPERATOR_BATCH} calls, this one {}", calls.len()),
                        ));
                    }
                    tracing::Span::current().record("hsync.operator", OPS[i].id);
                    // One blocking task for the whole batch: that is the saving batching buys.
                    let results = tokio::task::spawn_blocking(move || {
                        calls
                            .iter()
                            .map(|call| OperatorResult::from_result(serve_call(&ctx, &caches[i], i, call)))
                            .collect()
                    })
                    .await
                    .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("geometry task: {e}")))?;
                    Ok(OperatorBatchReply { results })
                }
            },
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = service.stop().await;
    Ok(())
}

