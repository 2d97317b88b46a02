//! What a HyperSync process measures about itself, and where it shows it.
//!
//! * Request figures per endpoint subject (count, errors by code, in flight, latency in an
//!   HDR histogram), recorded by `hsync_bus::serve` for every request.
//! * The process: CPU time and resident memory from /proc (`procstat`), the heap from the
//!   counting allocator (`heap`).
//! * The service's own `$SRV.STATS` figures (cache hits, batch sizes, ...), fetched from
//!   NATS at each scrape, so the two views cannot disagree.
//!
//! All of it is served over HTTP (`http`): `/metrics` in the Prometheus text format,
//! `/healthz`, and on-demand profiling under `/debug/`. `$SRV.STATS` carries the request
//! figures too (`endpoint_summary`), and the process's (`process_summary`).

pub mod heap;
pub mod http;
pub mod procstat;
mod profile;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub use http::{MetricsConfig, MetricsServer};

/// Request figures of one endpoint subject.
#[derive(Clone)]
struct Endpoint {
    ok: u64,
    errors: BTreeMap<String, u64>,
    in_flight: i64,
    /// Microseconds, 3 significant digits, up to an hour.
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Endpoint {
    fn new() -> Endpoint {
        Endpoint {
            ok: 0,
            errors: BTreeMap::new(),
            in_flight: 0,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
        }
    }
}

/// Where the service's `$SRV.STATS` can be asked for: its connection and the subject of
/// this instance.
#[derive(Clone)]
struct StatsSource {
    client: async_nats::Client,
    subject: String,
}

type DebugText = Arc<dyn Fn() -> String + Send + Sync>;

/// What a JetStream pull consumer of this process has taken, and what still waits.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ConsumerFigures {
    pub batches: u64,
    pub messages: u64,
    pub largest_batch: u64,
    /// Messages left in the stream for this consumer when the last batch arrived.
    pub pending: u64,
}

/// The process's registry. One per process ([`global`]): a service is one process.
pub struct Metrics {
    started: Instant,
    service: Mutex<Option<String>>,
    /// One lock per endpoint, so requests to different endpoints never wait for each
    /// other; the map itself is only written when a subject is first seen.
    endpoints: RwLock<HashMap<String, Arc<Mutex<Endpoint>>>>,
    consumers: Mutex<BTreeMap<String, ConsumerFigures>>,
    stats_source: Mutex<Option<StatsSource>>,
    debug_texts: Mutex<BTreeMap<String, DebugText>>,
    http_addr: Mutex<Option<std::net::SocketAddr>>,
}

pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        started: Instant::now(),
        service: Mutex::new(None),
        endpoints: RwLock::new(HashMap::new()),
        consumers: Mutex::new(BTreeMap::new()),
        stats_source: Mutex::new(None),
        debug_texts: Mutex::new(BTreeMap::new()),
        http_addr: Mutex::new(None),
    })
}

/// A request being handled; [`RequestTimer::finish`] records it.
pub struct RequestTimer {
    endpoint: Arc<Mutex<Endpoint>>,
    started: Instant,
    finished: bool,
}

fn lock(endpoint: &Mutex<Endpoint>) -> std::sync::MutexGuard<'_, Endpoint> {
    endpoint.lock().unwrap_or_else(|p| p.into_inner())
}

impl RequestTimer {
    /// Records the request as answered (`error_code` = the error reply's code, if any).
    pub fn finish(mut self, error_code: Option<&str>) {
        self.finished = true;
        let elapsed = self.started.elapsed();
        let mut e = lock(&self.endpoint);
        e.in_flight -= 1;
        match error_code {
            None => e.ok += 1,
            Some(code) => *e.errors.entry(code.to_string()).or_default() += 1,
        }
        e.latency_us.saturating_record(elapsed.as_micros().clamp(1, u64::MAX as u128) as u64);
    }
}

impl Drop for RequestTimer {
    // A handler that panicked or was cancelled is no longer in flight.
    fn drop(&mut self) {
        if !self.finished {
            let mut e = lock(&self.endpoint);
            e.in_flight -= 1;
            *e.errors.entry("ABANDONED".to_string()).or_default() += 1;
        }
    }
}

impl Metrics {
    fn endpoint(&self, subject: &str) -> Arc<Mutex<Endpoint>> {
        if let Some(e) = self.endpoints.read().unwrap_or_else(|p| p.into_inner()).get(subject) {
            return e.clone();
        }
        let mut endpoints = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        endpoints.entry(subject.to_string()).or_insert_with(|| Arc::new(Mutex::new(Endpoint::new()))).clone()
    }

    /// Starts timing a request on an endpoint subject. Endpoint subjects are fixed by the
    /// service (no wildcards), so the set of subjects stays small whatever clients send.
    pub fn request_started(&self, subject: &str) -> RequestTimer {
        let endpoint = self.endpoint(subject);
        lock(&endpoint).in_flight += 1;
        RequestTimer {
            endpoint,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The request figures of one endpoint subject, for its `$SRV.STATS` data.
    pub fn endpoint_summary(&self, subject: &str) -> serde_json::Value {
        let Some(endpoint) = self.endpoints.read().unwrap_or_else(|p| p.into_inner()).get(subject).cloned() else {
            return serde_json::json!({ "requests": 0, "in_flight": 0 });
        };
        let e = lock(&endpoint);
        let h = &e.latency_us;
        let ms = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1e3 };
        serde_json::json!({
            "requests": e.ok + e.errors.values().sum::<u64>(),
            "errors": e.errors,
            "in_flight": e.in_flight,
            "latency_ms": {
                "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
                "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1e3 },
                "mean": if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
            },
        })
    }

    /// A batch pulled by the durable consumer `consumer`, with `pending` messages still
    /// waiting behind it (the queue depth of a durable path).
    pub fn consumer_batch(&self, consumer: &str, size: usize, pending: u64) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        let c = consumers.entry(consumer.to_string()).or_default();
        c.batches += 1;
        c.messages += size as u64;
        c.largest_batch = c.largest_batch.max(size as u64);
        c.pending = pending;
    }

    pub fn consumers(&self) -> BTreeMap<String, ConsumerFigures> {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// This process's CPU time, memory and heap, for its `$SRV.STATS` data.
    pub fn process_summary(&self) -> serde_json::Value {
        let p = procstat::read(std::process::id()).ok();
        serde_json::json!({
            "cpu_seconds": p.map(|p| p.cpu_seconds),
            "rss_bytes": p.map(|p| p.rss_bytes),
            "peak_rss_bytes": p.map(|p| p.peak_rss_bytes),
            "heap": heap::stats(),
            "consumers": self.consumers(),
        })
    }

    /// Names the service and where its `$SRV.STATS` are (called by `start_service`).
    pub fn set_service(&self, name: &str, client: async_nats::Client, stats_subject: String) {
        *self.service.lock().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
        *self.stats_source.lock().unwrap_or_else(|p| p.into_inner()) = Some(StatsSource { client, subject: stats_subject });
    }

    /// Whether the service takes requests: it has registered its endpoints on NATS and its
    /// connection is up (`/readyz`). Err says why not.
    pub fn readiness(&self) -> Result<(), String> {
        let source = self.stats_source.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(source) = source else {
            return Err("the service has not registered its NATS endpoints yet".into());
        };
        match source.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("the NATS connection is {state}")),
        }
    }

    /// Adds `/debug/<name>`: a text report made on demand (e.g. the indexer's RocksDB
    /// statistics).
    pub fn add_debug_text(&self, name: &str, report: impl Fn() -> String + Send + Sync + 'static) {
        self.debug_texts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(report));
    }

    /// The address `/metrics` is served on, once the HTTP server is up.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        *self.http_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn debug_text(&self, name: &str) -> Option<DebugText> {
        self.debug_texts.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    fn debug_names(&self) -> Vec<String> {
        self.debug_texts.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// This instance's `$SRV.STATS` reply, or why there is none.
    async fn service_stats(&self) -> Result<serde_json::Value, String> {
        let source = self.stats_source.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(source) = source else {
            return Err("the service has not registered yet".into());
        };
        let reply = tokio::time::timeout(Duration::from_secs(2), source.client.request(source.subject.clone(), "".into()))
            .await
            .map_err(|_| format!("{} did not answer in 2 s", source.subject))?
            .map_err(|e| format!("{}: {e}", source.subject))?;
        serde_json::from_slice(&reply.payload).map_err(|e| format!("{}: not JSON: {e}", source.subject))
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub async fn render(&self) -> String {
        let stats = self.service_stats().await;
        let service = self.service.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
        let consumers = self.consumers();
        // Copies, so no request waits while the text is written.
        let endpoints: BTreeMap<String, Endpoint> = self
            .endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(subject, e)| (subject.clone(), lock(e).clone()))
            .collect();
        render::render(&render::Snapshot {
            service: &service,
            consumers: &consumers,
            uptime: self.started.elapsed(),
            endpoints: &endpoints,
            stats: &stats,
            process: procstat::read(std::process::id()).ok(),
            heap: heap::stats(),
        })
    }
}
