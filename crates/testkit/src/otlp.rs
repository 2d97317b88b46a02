//! An in-process OTLP/gRPC trace receiver for tests.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

/// One span as received by an [`OtlpSink`], flattened for easy assertions.
#[derive(Clone, Debug)]
pub struct CollectedSpan {
    /// The `service.name` resource attribute of the batch the span came in (empty if absent).
    pub service_name: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// Span attributes with their values stringified (strings verbatim, numbers and bools via
    /// `Display`, bytes as hex, arrays as `[a, b]`, maps as `{k: v}`).
    pub attributes: BTreeMap<String, String>,
}

/// Spans kept; later ones are received (the exporters see success) and dropped, so that a
/// benchmark's cluster does not grow the sink without bound.
pub const MAX_KEPT_SPANS: usize = 100_000;

/// An OTLP/gRPC trace receiver listening on `127.0.0.1:<ephemeral port>`.
///
/// It serves from a dedicated thread with its own tokio runtime, so it keeps accepting
/// exports even while the test's own runtime thread is blocked. Dropping it stops the server.
#[derive(Debug)]
pub struct OtlpSink {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    // Dropping the sender resolves the server's shutdown signal.
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl OtlpSink {
    /// Binds `127.0.0.1:0` and starts serving the OTLP `TraceService`.
    ///
    /// `async` so callers can treat it like any other async fixture; the listener is bound
    /// before this returns, so exporters may connect immediately.
    pub async fn start() -> anyhow::Result<OtlpSink> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the OTLP sink on 127.0.0.1:0")?;
        listener
            .set_nonblocking(true)
            .context("making the OTLP sink listener non-blocking")?;
        let addr = listener.local_addr().context("OTLP sink local address")?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the OTLP sink runtime")?;
        let service = TraceServiceServer::new(Receiver {
            spans: Arc::clone(&spans),
        });
        std::thread::Builder::new()
            .name(format!("otlp-sink-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("OtlpSink: adopting the listener failed: {e}");
                            return;
                        }
                    };
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let served = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, async {
                            // Err means the sink was dropped: stop either way.
                            let _ = shutdown_rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        eprintln!("OtlpSink: server error: {e}");
                    }
                });
            })
            .context("spawning the OTLP sink thread")?;

        Ok(OtlpSink {
            addr,
            spans,
            _shutdown: shutdown_tx,
        })
    }

    /// `http://127.0.0.1:<port>`, suitable as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        lock(&self.spans).clone()
    }

    /// Polls (every 20 ms) until `pred` holds for the spans received so far, or `timeout`
    /// passes. Returns whether `pred` held.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&[CollectedSpan]) -> bool,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&lock(&self.spans)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Locks the span list, ignoring poisoning (a panicking test thread must not hide the spans
/// from the assertion that reports it).
fn lock(spans: &Mutex<Vec<CollectedSpan>>) -> std::sync::MutexGuard<'_, Vec<CollectedSpan>> {
    spans.lock().unwrap_or_else(|e| e.into_inner())
}

struct Receiver {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut collected = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service_name = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| stringify(kv.value.as_ref()))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                collected.push(CollectedSpan {
                    service_name: service_name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    attributes: attributes(&span.attributes),
                });
            }
        }
        let mut spans = lock(&self.spans);
        // Tests see a few hundred spans; a long benchmark run would otherwise keep millions.
        let room = MAX_KEPT_SPANS.saturating_sub(spans.len());
        spans.extend(collected.into_iter().take(room));
        drop(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), stringify(kv.value.as_ref())))
        .collect()
}

fn stringify(value: Option<&AnyValue>) -> String {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex::encode(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| stringify(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}: {}", kv.key, stringify(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        // Dictionary-encoded strings only occur in profiles, never in trace exports.
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sink_collects_and_flattens_exported_spans() {
        let sink = OtlpSink::start().await.unwrap();
        assert!(sink.endpoint().starts_with("http://127.0.0.1:"));
        let mut client = TraceServiceClient::connect(sink.endpoint()).await.unwrap();
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            parent_span_id: vec![0x02; 8],
            name: "op".into(),
            attributes: vec![
                kv("s", any_value::Value::StringValue("x".into())),
                kv("i", any_value::Value::IntValue(7)),
                kv("b", any_value::Value::BoolValue(true)),
            ],
            ..Default::default()
        };
        client
            .export(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv(
                            "service.name",
                            any_value::Value::StringValue("svc".into()),
                        )],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .unwrap();

        assert!(
            sink.wait_for(|s| s.len() == 1, Duration::from_secs(5))
                .await
        );
        let got = &sink.spans()[0];
        assert_eq!(got.service_name, "svc");
        assert_eq!(got.trace_id, "ab".repeat(16));
        assert_eq!(got.span_id, "01".repeat(8));
        assert_eq!(got.parent_span_id, "02".repeat(8));
        assert_eq!(got.name, "op");
        assert_eq!(got.attributes["s"], "x");
        assert_eq!(got.attributes["i"], "7");
        assert_eq!(got.attributes["b"], "true");
        // A predicate that never holds times out and reports false.
        assert!(
            !sink
                .wait_for(|s| s.len() > 1, Duration::from_millis(100))
                .await
        );
    }
}
