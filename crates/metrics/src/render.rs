//! The Prometheus text exposition format (0.0.4), written out: a handful of line shapes,
//! fed from the HDR histograms that also give `$SRV.STATS` its quantiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::heap::HeapStats;
use crate::procstat::Reading;
use crate::{ConsumerFigures, Endpoint};

/// Latency buckets of `hsync_request_duration_seconds`, in seconds.
const BUCKETS: [f64; 15] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

pub struct Snapshot<'a> {
    pub service: &'a str,
    pub uptime: Duration,
    pub endpoints: &'a BTreeMap<String, Endpoint>,
    pub consumers: &'a BTreeMap<String, ConsumerFigures>,
    pub stats: &'a Result<serde_json::Value, String>,
    pub process: Option<Reading>,
    pub heap: HeapStats,
}

/// Samples of one metric family: (labels, value), in the order given.
struct Family {
    kind: &'static str,
    help: String,
    samples: Vec<(Vec<(String, String)>, f64)>,
}

#[derive(Default)]
struct Families(BTreeMap<String, Family>);

impl Families {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: Vec<(String, String)>, value: f64) {
        self.0
            .entry(name.to_string())
            .or_insert_with(|| Family { kind, help: help.to_string(), samples: Vec::new() })
            .samples
            .push((labels, value));
    }

    fn write(&self, out: &mut String) {
        for (name, family) in &self.0 {
            let _ = writeln!(out, "# HELP {name} {}", family.help.replace('\\', "\\\\").replace('\n', "\\n"));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, value) in &family.samples {
                // A histogram's samples carry their own suffix in the first label's slot.
                let (suffix, labels) = match labels.first() {
                    Some((k, v)) if k == "__suffix" => (v.as_str(), &labels[1..]),
                    _ => ("", &labels[..]),
                };
                let _ = writeln!(out, "{name}{suffix}{} {}", label_text(labels), number(*value));
            }
        }
    }
}

fn label_text(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A metric name from a stats path: lower case, anything but `[a-z0-9_]` becomes `_`.
pub fn metric_name(path: &str) -> String {
    let mut name: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn label(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// Every number (booleans as 0/1) under `value`, with its path joined by `_`.
fn numeric_leaves(path: &str, value: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((path.to_string(), f));
            }
        }
        serde_json::Value::Bool(b) => out.push((path.to_string(), if *b { 1.0 } else { 0.0 })),
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let child = if path.is_empty() { k.clone() } else { format!("{path}_{k}") };
                numeric_leaves(&child, v, out);
            }
        }
        _ => {}
    }
}

pub fn render(s: &Snapshot<'_>) -> String {
    let mut f = Families::default();
    let service = label("service", s.service);
    f.add("hsync_info", "gauge", "This process: its service name and version.", vec![service.clone(), label("version", env!("CARGO_PKG_VERSION"))], 1.0);
    f.add("hsync_uptime_seconds", "gauge", "Seconds since the process started measuring.", vec![service.clone()], s.uptime.as_secs_f64());

    for (subject, e) in s.endpoints {
        let ep = label("endpoint", subject);
        f.add("hsync_requests_total", "counter", "Requests answered, by endpoint subject and outcome (ok or the error code).", vec![ep.clone(), label("outcome", "ok")], e.ok as f64);
        for (code, n) in &e.errors {
            f.add("hsync_requests_total", "counter", "", vec![ep.clone(), label("outcome", code)], *n as f64);
        }
        f.add("hsync_requests_in_flight", "gauge", "Requests being handled now, by endpoint subject (the queue depth inside the service).", vec![ep.clone()], e.in_flight as f64);
        let h = &e.latency_us;
        let name = "hsync_request_duration_seconds";
        let help = "Time from receiving a request to sending its reply, by endpoint subject.";
        for bound in BUCKETS {
            let le = (bound * 1e6) as u64;
            let count = if h.is_empty() { 0 } else { h.count_between(0, le) };
            f.add(name, "histogram", help, vec![label("__suffix", "_bucket"), ep.clone(), label("le", &number(bound))], count as f64);
        }
        f.add(name, "histogram", help, vec![label("__suffix", "_bucket"), ep.clone(), label("le", "+Inf")], h.len() as f64);
        f.add(name, "histogram", help, vec![label("__suffix", "_sum"), ep.clone()], if h.is_empty() { 0.0 } else { h.mean() * h.len() as f64 / 1e6 });
        f.add(name, "histogram", help, vec![label("__suffix", "_count"), ep.clone()], h.len() as f64);
    }

    for (name, c) in s.consumers {
        let consumer = label("consumer", name);
        f.add("hsync_consumer_pending", "gauge", "Messages waiting for a durable consumer when it last pulled (the queue depth of a durable path).", vec![consumer.clone()], c.pending as f64);
        f.add("hsync_consumer_batches_total", "counter", "Batches pulled by a durable consumer.", vec![consumer.clone()], c.batches as f64);
        f.add("hsync_consumer_messages_total", "counter", "Messages pulled by a durable consumer (over batches: the mean batch size).", vec![consumer.clone()], c.messages as f64);
        f.add("hsync_consumer_largest_batch", "gauge", "The largest batch a durable consumer pulled.", vec![consumer], c.largest_batch as f64);
    }
    if let Some(p) = s.process {
        f.add("process_cpu_seconds_total", "counter", "User and system CPU time of this process.", vec![], p.cpu_seconds);
        f.add("process_resident_memory_bytes", "gauge", "Resident memory of this process.", vec![], p.rss_bytes as f64);
        f.add("process_resident_memory_peak_bytes", "gauge", "Highest resident memory of this process so far (VmHWM).", vec![], p.peak_rss_bytes as f64);
    }
    if s.heap.counting {
        f.add("hsync_heap_allocations_total", "counter", "Heap allocations (reallocations included).", vec![], s.heap.allocations as f64);
        f.add("hsync_heap_allocated_bytes_total", "counter", "Bytes requested from the heap.", vec![], s.heap.allocated_bytes as f64);
        f.add("hsync_heap_live_bytes", "gauge", "Heap bytes allocated and not yet freed.", vec![], s.heap.live_bytes as f64);
        f.add("hsync_heap_peak_live_bytes", "gauge", "Highest hsync_heap_live_bytes so far.", vec![], s.heap.peak_live_bytes as f64);
    }

    f.add("hsync_stats_up", "gauge", "1 when this scrape got the service's $SRV.STATS from NATS.", vec![service.clone()], if s.stats.is_ok() { 1.0 } else { 0.0 });
    if let Ok(stats) = s.stats {
        for endpoint in stats["endpoints"].as_array().into_iter().flatten() {
            let ep = label("endpoint", endpoint["subject"].as_str().unwrap_or_default());
            let micro = |k: &str| endpoint[k].as_f64().unwrap_or(0.0);
            f.add("hsync_micro_requests_total", "counter", "Requests counted by NATS micro ($SRV.STATS num_requests).", vec![ep.clone()], micro("num_requests"));
            f.add("hsync_micro_errors_total", "counter", "Errors counted by NATS micro ($SRV.STATS num_errors).", vec![ep.clone()], micro("num_errors"));
            let mut leaves = Vec::new();
            numeric_leaves("", &endpoint["data"], &mut leaves);
            for (path, value) in leaves {
                // The request and process figures are already above, from the same sources.
                if path.starts_with("requests_") || path.starts_with("process_") {
                    continue;
                }
                let name = format!("hsync_service_{}", metric_name(&path));
                f.add(&name, "gauge", "A figure of the service's $SRV.STATS data (see docs/OBSERVABILITY.md).", vec![ep.clone()], value);
            }
        }
    }
    let mut out = String::new();
    f.write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_numbers_follow_the_format() {
        assert_eq!(metric_name("result_cache.hit-rate"), "result_cache_hit_rate");
        assert_eq!(metric_name("9lives"), "_9lives");
        assert_eq!(label_text(&[label("endpoint", "a\"b\\c\nd")]), "{endpoint=\"a\\\"b\\\\c\\nd\"}");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
    }

    #[test]
    fn renders_requests_histogram_process_and_service_figures() {
        let mut e = Endpoint::new();
        e.ok = 3;
        e.errors.insert("MALFORMED".into(), 1);
        for us in [200, 800, 3000, 40_000] {
            e.latency_us.record(us).unwrap();
        }
        let endpoints = BTreeMap::from([("hsync.jobs.run".to_string(), e)]);
        let stats = Ok(serde_json::json!({
            "endpoints": [{
                "name": "run", "subject": "hsync.jobs.run", "num_requests": 4, "num_errors": 1,
                "data": { "result_cache": { "hits": 7, "hit_rate": 0.5 }, "pooling": true, "requests": { "in_flight": 0 }, "process": { "rss_bytes": 1 }, "note": "x" }
            }]
        }));
        let text = render(&Snapshot {
            service: "operator-runner",
            uptime: Duration::from_secs(5),
            endpoints: &endpoints,
            consumers: &BTreeMap::from([("HSYNC_RECORDS/signer".to_string(), ConsumerFigures { batches: 2, messages: 150, largest_batch: 100, pending: 7 })]),
            stats: &stats,
            process: Some(Reading { cpu_seconds: 1.5, rss_bytes: 4096, peak_rss_bytes: 8192 }),
            heap: HeapStats::default(),
        });
        for line in [
            "# TYPE hsync_requests_total counter",
            "hsync_requests_total{endpoint=\"hsync.jobs.run\",outcome=\"ok\"} 3",
            "hsync_requests_total{endpoint=\"hsync.jobs.run\",outcome=\"MALFORMED\"} 1",
            "# TYPE hsync_request_duration_seconds histogram",
            "hsync_request_duration_seconds_bucket{endpoint=\"hsync.jobs.run\",le=\"0.00025\"} 1",
            "hsync_request_duration_seconds_bucket{endpoint=\"hsync.jobs.run\",le=\"0.001\"} 2",
            "hsync_request_duration_seconds_bucket{endpoint=\"hsync.jobs.run\",le=\"0.005\"} 3",
            "hsync_request_duration_seconds_bucket{endpoint=\"hsync.jobs.run\",le=\"+Inf\"} 4",
            "hsync_request_duration_seconds_count{endpoint=\"hsync.jobs.run\"} 4",
            "process_cpu_seconds_total 1.5",
            "process_resident_memory_bytes 4096",
            "hsync_stats_up{service=\"operator-runner\"} 1",
            "hsync_micro_requests_total{endpoint=\"hsync.jobs.run\"} 4",
            "hsync_service_result_cache_hits{endpoint=\"hsync.jobs.run\"} 7",
            "hsync_service_result_cache_hit_rate{endpoint=\"hsync.jobs.run\"} 0.5",
            "hsync_service_pooling{endpoint=\"hsync.jobs.run\"} 1",
            "hsync_consumer_pending{consumer=\"HSYNC_RECORDS/signer\"} 7",
            "hsync_consumer_messages_total{consumer=\"HSYNC_RECORDS/signer\"} 150",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Each family is typed once, strings are left out, the heap only when counted.
        assert_eq!(text.matches("# TYPE hsync_requests_total ").count(), 1);
        assert!(!text.contains("note"));
        assert!(!text.contains("hsync_service_requests"));
        assert!(!text.contains("hsync_service_process"));
        assert!(!text.contains("hsync_heap_"));
        // The sum is the histogram's mean times its count: 44 ms all together.
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("hsync_request_duration_seconds_sum{endpoint=\"hsync.jobs.run\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.044).abs() < 0.0001, "{sum}");
    }

    #[test]
    fn a_missing_stats_reply_says_so_and_renders_the_rest() {
        let text = render(&Snapshot {
            service: "indexer",
            uptime: Duration::from_secs(1),
            endpoints: &BTreeMap::new(),
            consumers: &BTreeMap::new(),
            stats: &Err("no answer".into()),
            process: None,
            heap: HeapStats { allocations: 2, counting: true, ..Default::default() },
        });
        assert!(text.contains("hsync_stats_up{service=\"indexer\"} 0"));
        assert!(text.contains("hsync_heap_allocations_total 2"));
        assert!(!text.contains("hsync_micro_"));
    }
}
