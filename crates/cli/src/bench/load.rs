//! Driving jobs through NATS: closed loop (a fixed number in flight) or open loop (a fixed
//! arrival rate), with latencies into HDR histograms and a progress bar on a terminal.

use std::time::Duration;

use futures::stream::{self, FuturesUnordered, StreamExt};
use hsync_client::JobClient;
use hsync_protocol::job::{Job, JobResult};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

/// How the jobs are offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// `n` jobs in flight at all times: each completion starts the next job. Throughput
    /// is what the system sustains; latency excludes waiting to be sent.
    Closed(usize),
    /// Jobs start at a fixed rate (per second) whatever the system does. Latency counts
    /// from each job's scheduled start, so a system falling behind shows its queueing
    /// delay instead of hiding it (no coordinated omission).
    Open(f64),
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Closed(n) => write!(f, "closed loop, {n} in flight"),
            Load::Open(rate) => write!(f, "open loop, {rate} jobs/s offered"),
        }
    }
}

/// One job's outcome: latency, and the result or why there is none (a timeout, say).
pub type Outcome = (Duration, anyhow::Result<JobResult>);

/// How long the bench waits for any one job.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// A progress bar for `len` jobs, drawn on stderr only when it is a terminal.
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} jobs, {per_sec}, eta {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Runs every job under `load`; returns the wall time from the first start to the last
/// completion and one outcome per job (in completion order).
pub async fn drive(client: &JobClient, jobs: Vec<Job>, load: Load, bar: &ProgressBar) -> (Duration, Vec<Outcome>) {
    let started = Instant::now();
    let outcomes = match load {
        Load::Closed(concurrency) => {
            stream::iter(jobs)
                .map(|job| async move {
                    let t = Instant::now();
                    let r = client.run(&job, JOB_TIMEOUT).await.map_err(anyhow::Error::from);
                    bar.inc(1);
                    (t.elapsed(), r)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await
        }
        Load::Open(rate) => open_loop(client, jobs, rate, bar).await,
    };
    bar.finish_and_clear();
    (started.elapsed(), outcomes)
}

async fn open_loop(client: &JobClient, jobs: Vec<Job>, rate: f64, bar: &ProgressBar) -> Vec<Outcome> {
    let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let start = Instant::now();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut in_flight = FuturesUnordered::new();
    let mut pending = jobs.into_iter().enumerate().peekable();
    loop {
        let next_due = pending.peek().map(|(i, _)| start + gap.mul_f64(*i as f64));
        tokio::select! {
            // Sending on schedule comes before collecting replies.
            biased;
            _ = tokio::time::sleep_until(next_due.unwrap_or(start)), if next_due.is_some() => {
                let (_, job) = pending.next().expect("peeked");
                let due = next_due.expect("checked");
                in_flight.push(async move {
                    let r = client.run(&job, JOB_TIMEOUT).await.map_err(anyhow::Error::from);
                    (due.elapsed(), r)
                });
            }
            Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                bar.inc(1);
                outcomes.push(outcome);
            }
            else => break,
        }
    }
    outcomes
}

/// Latencies in microseconds, 3 significant digits, up to an hour.
pub fn histogram(latencies: impl Iterator<Item = Duration>) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    for d in latencies {
        h.saturating_record(d.as_micros().clamp(1, u64::MAX as u128) as u64);
    }
    h
}

/// p50, p95, p99, p99.9 and max of `h`, in milliseconds (zeros when it is empty).
pub fn percentiles_ms(h: &hdrhistogram::Histogram<u64>) -> (f64, f64, f64, f64, f64) {
    if h.is_empty() {
        return (0.0, 0.0, 0.0, 0.0, 0.0);
    }
    let pct = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    (pct(0.5), pct(0.95), pct(0.99), pct(0.999), h.max() as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_hold_three_significant_digits() {
        // 1..=1000 ms: the p-th percentile is p * 10 ms.
        let h = histogram((1..=1000).map(Duration::from_millis));
        for (q, ms) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = h.value_at_quantile(q) as f64 / 1e3;
            assert!((got - ms).abs() <= ms * 1e-3, "p{q}: {got} ms, expected {ms}");
        }
        assert_eq!(h.len(), 1000);
        // A zero duration still counts (as the smallest bucket), it is not dropped.
        assert_eq!(histogram([Duration::ZERO].into_iter()).len(), 1);
    }
}
