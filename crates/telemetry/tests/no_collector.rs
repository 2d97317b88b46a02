//! No-collector scenario (own test binary: `init` is once per process): nothing listens at the
//! endpoint, yet init, spans and shutdown stay quick and nothing panics.

use std::time::{Duration, Instant};

use hsync_telemetry::{current_trace_id, init, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_collector_does_not_block() {
    let endpoint = format!("http://127.0.0.1:{}", hsync_testkit::free_port());
    let started = Instant::now();
    let guard = init(TelemetryConfig {
        service_name: "test-svc".into(),
        otlp_endpoint: Some(endpoint),
        log_filter: "info".into(),
        json_logs: false,
        log_file: Ok(None),
    })
    .expect("init succeeds without a collector");
    {
        let span = tracing::info_span!("work");
        let _e = span.enter();
        tracing::info!("inside a span with nowhere to export it");
        assert!(
            current_trace_id().is_some(),
            "trace ids exist without a collector"
        );
    }
    let _ = guard.shutdown();
    let elapsed = started.elapsed();
    // Liveness bound, not a benchmark: a hang would be the SDK's 5-30 s defaults.
    assert!(
        elapsed < Duration::from_secs(2),
        "init + span + shutdown took {elapsed:?}"
    );
}
