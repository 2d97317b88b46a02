//! Export scenario (own test binary: `init` is once per process).
//!
//! Runs on a `current_thread` runtime and shuts the guard down synchronously on that thread —
//! the setup most likely to deadlock if export I/O depended on the caller's runtime.

use std::time::Duration;

use hsync_telemetry::conventions::*;
use hsync_telemetry::{current_trace_id, init, TelemetryConfig};
use hsync_testkit::OtlpSink;

#[tokio::test(flavor = "current_thread")]
async fn spans_reach_the_collector_with_service_name_and_parent_links() {
    let sink = OtlpSink::start().await.expect("start sink");
    let cfg = TelemetryConfig {
        service_name: "test-svc".into(),
        otlp_endpoint: Some(sink.endpoint()),
        log_filter: "info".into(),
        json_logs: false,
        log_file: Ok(None),
    };
    let guard = init(cfg.clone()).expect("first init");
    let second = init(cfg);
    assert!(second.is_err(), "a second init must fail, not panic");

    let (parent_tid, child_tid) = {
        let parent = tracing::info_span!(
            "publish jobs.submit",
            { MESSAGING_SYSTEM } = MESSAGING_SYSTEM_NATS,
            { MESSAGING_DESTINATION_NAME } = "jobs.submit",
            { MESSAGING_OPERATION_TYPE } = "publish",
            { JOB_ID } = "job-42",
            { CACHE_HIT } = false,
            otel.kind = "producer",
        );
        let _p = parent.enter();
        let parent_tid = current_trace_id();
        let child = tracing::info_span!("encode", { OPERATOR } = "noop");
        let _c = child.enter();
        (parent_tid, current_trace_id())
    };
    let parent_tid = parent_tid.expect("parent has a valid trace id");
    assert_eq!(parent_tid.len(), 32);
    assert!(parent_tid.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(child_tid.as_deref(), Some(parent_tid.as_str()));
    assert_eq!(current_trace_id(), None, "no span is current any more");

    // The default schedule delay is 5 s, so the spans can only be here this soon if the
    // guard's shutdown flushed them.
    guard.shutdown().expect("flush within the timeout");
    assert!(
        sink.wait_for(|s| s.len() >= 2, Duration::from_secs(2))
            .await,
        "received: {:?}",
        sink.spans()
    );

    let spans = sink.spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let parent = spans
        .iter()
        .find(|s| s.name == "publish jobs.submit")
        .expect("parent span");
    let child = spans
        .iter()
        .find(|s| s.name == "encode")
        .expect("child span");
    for s in [parent, child] {
        assert_eq!(s.service_name, "test-svc");
        assert_eq!(s.trace_id, parent_tid);
    }
    assert_eq!(child.parent_span_id, parent.span_id);
    assert!(
        parent.parent_span_id.is_empty(),
        "parent is a root: {parent:?}"
    );
    assert_eq!(parent.attributes[MESSAGING_SYSTEM], "nats");
    assert_eq!(parent.attributes[MESSAGING_DESTINATION_NAME], "jobs.submit");
    assert_eq!(parent.attributes[MESSAGING_OPERATION_TYPE], "publish");
    assert_eq!(parent.attributes[JOB_ID], "job-42");
    assert_eq!(parent.attributes[CACHE_HIT], "false");
    assert_eq!(child.attributes[OPERATOR], "noop");
}
