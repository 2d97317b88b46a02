//! Request handling middleware for NATS micro endpoints, written once for every service.

use std::future::Future;
use std::sync::Arc;

use async_nats::service::{endpoint::Endpoint, Service, ServiceExt};
use async_nats::HeaderMap;
use futures::StreamExt;
use hsync_protocol::codec::encode_error;
use hsync_protocol::{ErrorCode, ErrorReply, Format};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::bus::Bus;
use crate::shutdown::ShutdownSignal;

/// A decoded request.
pub struct Incoming<T> {
    pub body: T,
    pub headers: Option<HeaderMap>,
    pub subject: String,
    pub format: Format,
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Requests handled at once on this endpoint; further ones wait in NATS's buffer.
    pub max_in_flight: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_in_flight: 256 }
    }
}

/// Registers a NATS micro service so `$SRV.PING/INFO/STATS` answer for it.
/// `stats` supplies the custom `data` of each endpoint's stats (cache hit rates, ...).
pub async fn start_service<F>(bus: &Bus, name: &str, description: &str, stats: F) -> anyhow::Result<Service>
where
    F: Fn(&str) -> serde_json::Value + Send + Sync + 'static,
{
    let metrics = hsync_metrics::global();
    let mut metadata = std::collections::HashMap::new();
    if let Some(addr) = metrics.http_addr() {
        metadata.insert("metrics".to_string(), format!("http://{addr}/metrics"));
    }
    let service = bus
        .primary()
        .service_builder()
        .description(description)
        .metadata(metadata)
        // The service's figures, the request figures `serve` keeps for the endpoint, and
        // the process's CPU, memory and heap: what /metrics shows, also on NATS.
        .stats_handler(move |endpoint, endpoint_stats| {
            let mut data = match stats(&endpoint) {
                serde_json::Value::Object(map) => map,
                serde_json::Value::Null => serde_json::Map::new(),
                other => serde_json::Map::from_iter([("value".to_string(), other)]),
            };
            data.insert("requests".to_string(), metrics.endpoint_summary(&endpoint_stats.subject));
            data.insert("process".to_string(), metrics.process_summary());
            serde_json::Value::Object(data)
        })
        .start(name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot register micro service {name}: {e}"))?;
    let id = service.info().await.id;
    metrics.set_service(name, bus.primary().clone(), format!("$SRV.STATS.{name}.{id}"));
    Ok(service)
}

/// Serves one endpoint until shutdown, then lets in-flight requests finish.
///
/// Each request gets a span named `process <subject>` with OpenTelemetry messaging
/// attributes, parented on the caller's `traceparent`. Undecodable requests get a
/// `MALFORMED` error reply; handler errors become error replies; the reply uses the
/// request's format (JSON in, JSON out).
pub async fn serve<Req, Resp, F, Fut>(
    bus: Arc<Bus>,
    mut endpoint: Endpoint,
    mut shutdown: ShutdownSignal,
    opts: ServeOptions,
    handler: F,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Incoming<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, ErrorReply>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        let request = tokio::select! {
            _ = shutdown.wait() => break,
            r = endpoint.next() => match r {
                Some(r) => r,
                None => break,
            },
        };
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let bus = bus.clone();
        let handler = handler.clone();
        tasks.spawn(async move {
            handle_one(&bus, request, handler).await;
            drop(permit);
        });
    }
    if let Err(e) = endpoint.stop().await {
        tracing::debug!("stopping endpoint: {e}");
    }
    while tasks.join_next().await.is_some() {}
}

async fn handle_one<Req, Resp, F, Fut>(bus: &Bus, request: async_nats::service::Request, handler: F)
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Fn(Incoming<Req>) -> Fut,
    Fut: Future<Output = Result<Resp, ErrorReply>>,
{
    let subject = request.message.subject.to_string();
    let headers = request.message.headers.clone();
    let format = Format::of(headers.as_ref());
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {subject}"),
        otel.kind = "server",
        messaging.system = "nats",
        messaging.destination.name = %subject,
        messaging.operation.type = "process",
        messaging.message.body.size = request.message.payload.len(),
        hsync.job_id = tracing::field::Empty,
        hsync.operation_id = tracing::field::Empty,
        hsync.node_id = tracing::field::Empty,
        hsync.operator = tracing::field::Empty,
        hsync.cache_hit = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    hsync_telemetry::propagation::set_parent_from_headers(&span, headers.as_ref());
    let timer = hsync_metrics::global().request_started(&subject);
    if let Some(reply) = request.message.reply.as_ref().map(|r| r.as_str()) {
        if !bus.reply_allowed(reply) {
            // Answering would publish into whatever the reply names (a stream's subject,
            // a KV key) with this service's permissions; there is no one to tell.
            let _guard = span.enter();
            span.record("error.type", "REPLY_REFUSED");
            tracing::warn!(reply, "dropped a request on {subject}: its reply subject is not an inbox (HSYNC_REPLY_PREFIXES)");
            timer.finish(Some("REPLY_REFUSED"));
            return;
        }
    }
    async {
        let result = match bus.codec().decode::<Req>(headers.as_ref(), &request.message.payload) {
            Ok(body) => {
                handler(Incoming {
                    body,
                    headers,
                    subject: subject.clone(),
                    format,
                })
                .await
            }
            Err(e) => Err(e.to_reply()),
        };
        // A reply over the server's max_payload would be dropped by the server and the
        // caller would only see a timeout; say what happened instead.
        let max_payload = bus.client().server_info().max_payload;
        let error_code;
        let (mut h, body) = match result.and_then(|resp| {
            bus.codec()
                .encode(&resp, format)
                .map_err(|e| e.to_reply())
                .and_then(|(h, body)| {
                    if max_payload > 0 && body.len() > max_payload {
                        Err(ErrorReply::new(
                            ErrorCode::PayloadTooLarge,
                            format!(
                                "the reply is {} bytes, over the NATS server's max_payload of {max_payload}; ask for less",
                                body.len()
                            ),
                        ))
                    } else {
                        Ok((h, body))
                    }
                })
        }) {
            Ok(ok) => {
                error_code = None;
                ok
            }
            Err(err) => {
                error_code = Some(err.code);
                tracing::Span::current().record("error.type", err.code.as_str());
                if err.code == ErrorCode::Internal {
                    tracing::error!(code = %err.code, "{}", err.message);
                } else {
                    tracing::info!(code = %err.code, "request rejected: {}", err.message);
                }
                encode_error(&err, format)
            }
        };
        hsync_telemetry::propagation::inject_current(&mut h);
        if let Err(e) = request.respond_with_headers(Ok(body), h).await {
            tracing::warn!("cannot reply on {subject}: {e}");
        }
        timer.finish(error_code.as_ref().map(|c| c.as_str()));
    }
    .instrument(span)
    .await
}


#[doc(hidden)]
pub fn _assert_service_is_send(s: Service) -> impl Send {
    s
}
