//! operator-runner: wires the job engine to NATS (the micro service and its endpoints).

use std::sync::Arc;

use hsync_bus::{serve, start_service, Bus, Incoming, ServeOptions, ShutdownSignal};
use hsync_protocol::job::{ExtendJob, Job};
use hsync_protocol::names::services;

use hsync_runner::Engine;

pub mod durable;

/// Serves `jobs.run` and `jobs.extend` and consumes `jobs.submit` until shutdown.
pub async fn run(
    bus: Arc<Bus>,
    engine: Arc<Engine>,
    durable_cfg: durable::DurableConfig,
    shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let durable_task = tokio::spawn(durable::run(bus.clone(), engine.clone(), durable_cfg, shutdown.clone()));
    let stats_engine = engine.clone();
    let service = start_service(
        &bus,
        services::OPERATOR_RUNNER,
        "runs job DAGs: validation, scheduling, result cache, policy checks, operation records",
        move |_| {
            let mut stats = stats_engine.stats_json();
            let (allocations, bytes) = hsync_metrics::heap::snapshot();
            stats["allocations"] = allocations.into();
            stats["allocated_bytes"] = bytes.into();
            stats["pooling"] = hsync_protocol::pool::pooling().into();
            stats
        },
    )
    .await?;
    let endpoint = service
        .endpoint_builder()
        .name("run")
        .add(bus.names().jobs_run())
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint: {e}"))?;
    let extend_endpoint = service
        .endpoint_builder()
        .name("extend")
        .add(bus.names().jobs_extend())
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint: {e}"))?;
    let extend_engine = engine.clone();
    let extend_task = tokio::spawn(serve(
        bus.clone(),
        extend_endpoint,
        shutdown.clone(),
        ServeOptions::default(),
        move |req: Incoming<ExtendJob>| {
            let engine = extend_engine.clone();
            async move { engine.extend(req.body).await }
        },
    ));
    serve(bus.clone(), endpoint, shutdown, ServeOptions::default(), move |req: Incoming<Job>| {
        let engine = engine.clone();
        async move { engine.run(req.body).await }
    })
    .await;
    if let Err(e) = extend_task.await {
        tracing::error!("jobs.extend endpoint: {e}");
    }
    let durable_result = durable_task.await;
    let _ = service.stop().await;
    durable_result.map_err(|e| anyhow::anyhow!("durable job consumer: {e}"))?
}
