//! One writer at a time: a lease in a KV bucket, held by renewing it with compare-and-set
//! on its revision, and taken over by a standby that has seen the same revision for a
//! whole TTL.
//!
//! No clocks are compared between machines. A standby measures the TTL from when *it*
//! first saw a revision, which is after the holder wrote it; the holder stops signing one
//! TTL after it *sent* its last successful renewal. So the holder is out before a standby
//! takes over. A holder paused past that (a long GC-like stall, SIGSTOP) is caught by the
//! batch stream instead: every batch is published expecting the stream sequence of the
//! batch before it, so a stale holder's publish is refused.

use std::time::Duration;

use async_nats::jetstream::kv;
use hsync_bus::{Shutdown, ShutdownSignal};
use tokio::sync::watch;
use tokio::time::Instant;

/// The one key of the lease bucket.
pub const LEASE_KEY: &str = "leader";

/// A lease this process holds, not yet renewing (see [`Lease::hold`]).
pub struct Lease {
    kv: kv::Store,
    holder: String,
    ttl: Duration,
    revision: u64,
    valid_until: Instant,
    /// Who held it before, when it was taken over rather than found free.
    pub previous: Option<String>,
}

/// How often a standby looks at the lease, and a holder renews it.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(20))
}

impl Lease {
    /// Waits until this process holds the lease. `None` on shutdown.
    ///
    /// A lease that is free (never taken, or released) is taken at once; so is one held
    /// under our own holder id (this signer, restarted). Another holder's lease is taken
    /// over after its revision has stayed the same for one TTL.
    pub async fn acquire(kv: &kv::Store, holder: &str, ttl: Duration, shutdown: &mut ShutdownSignal) -> Option<Lease> {
        let mut watched: Option<(u64, Instant)> = None;
        let mut waiting_logged = false;
        loop {
            let sent = Instant::now();
            match kv.entry(LEASE_KEY).await {
                Ok(entry) => {
                    let current = entry.filter(|e| e.operation == kv::Operation::Put && !e.value.is_empty());
                    let attempt = match &current {
                        None => kv.create(LEASE_KEY, holder.to_string().into()).await.map_err(|e| e.to_string()).map(|r| (r, None)),
                        Some(e) => {
                            let other = String::from_utf8_lossy(&e.value).into_owned();
                            let silent_since = match watched {
                                Some((rev, since)) if rev == e.revision => since,
                                _ => {
                                    watched = Some((e.revision, sent));
                                    sent
                                }
                            };
                            if other == holder || sent.duration_since(silent_since) >= ttl {
                                kv.update(LEASE_KEY, holder.to_string().into(), e.revision)
                                    .await
                                    .map_err(|e| e.to_string())
                                    .map(|r| (r, Some(other)))
                            } else {
                                if !waiting_logged {
                                    tracing::info!("standing by: the receipt log's lease is held by {other}");
                                    waiting_logged = true;
                                }
                                Err(String::new())
                            }
                        }
                    };
                    match attempt {
                        Ok((revision, previous)) => {
                            return Some(Lease {
                                kv: kv.clone(),
                                holder: holder.to_string(),
                                ttl,
                                revision,
                                valid_until: sent + ttl,
                                previous,
                            })
                        }
                        // Someone else was faster, or we are waiting out the TTL.
                        Err(e) if !e.is_empty() => tracing::debug!("lease not taken: {e}"),
                        Err(_) => {}
                    }
                }
                Err(e) => tracing::warn!("cannot read the signer lease: {e}"),
            }
            tokio::select! {
                _ = shutdown.wait() => return None,
                _ = tokio::time::sleep(poll_interval(ttl)) => {}
            }
        }
    }

    /// Renews the lease in the background until it is lost or released.
    pub fn hold(self) -> HeldLease {
        let (valid_tx, valid) = watch::channel(Some(self.valid_until));
        let stop = Shutdown::new();
        let mut stop_signal = stop.signal();
        let task = tokio::spawn(async move {
            let mut lease = self;
            // Three or four tries within one TTL before the lease can lapse.
            let every = lease.ttl / 4;
            loop {
                tokio::select! {
                    _ = stop_signal.wait() => return Some(lease),
                    _ = tokio::time::sleep(every) => {}
                }
                let sent = Instant::now();
                let renewal = tokio::time::timeout(
                    lease.ttl / 4,
                    lease.kv.update(LEASE_KEY, lease.holder.clone().into(), lease.revision),
                )
                .await;
                match renewal {
                    Ok(Ok(revision)) => {
                        lease.revision = revision;
                        lease.valid_until = sent + lease.ttl;
                        valid_tx.send_replace(Some(lease.valid_until));
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!("lost the receipt log's lease: another signer took it over");
                        valid_tx.send_replace(None);
                        return None;
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        if Instant::now() >= lease.valid_until {
                            tracing::warn!("lost the receipt log's lease: not renewed within its TTL ({why})");
                            valid_tx.send_replace(None);
                            return None;
                        }
                        tracing::warn!("renewing the lease failed ({why}); retrying");
                    }
                }
            }
        });
        HeldLease { valid, stop, task }
    }
}

/// A lease being renewed in the background.
pub struct HeldLease {
    valid: watch::Receiver<Option<Instant>>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<Option<Lease>>,
}

impl HeldLease {
    /// True while no other signer can have taken the lease over.
    pub fn is_valid(&self) -> bool {
        matches!(*self.valid.borrow(), Some(until) if Instant::now() < until)
    }

    /// Resolves when the lease is lost (taken over, or not renewed within its TTL).
    pub async fn lost(&self) {
        let mut valid = self.valid.clone();
        loop {
            let until = *valid.borrow_and_update();
            let Some(until) = until else { return };
            tokio::select! {
                changed = valid.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(until) => if !self.is_valid() { return },
            }
        }
    }

    /// Stops renewing and frees the lease, so a standby takes over without waiting.
    pub async fn release(self) {
        self.stop.trigger();
        if let Ok(Some(lease)) = self.task.await {
            match lease.kv.delete_expect_revision(LEASE_KEY, Some(lease.revision)).await {
                Ok(()) => tracing::info!("released the receipt log's lease"),
                Err(e) => tracing::warn!("cannot release the lease ({e}); a standby takes over after its TTL"),
            }
        }
    }
}
