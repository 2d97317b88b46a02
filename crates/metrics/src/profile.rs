//! On-demand CPU profiles: pprof-rs samples every thread's stack (SIGPROF, 99 Hz) for the
//! requested seconds and folds the samples into a flamegraph (inferno). Off until asked,
//! so it costs nothing in normal operation; one profile at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const MAX_SECONDS: u64 = 120;
const DEFAULT_SECONDS: u64 = 10;
/// Not a multiple of common timer frequencies, so samples do not lock step with them.
const FREQUENCY_HZ: i32 = 99;

static PROFILING: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
pub enum ProfileError {
    Busy,
    Failed(String),
}

pub fn seconds_from_query(query: &[(String, String)]) -> Result<u64, String> {
    match query.iter().find(|(k, _)| k == "seconds") {
        None => Ok(DEFAULT_SECONDS),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(s) if (1..=MAX_SECONDS).contains(&s) => Ok(s),
            _ => Err(format!("seconds={v:?}: give a whole number of seconds from 1 to {MAX_SECONDS}")),
        },
    }
}

/// Clears the busy flag however the profile ends.
struct Busy;

impl Drop for Busy {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::SeqCst);
    }
}

/// Samples this process for `seconds` and returns the flamegraph as SVG.
pub async fn flamegraph(seconds: u64) -> Result<Vec<u8>, ProfileError> {
    if PROFILING.swap(true, Ordering::SeqCst) {
        return Err(ProfileError::Busy);
    }
    let busy = Busy;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        // Unwinding inside these while they hold their own locks can deadlock.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ProfileError::Failed(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let svg = tokio::task::spawn_blocking(move || {
        let report = guard.report().build().map_err(|e| e.to_string())?;
        drop(guard);
        if report.data.is_empty() {
            return Err(format!("no samples in {seconds} s: the process used (almost) no CPU; profile it under load"));
        }
        let mut svg = Vec::new();
        report.flamegraph(&mut svg).map_err(|e| e.to_string())?;
        Ok::<_, String>(svg)
    })
    .await
    .map_err(|e| ProfileError::Failed(e.to_string()))?
    .map_err(ProfileError::Failed);
    drop(busy);
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_and_bounds() {
        assert_eq!(seconds_from_query(&[]), Ok(DEFAULT_SECONDS));
        assert_eq!(seconds_from_query(&[("seconds".into(), "3".into())]), Ok(3));
        for bad in ["0", "121", "-1", "1.5", "ten", ""] {
            assert!(seconds_from_query(&[("seconds".into(), bad.into())]).is_err(), "{bad}");
        }
    }
}
