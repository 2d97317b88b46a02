//! `hsync bench ablation`: one workload with every optimization on, then with each one
//! switched off in turn by its configuration, then with all on again. The two all-on runs
//! bound the noise; an optimization whose removal moves a figure by less than that has no
//! measured effect on this workload.

use super::workload::batching_job;
use super::{run_variant, zipf_workload, BenchArgs, Figures, Workload};

/// Each optimization of DESIGN.md's table that configuration can switch off, and how.
pub const SWITCHES: &[(&str, &[(&str, &str)])] = &[
    ("no result cache", &[("HSYNC_RESULT_CACHE_ENTRIES", "0")]),
    ("no parallel nodes", &[("HSYNC_MAX_PARALLEL_NODES", "1")]),
    ("no policy batching", &[("HSYNC_POLICY_BATCH_MAX", "1")]),
    ("no operator batching", &[("HSYNC_OPERATOR_BATCH_MAX", "1")]),
    ("no decision cache", &[("HSYNC_POLICY_CACHE_CAPACITY", "0")]),
    ("no policy fail-fast", &[("HSYNC_POLICY_FAIL_FAST", "false")]),
    ("no geometry cache", &[("HSYNC_GEO_CACHE_ENTRIES", "0")]),
    ("no pooling", &[("HSYNC_POOLING", "false")]),
    ("no receipt batching", &[("HSYNC_RECEIPT_BATCH", "1")]),
    ("no index batching", &[("HSYNC_INDEX_INGEST_BATCH", "1")]),
];

pub const ALL_ON: &str = "all on";
pub const ALL_ON_AGAIN: &str = "all on (again)";

/// The batching scenario's jobs (8 built-in nodes, 4 geometry calls), keyed by Zipf(1.0)
/// draws so that popular jobs repeat: every cache has something to do.
fn workload(args: &BenchArgs) -> Workload {
    zipf_workload(args, batching_job)
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figures>> {
    let c = args.concurrency;
    let mut rows = vec![run_variant("ablation", ALL_ON, &[], workload(args), c).await?];
    for (name, env) in SWITCHES.iter().filter(|(name, _)| args.only.is_empty() || args.only.iter().any(|o| o == name)) {
        rows.push(run_variant("ablation", name, env, workload(args), c).await?);
    }
    rows.push(run_variant("ablation", ALL_ON_AGAIN, &[], workload(args), c).await?);
    Ok(rows)
}

/// A figure with the optimization off relative to all on: +10% means 10% more.
fn change(off: f64, on: f64) -> f64 {
    if on.abs() < 1e-12 {
        0.0
    } else {
        (off - on) / on * 100.0
    }
}

/// What turning one optimization off did, against the mean of the two all-on runs.
#[derive(Debug, PartialEq)]
pub struct Impact {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub cpu_per_job: f64,
    pub wire_per_job: f64,
    /// The signer fell behind: records unsigned after the jobs, beyond the all-on runs'.
    pub backlog: bool,
    pub verdict: &'static str,
}

/// CPU seconds of every process per job, in milliseconds.
fn cpu_ms_per_job(f: &Figures) -> f64 {
    f.processes.values().map(|u| u.cpu_seconds).sum::<f64>() * 1e3 / f.jobs.max(1) as f64
}

/// `noise` is the percent spread of the same figure between the two all-on runs; a change
/// counts only beyond twice that, and never below 3%.
pub fn impact(off: &Figures, on: &[&Figures; 2]) -> Impact {
    let mean = |g: fn(&Figures) -> f64| (g(on[0]) + g(on[1])) / 2.0;
    let noise = |g: fn(&Figures) -> f64| (2.0 * change(g(on[0]), g(on[1])).abs()).max(3.0);
    let measure = |g: fn(&Figures) -> f64| (change(g(off), mean(g)), noise(g));
    let (throughput, t_noise) = measure(|f| f.jobs_per_second);
    // Latency is judged on p50: the p99 of a few thousand jobs moves by ±15% between
    // identical runs on a shared 2-core machine, the p50 far less. p99 is still reported.
    let (p50, p50_noise) = measure(|f| f.p50_ms);
    let (p99, _) = measure(|f| f.p99_ms);
    let (cpu_per_job, cpu_noise) = measure(cpu_ms_per_job);
    let (wire_per_job, wire_noise) = measure(|f| f.wire_bytes_per_job);
    // Worse without it: less throughput, more latency, CPU or traffic per job, or the
    // receipt-signer falling behind (jobs do not wait for receipts, so that shows nowhere
    // else). The signer lags by a second or two now and then even with everything on;
    // falling behind means ending the run with more records unsigned than the measured
    // jobs produced (one per node), and more than twice the all-on runs' backlog.
    let all_on_backlog = on[0].records_unsigned.max(on[1].records_unsigned);
    let backlog = off.records_unsigned > off.nodes_total.max(2 * all_on_backlog);
    let worse = throughput < -t_noise || p50 > p50_noise || cpu_per_job > cpu_noise || wire_per_job > wire_noise || backlog;
    let better = throughput > t_noise || p50 < -p50_noise || cpu_per_job < -cpu_noise;
    let verdict = match (worse, better) {
        (true, false) => "helps",
        (false, true) => "costs here",
        (true, true) => "trade-off",
        (false, false) => "no effect measured",
    };
    Impact { throughput, p50, p99, cpu_per_job, wire_per_job, backlog, verdict }
}

/// The impact table: each optimization's removal against all on.
pub fn print_impact(rows: &[Figures]) {
    let find = |name: &str| rows.iter().find(|f| f.scenario == "ablation" && f.variant == name);
    let (Some(a), Some(b)) = (find(ALL_ON), find(ALL_ON_AGAIN)) else {
        return;
    };
    println!();
    println!(
        "Turning each optimization off, against the mean of the two all-on runs (noise: all on vs again: jobs/s {:+.1}%, p50 {:+.1}%, CPU/job {:+.1}%)",
        change(b.jobs_per_second, a.jobs_per_second),
        change(b.p50_ms, a.p50_ms),
        change(cpu_ms_per_job(b), cpu_ms_per_job(a))
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>12} {:>12} {:>12} {:>10}  verdict",
        "switched off", "jobs/s", "p50", "p99", "CPU ms/job", "CPU/job", "wire/job", "unsigned"
    );
    for f in rows.iter().filter(|f| f.scenario == "ablation" && f.variant != ALL_ON && f.variant != ALL_ON_AGAIN) {
        let i = impact(f, &[a, b]);
        println!(
            "{:<22} {:>+8.1}% {:>+8.1}% {:>+8.1}% {:>12.3} {:>+11.1}% {:>+11.1}% {:>10}  {}",
            f.variant,
            i.throughput,
            i.p50,
            i.p99,
            cpu_ms_per_job(f),
            i.cpu_per_job,
            i.wire_per_job,
            f.records_unsigned,
            i.verdict
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::Usage;
    use std::collections::BTreeMap;

    fn row(jobs_per_second: f64, p99_ms: f64, cpu_seconds: f64) -> Figures {
        let mut f = super::super::figures("ablation", "x", super::super::Load::Closed(1), std::time::Duration::from_secs(1), &[]);
        f.jobs = 1000;
        f.jobs_per_second = jobs_per_second;
        f.p50_ms = p99_ms / 2.0;
        f.p99_ms = p99_ms;
        f.wire_bytes_per_job = 1000.0;
        f.nodes_total = 12_000;
        f.processes = BTreeMap::from([(
            "operator-runner".to_string(),
            Usage { cpu_seconds, cpu_percent: 0.0, rss_mib: 0.0, peak_rss_mib: 0.0 },
        )]);
        f
    }

    #[test]
    fn removal_that_halves_throughput_helps_and_noise_is_no_effect() {
        let on = [&row(1000.0, 10.0, 1.0), &row(1020.0, 10.2, 1.0)];
        let slower = impact(&row(505.0, 30.0, 1.0), &on);
        assert_eq!(slower.verdict, "helps");
        assert!((slower.throughput + 50.0).abs() < 0.1, "{slower:?}");
        assert!((slower.p99 - 197.0).abs() < 1.0, "{slower:?}");
        // Within the spread of the two all-on runs (and under 3%): nothing measured.
        assert_eq!(impact(&row(1015.0, 10.1, 1.01), &on).verdict, "no effect measured");
        // Faster and cheaper without it: it costs on this workload.
        assert_eq!(impact(&row(1500.0, 6.0, 0.5), &on).verdict, "costs here");
        // More throughput but more CPU per job: a trade-off.
        assert_eq!(impact(&row(1500.0, 10.0, 2.0), &on).verdict, "trade-off");
        // Faster jobs while the receipt-signer falls behind: a trade-off, not a gain.
        let mut behind = row(1500.0, 6.0, 0.5);
        behind.records_unsigned = 150_000;
        let i = impact(&behind, &on);
        assert!(i.backlog);
        assert_eq!(i.verdict, "trade-off");
        // A lag of a second or two (fewer records than the run produced) is not falling behind.
        let mut lagging = row(1010.0, 10.1, 1.0);
        lagging.records_unsigned = 11_000;
        assert!(!impact(&lagging, &on).backlog);
    }

    #[test]
    fn noisy_all_on_runs_widen_the_threshold() {
        // The all-on runs differ by 20%: a 25% drop is within twice that.
        let on = [&row(1000.0, 10.0, 1.0), &row(1200.0, 10.0, 1.0)];
        assert_eq!(impact(&row(825.0, 10.0, 1.0), &on).verdict, "no effect measured");
        assert_eq!(impact(&row(500.0, 10.0, 1.0), &on).verdict, "helps");
    }

    #[test]
    fn every_switch_names_a_distinct_setting() {
        let mut vars: Vec<&str> = SWITCHES.iter().flat_map(|(_, env)| env.iter().map(|(k, _)| *k)).collect();
        let n = vars.len();
        vars.sort();
        vars.dedup();
        assert_eq!(vars.len(), n);
        assert!(vars.iter().all(|v| v.starts_with("HSYNC_")));
    }
}
