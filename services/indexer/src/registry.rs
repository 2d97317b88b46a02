//! Mirrors the operator registry bucket into the index, so that audits can ask for
//! operators by id and by capability without touching the bucket.
//!
//! Each (re)sync lists the bucket's keys, drops stored operators it no longer holds, then
//! watches every key from its latest revision on: the watch first replays the current value
//! of each key (a put or a delete marker) and then follows changes, so a change made
//! between the listing and the watch is not missed. When the watch fails (the server went
//! away, the bucket was deleted), the mirror syncs again from the start.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_bus::{streams, Bus, ShutdownSignal};
use hsync_index::IndexStore;
use hsync_protocol::operator::OperatorDef;

/// Pause before syncing again after the watch failed.
const RESYNC_PAUSE: Duration = Duration::from_secs(2);

/// Keeps the index's operators in step with the registry until shutdown.
pub async fn follow_registry(bus: Arc<Bus>, store: Arc<IndexStore>, mut shutdown: ShutdownSignal) {
    while !shutdown.is_triggered() {
        if let Err(e) = sync(&bus, &store, &mut shutdown).await {
            tracing::warn!("operator registry mirror: {e:#}; syncing again in {RESYNC_PAUSE:?}");
            tokio::select! {
                _ = shutdown.wait() => {}
                _ = tokio::time::sleep(RESYNC_PAUSE) => {}
            }
        }
    }
}

/// One sync and the watch that follows it; returns `Ok` only on shutdown.
async fn sync(bus: &Bus, store: &Arc<IndexStore>, shutdown: &mut ShutdownSignal) -> anyhow::Result<()> {
    let names = bus.names();
    // Opening creates the bucket if no runner has yet (same configuration as the runner's).
    let bucket = streams::operators_bucket(&bus.jetstream(), names).await?;
    let mut listing = bucket
        .keys()
        .await
        .map_err(|e| anyhow::anyhow!("cannot list bucket {}: {e}", names.bucket_operators()))?;
    let mut present = HashSet::new();
    while let Some(key) = listing.next().await {
        present.insert(key.map_err(|e| anyhow::anyhow!("cannot list bucket {}: {e}", names.bucket_operators()))?);
    }
    let s = store.clone();
    let dropped = tokio::task::spawn_blocking(move || s.retain_operators(&present)).await??;
    if dropped > 0 {
        tracing::info!(dropped, "removed operators the registry no longer holds");
    }
    let mut watch = bucket
        .watch_with_history(">")
        .await
        .map_err(|e| anyhow::anyhow!("cannot watch bucket {}: {e}", names.bucket_operators()))?;
    loop {
        let entry = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            entry = watch.next() => entry,
        };
        let entry = match entry {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => anyhow::bail!("the watch of {} failed: {e}", names.bucket_operators()),
            None => anyhow::bail!("the watch of {} ended", names.bucket_operators()),
        };
        apply(bus, store, entry).await?;
    }
}

/// Applies one bucket entry. A value that is not an operator definition is logged and
/// kept out of the index (whatever was stored under its key goes), so one bad write to
/// the bucket does not stall the mirror.
async fn apply(bus: &Bus, store: &Arc<IndexStore>, entry: kv::Entry) -> anyhow::Result<()> {
    let key = entry.key;
    let def = match entry.operation {
        kv::Operation::Put => match bus.codec().decode::<OperatorDef>(None, &entry.value) {
            Ok(def) => Some(def),
            Err(e) => {
                tracing::warn!(operator = %key, revision = entry.revision, "the registry holds a value that is not an operator definition: {e}");
                None
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    let s = store.clone();
    tokio::task::spawn_blocking(move || match def {
        Some(def) => s.put_operator(&key, &def),
        None => s.delete_operator(&key),
    })
    .await??;
    Ok(())
}
