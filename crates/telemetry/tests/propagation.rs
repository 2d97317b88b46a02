//! Propagation scenario (own test binary: `init` is once per process).
//!
//! Also checks that `OTEL_BSP_SCHEDULE_DELAY` is honoured: the spans must arrive while the
//! guard is still alive, far sooner than the 5 s default delay would allow.

use std::time::Duration;

use hsync_telemetry::propagation::{extract, inject_current, set_parent_from_headers};
use hsync_telemetry::{current_trace_id, init, TelemetryConfig};
use hsync_testkit::OtlpSink;
use opentelemetry::trace::TraceContextExt as _;

#[test]
fn context_crosses_nats_headers() {
    // Set before any runtime or exporter thread exists (env writes race with readers).
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = OtlpSink::start().await.expect("start sink");
        let guard = init(TelemetryConfig {
            service_name: "test-svc".into(),
            otlp_endpoint: Some(sink.endpoint()),
            log_filter: "info".into(),
            json_logs: false,
            log_file: Ok(None),
        })
        .expect("init");

        // Producer: a root span that injects its context into the message headers.
        let mut headers = async_nats::HeaderMap::new();
        let producer_tid = {
            let span = tracing::info_span!("producer");
            let _e = span.enter();
            inject_current(&mut headers);
            current_trace_id().expect("producer trace id")
        };
        let traceparent = headers
            .get("traceparent")
            .expect("traceparent header")
            .to_string();
        assert!(traceparent.contains(&producer_tid), "{traceparent}");
        assert!(extract(Some(&headers)).span().span_context().is_remote());

        // Consumer: a separate root span, linked only through the headers.
        let consumer_tid = {
            let span = tracing::info_span!("consumer");
            set_parent_from_headers(&span, Some(&headers));
            span.in_scope(current_trace_id).expect("consumer trace id")
        };
        assert_eq!(consumer_tid, producer_tid);

        // Without headers, a span stays an independent root.
        let lonely_tid = {
            let span = tracing::info_span!("lonely");
            set_parent_from_headers(&span, None);
            span.in_scope(current_trace_id).expect("lonely trace id")
        };
        assert_ne!(lonely_tid, producer_tid);

        let arrived = sink
            .wait_for(|s| s.len() >= 3, Duration::from_secs(3))
            .await;
        assert!(
            arrived,
            "spans not exported before shutdown: {:?}",
            sink.spans()
        );

        let spans = sink.spans();
        let producer = spans.iter().find(|s| s.name == "producer").unwrap();
        let consumer = spans.iter().find(|s| s.name == "consumer").unwrap();
        let lonely = spans.iter().find(|s| s.name == "lonely").unwrap();
        assert_eq!(producer.trace_id, producer_tid);
        assert_eq!(consumer.trace_id, producer.trace_id);
        assert_eq!(consumer.parent_span_id, producer.span_id);
        assert_eq!(lonely.trace_id, lonely_tid);
        assert!(lonely.parent_span_id.is_empty());

        // Dropping the guard inside a multi-thread runtime must not panic.
        drop(guard);
    });
}
