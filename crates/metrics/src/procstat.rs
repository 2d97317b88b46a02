//! CPU time and memory of a process, read from Linux's /proc: what each service reports
//! about itself on `/metrics`, and what `hsync bench` reports for every process of the
//! cluster it drives.

use std::collections::BTreeMap;

use serde::Serialize;

/// One reading of one process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// User plus system CPU time since the process started.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Highest resident set size so far (VmHWM).
    pub peak_rss_bytes: u64,
}

/// What a process used between two readings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    /// CPU time over wall time: 100 is one core busy all along.
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every architecture it
/// runs on; the value is fixed in the kernel's ABI, whatever the kernel's own HZ.
fn ticks_per_second() -> f64 {
    100.0
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
fn parse_stat_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the fields
    // after it start at the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("no ')' in /proc stat line"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields.get(n - 3).ok_or_else(|| anyhow::anyhow!("/proc stat line has no field {n}"))?;
        text.parse().map_err(|e| anyhow::anyhow!("/proc stat field {n} {text:?}: {e}"))
    };
    Ok(field(14)? + field(15)?)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in bytes.
fn parse_status_kb(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(':')?.trim();
        value.strip_suffix("kB")?.trim().parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

pub fn read(pid: u32) -> anyhow::Result<Reading> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/status: {e}"))?;
    Ok(Reading {
        cpu_seconds: parse_stat_ticks(&stat)? as f64 / ticks_per_second(),
        rss_bytes: parse_status_kb(&status, "VmRSS").unwrap_or(0),
        peak_rss_bytes: parse_status_kb(&status, "VmHWM").unwrap_or(0),
    })
}

/// Readings of every named process; a process that cannot be read is left out.
pub fn read_all(pids: &[(String, u32)]) -> BTreeMap<String, Reading> {
    pids.iter().filter_map(|(name, pid)| read(*pid).ok().map(|r| (name.clone(), r))).collect()
}

/// What each process used between `before` and `after`, over `wall_seconds`.
pub fn usage(before: &BTreeMap<String, Reading>, after: &BTreeMap<String, Reading>, wall_seconds: f64) -> BTreeMap<String, Usage> {
    const MIB: f64 = 1024.0 * 1024.0;
    after
        .iter()
        .filter_map(|(name, a)| {
            let b = before.get(name)?;
            let cpu = (a.cpu_seconds - b.cpu_seconds).max(0.0);
            Some((
                name.clone(),
                Usage {
                    cpu_seconds: cpu,
                    cpu_percent: cpu / wall_seconds.max(1e-9) * 100.0,
                    rss_mib: a.rss_bytes as f64 / MIB,
                    peak_rss_mib: a.peak_rss_bytes as f64 / MIB,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1539 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_stat_ticks(line).unwrap(), 325);
        assert!(parse_stat_ticks("4242 no parenthesis").is_err());
        assert!(parse_stat_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn status_sizes_are_read_in_bytes() {
        let status = "Name:\tindexer\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(10 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(20 * 1024 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_reads_and_uses_cpu() {
        let pid = std::process::id();
        let before = read_all(&[("self".to_string(), pid)]);
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed().as_millis() < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let after = read_all(&[("self".to_string(), pid)]);
        let u = usage(&before, &after, 0.2)["self"];
        assert!(u.cpu_seconds > 0.05, "{u:?}");
        assert!(u.rss_mib > 0.5 && u.peak_rss_mib >= u.rss_mib, "{u:?}");
    }
}
